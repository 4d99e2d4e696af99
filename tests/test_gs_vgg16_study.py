"""Hong 2021 (gs_vgg16) on the shared pipeline: five folds 3:1:1 on the child, Table 2's
metrics, simulated paediatricians, the face transform, and the ci study end to end (phantom
-> MTCNN alignment with the drawn landmarks as fallback -> five trainings -> Table 2, Figure 4,
Figure 3 with localisation), in about a minute."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep import phantom
from data_prep.errors import InputError
from reproduce import study
from reproduce.gs_vgg16 import pipeline, tables
from reproduce.paper_values import HONG2021_READERS


@pytest.fixture(scope="module")
def ci_manifest(tmp_path_factory):
    from data_prep.manifest import load_manifest

    out = tmp_path_factory.mktemp("face_phantom")
    phantom.generate_phantom("gs_vgg16", "ci", out, seed=0, force=True)
    return load_manifest(out / "manifest.csv", labels=pipeline.CLASS_NAMES)


def test_five_folds_3_1_1_on_the_child_with_classes_equal(ci_manifest):
    from data_prep.splits import iter_folds

    splits, info = pipeline.five_fold_splits(pipeline.StudyContext(profile="ci"), ci_manifest)
    label_of = dict(zip(ci_manifest["case_id"], ci_manifest["label"]))
    tested = []
    for fold in iter_folds(splits):
        sides = [set(part["case_id"]) for part in (fold.train, fold.val, fold.test)]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        sizes = [len(side) for side in sides]
        assert abs(sizes[0] / sum(sizes) - 0.6) <= 0.1 and abs(sizes[2] / sum(sizes) - 0.2) <= 0.05
        counts = pd.Series([label_of[c] for c in sides[2]]).value_counts()
        assert abs(counts.get("syndrome", 0) - counts.get("healthy", 0)) <= 1
        tested += sides[2]
    assert sorted(tested) == sorted(ci_manifest["case_id"])   # every child tested once
    assert splits["fold"].nunique() == 5 and info["validation"].startswith("from each fold")


@pytest.mark.parametrize("y_true, calls, expected", [
    ([1, 1, 0, 0], [1, 0, 0, 1], dict(accuracy=0.5, sensitivity=0.5, specificity=0.5,
                                       precision=0.5, f1=0.5)),
    ([1, 1, 1, 0], [1, 1, 1, 0], dict(accuracy=1.0, sensitivity=1.0, specificity=1.0,
                                       precision=1.0, f1=1.0)),
    ([1, 0, 0, 0], [0, 1, 0, 0], dict(accuracy=0.5, sensitivity=0.0, specificity=2 / 3,
                                       precision=0.0, f1=0.0)),
])
def test_call_rates_table(y_true, calls, expected):
    assert pipeline.call_rates(np.array(y_true), np.array(calls)) == pytest.approx(expected)


def test_simulated_paediatricians_draw_hongs_rates():
    n = 4000
    test = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "y_true": np.arange(n) % 2})
    readers = tables.simulated_readers(test, seed=0)
    rates = tables.reader_rates(readers, test).set_index("reader")
    for reader, paper in HONG2021_READERS.items():
        assert rates.loc[reader, "sensitivity"] == pytest.approx(paper["sensitivity"], abs=0.03)
        assert rates.loc[reader, "specificity"] == pytest.approx(paper["specificity"], abs=0.03)
    assert readers.equals(tables.simulated_readers(test, seed=0))   # seeded


def test_reader_csv_errors_name_row_and_column(tmp_path):
    test = pd.DataFrame({"case_id": ["a", "b"], "y_true": [1, 0]})
    path = tmp_path / "readers.csv"
    path.write_text("case_id,reader,call\na,SP 1,1\nb,SP 1,2\n")
    with pytest.raises(InputError, match="row 2, column 'call'"):
        tables.user_readers(path, test)
    path.write_text("case_id,reader,call\na,SP 1,1\nzz,SP 1,0\n")
    with pytest.raises(InputError, match="row 2, column 'case_id'.*not a test child"):
        tables.user_readers(path, test)


def test_face_transform_rotates_crops_flips_in_training_and_resizes_in_evaluation():
    import tensorflow as tf

    from reproduce import input_pipeline as pipe

    gray = tf.constant(np.tile(np.arange(64, dtype=np.float32), (64, 1)) * 4.0)
    spec = pipe.PipelineSpec(size_wh=(32, 32), channels=3, num_classes=2, transform="face",
                             rrc_scale=(0.8, 1.0))
    evaluated = pipe.eval_transform(gray, spec).numpy()
    assert evaluated.shape == (32, 32, 3) and 0 <= evaluated.min() and evaluated.max() <= 1
    np.testing.assert_allclose(evaluated[..., 0], evaluated[..., 2])
    rotated = pipe.random_rotation(gray, tf.constant([1, 2], tf.int64), 10.0).numpy()
    assert rotated.shape == (64, 64) and not np.array_equal(rotated, gray.numpy())
    same = pipe.random_rotation(gray, tf.constant([1, 2], tf.int64), 10.0).numpy()
    np.testing.assert_array_equal(rotated, same)   # a pure function of the seed
    assert np.abs(pipe.random_rotation(gray, tf.constant([1, 2], tf.int64), 0.0).numpy()
                  - gray.numpy()).max() < 1e-3


@pytest.fixture(scope="module")
def ci_study(tmp_path_factory):
    from reproduce.gs_vgg16 import all as gs_all

    work = tmp_path_factory.mktemp("gs_ci")
    code = gs_all.main(["--profile", "ci", "--runs", str(work / "runs"), "--results",
                        str(work / "results")])
    assert code == 0
    return work


def test_ci_study_end_to_end(ci_study):
    results = ci_study / "results"
    for name in ("table2.csv", "table2.md", "table2_folds.csv", "figure4.png", "figure3.png",
                 "gradcam_localisation.csv", "gradcam_localisation.md", "run.json",
                 "timings.csv"):
        assert (results / name).is_file(), name
    table = pd.read_csv(results / "table2.csv")
    assert list(table["row"][:2]) == ["VGG-16 (reproduced)", "VGG-16 (Hong 2021)"]
    assert table["row"].str.endswith("(simulated)").sum() == 5
    folds = pd.read_csv(results / "table2_folds.csv")
    assert len(folds) == 5 and folds["n"].sum() == 32
    reproduced = table.iloc[0]
    assert reproduced["accuracy"] == pytest.approx(folds["accuracy"].mean())
    assert reproduced["accuracy_sd"] == pytest.approx(folds["accuracy"].std(ddof=1))
    for name in ("table2.md", "gradcam_localisation.md"):
        text = (results / name).read_text()
        assert "PHANTOM (synthetic) data, ci profile -- not the paper's data" in text
    assert "SIMULATED" in (results / "table2.md").read_text()
    localisation = pd.read_csv(results / "gradcam_localisation.csv")
    assert len(localisation) == 16 and localisation["label"].ne("syndrome").all()  # per syndrome
    record = json.loads((results / "run.json").read_text())
    assert record["config"]["training"]["optimizer"] == "rmsprop"
    detection = pd.read_csv(results / "face_detection.csv").set_index("group")
    assert detection.loc["all photos", "photos"] == 32
    assert (detection.loc[["healthy", "syndrome"], "photos"] == 16).all()
    per_syndrome = detection[detection["kind"] == "syndrome"]
    assert per_syndrome["photos"].sum() == 16
    assert (detection["mtcnn_found"] + detection["landmarks_fallback"]
            + detection["not_aligned"] == detection["photos"]).all()
    assert "Fisher's exact test" in (results / "face_detection.md").read_text()
    headline = pd.read_csv(results / "headline.csv").set_index("model").loc[pipeline.ARCH]
    assert headline["auc"] == pytest.approx(folds["auc"].mean())
    assert headline["auc_lo"] <= headline["auc"] <= headline["auc_hi"]
    correct = localisation[localisation["correct"].astype(bool)]
    if len(correct):
        assert headline["pointing_game_correct"] == pytest.approx(
            correct["pointing_game_hit"].astype(bool).mean())
    assert json.loads((results / "run.json").read_text())["outputs"].get("headline")


def test_ci_study_aligned_every_face_and_left_no_planted_phi(ci_study):
    data = ci_study / "runs" / "gs_vgg16" / "ci" / "data"
    detections = pd.read_csv(data / "deidentified" / "detections.csv")
    assert detections["status"].isin(["ok", "landmarks_fallback"]).all()
    truth = json.loads((data / "phantom_raw" / "phi_truth.json").read_text())
    planted = set()

    def collect(value):
        if isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)
        elif isinstance(value, str) and len(value) >= 5:
            planted.add(value)

    collect(truth)
    assert planted
    for path in (data / "deidentified").rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            found = [value for value in planted if value.encode() in blob]
            assert not found, (path, found[:3])
