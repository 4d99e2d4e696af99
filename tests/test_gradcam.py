"""Grad-CAM maps land on the evidence; pointing game and energy share score them correctly.

Two tiny Keras 3 functional CNNs whose class-1 evidence is a bright square: one with hand-set
weights (exact, instant), one trained for a few seconds on synthetic squares. Grad-CAM's
maximum must fall on the square on most images, and more of the map's energy must lie inside
the square than its area share. The scoring functions are checked on hand-made maps.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from PIL import Image

from reproduce import gradcam

SIZE = 48
SIDE = 8


def square_images(n: int, seed: int, with_square: bool = True):
    """Noise in [0, 0.3] with a bright 8x8 square at a random place; images and masks."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.3, size=(n, SIZE, SIZE, 1)).astype(np.float32)
    masks = np.zeros((n, SIZE, SIZE), dtype=bool)
    if with_square:
        for i in range(n):
            r, c = rng.integers(2, SIZE - SIDE - 2, size=2)
            images[i, r:r + SIDE, c:c + SIDE, 0] = rng.uniform(0.85, 1.0)
            masks[i, r:r + SIDE, c:c + SIDE] = True
    return images, masks


def hand_set_model(dtype: str | None = None) -> keras.Model:
    """Bright-blob detector -> pool -> 'last_conv' -> GAP -> softmax; weights set by hand."""
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(1, 3, padding="same", activation="relu", name="detect",
                            dtype=dtype)(inputs)
    x = keras.layers.MaxPooling2D(4, name="pool", dtype=dtype)(x)
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="last_conv",
                            dtype=dtype)(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap", dtype=dtype)(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="head", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="squares")
    # detect: local mean above 0.6 (the square, never the noise)
    model.get_layer("detect").set_weights([np.full((3, 3, 1, 1), 1 / 9, np.float32),
                                           np.array([-0.6], np.float32)])
    conv = np.zeros((3, 3, 1, 2), np.float32)
    conv[..., 0, 0] = 1 / 9  # channel 0 follows the detector; channel 1 is a constant
    model.get_layer("last_conv").set_weights([conv, np.array([0.0, 0.1], np.float32)])
    model.get_layer("head").set_weights([np.array([[-20.0, 20.0], [0.0, 0.0]], np.float32),
                                         np.array([0.5, -0.5], np.float32)])
    return model


def train_square_model(seed: int = 7) -> keras.Model:
    """A small CNN trained for a few seconds: square (class 1) vs noise only (class 0)."""
    keras.utils.set_random_seed(seed)
    with_square, _ = square_images(96, seed=1)
    without, _ = square_images(96, seed=2, with_square=False)
    x = np.concatenate([with_square, without])
    y = np.concatenate([np.ones(96), np.zeros(96)]).astype(np.int32)
    inputs = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(h)
    h = keras.layers.GlobalMaxPooling2D()(h)
    outputs = keras.layers.Dense(2, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=12, batch_size=32, verbose=0, shuffle=True)
    test_x, _ = square_images(20, seed=3)
    assert model.predict(test_x, verbose=0)[:, 1].mean() > 0.9
    return model


@pytest.fixture(scope="module")
def trained_model() -> keras.Model:
    return train_square_model()


def test_hand_set_model_maps_fall_on_the_square():
    model = hand_set_model()
    images, masks = square_images(12, seed=11)
    maps = gradcam.heatmaps(model, images, 1, layer="last_conv")
    assert maps.shape == (12, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0 and maps.max() > 0.99
    table = gradcam.localisation_table(maps, masks)
    summary = table.attrs["summary"]
    assert summary["hit_rate"] == 1.0
    assert (table["energy_inside"] > 2 * table["mask_area_share"]).all()


def test_trained_model_maps_fall_on_the_square(trained_model):
    images, masks = square_images(20, seed=4)
    for method in gradcam.METHODS:
        maps = gradcam.heatmaps(trained_model, images, 1, layer="last_conv", method=method,
                                batch_size=8)
        assert maps.shape == (20, SIZE, SIZE) and 0.0 <= maps.min() and maps.max() <= 1.0
        table = gradcam.localisation_table(maps, masks, tolerance_px=3.0)
        # measured: hit rate 1.0; energy share 0.44-0.72 against an area share of 0.028
        assert table["hit"].mean() >= 0.9, (method, table)
        assert table["energy_inside"].mean() > 5 * table["mask_area_share"].mean(), method
    # negative control: the map of the other class (noise only) is not drawn to the square
    other = gradcam.heatmaps(trained_model, images, 0, layer="last_conv")
    other_table = gradcam.localisation_table(other, masks, tolerance_px=3.0)
    assert other_table["energy_inside"].mean() < table["mask_area_share"].mean()


@pytest.mark.parametrize("score", gradcam.SCORES)
def test_layercam_matches_its_definition_computed_by_hand(trained_model, score):
    """LayerCAM (Jiang et al. 2021): relu(sum_c relu(d S / d A_c(i, j)) * A_c(i, j)), S the class
    logit or its log-softmax, computed here with a GradientTape on the logits, against
    tf-keras-vis's through ours."""
    import tensorflow as tf

    images, _ = square_images(5, seed=12)
    features = keras.Model(trained_model.inputs, trained_model.get_layer("last_conv").output)
    kernel, bias = trained_model.layers[-1].get_weights()   # the softmax Dense, as logits
    activations = tf.constant(features(images))
    with tf.GradientTape() as tape:
        tape.watch(activations)
        pooled = tf.reduce_max(activations, axis=(1, 2))      # the model's GlobalMaxPooling2D
        logits = tf.matmul(pooled, kernel) + bias
        per_image = logits if score == "logit" else tf.nn.log_softmax(logits, axis=-1)
        target = tf.reduce_sum(per_image[:, 1])
    grads = tape.gradient(target, activations).numpy()
    by_hand = np.maximum((np.maximum(grads, 0.0) * activations.numpy()).sum(-1), 0.0)
    expected = np.stack([gradcam._unit_range(gradcam.upsample_to_input(m, (SIZE, SIZE)))
                         for m in by_hand])
    maps = gradcam.heatmaps(trained_model, images, 1, layer="last_conv", method="layercam",
                            score=score)
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    # and it is not Grad-CAM under another name
    assert np.abs(gradcam.heatmaps(trained_model, images, 1, layer="last_conv", score=score)
                  - maps).max() > 1e-3


def test_log_prob_grad_cam_of_two_classes_is_grad_cam_of_the_logit_contrast(trained_model):
    """With two classes, d log p_1 = (1 - p_1) d(z_1 - z_0): after normalisation, Grad-CAM of
    log p_1 equals Grad-CAM of the logit of a head whose class-1 row is the contrast."""
    images, _ = square_images(6, seed=14)
    kernel, bias = trained_model.layers[-1].get_weights()
    contrast = keras.models.clone_model(trained_model)
    contrast.set_weights(trained_model.get_weights())
    contrast.layers[-1].set_weights([
        np.stack([kernel[:, 0] - kernel[:, 1], kernel[:, 1] - kernel[:, 0]], axis=1),
        np.array([bias[0] - bias[1], bias[1] - bias[0]], np.float32)])
    log_prob = gradcam.heatmaps(trained_model, images, 1, layer="last_conv", score="log_prob")
    np.testing.assert_allclose(
        log_prob, gradcam.heatmaps(contrast, images, 1, layer="last_conv"), atol=1e-3)
    # (atol: p_1 is 0.99994-0.99999 here, so the float32 factor 1 - p_1 keeps ~3 digits; seen
    # 3e-4.) The logit's map differs by far more (seen 0.088): class 0's evidence stays in it.
    assert np.abs(gradcam.heatmaps(trained_model, images, 1, layer="last_conv")
                  - log_prob).max() > 0.02


def test_several_layers_are_averaged_then_brought_to_unit_range(trained_model):
    images, masks = square_images(6, seed=13)
    first_conv = trained_model.layers[1].name   # unnamed: Keras numbers it
    singles = [gradcam.heatmaps(trained_model, images, 1, layer=name, method="layercam")
               for name in (first_conv, "last_conv")]
    fused = gradcam.heatmaps(trained_model, images, 1, layer=f"{first_conv}+last_conv",
                             method="layercam")
    expected = np.stack([gradcam._unit_range(a + b) for a, b in zip(*singles)])
    np.testing.assert_allclose(fused, expected, atol=1e-6)
    assert fused.shape == (6, SIZE, SIZE) and fused.max() == pytest.approx(1.0)
    assert gradcam.localisation_table(fused, masks, tolerance_px=3.0)["hit"].mean() >= 0.8


@pytest.mark.parametrize("given, expected", [
    ("a", ("a",)), ("a+b", ("a", "b")), ("a,b", ("a", "b")), (["a", "b"], ("a", "b"))])
def test_layer_names(given, expected):
    assert gradcam.layer_names(given) == expected


@pytest.mark.parametrize("given", ["", "a+", [], ["a", ""]])
def test_layer_names_refuses_empty_names(given):
    with pytest.raises(ValueError, match="at least one layer"):
        gradcam.layer_names(given)


def test_per_image_class_index_and_caller_model_untouched():
    model = hand_set_model()
    images, _ = square_images(4, seed=5)
    before = model.predict(images, verbose=0)
    maps = gradcam.heatmaps(model, images, [1, 0, 1, 0], layer="last_conv", batch_size=3)
    # class 0's head weight on the square channel is negative: after ReLU nothing remains
    assert maps[[0, 2]].max() > 0.99 and maps[[1, 3]].max() == 0.0
    assert model.get_layer("head").activation is keras.activations.softmax
    np.testing.assert_allclose(model.predict(images, verbose=0), before)


def test_saved_and_reloaded_model_gives_the_same_maps(tmp_path):
    model = hand_set_model()
    path = tmp_path / "squares.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    images, _ = square_images(3, seed=6)
    np.testing.assert_allclose(gradcam.heatmaps(reloaded, images, layer="last_conv"),
                               gradcam.heatmaps(model, images, layer="last_conv"), atol=1e-6)


def test_mixed_precision_model_with_float32_head():
    model = hand_set_model(dtype="mixed_float16")
    images, masks = square_images(4, seed=8)
    maps = gradcam.heatmaps(model, images, 1, layer="last_conv")
    assert maps.dtype == np.float32 and 0.0 <= maps.min() and maps.max() <= 1.0
    assert all(gradcam.pointing_game_hit(m, k, 0.0) for m, k in zip(maps, masks))


@pytest.mark.parametrize("kwargs, message", [
    ({"layer": "nope"}, "no layer 'nope'"),
    ({"layer": "gap"}, "feature map"),
    ({"layer": "last_conv", "method": "scorecam"}, "method must be"),
    ({"layer": "last_conv", "score": "probability"}, "score must be"),
    ({"layer": "last_conv", "class_index": 2}, "class_index must lie"),
    ({"layer": "last_conv", "class_index": [0, 1]}, "entries for 3 images"),
])
def test_heatmaps_rejects_bad_arguments(kwargs, message):
    images, _ = square_images(3, seed=9)
    with pytest.raises(ValueError, match=message):
        gradcam.heatmaps(hand_set_model(), images, **kwargs)


def test_log_prob_needs_a_softmax_output():
    model = hand_set_model()
    model.get_layer("head").activation = keras.activations.linear
    images, _ = square_images(2, seed=9)
    with pytest.raises(ValueError, match="needs a softmax output layer.*'linear'"):
        gradcam.heatmaps(model, images, 1, layer="last_conv", score="log_prob")


def _blob_at(row: int, col: int, shape=(100, 100)) -> np.ndarray:
    heat = np.zeros(shape)
    heat[row, col] = 1.0
    return heat


MASK = np.zeros((100, 100), dtype=bool)
MASK[40:60, 40:60] = True


@pytest.mark.parametrize("heat, tolerance, expected", [
    (_blob_at(50, 50), 15.0, True),          # maximum inside the mask
    (_blob_at(50, 69), 15.0, True),          # 10 px right of the mask's edge (col 59)
    (_blob_at(50, 89), 15.0, False),         # 30 px away
    (_blob_at(50, 69), 5.0, False),          # 10 px away, tolerance 5
    (_blob_at(69, 69), 15.0, True),          # diagonal from corner (59, 59): 14.1 px
    (_blob_at(70, 70), 15.0, False),         # diagonal: sqrt(11^2 + 11^2) = 15.6 px
    (np.zeros((100, 100)), 200.0, False),    # a flat map points nowhere
])
def test_pointing_game(heat, tolerance, expected):
    assert gradcam.pointing_game_hit(heat, MASK, tolerance) is expected


def test_pointing_game_ties_use_the_first_maximum():
    heat = np.zeros((100, 100))
    heat[0, 0] = heat[50, 50] = 1.0
    assert gradcam.pointing_game_hit(heat, MASK, 15.0) is False
    heat[0, 0] = 0.5
    assert gradcam.pointing_game_hit(heat, MASK, 15.0) is True


@pytest.mark.parametrize("heat, expected", [
    (MASK.astype(float), 1.0),                       # fully inside
    (np.ones((100, 100)), 400 / 10000),              # uniform: the area share
    (1.0 - MASK.astype(float), 0.0),                 # fully outside
    (np.zeros((100, 100)), 0.0),                     # no energy
])
def test_energy_inside(heat, expected):
    assert gradcam.energy_inside(heat, MASK) == pytest.approx(expected)


@pytest.mark.parametrize("func, args", [
    (gradcam.energy_inside, (np.ones((100, 100)), np.zeros((100, 100)))),
    (gradcam.energy_inside, (-np.ones((100, 100)), MASK)),
    (gradcam.pointing_game_hit, (np.ones((10, 10)), MASK, 15.0)),
])
def test_scores_reject_bad_pairs(func, args):
    with pytest.raises(ValueError):
        func(*args)


@pytest.mark.parametrize("hw, expected", [
    ((224, 224), 15.0), ((448, 500), 30.0), ((128, 140), 15 * 128 / 224),
    ((400, 440), 15 * 400 / 224),
])
def test_pointing_tolerance_scales_with_the_short_side(hw, expected):
    assert gradcam.pointing_tolerance_px(hw) == pytest.approx(expected)


@pytest.mark.parametrize("input_size, map_size, expected", [
    (128, 4, 32.0), (140, 5, 32.0), (400, 13, 32.0), (440, 14, 32.0), (48, 12, 4.0),
    (48, 48, 1.0), (100, 3, 100 / 3),
])
def test_feature_stride(input_size, map_size, expected):
    assert gradcam.feature_stride(input_size, map_size) == pytest.approx(expected)


@pytest.mark.parametrize("cam_hw, input_hw", [((4, 5), (128, 160)), ((6, 6), (48, 48)),
                                              ((3, 7), (24, 56))])
def test_upsampling_equals_cv2_linear_when_the_ratio_is_whole(cam_hw, input_hw):
    import cv2

    cam = np.random.default_rng(0).uniform(size=cam_hw)
    expected = cv2.resize(cam.astype(np.float32), input_hw[::-1], interpolation=cv2.INTER_LINEAR)
    heat = gradcam.upsample_to_input(cam, input_hw)
    # between the outermost cell centres (beyond them cv2 replicates, we mirror)
    half_y, half_x = (input_hw[0] // cam_hw[0]) // 2, (input_hw[1] // cam_hw[1]) // 2
    inner = (slice(half_y, input_hw[0] - half_y), slice(half_x, input_hw[1] - half_x))
    np.testing.assert_allclose(heat[inner], expected[inner], atol=1e-5)
    assert heat.shape == tuple(input_hw)


@pytest.mark.parametrize("cell, peak_col", [(0, (15, 16)), (1, (47, 48)), (3, (111, 112)),
                                            (4, (139, 139))])
# cell 4's centre (143.5) lies past the 140-px edge: the map rises to the last column
def test_a_cell_peaks_at_the_centre_of_its_stride_window(cell, peak_col):
    """140-px input, 5 cells of stride 32 (the last window runs past the edge): cell i sits at
    32 i + 15.5, not where corner-aligned zoom puts it (i * 139 / 4), nor at the image edge."""
    cam = np.zeros((4, 5))
    cam[1, cell] = 1.0
    heat = gradcam.upsample_to_input(cam, (128, 140))
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    assert row in (47, 48) and peak_col[0] <= col <= peak_col[1]
    assert heat[row, col] == pytest.approx(heat.max())


def test_localisation_table_uses_scaled_tolerance_and_ids():
    heats = [_blob_at(50, 69), _blob_at(50, 89)]
    table = gradcam.localisation_table(heats, [MASK, MASK], image_ids=["a", "b"])
    assert list(table["image"]) == ["a", "b"]
    assert table["tolerance_px"].tolist() == pytest.approx([15 * 100 / 224] * 2)
    assert table["hit"].tolist() == [False, False]     # 10 px > 6.7 px
    wide = gradcam.localisation_table(heats, [MASK, MASK], tolerance_px=15.0)
    assert wide["hit"].tolist() == [True, False]
    summary = wide.attrs["summary"]
    assert (summary["n"], summary["hits"], summary["hit_rate"]) == (2, 1, 0.5)
    assert summary["hit_rate_lo"] < 0.5 < summary["hit_rate_hi"]


def test_pointing_chance_is_the_share_of_pixels_near_the_mask():
    mask = np.zeros((40, 50), bool)
    mask[10:20, 10:20] = True
    assert gradcam.pointing_chance(mask, 0.0) == pytest.approx(100 / 2000)
    # within 2 px: the 14x14 square with its 4 corners cut to quarter discs of radius 2
    by_hand = sum(1 for r in range(40) for c in range(50)
                  if np.hypot(max(10 - r, 0, r - 19), max(10 - c, 0, c - 19)) <= 2.0)
    assert gradcam.pointing_chance(mask, 2.0) == pytest.approx(by_hand / 2000)
    assert gradcam.pointing_chance(mask, 100.0) == 1.0
    with pytest.raises(ValueError, match="non-empty"):
        gradcam.pointing_chance(np.zeros((4, 4), bool), 1.0)
    table = gradcam.localisation_table([_blob_at(50, 69)], [MASK], tolerance_px=3.0)
    assert table["chance_hit"].iloc[0] == pytest.approx(gradcam.pointing_chance(MASK, 3.0))


@pytest.mark.parametrize("gray", [np.linspace(0, 1, 30 * 40).reshape(30, 40),
                                  np.full((30, 40, 1), 128, np.uint8)])
def test_overlay_shape_and_blend(gray):
    heat = np.zeros((15, 20))  # made at half size: resized to the frame
    heat[:, 10:] = 1.0
    rgb = gradcam.overlay(gray, heat, alpha=0.5)
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    # jet maps 1.0 to dark red and 0.0 to dark blue: red dominates on the right half
    assert rgb[:, -5:, 0].mean() > rgb[:, -5:, 2].mean()
    assert rgb[:, :5, 2].mean() > rgb[:, :5, 0].mean()
    assert np.array_equal(gradcam.overlay(gray, heat, alpha=0.0)[..., 0],
                          gradcam.overlay(gray, heat, alpha=0.0)[..., 2])


def test_overlay_rejects_float_gray_outside_unit_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gradcam.overlay(np.full((4, 4), 200.0), np.zeros((4, 4)))


def test_save_overlay_figure_writes_a_png(tmp_path):
    images, _ = square_images(1, seed=10)
    maps = gradcam.heatmaps(hand_set_model(), images, layer="last_conv")
    out = gradcam.save_overlay_figure(images[0, ..., 0], maps[0], tmp_path / "fig" / "f4.png",
                                      title="T21 phantom")
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > png.size[1] > 100
    assert [p.name for p in (tmp_path / "fig").iterdir()] == ["f4.png"]  # no temp file left
