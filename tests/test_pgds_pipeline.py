"""reproduce.pgds.pipeline and readers on the `ci` profile (models trained once per session by
the `pgds_ci_context` fixture of conftest.py): leak-free prepared data, de-identified training
frames, predictions, thresholds, model reuse, run.json refusal, and reader calls."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep.errors import InputError
from reproduce.pgds import pipeline, readers


# ----------------------------------------------------------------------------- context / CLI


@pytest.mark.parametrize("argv, expected", [
    ([], dict(profile="default", seed=0, runs_dir=Path("runs"), results_dir=Path("results/pgds"),
              manifest=None, readers=None, threshold_rule="max_f1", force=False)),
    (["--profile", "ci", "--seed", "3", "--threshold-rule", "youden", "--force",
      "--runs", "/tmp/r", "--results", "/tmp/res", "--manifest", "m.csv", "--readers", "r.csv"],
     dict(profile="ci", seed=3, runs_dir=Path("/tmp/r"), results_dir=Path("/tmp/res"),
          manifest=Path("m.csv"), readers=Path("r.csv"), threshold_rule="youden", force=True)),
])
def test_context_from_args(argv, expected):
    import argparse

    parser = argparse.ArgumentParser()
    pipeline.add_common_args(parser)
    ctx = pipeline.context_from_args(parser.parse_args(argv))
    assert {field: getattr(ctx, field) for field in expected} == expected
    assert ctx.is_phantom == (expected["manifest"] is None)


@pytest.mark.parametrize("argv", [["--profile", "huge"], ["--threshold-rule", "median"]])
def test_common_args_reject_unknown_choices(argv):
    import argparse

    parser = argparse.ArgumentParser()
    pipeline.add_common_args(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(argv)


def test_results_label_says_phantom_or_user_data():
    assert "PHANTOM" in pipeline.results_label(pipeline.StudyContext(profile="ci"))
    assert "not the paper's data" in pipeline.results_label(pipeline.StudyContext(profile="ci"))
    user = pipeline.StudyContext(profile="ci", manifest=Path("my/manifest.csv"))
    assert pipeline.results_label(user) == "user data: my/manifest.csv"


# ----------------------------------------------------------------------------- prepared data


def test_prepared_data_is_split_by_case_and_audited(pgds_ci_context):
    from data_prep.audit import audit

    manifest, splits = pipeline.prepared_data(pgds_ci_context)
    assert list(splits.columns[:3]) == ["image_path", "case_id", "split"]
    assert sorted(splits["image_path"]) == sorted(manifest["image_path"])
    assert splits.groupby("case_id")["split"].nunique().max() == 1  # no case in two splits
    assert set(splits["split"]) == {"train", "val", "test"}
    # every subtype reaches the test split (stratified by subtype)
    test_subtypes = set(manifest.set_index("image_path").loc[
        splits.loc[splits["split"] == "test", "image_path"], "subtype"])
    assert test_subtypes == {"normal", *pipeline.SUBTYPES}
    report = audit(pipeline.manifest_path(pgds_ci_context), pipeline.splits_path(pgds_ci_context),
                   progress=False)
    assert report.case_leaks == [] and report.exact_pairs == []
    record = json.loads((pipeline.data_dir(pgds_ci_context) / "prepared.json").read_text())
    assert record["stratify"] == "subtype" and record["seed"] == 0
    assert record["audit_near_duplicates"] == len(report.near_pairs)


def test_training_frames_are_the_deidentified_copy(pgds_ci_context):
    """The burned-in fake PHI of the raw phantom is blanked in what the models see, and the
    frames are cropped to the scan sector with their truth masks (Tang 2023 s2.2)."""
    from data_prep.deidentify import REPORT_CSV
    from data_prep.io import read_grayscale

    manifest, _ = pipeline.prepared_data(pgds_ci_context)
    assert pipeline.manifest_path(pgds_ci_context).parent.name == "deidentified"
    raw_root = pipeline.data_dir(pgds_ci_context) / "phantom_raw"
    deid_root = pipeline.manifest_path(pgds_ci_context).parent
    report = pd.read_csv(deid_root / REPORT_CSV).set_index("image_path")
    checked = 0
    for row in manifest.head(6).itertuples():
        phi = read_grayscale(raw_root / row.phi_mask_path) > 0
        raw = read_grayscale(raw_root / row.image_path)
        clean = read_grayscale(row.abs_path)
        x0, y0, x1, y1 = (int(report.loc[row.image_path, key])
                          for key in ("sector_x0", "sector_y0", "sector_x1", "sector_y1"))
        assert raw[phi].max() > 0                  # the raw frame carries the fake PHI ...
        assert clean.shape == (y1 - y0, x1 - x0) and clean.shape < raw.shape   # ... cropped
        assert clean[phi[y0:y1, x0:x1]].max(initial=0) == 0   # ... and blanked
        mask = read_grayscale(deid_root / row.mask_path) if row.mask_path else None
        if mask is not None:
            assert mask.shape == clean.shape
        checked += 1
    assert checked == 6


def test_predictions_one_row_per_original_image(pgds_ci_context):
    from data_prep.io import read_grayscale

    manifest, splits = pipeline.prepared_data(pgds_ci_context)
    for arch in pipeline.ARCHITECTURES:
        frame = pipeline.predictions(pgds_ci_context, arch)
        assert tuple(frame.columns) == pipeline.PREDICTION_COLUMNS
        assert list(frame["image_path"]) == list(manifest["image_path"])
        assert frame["image_path"].is_unique
        assert frame["y_true"].tolist() == (manifest["label"] == "genetic_disease").astype(int).tolist()
        assert frame["score"].between(0.0, 1.0).all()
        split_of = dict(zip(splits["image_path"], splits["split"]))
        assert frame["split"].tolist() == [split_of[p] for p in frame["image_path"]]
        diseased = frame[frame["y_true"] == 1]
        assert all(Path(p).is_file() for p in diseased["mask_path"])
        for path in frame.loc[frame["y_true"] == 0, "mask_path"]:  # no abnormal region
            assert path == "" or read_grayscale(path).max() == 0
        assert all(read_grayscale(path).max() > 0 for path in diseased["mask_path"])
        assert frame["gestational_week"].between(11, 27).all()


def test_model_inputs_are_the_training_preprocessing(pgds_ci_context):
    from data_prep.preprocess import load_model_input

    manifest, _ = pipeline.prepared_data(pgds_ci_context)
    paths = list(manifest["abs_path"].head(4))
    inputs = pipeline.model_inputs(pgds_ci_context, "pgds_resnet", paths)
    assert inputs.shape == (4, 64, 70, 1) and inputs.dtype == np.float32
    assert inputs.min() >= 0.0 and inputs.max() <= 1.0
    reference = np.stack([load_model_input(p, size_wh=(70, 64)) for p in paths])
    assert np.abs(inputs - reference).max() < 0.02  # tf.data vs cv2 resize rounding


def test_models_are_reused_not_retrained(pgds_ci_context):
    path = pipeline.model_path(pgds_ci_context, "vgg16")
    before = path.stat().st_mtime_ns
    assert pipeline.model_path(pgds_ci_context, "vgg16") == path
    assert path.stat().st_mtime_ns == before
    assert path == pgds_ci_context.runs_dir / "pgds" / "ci" / "vgg16" / "fold0" / "selected.keras"
    model = pipeline.load_model(pgds_ci_context, "vgg16")
    assert tuple(model.input_shape[1:]) == pipeline.model_input_shape(pgds_ci_context, "vgg16")


def test_threshold_chosen_on_training_split_and_recorded(pgds_ci_context):
    from reproduce import stats

    frame = pipeline.predictions(pgds_ci_context, "pgds_resnet")
    train = frame[frame["split"] == "train"]
    expected = stats.threshold_max_f1(train["y_true"], train["score"])
    assert pipeline.operating_threshold(pgds_ci_context, "pgds_resnet") == pytest.approx(expected)
    record = json.loads((pipeline.run_dir(pgds_ci_context, "pgds_resnet") / "threshold.json").read_text())
    assert record["rule"] == "max_f1" and record["threshold"] == pytest.approx(expected)
    youden = dataclasses.replace(pgds_ci_context, threshold_rule="youden")
    assert pipeline.operating_threshold(youden, "pgds_resnet") == pytest.approx(
        stats.threshold_youden(train["y_true"], train["score"]))
    pipeline.operating_threshold(pgds_ci_context, "pgds_resnet")  # leave max_f1 recorded


def test_model_from_another_config_is_refused_unless_force(pgds_ci_context, tmp_path):
    """A run folder whose run.json holds another training config is never silently reused."""
    runs = tmp_path / "runs"
    shutil.copytree(pgds_ci_context.runs_dir, runs, ignore=shutil.ignore_patterns(
        "resnet34", "vgg16", "vgg19", "predictions", "checkpoints", "snapshots"))
    ctx = dataclasses.replace(pgds_ci_context, runs_dir=runs, results_dir=tmp_path / "results")
    record_path = pipeline.run_dir(ctx, "pgds_resnet") / "run.json"
    record = json.loads(record_path.read_text())
    record["config"]["width"] = 99
    record_path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="another training config.*--force"):
        pipeline.model_path(ctx, "pgds_resnet")


def test_results_folder_refuses_another_config(pgds_ci_context, tmp_path):
    ctx = dataclasses.replace(pgds_ci_context, results_dir=tmp_path / "results")
    table = pd.DataFrame({"model": ["x"], "value": [1.0]})
    csv_path, md_path = pipeline.write_table(ctx, "demo", table, "# demo")
    assert csv_path.read_text().startswith("model,value") and md_path.read_text() == "# demo\n"
    run = json.loads((ctx.results_dir / "run.json").read_text())
    assert run["config"]["profile"] == "ci" and "demo" in run["outputs"]
    assert run["manifest_sha256"] and run["versions"]["python"]
    other = dataclasses.replace(ctx, threshold_rule="youden")
    with pytest.raises(InputError, match="another config"):
        pipeline.write_table(other, "demo", table, "# demo")
    pipeline.write_table(dataclasses.replace(other, force=True), "demo", table, "# demo")
    assert json.loads((ctx.results_dir / "run.json").read_text())["config"]["threshold_rule"] == "youden"
    assert sorted(p.name for p in ctx.results_dir.iterdir()) == ["demo.csv", "demo.md", "run.json"]


def test_all_refuses_another_configs_results_before_training(tmp_path, capsys):
    """`pgds all` stops at once (exit 2, nothing generated) when --results holds results of
    another config, instead of failing at the first table after the training."""
    from data_prep.provenance import write_run_json
    from reproduce.pgds import all as all_targets

    results = tmp_path / "results"
    write_run_json(results, {"study": "pgds", "profile": "paper"}, seed=0, force=True)
    runs = tmp_path / "runs"
    code = all_targets.main(["--profile", "ci", "--runs", str(runs), "--results", str(results)])
    assert code == 2
    assert "another config" in capsys.readouterr().err
    assert not (runs / "pgds" / "ci" / "data").exists()


# ----------------------------------------------------------------------------- readers


def test_simulated_readers_are_deterministic_and_labelled(pgds_ci_context):
    calls = pipeline.reader_calls(pgds_ci_context)
    again = pipeline.reader_calls(pgds_ci_context)
    pd.testing.assert_frame_equal(calls, again)
    assert tuple(calls.columns) == readers.CALL_COLUMNS
    assert calls["simulated"].all()
    assert sorted(calls["reader_level"].unique()) == sorted(pipeline.READER_LEVELS)
    frame = pipeline.predictions(pgds_ci_context, "pgds_resnet")
    test_images = set(frame.loc[frame["split"] == "test", "image_path"])
    assert set(calls["image_path"]) == test_images  # fewer than 100 test images: all of them
    assert len(calls) == 3 * len(test_images)
    other_seed = readers.simulate_readers(pipeline.reader_study_images(pgds_ci_context), seed=1)
    assert not other_seed["call"].equals(calls["call"])


def test_simulated_reader_rates_follow_the_paper():
    images = pd.DataFrame({"image_path": [f"i{i}" for i in range(40000)],
                           "case_id": [f"c{i}" for i in range(40000)],
                           "y_true": np.arange(40000) % 2})
    calls = readers.simulate_readers(images, seed=0)
    for level, (sensitivity, specificity) in readers.paper_rates().items():
        mine = calls[calls["reader_level"] == level]["call"].to_numpy()
        assert mine[images["y_true"] == 1].mean() == pytest.approx(sensitivity, abs=0.01)
        assert 1 - mine[images["y_true"] == 0].mean() == pytest.approx(specificity, abs=0.01)
    assert readers.paper_rates() == readers.PAPER_RATES


def test_reader_images_are_100_drawn_deterministically():
    test = pd.DataFrame({"image_path": [f"i{i}" for i in range(150)], "case_id": "c",
                         "y_true": 0})
    first = readers.draw_reader_images(test, 100, seed=0)
    assert len(first) == 100 and first["image_path"].is_unique
    assert first.equals(readers.draw_reader_images(test, 100, seed=0))
    assert not first.equals(readers.draw_reader_images(test, 100, seed=1))
    assert len(readers.draw_reader_images(test.head(30), 100, seed=0)) == 30


def _images() -> pd.DataFrame:
    return pd.DataFrame({"image_path": ["a/1.png", "a/2.png", "b/3.png", "c/4.png"],
                         "case_id": ["A", "A", "B", "C"],
                         "split": ["test", "test", "test", "train"]})


@pytest.mark.parametrize("text, expected", [
    ("image_path,reader,reader_level,call\na/1.png,R1,junior,1\nb/3.png,R1,junior,normal\n"
     "a/2.png,R2,Senior,genetic_disease\n",
     [("a/1.png", "R1", "junior", 1), ("b/3.png", "R1", "junior", 0), ("a/2.png", "R2", "senior", 1)]),
    ("case_id,reader,reader_level,call\nA,R1,attending,0\nC,R1,attending,1\n",  # C is train: dropped
     [("a/1.png", "R1", "attending", 0), ("a/2.png", "R1", "attending", 0)]),
])
def test_user_reader_csv_is_read(tmp_path, text, expected):
    path = tmp_path / "readers.csv"
    path.write_text(text)
    calls = readers.load_reader_csv(path, _images())
    got = list(calls[["image_path", "reader", "reader_level", "call"]].itertuples(index=False, name=None))
    assert got == expected
    assert not calls["simulated"].any()


@pytest.mark.parametrize("text, row, column, fragment", [
    ("image_path,reader,reader_level\na/1.png,R1,junior\n", None, "call", "missing required column"),
    ("reader,reader_level,call\nR1,junior,1\n", None, "case_id", "case_id or an image_path"),
    ("image_path,reader,reader_level,call\na/1.png,R1,junior,1\na/2.png,R1,junior,maybe\n", 2, "call",
     "must be 0, 1, normal or genetic_disease"),
    ("image_path,reader,reader_level,call\nzz.png,R1,junior,1\n", 1, "image_path", "not in the manifest"),
    ("case_id,reader,reader_level,call\nA,R1,junior,1\nQ,R1,junior,0\n", 2, "case_id", "not in the manifest"),
    ("image_path,reader,reader_level,call\na/1.png,,junior,1\n", 1, "reader", "empty value"),
    ("image_path,reader,reader_level,call\na/1.png,R1,junior,1\na/2.png,R1,senior,1\n", 2,
     "reader_level", "has reader_level 'junior'"),
    ("image_path,reader,reader_level,call\na/1.png,R1,junior,1\na/1.png,R1,junior,0\n", 2,
     "image_path", "second call"),
    ("image_path,case_id,reader,reader_level,call\na/1.png,B,R1,junior,1\n", 1, "case_id",
     "does not match"),
    ("image_path,reader,reader_level,call\nc/4.png,R1,junior,1\n", None, None, "held-out"),
])
def test_user_reader_csv_errors_name_row_and_column(tmp_path, text, row, column, fragment):
    path = tmp_path / "readers.csv"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        readers.load_reader_csv(path, _images())
    assert caught.value.file == str(path)
    assert caught.value.row == row and caught.value.column == column
    assert fragment in caught.value.message


def test_reader_calls_from_user_csv(pgds_ci_context, tmp_path):
    frame = pipeline.predictions(pgds_ci_context, "pgds_resnet")
    test = frame[frame["split"] == "test"]
    path = tmp_path / "readers.csv"
    pd.DataFrame({"image_path": test["image_path"], "reader": "Dr A", "reader_level": "senior",
                  "call": test["y_true"]}).to_csv(path, index=False)
    ctx = dataclasses.replace(pgds_ci_context, readers=path)
    calls = pipeline.reader_calls(ctx)
    assert len(calls) == len(test) and not calls["simulated"].any()
    assert calls["call"].tolist() == test["y_true"].tolist()


def test_user_manifest_skips_phantom_and_guards_models(pgds_ci_context, tmp_path):
    """--manifest M: no phantom or de-identification step; models trained on the same images
    are reused; a different manifest is refused (never a phantom model on user data)."""
    # force: accept the audit's near-duplicate flags, which the phantom's look-alike frames raise
    same = dataclasses.replace(pgds_ci_context, manifest=pipeline.manifest_path(pgds_ci_context),
                               results_dir=tmp_path / "results", force=True)
    assert pipeline.data_dir(same).name.startswith("user-")
    manifest, splits = pipeline.prepared_data(same)
    _, phantom_splits = pipeline.prepared_data(pgds_ci_context)
    assert splits["split"].tolist() == phantom_splits["split"].tolist()  # same rule, same seed
    assert not (pipeline.data_dir(same) / "deidentified").exists()
    before = pipeline.model_path(pgds_ci_context, "vgg19").stat().st_mtime_ns
    assert pipeline.model_path(same, "vgg19").stat().st_mtime_ns == before
    assert "user data" in pipeline.results_label(same)

    edited = pd.read_csv(pipeline.manifest_path(pgds_ci_context), dtype=str, keep_default_na=False)
    root = pipeline.manifest_path(pgds_ci_context).parent
    for column in ("image_path", "mask_path", "phi_mask_path"):
        edited[column] = [str(root / value) if value else "" for value in edited[column]]
    # Another data set with a sure near-duplicate across the split: a training row's frame
    # replaced by a test frame with one pixel changed (not identical, same perceptual hash).
    # (Relying on the phantom's look-alike frames alone made this depend on the phantom.)
    test_row = int(np.flatnonzero(phantom_splits["split"].to_numpy() == "test")[0])
    train_row = int(np.flatnonzero(phantom_splits["split"].to_numpy() == "train")[0])
    frame = cv2.imread(edited.loc[test_row, "image_path"], cv2.IMREAD_UNCHANGED)
    frame[0, 0] = 255 if frame[0, 0] < 255 else 254
    cv2.imwrite(str(tmp_path / "near_copy.png"), frame)
    edited.loc[train_row, "image_path"] = str(tmp_path / "near_copy.png")
    edited.loc[train_row, "mask_path"] = edited.loc[test_row, "mask_path"]
    other_path = tmp_path / "other.csv"
    edited.to_csv(other_path, index=False)
    other = dataclasses.replace(same, manifest=other_path)
    with pytest.raises(InputError, match="near-duplicate"):
        pipeline.prepared_data(dataclasses.replace(other, force=False))
    pipeline.prepared_data(other)
    # without --force the near-duplicate refusal comes first, so ask the guard itself: the
    # run folder's run.json records another manifest hash, so the model is not reused
    assert pipeline._run_matches(other, "vgg19") == (False, "manifest")
    assert pipeline._run_matches(same, "vgg19") == (True, "")
