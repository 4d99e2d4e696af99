"""reproduce.cns.heatmaps and reproduce.cns.predict without training: the truth mask brought to
the model input with the "imagenet" evaluation geometry (resize + centre crop), the
localisation table and its summary, and predict's outputs and error exits on a tiny untrained
ResNet-34 saved with a hand-written run.json."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from reproduce import study
from reproduce.cns import heatmaps, pipeline, predict

INPUT_HW = (64, 64)


def _through_crop(image: np.ndarray, input_hw=INPUT_HW) -> np.ndarray:
    """The image as resize_center_crop makes it (float grey levels)."""
    import tensorflow as tf

    from reproduce.input_pipeline import resize_center_crop

    out = resize_center_crop(tf.constant(image.astype(np.float32)), (input_hw[1], input_hw[0]))
    return out.numpy()


# ----------------------------------------------------------------------------- mask geometry


@pytest.mark.parametrize("frame_hw,input_hw", [((86, 102), (64, 64)), ((88, 112), (64, 64)),
                                               ((120, 90), (48, 64))])
def test_border_mask_lines_up_with_the_model_input_crop(frame_hw, input_hw):
    border = 6
    mask = np.zeros(frame_hw, np.uint8)
    mask[border:-border, border:-border] = 255
    moved = heatmaps.mask_to_input(mask, input_hw)
    assert moved.shape == input_hw and moved.dtype == bool
    image = _through_crop(mask, input_hw) > 127.5
    # the same region, to within one pixel along its edges
    assert np.mean(moved != image) < 0.06
    for axis in (0, 1):
        got = np.flatnonzero(moved.any(axis=axis))
        want = np.flatnonzero(image.any(axis=axis))
        assert abs(got[0] - want[0]) <= 1 and abs(got[-1] - want[-1]) <= 1
    # the crop's geometry is resize_center_crop's
    new_h, new_w, top, left = heatmaps.center_crop_geometry(frame_hw, input_hw)
    scale = round(min(input_hw) * 256 / 224) / min(frame_hw)
    assert new_h == max(round(frame_hw[0] * scale), input_hw[0])
    assert new_w == max(round(frame_hw[1] * scale), input_hw[1])
    assert top == (new_h - input_hw[0]) // 2 and left == (new_w - input_hw[1]) // 2


def test_square_centroid_lands_where_the_bright_square_lands():
    frame_hw = (86, 102)
    image = np.full(frame_hw, 20, np.uint8)
    mask = np.zeros(frame_hw, np.uint8)
    for top, left in ((20, 25), (50, 60), (10, 70)):
        image[:] = 20
        mask[:] = 0
        image[top:top + 10, left:left + 10] = 230
        mask[top:top + 10, left:left + 10] = 255
        moved = heatmaps.mask_to_input(mask, INPUT_HW)
        bright = _through_crop(image)
        weights = np.clip(bright - 20.0, 0, None)
        rows, cols = np.indices(INPUT_HW)
        want = (np.sum(rows * weights) / weights.sum(), np.sum(cols * weights) / weights.sum())
        got = (rows[moved].mean(), cols[moved].mean())
        assert abs(got[0] - want[0]) < 0.6 and abs(got[1] - want[1]) < 0.6, (top, left)
    # a mask drawn at another size than the frame is brought to the frame first
    small = cv2.resize(mask, (51, 43), interpolation=cv2.INTER_NEAREST)
    again = heatmaps.mask_to_input(small, INPUT_HW, frame_hw=frame_hw)
    assert np.mean(again != moved) < 0.05


def test_display_gray_undoes_the_imagenet_normalisation():
    levels = np.linspace(0, 255, 64 * 64).reshape(64, 64)
    inputs = study.inputs_for_shape([], (64, 64, 3), 4)  # empty: the (0, 64, 64, 3) shape
    assert inputs.shape == (0, 64, 64, 3)
    from reproduce.input_pipeline import IMAGENET_MEAN, IMAGENET_STD

    x = np.stack([(levels / 255.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], -1)
    gray = heatmaps.display_gray(x[None].astype(np.float32), "imagenet")[0]
    assert np.allclose(gray, levels / 255.0, atol=1e-5)


# ----------------------------------------------------------------------------- table, summary


def _rows(class_names, labels, predicted):
    rows = pd.DataFrame({
        "image_path": [f"images/I{i}.png" for i in range(len(labels))],
        "case_id": [f"P{i // 2}" for i in range(len(labels))],
        "fold": [i % 3 for i in range(len(labels))],
        "label": labels, "plane": ["TV"] * len(labels),
        "y_true": [class_names.index(v) for v in labels],
    })
    for name in class_names:
        rows[f"p_{name}"] = [0.7 if name == p else 0.1 for p in predicted]
    return rows


def test_localisation_table_columns_and_summary():
    names = tuple(pipeline.ANOMALIES)
    labels = ["anencephaly", "anencephaly", "encephalocele", "rachischisis"]
    predicted = ["anencephaly", "rachischisis", "encephalocele", "rachischisis"]
    rows = _rows(names, labels, predicted)
    masks, heats = [], []
    for i in range(4):
        mask = np.zeros(INPUT_HW, bool)
        mask[10:20, 10:20] = True
        heat = np.zeros(INPUT_HW, np.float32)
        peak = (15, 15) if i in (0, 1) else (50, 50)  # images 0, 1 hit; 2, 3 miss
        heat[peak] = 1.0
        masks.append(mask)
        heats.append(heat)
    tolerance = 4.3
    table = heatmaps.localisation_frame(rows, heats, masks, class_names=names, layer="a+b",
                                        method="gradcam", tolerance_px=tolerance)
    assert tuple(table.columns) == heatmaps.COLUMNS
    assert table["correct"].tolist() == [True, False, True, True]
    assert table["predicted_label"].tolist() == predicted
    assert table["pointing_game_hit"].tolist() == [True, True, False, False]
    assert np.allclose(table["mask_area_share"], 100 / 64 ** 2)
    assert (table["tolerance_px"] == tolerance).all() and (table["layer"] == "a+b").all()
    assert table["chance_hit"].between(100 / 64 ** 2, 1).all()
    assert heatmaps.hit_rate_correct(table) == (1, 3)

    summary = heatmaps.localisation_summary(table, names).set_index("group")
    assert list(summary.index) == ["all anomalous", "anencephaly", "encephalocele", "rachischisis"]
    assert summary.loc["all anomalous", "images"] == 4 and summary.loc["all anomalous", "correct"] == 3
    assert summary.loc["all anomalous", "hit_rate_correct"].startswith("1/3 = 0.33")
    assert summary.loc["all anomalous", "hit_rate_all"].startswith("2/4 = 0.50")
    assert summary.loc["anencephaly", "hit_rate_correct"].startswith("1/1 = 1.00")
    assert summary.loc["all anomalous", "energy_inside_correct"] == pytest.approx(1 / 3)
    assert summary.loc["anencephaly", "energy_over_area"] == pytest.approx(64 ** 2 / 100)

    ctx = pipeline.StudyContext(profile="ci", spec=pipeline.TASKS["4class"])
    markdown = heatmaps.localisation_markdown(table, ctx, layer="a+b", method="gradcam",
                                              grids=[(4, 4), (2, 2)], input_hw=INPUT_HW, skipped=2)
    assert "1/3 = 0.33" in markdown and "NOT met" in markdown
    assert "Qi 2025 shows Grad-CAM at the last convolution of the last residual block" in markdown
    assert "4x4 + 2x2" in markdown and "2 anomalous test image(s)" in markdown
    assert markdown.rstrip().endswith(pipeline.common_notes(ctx)[-1])

    empty = heatmaps.localisation_frame(rows.head(0), [], [], class_names=names, layer="a",
                                        method="gradcam", tolerance_px=tolerance)
    assert tuple(empty.columns) == heatmaps.COLUMNS and empty.empty
    assert heatmaps.hit_rate_correct(empty) == (0, 0)


def test_choose_examples_prefers_correct_images_and_is_seeded():
    names = tuple(pipeline.LABELS)
    labels = ["normal"] * 3 + ["anencephaly"] * 4 + ["rachischisis"]
    predicted = ["normal", "anencephaly", "normal", "rachischisis", "anencephaly", "anencephaly",
                 "anencephaly", "normal"]
    test = _rows(names, labels, predicted)
    chosen = heatmaps.choose_examples(test, names, seed=0)
    assert chosen["label"].value_counts().to_dict() == {"normal": 2, "anencephaly": 2,
                                                        "rachischisis": 1}
    assert set(chosen.loc[chosen["label"] == "normal", "image_path"]) == {"images/I0.png",
                                                                         "images/I2.png"}
    assert set(chosen.loc[chosen["label"] == "anencephaly", "image_path"]) <= {
        "images/I4.png", "images/I5.png", "images/I6.png"}
    assert chosen.equals(heatmaps.choose_examples(test, names, seed=0))
    assert list(chosen["label"].unique()) == ["normal", "anencephaly", "rachischisis"]


# ----------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    from models import registry

    folder = tmp_path_factory.mktemp("cns_model") / "fold0"
    folder.mkdir()
    model = registry.build("resnet34", (64, 64, 3), 4, width=4, blocks=(1, 1, 1, 1), seed=0)
    path = folder / "selected.keras"
    model.save(path)
    record = {"class_names": list(pipeline.ANOMALIES),
              "config": {"architecture": "resnet34", "profile": "ci", "size_wh": [64, 64],
                         "channels": 3, "transform": "imagenet", "width": 4,
                         "model_options": {"blocks": [1, 1, 1, 1]},
                         "labels": list(pipeline.ANOMALIES)}}
    (folder / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return path


@pytest.fixture()
def frames(tmp_path) -> Path:
    folder = tmp_path / "frames"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, shape in (("a.png", (86, 102)), ("b.png", (88, 112)), ("sub/c.png", (90, 100))):
        image = rng.integers(0, 255, shape, dtype=np.uint8)
        cv2.circle(image, (shape[1] // 2, shape[0] // 2), 25, 255, 3)
        cv2.imwrite(str(folder / name), image)
    return folder


def test_predict_writes_probabilities_calls_overlays_and_patients(tiny_weights, frames, tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"image_path": ["a.png", "b.png", "sub/c.png"],
                  "case_id": ["P1", "P1", "P2"]}).to_csv(manifest, index=False)
    out = tmp_path / "out"
    assert predict.main(["--images", str(frames), "--weights", str(tiny_weights), "--out",
                         str(out), "--manifest", str(manifest)]) == 0
    table = pd.read_csv(out / "predictions.csv")
    columns = ["frame", *(f"p_{n}" for n in pipeline.ANOMALIES), "call"]
    assert list(table.columns) == columns
    assert table["frame"].tolist() == ["a.png", "b.png", "sub/c.png"]
    proba = table[columns[1:-1]].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert (table["call"] == np.asarray(pipeline.ANOMALIES)[proba.argmax(axis=1)]).all()
    # exactly the training pipeline's evaluation preprocessing
    model = study.load_keras_model(tiny_weights)
    inputs = study.inputs_for_shape([str(frames / f) for f in table["frame"]], (64, 64, 3), 4,
                                    transform="imagenet")
    assert np.allclose(model.predict(inputs, verbose=0), proba, atol=1e-5)
    for frame in table["frame"]:
        assert (out / "overlays" / f"{frame}.png").stat().st_size > 5_000
    patients = pd.read_csv(out / "patients.csv")
    assert patients["case_id"].tolist() == ["P1", "P2"] and patients["frames"].tolist() == [2, 1]
    assert np.allclose(patients.loc[0, columns[1:-1]].to_numpy(dtype=float), proba[:2].mean(axis=0))

    # an existing non-empty --out is refused, then replaced with --force
    assert predict.main(["--images", str(frames), "--weights", str(tiny_weights), "--out",
                         str(out)]) == 2
    assert predict.main(["--images", str(frames), "--weights", str(tiny_weights), "--out",
                         str(out), "--force"]) == 0
    assert not (out / "patients.csv").exists() and (out / "predictions.csv").is_file()


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    return err[0]


def test_predict_error_exits(tiny_weights, frames, tmp_path, capsys):
    base = ["--images", str(frames)]
    out = ["--out", str(tmp_path / "o")]
    assert predict.main(base + ["--weights", str(tmp_path / "none.keras")] + out) == 2
    assert "weights file not found" in _one_error_line(capsys)
    text = tmp_path / "w.h5"
    text.write_text("no")
    assert predict.main(base + ["--weights", str(text)] + out) == 2
    assert ".keras model" in _one_error_line(capsys)
    fake = tmp_path / "fake.keras"
    fake.write_text("not a zip")
    assert predict.main(base + ["--weights", str(fake)] + out) == 2
    assert "cannot be loaded as a Keras model" in _one_error_line(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert predict.main(["--images", str(empty), "--weights", str(tiny_weights)] + out) == 2
    assert "no image files" in _one_error_line(capsys)
    assert predict.main(base + ["--weights", str(tiny_weights), "--out",
                                str(frames / "pred")]) == 2
    assert "outside --images" in _one_error_line(capsys)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"image_path": ["a.png"], "case_id": ["P1"]}).to_csv(manifest, index=False)
    assert predict.main(base + ["--weights", str(tiny_weights), "--manifest", str(manifest)]
                        + out) == 2
    assert "not in the manifest" in _one_error_line(capsys)
    (frames / "broken.png").write_text("not an image")
    assert predict.main(base + ["--weights", str(tiny_weights)] + out) == 2
    assert "broken.png" in _one_error_line(capsys)
    assert not (tmp_path / "o").exists()
