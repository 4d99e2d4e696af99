"""Model input: resize with cv2 bilinear, per-image min-max to [0, 1], 1 or 3 channels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from data_prep.io import ImageReadError, write_dicom_grayscale
from data_prep.preprocess import DEFAULT_SIZE_WH, load_model_input, min_max, to_model_input

RNG = np.random.default_rng(7)
GRAY8 = (RNG.random((300, 500)) * 255).astype(np.uint8)


@pytest.mark.parametrize("size_wh, channels, expected_shape", [
    ((440, 400), 1, (400, 440, 1)),
    ((440, 400), 3, (400, 440, 3)),
    ((224, 224), 3, (224, 224, 3)),
    ((140, 128), 1, (128, 140, 1)),
    ((500, 300), 1, (300, 500, 1)),   # already the right size
    ((7, 5), 1, (5, 7, 1)),
])
def test_shape_dtype_and_range(size_wh, channels, expected_shape):
    out = to_model_input(GRAY8, size_wh=size_wh, channels=channels)
    assert out.shape == expected_shape
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    if channels == 3:
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])


def test_default_size_is_the_authors_440_by_400():
    assert DEFAULT_SIZE_WH == (440, 400)
    assert to_model_input(GRAY8).shape == (400, 440, 1)


def test_matches_direct_cv2_computation():
    resized = cv2.resize(GRAY8, (440, 400)).astype(np.float64)  # the authors' steps
    expected = (resized - resized.min()) / (resized.max() - resized.min())
    out = to_model_input(GRAY8, (440, 400))[..., 0]
    assert np.abs(out - expected).max() < 1e-6


@pytest.mark.parametrize("value, dtype", [(0, np.uint8), (200, np.uint8), (40000, np.uint16),
                                          (0.5, np.float32)])
def test_constant_image_gives_zeros_not_nan(value, dtype):
    out = to_model_input(np.full((50, 60), value, dtype=dtype), (30, 20), channels=3)
    assert out.shape == (20, 30, 3)
    assert np.isfinite(out).all() and not out.any()


def test_16_bit_input_keeps_its_precision():
    # Values that differ only in the low byte would collapse if squeezed to 8 bits first.
    gray16 = (1000 + (np.arange(64 * 64) % 200)).reshape(64, 64).astype(np.uint16)
    out = to_model_input(gray16, (64, 64))[..., 0]
    expected = (gray16 - 1000.0) / 199.0
    assert np.abs(out - expected).max() < 1e-6
    resized = to_model_input(gray16, (32, 48))[..., 0]
    reference = cv2.resize(gray16, (32, 48)).astype(np.float64)
    reference = (reference - reference.min()) / (reference.max() - reference.min())
    assert np.abs(resized - reference).max() < 1e-6


def test_min_max_does_not_modify_its_input():
    image = np.array([[10, 20], [30, 50]], np.uint8)
    scaled = min_max(image)
    assert image.tolist() == [[10, 20], [30, 50]]
    assert scaled.tolist() == [[0.0, 0.25], [0.5, 1.0]]


@pytest.mark.parametrize("bad, kwargs, message", [
    (np.zeros((4, 4, 3), np.uint8), {}, "2-D"),
    (np.zeros((0, 4), np.uint8), {}, "empty"),
    (GRAY8, {"channels": 2}, "channels"),
    (GRAY8, {"size_wh": (0, 10)}, "positive"),
    (GRAY8, {"size_wh": 440}, "width, height"),
    (np.zeros((4, 4), bool), {}, "pixel type"),
])
def test_rejects_bad_arguments(bad, kwargs, message):
    with pytest.raises(ValueError, match=message):
        to_model_input(bad, **kwargs)


def test_load_model_input_reads_any_format_and_frame(tmp_path):
    frames = np.stack([GRAY8, 255 - GRAY8])
    path = write_dicom_grayscale(tmp_path / "cine.dcm", frames)
    first = load_model_input(path, (110, 100))
    second = load_model_input(path, (110, 100), frame=1)
    assert first.shape == second.shape == (100, 110, 1)
    assert np.abs(first - to_model_input(GRAY8, (110, 100))).max() == 0
    assert np.abs(second - to_model_input(255 - GRAY8, (110, 100))).max() == 0
    with pytest.raises(ImageReadError, match="cine.dcm"):
        load_model_input(path, frame=2)


@pytest.mark.shared_data
def test_real_frames_become_model_input(pgds_sample_dir, hc18_dir):
    for path in sorted(pgds_sample_dir.glob("*/*.jpg"))[:2] + sorted(hc18_dir.glob("*_HC.png"))[:2]:
        out = load_model_input(path, channels=3)
        assert out.shape == (400, 440, 3) and out.dtype == np.float32
        assert out.min() == 0.0 and out.max() == 1.0
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        resized = cv2.resize(gray, (440, 400)).astype(np.float64)
        expected = (resized - resized.min()) / (resized.max() - resized.min())
        assert np.abs(out[..., 0] - expected).max() < 1e-6
