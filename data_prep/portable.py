"""Float image operations whose results are the same on every x86-64 CPU.

OpenCV picks a SIMD code path by CPU (SSE, AVX2, AVX-512) for `GaussianBlur`, `resize`,
`magnitude`, `exp` and `pow` on float images, and those paths round differently: the same seed
drew other phantom pixels on another CPU, which trained another model (issue: "The README's two
commands must pass on any x86-64 machine"). The phantom generators therefore render with the
functions here, which use only

- IEEE-754 float64 `+ - * / sqrt` applied element by element in a fixed order (NumPy never
  fuses two ufunc calls into an FMA, and an elementwise result does not depend on the vector
  width), integer indexing, and `math.fsum` (an exactly rounded sum) -- exact on every CPU;
- float64 `exp` / `power` per pixel, whose SIMD and libm variants differ by at most a few units
  in the last place (about 1e-15 relative): 13 orders of magnitude below the 1/255 step of the
  8-bit frame they end in, so a pixel changes only if a value falls within 1e-13 of a rounding
  boundary (about once per 10^6 phantoms of the `default` size);
- filter weights rounded to a 2^-24 grid (`gaussian_kernel`), so a last-bit difference of the
  `exp` that made them cannot reach the filtered image.

`tests/test_phantom_portable.py` checks the committed phantom hashes with OpenCV's and NumPy's
SIMD dispatch turned off (`OPENCV_CPU_DISABLE`, `cv2.setUseOptimized(False)`,
`NPY_DISABLE_CPU_FEATURES`).
"""
from __future__ import annotations

import functools
import math

import numpy as np

_WEIGHT_GRID = float(2 ** 24)


@functools.lru_cache(maxsize=256)
def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised 1-D Gaussian weights (radius ceil(truncate * sigma)), each rounded to the
    2^-24 grid before normalising, so the kernel is the same bits on every CPU."""
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = max(1, int(math.ceil(truncate * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.round(np.exp(-0.5 * (offsets / sigma) ** 2) * _WEIGHT_GRID) / _WEIGHT_GRID
    weights = weights / math.fsum(weights.tolist())
    weights.flags.writeable = False   # cached: shared by every caller
    return weights


def _reflect_101_indices(n: int, radius: int) -> np.ndarray:
    """Source indices of a reflect-101 padded axis (OpenCV's default border: ...2 1 | 0 1 2...)."""
    index = np.arange(-radius, n + radius)
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def correlate_axis(image: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Correlate float64 `image` with odd-length `weights` along `axis`, reflect-101 border;
    the taps are summed in a fixed order (left to right)."""
    image = np.asarray(image, dtype=np.float64)
    radius = (len(weights) - 1) // 2
    n = image.shape[axis]
    padded = np.take(image, _reflect_101_indices(n, radius), axis=axis)
    out = np.zeros_like(image)
    lead = (slice(None),) * (axis % image.ndim)
    for tap, weight in enumerate(weights):
        out += float(weight) * padded[lead + (slice(tap, tap + n),)]
    return out


def gaussian_blur(image: np.ndarray, sigma_x: float, sigma_y: float | None = None) -> np.ndarray:
    """Separable Gaussian blur (float64; x along columns, y along rows), reflect-101 border."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    rows = correlate_axis(image, gaussian_kernel(sigma_y), axis=0)
    return correlate_axis(rows, gaussian_kernel(sigma_x), axis=1)


def _linear_taps(n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left index, right index, right weight): pixel centres aligned (OpenCV's INTER_LINEAR)."""
    scale = n_src / n_dst
    position = (np.arange(n_dst, dtype=np.float64) + 0.5) * scale - 0.5
    position = np.clip(position, 0.0, n_src - 1.0)
    left = np.floor(position).astype(np.int64)
    right = np.minimum(left + 1, n_src - 1)
    return left, right, position - left


def _cubic_weight(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys cubic convolution kernel (a = -0.75 as OpenCV's INTER_CUBIC), |t| < 2."""
    t = np.abs(t)
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    far = ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    return np.where(t <= 1.0, near, np.where(t < 2.0, far, 0.0))


def _resize_axis(image: np.ndarray, n_dst: int, axis: int, method: str) -> np.ndarray:
    n_src = image.shape[axis]
    if n_src == n_dst:
        return image
    if method == "linear":
        left, right, weight = _linear_taps(n_src, n_dst)
        shape = [1] * image.ndim
        shape[axis] = n_dst
        weight = weight.reshape(shape)
        return (np.take(image, left, axis=axis) * (1.0 - weight)
                + np.take(image, right, axis=axis) * weight)
    if method == "cubic":
        position = (np.arange(n_dst, dtype=np.float64) + 0.5) * (n_src / n_dst) - 0.5
        base = np.floor(position).astype(np.int64)
        fraction = position - base
        shape = [1] * image.ndim
        shape[axis] = n_dst
        out = np.zeros(image.shape[:axis] + (n_dst,) + image.shape[axis + 1:], np.float64)
        for k in (-1, 0, 1, 2):   # fixed tap order
            index = np.clip(base + k, 0, n_src - 1)   # replicate border
            out += _cubic_weight(fraction - k).reshape(shape) * np.take(image, index, axis=axis)
        return out
    raise ValueError(f"method must be 'linear' or 'cubic', got {method!r}")


def resize(image: np.ndarray, width: int, height: int, method: str = "linear") -> np.ndarray:
    """Resize a float64 2-D image to (height, width): separable linear or cubic interpolation
    with pixel centres aligned, rows first, then columns."""
    image = np.asarray(image, dtype=np.float64)
    return _resize_axis(_resize_axis(image, int(height), 0, method), int(width), 1, method)


def exact_mean(values: np.ndarray) -> float:
    """The mean in a fixed order: rows added element by element (each column's sum is a chain
    of IEEE additions, whatever the vector width), then the column sums with math.fsum."""
    values = np.asarray(values, dtype=np.float64)
    rows = values.reshape(-1, values.shape[-1]) if values.ndim > 1 else values.reshape(-1, 1)
    column_sums = rows[0].copy()
    for row in rows[1:]:
        column_sums += row
    return math.fsum(column_sums.tolist()) / values.size


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round float64 pixel values to uint8 (half up, clipped to 0..255)."""
    return np.floor(np.clip(np.asarray(image, dtype=np.float64) + 0.5, 0.0, 255.0)).astype(np.uint8)
