"""Shen 2024 (ps_face) on the shared pipeline: the four-group phantom with several photos per
child, five folds on the child, the margin warm-up, the comparison table's columns, and the
ci study end to end (identity pretraining -> four models x five folds -> table, confusion,
.keras round trip)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep import phantom, phantom_face, phantom_ps_face
from reproduce import config as cfg
from reproduce.ps_face import pipeline, tables


@pytest.mark.parametrize("profile, children, photos", [
    ("paper", {"williams_beuren": 174, "noonan": 235, "alagille": 51, "none": 1206}, 3297),
    ("default", {"williams_beuren": 36, "noonan": 40, "alagille": 24, "none": 66}, None),
    ("ci", {"williams_beuren": 6, "noonan": 6, "alagille": 5, "none": 8}, None),
])
def test_phantom_profiles_have_shens_groups_and_several_photos_per_child(profile, children, photos):
    planned = phantom_face.plan_children(phantom_ps_face.PROFILES[profile], seed=0)
    assert pd.Series([c.label for c in planned]).value_counts().to_dict() == children
    counts = [c.photos for c in planned]
    assert max(counts) > 1 and 1.8 <= np.mean(counts) <= 2.2
    if photos is not None:
        assert sum(counts) == photos


def test_identity_phantom_has_no_syndrome_and_several_photos():
    profile = phantom_ps_face.identities.resolve_profile("ci")
    planned = phantom_face.plan_children(profile, seed=1)
    assert {c.subtype for c in planned} == {phantom_face.NO_SYNDROME}
    assert min(c.photos for c in planned) >= 4 and len(planned) >= 20


@pytest.fixture(scope="module")
def ci_manifest(tmp_path_factory):
    from data_prep.manifest import load_manifest

    out = tmp_path_factory.mktemp("ps_face_phantom")
    phantom.generate_phantom("ps_face", "ci", out, seed=0, force=True, progress=False)
    return load_manifest(out / "manifest.csv", labels=pipeline.CLASS_NAMES)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_five_folds_on_the_child_every_group_in_every_fold(ci_manifest, seed):
    from data_prep.splits import iter_folds

    splits, _ = pipeline.five_fold_splits(pipeline.StudyContext(profile="ci", seed=seed), ci_manifest)
    assert ci_manifest.groupby("case_id").size().max() > 1   # several photos per child
    label_of = dict(zip(ci_manifest["case_id"], ci_manifest["label"]))
    tested = []
    for fold in iter_folds(splits):
        sides = [set(part["case_id"]) for part in (fold.train, fold.val, fold.test)]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        assert {label_of[c] for c in sides[2]} == set(pipeline.CLASS_NAMES)
        tested += sides[2]
    assert sorted(tested) == sorted(set(ci_manifest["case_id"]))   # each child tested once


@pytest.mark.parametrize("head, m", [("cosface", 0.4), ("arcface", 0.5)])
def test_margin_warm_up_blends_from_cosine_to_the_margin(head, m):
    from models.margins import MARGIN_HEADS

    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(6, 8)).astype("float32")
    labels = np.arange(6) % 3
    layer = MARGIN_HEADS[head](3, s=64.0, m=m, warmup_steps=4)
    plain = np.asarray(layer(embedding))                             # s * cos, no margin
    start = np.asarray(layer([embedding, labels], training=False))   # step 0: no margin yet
    np.testing.assert_allclose(start, plain, atol=1e-4)
    for _ in range(4):
        layer([embedding, labels], training=True)
    full = np.asarray(layer([embedding, labels], training=False))
    reference = np.asarray(MARGIN_HEADS[head](3, s=64.0, m=m)([embedding, labels]))
    target = full[np.arange(6), labels]
    assert float(layer.step.numpy()) == 4.0
    assert np.all(target < plain[np.arange(6), labels] - 1.0)     # the margin is in
    others = np.ones_like(full, dtype=bool)
    others[np.arange(6), labels] = False
    np.testing.assert_allclose(full[others], plain[others], atol=1e-4)
    if head == "cosface":   # a warmed-up CosFace is exactly CosFace (same kernel init seed aside)
        np.testing.assert_allclose(target, plain[np.arange(6), labels] - 64.0 * m, atol=1e-3)
    assert reference.shape == full.shape


@pytest.mark.parametrize("model, loss, pretrained, m", [
    ("arcface_scratch", "arcface", False, 0.5), ("arcface_pretrained", "arcface", True, 0.5),
    ("cosface_scratch", "cosface", False, 0.4), ("cosface_pretrained", "cosface", True, 0.4)])
def test_four_models_config(tmp_path, model, loss, pretrained, m):
    ctx = pipeline.for_model(pipeline.StudyContext(profile="ci", runs_dir=tmp_path), model)
    config = pipeline.study.train_config(ctx, pipeline.ARCH)
    assert (config.loss, config.margin["s"], config.margin["m"]) == (loss, 64.0, m)
    assert config.margin["warmup_epochs"] == cfg.PS_FACE_MARGIN_WARMUP_EPOCHS["ci"]
    assert (config.init_weights is not None) == pretrained
    assert "NARROWED" in pipeline.narrowing_text(ctx)


def test_paper_profile_is_iresnet100_at_112():
    ctx = pipeline.StudyContext(profile="paper")
    assert pipeline.narrowing_text(ctx).startswith("IResNet-100 (blocks 3/13/30/3")


def test_bad_model_name_is_exit_2(tmp_path, capsys):
    from reproduce.ps_face import train

    code = train.main(["--profile", "ci", "--runs", str(tmp_path / "r"), "--results",
                       str(tmp_path / "res"), "--models", "vgg"])
    assert code == 2 and "--models: unknown model 'vgg'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ci_study(tmp_path_factory):
    from reproduce.ps_face import all as ps_all

    work = tmp_path_factory.mktemp("ps_face_ci")
    results = work / "results"
    code = ps_all.main(["--profile", "ci", "--runs", str(work / "runs"), "--results", str(results)])
    assert code == 0
    return work, results


def test_ci_table_columns_and_rows(ci_study):
    _, results = ci_study
    table = pd.read_csv(results / "table.csv")
    for column in ("row", "source", "accuracy", "accuracy_sd", "precision_macro", "recall_macro",
                   "f1_macro", "paper_accuracy",
                   *(f"{k}_{g}" for g in pipeline.CLASS_NAMES for k in ("precision", "recall", "f1"))):
        assert column in table.columns, column
    reproduced = table[table["row"].str.endswith("(reproduced)")]
    assert len(reproduced) == 4 and reproduced["accuracy_sd"].notna().all()
    assert reproduced["source"].str.contains("PHANTOM").all()
    readers = table[table["row"].str.endswith("(simulated)")]
    assert len(readers) == 5 and readers["source"].str.contains("SIMULATED").all()
    assert (readers["accuracy"] <= 0.85).all()
    markdown = (results / "table.md").read_text(encoding="utf-8")
    assert "PHANTOM" in markdown and "NARROWED" in markdown and "leak" in markdown
    folds = pd.read_csv(results / "table_folds.csv")
    assert sorted(folds.groupby("model").size().unique()) == [5]
    confusion = pd.read_csv(results / "confusion.csv")
    assert len(confusion) == 16
    n_test = sum(confusion[f"called_{g}"].sum() for g in pipeline.CLASS_NAMES)
    assert n_test == 4 * 53   # every test photo of every model, once (ci phantom: 53 photos)


def test_ci_round_trip_gives_identical_embeddings(ci_study):
    _, results = ci_study
    frame = pd.read_csv(results / "roundtrip.csv")
    assert len(frame) == 20 and frame["identical"].all() and (frame["max_abs_difference"] == 0).all()


def test_ci_runs_record_margin_cure_and_pretraining(ci_study):
    work, _ = ci_study
    base = work / "runs" / "ps_face" / "ci"
    pretrain_record = json.loads((base / "pretrain" / "iresnet100" / "run.json").read_text())
    assert "PHANTOM" in pretrain_record["pretraining"]
    assert pretrain_record["config"]["margin"]["warmup_epochs"] >= 1
    for model, (_, pretrained) in cfg.PS_FACE_MODELS.items():
        record = json.loads((base / model / "iresnet100" / "fold0" / "run.json").read_text())
        assert record["config"]["margin"]["warmup_epochs"] >= 1
        init = record["config"].get("init_weights")
        assert (init is not None and Path(init).name == "backbone.keras") == pretrained
        log = pd.read_csv(base / model / "iresnet100" / "fold0" / "log.csv")
        assert np.isfinite(log["loss"]).all() and np.isfinite(log["val_loss"]).all()


def test_ci_phantom_matches_committed_hashes():
    from tests import phantom_hashes_ps_face

    found = phantom_hashes_ps_face.listings()
    expected = phantom_hashes_ps_face.LISTINGS["ci"].read_text(encoding="utf-8")
    assert found["ci"] == expected, ("the ps_face ci phantom changed; if meant, run "
                                     "python -m tests.phantom_hashes_ps_face --write")
