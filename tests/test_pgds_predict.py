"""`python -m reproduce.pgds.predict` with the ci-trained Pgds-ResNet of `pgds_ci_context`:
8 probabilities and 8 overlays on the real frames of ../shared/data/pgds_sample, a corrupt
frame listed while the rest are processed, and weights that do not load or do not fit ->
one-line error and exit 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep import deidentify
from data_prep.errors import InputError
from data_prep.io import read_grayscale
from reproduce.pgds import pipeline, predict


@pytest.fixture(scope="module")
def weights(pgds_ci_context) -> Path:
    path = pipeline.model_path(pgds_ci_context, "pgds_resnet")
    pipeline.operating_threshold(pgds_ci_context, "pgds_resnet")
    return path


@pytest.mark.shared_data
def test_predict_real_sample_frames(pgds_sample_dir, weights, tmp_path, capsys):
    out = tmp_path / "pred"
    assert predict.main(["--images", str(pgds_sample_dir), "--weights", str(weights),
                         "--out", str(out)]) == 0
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert tuple(table.columns) == predict.CSV_COLUMNS
    assert len(table) == 8
    assert sorted(table["image"]) == sorted(p.relative_to(pgds_sample_dir).as_posix()
                                            for p in pgds_sample_dir.rglob("*.jpg"))
    probability = table["probability"].astype(float)
    assert probability.between(0, 1).all() and (table["error"] == "").all()
    recorded = json.loads((weights.parent / "threshold.json").read_text())["thresholds"]["max_f1"]
    assert np.allclose(table["threshold"].astype(float), recorded)
    assert table["threshold_source"].str.contains("threshold.json").all()
    expected_calls = np.where(probability >= recorded, "genetic_disease", "normal")
    assert (table["call"] == expected_calls).all()
    overlays = sorted(out.rglob("*.png"))
    assert len(overlays) == 8
    assert all((out / rel).is_file() for rel in table["overlay"])
    assert all(path.stat().st_size > 10_000 for path in overlays)
    assert "8 of 8 frame(s) processed, 0 failed" in capsys.readouterr().err


@pytest.mark.shared_data
def test_corrupt_frame_is_listed_and_the_rest_processed(pgds_sample_dir, weights, tmp_path, capsys):
    images = tmp_path / "frames"
    (images / "sub").mkdir(parents=True)
    good = sorted(pgds_sample_dir.rglob("*.jpg"))[:2]
    shutil.copy(good[0], images / "a.jpg")
    shutil.copy(good[1], images / "sub" / "b.jpg")
    data = good[0].read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (images / "notes.png").write_text("not an image")
    from data_prep.io import read_grayscale, write_dicom_grayscale

    write_dicom_grayscale(images / "sub" / "c.dcm", read_grayscale(good[0]))  # DICOM is read too
    out = tmp_path / "out"
    code = predict.main(["--images", str(images), "--weights", str(weights), "--out", str(out),
                         "--threshold", "0.5"])
    assert code == predict.EXIT_SOME_FAILED
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False).set_index("image")
    assert sorted(table.index) == ["a.jpg", "notes.png", "sub/b.jpg", "sub/c.dcm", "truncated.jpg"]
    for name in ("a.jpg", "sub/b.jpg", "sub/c.dcm"):
        assert table.loc[name, "error"] == "" and 0 <= float(table.loc[name, "probability"]) <= 1
        assert (out / table.loc[name, "overlay"]).is_file()
    for name in ("notes.png", "truncated.jpg"):
        assert name in table.loc[name, "error"] and table.loc[name, "probability"] == ""
        assert table.loc[name, "overlay"] == ""
    assert (table["threshold"].astype(float) == 0.5).all()
    assert table.loc["sub/c.dcm", "probability"] == pytest.approx(table.loc["a.jpg", "probability"],
                                                                  abs=1e-3)  # same pixels
    err = capsys.readouterr().err
    assert "2 failed" in err
    assert sum(line.startswith("error: ") and "truncated.jpg" in line for line in err.splitlines()) == 1


@pytest.mark.shared_data
def test_weights_only_file_with_its_run_json(pgds_sample_dir, weights, tmp_path):
    """A .weights.h5 file is built as the architecture of the run.json beside it."""
    folder = tmp_path / "w"
    folder.mkdir()
    shutil.copy(weights.parent / "run.json", folder / "run.json")
    h5 = _weights_only(weights, folder)
    images = tmp_path / "frames"
    images.mkdir()
    frame = sorted(pgds_sample_dir.rglob("*.jpg"))[0]
    shutil.copy(frame, images / frame.name)
    assert predict.main(["--images", str(images), "--weights", str(h5), "--out",
                         str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "predictions.csv", keep_default_na=False)
    full = pipeline.load_keras_model(weights)
    prepared = predict.model_input(read_grayscale(frame), full.input_shape[1:])  # sector-cropped
    expected = full.predict(prepared[None], verbose=0)[0, 1]
    assert float(table["probability"].iloc[0]) == pytest.approx(float(expected), rel=1e-4, abs=1e-7)
    assert table["threshold_source"].iloc[0].startswith("default 0.5")


@pytest.mark.shared_data
def test_model_input_is_the_training_pipeline_on_the_sector_crop(pgds_sample_dir):
    """Uncropped, predict's in-memory input equals the tf.data pipeline's from the file; by
    default it is the same resize of the frame cropped to its scan sector."""
    frame = sorted(pgds_sample_dir.rglob("*.jpg"))[0]
    shape = (64, 70, 1)
    gray = read_grayscale(frame)
    np.testing.assert_allclose(predict.model_input(gray, shape, sector_crop=False),
                               pipeline.inputs_for_shape([frame], shape)[0], atol=1e-6)
    # the sample frames are already cropped to the sector; in a black border they are cut out
    framed = np.pad(gray, ((30, 10), (25, 40)))
    cropped = deidentify.crop_to_sector(framed)
    # the 40 / 65 px of border are cut (within the sector finder's few-pixel hull margin)
    assert framed.shape[0] - cropped.shape[0] >= 35 and framed.shape[1] - cropped.shape[1] >= 58
    np.testing.assert_allclose(predict.model_input(framed, shape),
                               predict.model_input(cropped, shape, sector_crop=False), atol=1e-6)
    assert not np.allclose(predict.model_input(framed, shape),
                           predict.model_input(framed, shape, sector_crop=False), atol=0.05)


def _weights_only(weights: Path, folder: Path) -> Path:
    model = pipeline.load_keras_model(weights)
    path = folder / "model.weights.h5"
    model.save_weights(str(path))
    return path


@pytest.mark.parametrize("case", ["not_a_model", "missing", "h5_wrong_architecture",
                                  "recorded_other_architecture", "not_a_classifier"])
def test_bad_weights_exit_2_with_one_line(case, weights, tmp_path, capsys):
    images = tmp_path / "frames"
    images.mkdir()
    extra: list[str] = []
    if case == "not_a_model":
        bad = tmp_path / "bad.keras"
        bad.write_text("this is not a keras file")
    elif case == "missing":
        bad = tmp_path / "absent.keras"
    elif case == "h5_wrong_architecture":
        bad = _weights_only(weights, tmp_path)   # ci pgds_resnet weights into a default vgg16
        extra = ["--architecture", "vgg16"]
    elif case == "recorded_other_architecture":
        bad, extra = weights, ["--architecture", "resnet34"]
    else:
        import keras

        inputs = keras.Input((8, 8, 1))
        model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
        bad = tmp_path / "three.keras"
        model.save(bad)
    out = tmp_path / "out"
    assert predict.main(["--images", str(images), "--weights", str(bad), "--out", str(out),
                         *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and str(bad) in lines[-1]
    assert not out.exists()  # nothing written


def test_bad_arguments_exit_2(weights, tmp_path, capsys):
    assert predict.main(["--images", str(tmp_path / "absent"), "--weights", str(weights)]) == 2
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("user data")
    (tmp_path / "frames").mkdir()
    assert predict.main(["--images", str(tmp_path / "frames"), "--weights", str(weights),
                         "--out", str(full)]) == 2
    assert (full / "keep.txt").read_text() == "user data"
    assert predict.main(["--images", str(tmp_path / "frames"), "--weights", str(weights),
                         "--out", str(tmp_path / "o")]) == 2  # no frames
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error: ")]
    assert len(errors) == 3


def test_gradcam_layer_choice(weights):
    import keras

    loaded = predict.load_weights(weights)
    assert loaded.architecture == "pgds_resnet"
    # the layers and method figure4 reads for the run's profile (ci: LayerCAM, stages 1-2)
    assert predict.gradcam_layer_for(loaded, None) == (
        "stage2_block1_preact_relu+stage3_block1_preact_relu",
        "figure4's for pgds_resnet on the ci profile")
    assert predict.heatmap_method_for(loaded, None) == "layercam"
    assert predict.heatmap_method_for(loaded, "gradcam") == "gradcam"
    without_profile = predict.LoadedModel(loaded.model, loaded.architecture,
                                          {**loaded.run_config, "profile": None}, loaded.input_shape)
    assert predict.gradcam_layer_for(without_profile, None) == ("post_relu", "registry (pgds_resnet)")
    assert predict.heatmap_method_for(without_profile, None) == "gradcam"
    # a generic model: the last 4-D convolution-like layer, never a pooling layer
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    generic = predict.LoadedModel(keras.Model(inputs, outputs), None, None, (16, 16, 1))
    assert predict.gradcam_layer_for(generic, None) == ("relu_a", "last 4-D convolution-like layer")
    assert predict.gradcam_layer_for(generic, "conv_a")[0] == "conv_a"
    assert predict.gradcam_layer_for(generic, "conv_a+relu_a")[0] == "conv_a+relu_a"
    with pytest.raises(InputError, match="'nope' is not a layer"):
        predict.gradcam_layer_for(generic, "conv_a+nope")
