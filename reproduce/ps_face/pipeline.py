"""Shen 2024 (Williams-Beuren / Noonan / Alagille / no syndrome from children's faces,
IResNet-100 with ArcFace or CosFace, with and without a pretrained face model) on the shared
study pipeline.

Four models (reproduce.config.PS_FACE_MODELS), each a task of the study in the shared
pipeline's sense (`StudySpec.task`): the same prepared data and folds, runs in
runs/ps_face/<profile>/<model>/iresnet100/fold<k>/, predictions in
runs/ps_face/<profile>/predictions/<model>/. The pretrained models start from the backbone of
reproduce.ps_face.pretrain (a real face-recognition run of the same backbone on the phantom's
many-identity set, no syndromes), or from a weights file the user names (--pretrained-weights).

Folds: five, split ON THE CHILD (stratified group 5-fold: no child in two folds, every group
spread over the folds), test 1/5; a fifth of each fold's training children validate (the
epoch with the smallest validation loss). Shen 2024's abstract says the PHOTOS were divided at
random: photos of one child can then sit in training and test, a leak we do not copy.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproduce import config as cfg
from reproduce import study

STUDY = "ps_face"
ARCH = "iresnet100"
CLASS_NAMES = cfg.STUDIES[STUDY].labels   # williams_beuren, noonan, alagille, none
GROUP_TITLES = {"williams_beuren": "Williams-Beuren", "noonan": "Noonan", "alagille": "Alagille",
                "none": "no syndrome"}
MODELS = tuple(cfg.PS_FACE_MODELS)
MODEL_TITLES = {"arcface_scratch": "IResNet + ArcFace, no pretraining",
                "arcface_pretrained": "IResNet + ArcFace, pretrained",
                "cosface_scratch": "IResNet + CosFace, no pretraining",
                "cosface_pretrained": "IResNet + CosFace, pretrained"}
# Shen 2024's accuracies (paper_values.SHEN2024 keys) of each model.
PAPER_KEYS = {"arcface_scratch": "arcface_no_pfm", "arcface_pretrained": "arcface_pfm",
              "cosface_scratch": "cosface_no_pfm", "cosface_pretrained": "cosface_pfm"}
K_FOLDS = 5
VAL_SIZE = 0.2
N_BOOT = {"ci": 50, "default": 200, "paper": 1000}
ALIGNED_SIZE = {"ci": 112, "default": 112, "paper": 112}   # the ArcFace template crop
HEATMAP_SETTINGS = {"ci": ("layercam", (1,), "log_prob"), "default": ("layercam", (1,), "log_prob"),
                    "paper": ("gradcam", (0,), "logit")}
PREDICTION_COLUMNS = ("image_path", "abs_path", "case_id", "label", "subtype", "split", "fold",
                      "y_true", "score", *(f"p_{name}" for name in CLASS_NAMES), "age_months",
                      "sex", "mask_path")
CV_TEXT = ("five folds split on the child (stratified group 5-fold: no child in two folds, "
           "every group spread over the folds), test 1/5, a fifth of each fold's training "
           "children validate; Shen 2024 divided the photos at random, which can put photos of "
           "one child in training and test (a leak we do not copy)")


def five_fold_splits(ctx: "StudyContext", manifest):
    return study.cross_validation_splits(manifest, "kfold", k=K_FOLDS, val_size=VAL_SIZE,
                                         stratify="label", seed=ctx.seed)


def _split_key(ctx: "StudyContext") -> dict:
    return {"cv": "kfold", "k": K_FOLDS, "val_size": VAL_SIZE, "stratify": "label"}


def head_options(loss: str, profile: str) -> dict[str, float]:
    """The margin head's s, m and warm-up epochs (reproduce.config.PS_FACE_HEADS)."""
    return {**cfg.PS_FACE_HEADS[loss], "warmup_epochs": cfg.PS_FACE_MARGIN_WARMUP_EPOCHS[profile]}


def pretrained_weights(ctx: "StudyContext") -> Path:
    """The backbone file the pretrained models start from (the user's, or the pretraining run's)."""
    if ctx.pretrained_weights is not None:
        return ctx.pretrained_weights
    from reproduce.ps_face import pretrain

    return pretrain.backbone_path(ctx)


def _train_overrides(ctx: "StudyContext") -> dict[str, Any]:
    loss, pretrained = cfg.PS_FACE_MODELS[ctx.spec.task]
    overrides: dict[str, Any] = {"loss": loss, "margin": head_options(loss, ctx.profile)}
    if pretrained:
        overrides["init_weights"] = str(pretrained_weights(ctx))
    return overrides


def _results_config(ctx: "StudyContext") -> dict:
    from data_prep.provenance import portable_path

    config = study.results_config(ctx, {"pretrained_weights": portable_path(ctx.pretrained_weights),
                                        "aligned_size": ALIGNED_SIZE[ctx.profile]})
    config["training"] = {model: study.train_config(for_model(ctx, model), ARCH).to_dict()
                          for model in MODELS}
    return config


def _spec(model: str) -> study.StudySpec:
    return study.StudySpec(
        key=STUDY, architectures=(ARCH,), display_names={ARCH: MODEL_TITLES[model]},
        class_names=CLASS_NAMES, positive_label=None, splitter=five_fold_splits, n_boot=N_BOOT,
        heatmaps=HEATMAP_SETTINGS, prediction_columns=PREDICTION_COLUMNS, phantom=STUDY,
        crop_to_sector=False, split_key=_split_key, results_dir="results/ps_face",
        extra={"results_config": _results_config, "train_overrides": _train_overrides},
        task=model, data_labels=CLASS_NAMES, images="face", aligned_size=ALIGNED_SIZE)


SPECS = {model: _spec(model) for model in MODELS}
SPEC = SPECS[MODELS[0]]


@dataclass(frozen=True)
class StudyContext(study.StudyContext):
    """A context of the Shen 2024 study (its spec is one of the four models' SPECS)."""

    spec: study.StudySpec = SPEC
    results_dir: Path = Path(SPEC.results_dir)
    pretrained_weights: Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pretrained_weights is not None:
            object.__setattr__(self, "pretrained_weights", Path(self.pretrained_weights))


def for_model(ctx: StudyContext, model: str) -> StudyContext:
    """The same invocation for another of the four models."""
    return dataclasses.replace(ctx, spec=SPECS[model])


def narrowing_text(ctx: StudyContext) -> str:
    """How the profile's backbone differs from Shen's IResNet-100 (said on every output)."""
    config = study.train_config(ctx, ARCH)
    options = dict(config.model_options)
    blocks = tuple(options.get("blocks", (3, 13, 30, 3)))
    embedding = options.get("embedding_size", 512)
    width, (w, h) = config.width or 64, config.size_wh
    if blocks == (3, 13, 30, 3) and width == 64 and embedding == 512 and (w, h) == (112, 112):
        return "IResNet-100 (blocks 3/13/30/3, width 64, 512-d embedding) at 112x112, as Shen 2024"
    return (f"IResNet NARROWED for the {ctx.profile} profile: blocks {'/'.join(map(str, blocks))} "
            f"(IResNet-100: 3/13/30/3), width {width} (64), {embedding}-d embedding (512), "
            f"{w}x{h} input (112x112)")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    study.add_common_args(
        parser, SPEC, paper="Shen 2024 (its silences read as stated in the README)",
        manifest_help="your manifest CSV of ALIGNED 112x112 face crops (image_path, case_id = "
                      "child, label williams_beuren/noonan/alagille/none; `python -m data_prep "
                      "faces --size 112` writes one); default: the synthetic face phantom",
        readers_help="reader CSV (image_path, reader, call = a group label); default: five "
                     "paediatricians simulated at accuracies 0.700 (Shen's best) and below")
    parser.add_argument("--pretrained-weights", type=Path, default=None,
                        help="backbone weights the pretrained models start from (.keras/.h5 "
                             "matched by layer name, or an insightface .npz); default: a "
                             "pretraining run on the phantom's many-identity face set")


def context_from_args(args: argparse.Namespace) -> StudyContext:
    return StudyContext(**study.context_fields(args), pretrained_weights=args.pretrained_weights)


def common_argv(args: argparse.Namespace) -> list[str]:
    """The shared flags, to pass on to another target unchanged."""
    return study.common_argv(args, {"--manifest": "manifest", "--readers": "readers",
                                    "--pretrained-weights": "pretrained_weights"})


def say(message: str) -> None:
    study.say(STUDY, message)


def ensure_models(ctx: StudyContext, models=MODELS, shard: tuple[int, int] = (0, 1)) -> None:
    """Pretraining (when a pretrained model needs it), then every model x fold (this shard)."""
    if any(cfg.PS_FACE_MODELS[m][1] for m in models) and ctx.pretrained_weights is None:
        from reproduce.ps_face import pretrain

        pretrain.ensure_backbone(ctx)
    elif ctx.pretrained_weights is not None and not ctx.pretrained_weights.is_file():
        from data_prep.errors import InputError

        raise InputError(ctx.pretrained_weights, "weights file not found (--pretrained-weights)")
    grid = [(m, f) for m in models for f in study.folds(for_model(ctx, m))]
    index, count = shard
    mine = grid[index::count]
    for position, (model, fold) in enumerate(mine, start=1):
        say(f"[{position}/{len(mine)}] {MODEL_TITLES[model]}, fold {fold}")
        study.model_path(for_model(ctx, model), ARCH, fold)
