"""The "pretrained foundation model" of Shen 2024, on the phantom: a real pretraining run.

The same backbone as the study's models (the profile's IResNet) is trained as a face
recogniser: an ArcFace head (reproduce.config.PS_FACE_PRETRAIN_HEAD, with the study's margin
warm-up) over the identities of `data_prep.phantom_ps_face`'s identity set (children without
any syndrome, several photos each; drawn with seed PS_FACE_PRETRAIN_SEED_OFFSET + the study's
seed, so no identity has a study child's face). Faces are aligned to the 112x112 ArcFace
template by their drawn landmarks (no detection: the set is a stand-in for a face-recognition
corpus). The last photo of each identity validates (the epoch with the smallest validation
loss). Its backbone (image -> embedding, the head dropped) is written as backbone.keras, the
file the pretrained models start from. Labelled on every output as a PHANTOM pretraining,
not a face-recognition corpus.

Work folder: runs/ps_face/<profile>/pretrain/{phantom_raw,aligned,iresnet100,backbone.keras}.
A user's backbone file (--pretrained-weights) replaces all of this.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from data_prep import atomic
from reproduce import config as cfg
from reproduce import study

BACKBONE_FILE = "backbone.keras"
TEXT = ("pretraining on the PHANTOM's many-identity face set (synthetic children without a "
        "syndrome, one class per child; not a face-recognition corpus)")


def folder(ctx) -> Path:
    return ctx.study_dir / "pretrain"


def backbone_path(ctx) -> Path:
    return folder(ctx) / BACKBONE_FILE


def identity_seed(ctx) -> int:
    return cfg.PS_FACE_PRETRAIN_SEED_OFFSET + int(ctx.seed)


def pretrain_config(ctx, class_names):
    from reproduce.ps_face import pipeline

    head = cfg.PS_FACE_PRETRAIN_HEAD
    return cfg.make_config(pipeline.STUDY, pipeline.ARCH, ctx.profile, seed=ctx.seed, loss=head,
                           margin=pipeline.head_options(head, ctx.profile), labels=tuple(class_names),
                           epoch_grid=(cfg.PS_FACE_PRETRAIN_EPOCHS[ctx.profile],))


def _phantom_ok(raw: Path, seed: int, profile: str) -> bool:
    from data_prep import phantom_ps_face

    try:
        record = json.loads((raw / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    expected = json.loads(json.dumps(phantom_ps_face.identities.resolve_profile(profile).as_config()))
    config = record.get("config", {})
    return (record.get("seed") == seed and (raw / "manifest.csv").is_file()
            and all(config.get(k) == v for k, v in expected.items()))


def identity_tables(manifest):
    """(class names = identities, train ImageTable, validation ImageTable: each identity's last
    photo)."""
    from reproduce.input_pipeline import ImageTable

    ids = manifest["case_id"].astype(str).to_numpy()
    names = tuple(sorted(set(ids)))
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[i] for i in ids], dtype=np.int64)
    last = manifest.reset_index(drop=True).groupby("case_id").tail(1).index.to_numpy()
    is_val = np.zeros(len(manifest), dtype=bool)
    is_val[last] = True
    paths = manifest["abs_path"].astype(str).to_numpy()
    return (names, ImageTable(tuple(paths[~is_val]), labels[~is_val]),
            ImageTable(tuple(paths[is_val]), labels[is_val]))


def ensure_backbone(ctx) -> Path:
    """Generate, align, pretrain and extract the backbone once per profile and seed (reused)."""
    import keras

    from data_prep import phantom
    from data_prep.faces import faces_from_manifest
    from data_prep.manifest import load_manifest
    from reproduce import train
    from reproduce.ps_face import pipeline

    work = folder(ctx)
    raw, aligned, run = work / "phantom_raw", work / "aligned", work / pipeline.ARCH
    seed = identity_seed(ctx)
    with study.study_lock(ctx):
        if not _phantom_ok(raw, seed, ctx.profile):
            pipeline.say(f"generating the {ctx.profile} identity phantom (seed {seed}) in {raw}")
            phantom.generate_phantom("ps_face_identities", ctx.profile, raw, seed=seed, force=True,
                                     progress=False)
            shutil.rmtree(aligned, ignore_errors=True)
        if not (aligned / "manifest.csv").is_file():
            pipeline.say(f"aligning the identity phantom by its drawn landmarks into {aligned}")
            faces_from_manifest(raw / "manifest.csv", aligned, size=pipeline.ALIGNED_SIZE[ctx.profile],
                                landmarks="prefer", force=True, progress_every=1000)
        manifest = load_manifest(aligned / "manifest.csv")
        names, train_table, val_table = identity_tables(manifest)
        config = pretrain_config(ctx, names)
        pipeline.say(f"{TEXT}: {len(names)} identities, {len(train_table)} training / "
                     f"{len(val_table)} validation photos, {config.max_epochs} epochs, "
                     f"{config.loss} head")
        result = train.train_run(config, train_table, val_table, names, run,
                                 manifest=aligned / "manifest.csv", force=ctx.force,
                                 verbose=2 if ctx.profile != "ci" else 0,
                                 extra_record={"pretraining": TEXT, "identity_seed": seed})
        out = backbone_path(ctx)
        source_hash = study.file_sha256(result.selected_model)
        stamp = work / "backbone.json"
        try:
            current = json.loads(stamp.read_text(encoding="utf-8")).get("selected_sha256")
        except (OSError, ValueError):
            current = None
        if not out.is_file() or current != source_hash:
            trained = study.load_keras_model(result.selected_model)
            backbone = keras.Model(trained.inputs[0], trained.get_layer("features").output,
                                   name=pipeline.ARCH)
            with atomic.atomic_path(out) as tmp:   # keeps the .keras suffix
                backbone.save(str(tmp))
            atomic.write_json(stamp, {"selected_sha256": source_hash, "pretraining": TEXT,
                                      "selected_epoch": result.selected_epoch,
                                      "identities": len(names), "identity_seed": seed})
        return out
