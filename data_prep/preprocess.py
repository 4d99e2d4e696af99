"""Model input: a grayscale frame resized and min-max normalised, as the authors' code does.

The authors' Pgds-ResNet code reads each frame as 8-bit grayscale, resizes it to 440x400
(width x height) with `cv2.resize` (default bilinear interpolation) and scales each image on its
own to [0, 1] by its minimum and maximum. `to_model_input` does exactly that, for any (W, H)
and with 1 or 3 channels (3 repeats the gray channel, for networks built for colour input).
The result is float32 of shape (H, W, channels), values in [0, 1]; a constant image gives all
zeros (not NaN). 16-bit input is resized in 16 bits, so no precision is lost before scaling.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .io import read_grayscale

__all__ = ["DEFAULT_SIZE_WH", "load_model_input", "min_max", "to_model_input"]

DEFAULT_SIZE_WH: tuple[int, int] = (440, 400)
# torchvision's evaluation Resize(256) then CenterCrop(224) (the CNS authors'): the shorter side
# is resized to EVAL_RESIZE_RATIO x the input's, and the crop keeps EVAL_KEEP of it. One place
# for both: reproduce.input_pipeline applies the transform, the CNS phantom places its anatomy
# inside what it keeps.
EVAL_RESIZE, EVAL_CROP = 256, 224
EVAL_RESIZE_RATIO = EVAL_RESIZE / EVAL_CROP
EVAL_KEEP = EVAL_CROP / EVAL_RESIZE
_CHANNEL_CHOICES = (1, 3)


def _check_size(size_wh) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size_wh)
    except (TypeError, ValueError):
        raise ValueError(f"size_wh must be (width, height), not {size_wh!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"size_wh must be positive, not {size_wh!r}")
    return width, height


def min_max(image: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the image's own minimum and maximum, as float32 (constant -> zeros)."""
    values = image.astype(np.float32, copy=True)
    low = float(values.min())
    span = float(values.max()) - low
    values -= low
    if span > 0:
        values /= span
    return values


def to_model_input(gray: np.ndarray, size_wh=DEFAULT_SIZE_WH, channels: int = 1) -> np.ndarray:
    """2-D grayscale image -> float32 (H, W, channels) in [0, 1].

    Resized with cv2.resize, bilinear (cv2.INTER_LINEAR, its default and what the authors
    used), in the image's own dtype; then min-max normalised per image.
    """
    gray = np.asarray(gray)
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    if gray.size == 0:
        raise ValueError("empty image")
    if channels not in _CHANNEL_CHOICES:
        raise ValueError(f"channels must be one of {_CHANNEL_CHOICES}, not {channels!r}")
    width, height = _check_size(size_wh)
    if gray.dtype == np.bool_ or gray.dtype.kind not in "uif":
        raise ValueError(f"unsupported pixel type {gray.dtype}")
    if gray.dtype not in (np.uint8, np.uint16, np.float32):
        gray = gray.astype(np.float32)  # cv2.resize handles u8, u16, f32 (and others poorly)
    if gray.shape != (height, width):
        gray = cv2.resize(gray, (width, height), interpolation=cv2.INTER_LINEAR)
    scaled = min_max(gray)[:, :, np.newaxis]
    if channels == 3:
        scaled = np.repeat(scaled, 3, axis=2)
    return scaled


def load_model_input(path: str | Path, size_wh=DEFAULT_SIZE_WH, channels: int = 1,
                     frame: int = 0) -> np.ndarray:
    """Read `path` (any format `data_prep.io` reads) and return `to_model_input` of it."""
    return to_model_input(read_grayscale(path, frame=frame), size_wh=size_wh, channels=channels)
