"""`python -m reproduce gs_vgg16 predict`: every photo detected, aligned and scored (or listed
with its reason), outputs named by number only, bad input refused in one line with exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from reproduce.gs_vgg16 import predict

INPUT = (48, 48, 3)


def _save_model(folder: Path, num_classes: int = 2, class_names=("healthy", "syndrome")) -> Path:
    """An untrained narrow face VGG-16 with the run.json training writes beside it."""
    import keras

    from models.vgg_face import build_vgg16_face

    keras.utils.set_random_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    model = build_vgg16_face(INPUT, num_classes, width=2)
    weights = folder / "selected.keras"
    model.save(weights)
    record = {"class_names": list(class_names),
              "config": {"profile": "ci", "size_wh": [INPUT[1], INPUT[0]], "channels": 3,
                         "transform": "face", "architecture": "vgg16_face",
                         "model_options": {"width": 2}}}
    (folder / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return _save_model(tmp_path_factory.mktemp("model") / "fold0")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two real faces (scikit-image's astronaut and camera man: one face each), a wall with
    no face, and a nested folder holding a name that must not reach the crops."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    (folder / "family").mkdir()
    cv2.imwrite(str(folder / "astronaut.jpg"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "family" / "DOE_JANE_camera.png"), data.camera())
    cv2.imwrite(str(folder / "wall.png"), np.full((240, 240, 3), 128, np.uint8))
    (folder / "notes.png").write_text("name,date\nJane,2020\n", encoding="utf-8")  # no photo
    return folder


def test_every_photo_reported_faces_scored_names_kept_out(photos, weights, tmp_path, capsys):
    out = tmp_path / "out"
    code = predict.main(["--images", str(photos), "--weights", str(weights), "--out", str(out)])
    assert code == 1   # no face on the wall, notes.png no photo: findings, the others scored
    detections = pd.read_csv(out / "detections.csv", keep_default_na=False)
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(table.columns) == list(predict.PREDICTION_COLUMNS)
    status = dict(zip(table["photo"], table["status"]))
    assert status == {"astronaut.jpg": "ok", "family/DOE_JANE_camera.png": "ok",
                      "wall.png": "no_face", "notes.png": "unreadable"}
    reason = dict(zip(detections["photo"], detections["reason"]))["notes.png"]
    assert "not an image file" in reason and str(photos) not in reason
    assert list(detections["photo"]) == list(table["photo"])
    scored = table[table["status"] == "ok"]
    probabilities = scored[["p_healthy", "p_syndrome"]].astype(float).to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    expected_calls = np.where(probabilities[:, 1] >= 0.5, "syndrome", "healthy")
    assert list(scored["call"]) == list(expected_calls)
    wall = table[table["photo"] == "wall.png"].iloc[0]
    assert wall["call"] == "" and wall["overlay_path"] == "" and wall["p_syndrome"] == ""
    for rel in [*scored["aligned_path"], *scored["overlay_path"]]:
        assert (out / rel).is_file() and Path(rel).stem.isdigit()
    crop = cv2.imread(str(out / scored["aligned_path"].iloc[0]))
    assert crop.shape == (112, 112, 3)   # the ci profile's template (pipeline.ALIGNED_SIZE)
    # Photo names live in the two CSVs only.
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".csv":
            assert b"DOE_JANE" not in path.read_bytes(), path
    report = json.loads((out / "predict_report.json").read_text(encoding="utf-8"))
    assert report["counts"]["ok"] == 2 and report["counts"]["no_face"] == 1
    assert report["n_scored"] == 2 and report["model"]["weights_file"] == "selected.keras"
    assert report["counts"]["unreadable"] == 1
    assert "2 without a usable face" in capsys.readouterr().err


def test_eye_bar_is_drawn_unless_turned_off(photos, weights, tmp_path):
    images = tmp_path / "one"
    images.mkdir()
    (images / "astronaut.jpg").write_bytes((photos / "astronaut.jpg").read_bytes())
    outs = {}
    for flag in ([], ["--no-eye-bar"]):
        out = tmp_path / ("bar" if not flag else "nobar")
        assert predict.main(["--images", str(images), "--weights", str(weights), "--out",
                             str(out), *flag]) == 0
        outs[bool(flag)] = cv2.imread(str(out / "overlays" / "000001.png"))
        report = json.loads((out / "predict_report.json").read_text(encoding="utf-8"))
        assert report["eye_bar"] is not bool(flag)
    assert outs[False].shape == outs[True].shape and not np.array_equal(outs[False], outs[True])


@pytest.mark.parametrize("case, message", [
    ("missing_weights", "weights file not found"),
    ("not_keras", "must be a .keras model"),
    ("four_classes", "screening needs two"),
    ("empty_folder", "no photos found"),
    ("out_inside_images", "must lie outside --images"),
    ("bad_min_face", "--min-face"),
])
def test_bad_input_exits_2_with_one_line(case, message, photos, weights, tmp_path, capsys):
    images, model, extra = photos, weights, []
    out = tmp_path / "out"
    if case == "missing_weights":
        model = tmp_path / "nothing.keras"
    elif case == "not_keras":
        model = tmp_path / "weights.h5"
        model.write_bytes(b"\x89HDF\r\n")
    elif case == "four_classes":
        model = _save_model(tmp_path / "four", 4, ("a", "b", "c", "d"))
    elif case == "empty_folder":
        images = tmp_path / "empty"
        images.mkdir()
    elif case == "out_inside_images":
        images = tmp_path / "imgs"
        images.mkdir()
        (images / "a.jpg").write_bytes((photos / "astronaut.jpg").read_bytes())
        out = images / "out"
    elif case == "bad_min_face":
        extra = ["--min-face", "0"]
    code = predict.main(["--images", str(images), "--weights", str(model), "--out", str(out),
                         *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err and err[-1].startswith("error:") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert not out.exists() or case == "out_inside_images"
