"""The CNS study (Qi 2025) at the ci profile: folds that never split a patient, honest
selection that never reads the test fold, the test-fold monitor, patient-level aggregation,
and the regression against tests/golden/cns_ci (tests/cns_golden.py says what and why).

One ci study is trained once per session (6 tiny runs, about 2 minutes on 2 cores).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from data_prep import phantom
from reproduce import stats, study
from reproduce.cns import pipeline, tables
from tests import cns_golden

GOLDEN = cns_golden.GOLDEN


@pytest.fixture(scope="module")
def cns_ci(tmp_path_factory):
    work = tmp_path_factory.mktemp("cns_ci")
    ctx = cns_golden.context(work / "runs", work / "results")
    tables.write_outputs(ctx, ["accuracy", "per_class", "selection"])
    return ctx


@pytest.fixture(scope="module")
def ci_manifest(tmp_path_factory):
    from data_prep.manifest import load_manifest

    out = tmp_path_factory.mktemp("cns_phantom")
    phantom.generate_phantom("cns", "ci", out, seed=0, force=True)
    return load_manifest(out / "manifest.csv", labels=pipeline.LABELS)


# ----------------------------------------------------------------------------- folds


@pytest.mark.parametrize("cv", pipeline.CV_CHOICES)
@pytest.mark.parametrize("task", pipeline.TASK_NAMES)
def test_no_fold_of_any_cv_kind_puts_a_patient_on_two_sides(ci_manifest, cv, task):
    from data_prep.splits import iter_folds

    ctx = pipeline.StudyContext(profile="ci", cv=cv)
    splits, info = pipeline.cv_splits(ctx, ci_manifest)
    kept = study.task_rows(pipeline.TASKS[task], ci_manifest)
    splits = splits[splits["image_path"].isin(set(kept["image_path"]))]
    tested = set()
    for fold in iter_folds(splits):
        sides = [set(part["case_id"]) for part in (fold.train, fold.val, fold.test)]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2]), fold.fold
        if not sides[2]:  # a normal patient's lopo fold: study.folds skips it for 4class
            assert (task, cv) == ("4class", "lopo"), fold.fold
            continue
        tested |= sides[2]
    assert tested == set(kept["case_id"])  # every patient is tested exactly once over the folds
    if cv == "lopo":  # one fold per patient of the study; the task's own: those it tests
        assert splits["fold"].nunique() == ci_manifest["case_id"].nunique()
        tested_folds = splits.loc[splits["split"] == "test", "fold"].nunique()
        assert tested_folds == kept["case_id"].nunique()
    if cv == "loco":
        assert splits["fold"].nunique() == ci_manifest["center"].nunique()
    assert info["validation"].startswith("from each fold's training cases")


def test_default_profile_uses_grouped_five_fold_and_says_so():
    ctx = pipeline.StudyContext(profile="default")
    assert pipeline.K_FOLDS["default"] == 5 and ctx.cv == "kfold"
    assert "grouped 5-fold" in pipeline.cv_text(ctx)
    assert any("grouped 5-fold" in line for line in pipeline.common_notes(ctx))


# ----------------------------------------------------------------------------- selection


def test_test_fold_epoch_is_the_first_best_test_accuracy():
    monitor = pd.DataFrame({"epoch": [1, 1, 2, 2, 3, 3], "index": [0, 1] * 3,
                            "p_0": [0.9, 0.2, 0.9, 0.9, 0.1, 0.1], "p_1": [0.1, 0.8, 0.1, 0.1, 0.9, 0.9]})
    accuracy = pipeline.test_accuracy_by_epoch(monitor, np.array([0, 1]))
    assert accuracy.to_dict() == {1: 1.0, 2: 0.5, 3: 0.5}
    assert pipeline.test_fold_epoch(accuracy) == 1
    assert pipeline.test_fold_epoch(pd.Series({1: 0.5, 2: 0.75, 3: 0.75})) == 2


def test_honest_selection_never_reads_the_test_fold(tmp_path):
    """The same run twice, once with every test-fold label corrupted: the honest selection,
    the training log and the selected model's outputs are identical (the test fold enters
    only as the label-free monitor); under test-fold selection the labels do choose."""
    import keras

    from reproduce import config as cfg
    from reproduce import train
    from reproduce.input_pipeline import ImageTable

    rng = np.random.default_rng(0)
    paths = []
    for i in range(36):
        image = (rng.random((48, 48)) * 60 + (i % 3) * 60).astype(np.uint8)
        path = tmp_path / f"f{i}.png"
        keras.utils.save_img(path, image[..., None], scale=False)
        paths.append(str(path))
    labels = np.arange(36) % 3
    train_table = ImageTable(tuple(paths[:24]), labels[:24])
    val_table = ImageTable(tuple(paths[24:30]), labels[24:30])
    test_true = ImageTable(tuple(paths[30:]), labels[30:])
    test_corrupt = ImageTable(tuple(paths[30:]), (labels[30:] + 1) % 3)
    config = cfg.make_config("cns", "resnet34", "ci", epoch_grid=(3,))
    names = ("a", "b", "c")
    records = []
    for name, monitor in (("true", test_true), ("corrupt", test_corrupt)):
        result = train.train_run(config, train_table, val_table, names, tmp_path / name,
                                 verbose=0, monitor_table=monitor)
        log = pd.read_csv(tmp_path / name / "log.csv").drop(
            columns=["seconds", "images_per_s", "checkpoint_seconds"])
        selection = json.loads((tmp_path / name / "selection.json").read_text())
        selection.pop("model_file")   # size + sha256 of the .keras, whose zip records its save time
        records.append((result.selected_epoch, log, selection,
                        train.read_monitor(tmp_path / name)))
    assert records[0][0] == records[1][0]
    pd.testing.assert_frame_equal(records[0][1], records[1][1])
    assert records[0][2] == records[1][2]
    pd.testing.assert_frame_equal(records[0][3], records[1][3])  # predictions, label-free
    # test-fold selection reads the labels: true and corrupted labels rank the epochs apart
    accuracy_true = pipeline.test_accuracy_by_epoch(records[0][3], test_true.labels)
    accuracy_corrupt = pipeline.test_accuracy_by_epoch(records[0][3], test_corrupt.labels)
    assert not np.allclose(accuracy_true.to_numpy(), accuracy_corrupt.to_numpy())


def test_monitor_at_the_honest_epoch_is_the_selected_models_prediction(cns_ci):
    from reproduce.train import read_monitor

    ctx = pipeline.task_context(cns_ci, "5class")
    frame = study.predictions(ctx, pipeline.ARCH)
    order = pipeline.fold_test_paths(ctx)
    columns = [f"p_{c}" for c in ctx.spec.class_names]
    for fold in study.folds(ctx):
        epoch = study.selection_record(ctx, pipeline.ARCH, fold)["epoch"]
        monitor = read_monitor(study.run_dir(ctx, pipeline.ARCH, fold))
        at = monitor[monitor["epoch"] == epoch].sort_values("index")
        rows = frame[(frame["fold"] == fold) & (frame["split"] == "test")].set_index("image_path")
        expected = rows.loc[order[fold], columns].to_numpy()
        np.testing.assert_allclose(at[[f"p_{k}" for k in range(len(columns))]].to_numpy(),
                                   expected, atol=2e-5)


def test_both_selections_come_from_the_same_runs(cns_ci):
    ctx = pipeline.task_context(cns_ci, "4class")
    honest, per_fold = pipeline.selected_test_rows(ctx)
    peeked, _ = pipeline.selected_test_rows(dataclasses.replace(ctx, select_on="test_fold"))
    assert sorted(honest["image_path"]) == sorted(peeked["image_path"])
    assert set(peeked["label"]) <= set(pipeline.ANOMALIES)  # the 4-class task has no normal
    # the authors' epoch is at least as accurate on the test fold as the honest one, per fold
    assert (per_fold["test_accuracy_test_fold_epoch"] >= per_fold["test_accuracy_honest_epoch"]).all()


# ----------------------------------------------------------------------------- aggregation


def test_patient_level_mean_softmax_and_majority_vote():
    frame = pd.DataFrame({"case_id": ["a", "a", "a", "b"], "y_true": [0, 0, 0, 1],
                          "p_x": [0.4, 0.45, 0.9, 0.2], "p_y": [0.6, 0.55, 0.1, 0.8]})
    mean = pipeline.patient_level(frame, ("x", "y"), "mean")
    majority = pipeline.patient_level(frame, ("x", "y"), "majority")
    assert mean.set_index("case_id")["predicted"].to_dict() == {"a": 0, "b": 1}   # mean 0.583
    assert majority.set_index("case_id")["predicted"].to_dict() == {"a": 1, "b": 1}  # 2 of 3 votes
    np.testing.assert_allclose(mean["p_x"], [0.5833333333, 0.2])


def test_class_stratified_bootstrap_keeps_every_class_count():
    codes = np.array([0] * 5 + [1] * 3 + [2] * 2)
    indices = stats.class_stratified_bootstrap_indices(codes, n_boot=50, seed=1)
    assert indices.shape == (50, 10)
    for row in indices:
        assert np.bincount(codes[row], minlength=3).tolist() == [5, 3, 2]


def test_gestational_periods_split_at_20_and_28_weeks():
    weeks = pd.Series([12.0, 19.9, 20.0, 28.0, 28.1, np.nan])
    masks = dict(tables.period_masks(weeks))
    assert masks["<20 weeks"].tolist() == [True, True, False, False, False, False]
    assert masks["20-28 weeks"].tolist() == [False, False, True, True, False, False]
    assert masks[">28 weeks"].tolist() == [False, False, False, False, True, False]


# ----------------------------------------------------------------------------- golden


def test_ci_study_matches_the_golden(cns_ci):
    golden = json.loads((GOLDEN / "data.json").read_text())
    fresh = cns_golden.snapshot(cns_ci)["data"]
    assert fresh["splits_sha256"] == golden["splits_sha256"]
    assert fresh["manifest_sha256"] == golden["manifest_sha256"]
    for task in cns_golden.TASKS:
        assert fresh["tasks"][task]["counts"] == golden["tasks"][task]["counts"], task
        for fold, loss in golden["tasks"][task]["epoch1_loss"].items():
            assert fresh["tasks"][task]["epoch1_loss"][fold] == pytest.approx(
                loss, rel=cns_golden.EPOCH1_RTOL), (task, fold)


@pytest.mark.parametrize("task", cns_golden.TASKS)
def test_tables_recomputed_from_the_golden_predictions_are_the_golden_tables(task):
    predictions = pd.read_csv(GOLDEN / f"predictions_{task}.csv", dtype={"case_id": str})
    test = predictions[predictions["split"] == "test"].reset_index(drop=True)
    names = pipeline.TASKS[task].class_names
    n_boot = pipeline.N_BOOT["ci"]
    accuracy = pd.DataFrame(tables.accuracy_rows(task, test, names, n_boot, 0))
    golden = pd.read_csv(GOLDEN / "accuracy.csv")
    golden = golden[golden["task"] == task].reset_index(drop=True)
    for column in ("value", "ci_lo", "ci_hi", "fold_mean", "fold_sd"):
        np.testing.assert_allclose(accuracy[column], golden[column], atol=1e-9, err_msg=column)
    per_class = pd.DataFrame(tables.per_class_rows(task, test, names, n_boot, 0))
    golden_pc = pd.read_csv(GOLDEN / f"per_class_{task}.csv")
    for column in ("precision", "recall", "f1", "auroc", "auroc_lo", "auroc_hi"):
        np.testing.assert_allclose(per_class[column], golden_pc[column], atol=1e-9, err_msg=column)
    # the authors' test-fold selection, recomputed from the golden's monitored predictions
    monitor = pd.read_csv(GOLDEN / f"monitor_{task}.csv")
    by_path = test.set_index("image_path")
    replaced = []
    for fold, part in monitor.groupby("fold"):
        first = part[part["epoch"] == part["epoch"].min()].sort_values("index")
        y_true = by_path.loc[first["image_path"], "y_true"].to_numpy()
        epoch = pipeline.test_fold_epoch(pipeline.test_accuracy_by_epoch(part.drop(columns=["image_path", "fold"]), y_true))
        chosen = part[part["epoch"] == epoch].sort_values("index")
        rows = by_path.loc[chosen["image_path"]].reset_index()
        rows[[f"p_{c}" for c in names]] = chosen[[f"p_{k}" for k in range(len(names))]].to_numpy()
        replaced.append(rows)
    peeked = tables.accuracy_point_values(pd.concat(replaced, ignore_index=True), names)
    selection = pd.read_csv(GOLDEN / "selection.csv")
    selection = selection[selection["task"] == task].set_index("metric")
    for metric, value in peeked.items():
        assert value == pytest.approx(selection.loc[metric, "test_fold_selection"], abs=1e-9), metric
