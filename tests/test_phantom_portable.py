"""The phantom is the same bytes on every x86-64 CPU (issue: "The README's two commands must
pass on any x86-64 machine").

The committed listings (`tests/golden/phantom_pgds_*.sha256`, made by
`python -m tests.phantom_hashes --write`) hold the sha256 of every file of the `ci` phantom and
of a 24-case sample of the `default` phantom. They are checked as the code runs here, and in a
subprocess where OpenCV and NumPy may use none of their CPU-specific SIMD code paths:
`OPENCV_CPU_DISABLE` (which, on this kind of machine, changes what `cv2.resize` and
`cv2.GaussianBlur` return), `cv2.setUseOptimized(False)`, and `NPY_DISABLE_CPU_FEATURES` for
every feature NumPy dispatches to beyond its baseline (SVML / AVX-512 `exp`, `power`, `sin`...).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_prep import portable
from tests import phantom_hashes

REPO = phantom_hashes.GOLDEN.parent.parent
OPENCV_DISABLE = "AVX512-SKX,AVX2,FP16,AVX"


def _numpy_dispatch_features() -> str:
    from numpy._core import _multiarray_umath as umath

    return " ".join(f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f))


def _committed() -> dict[str, str]:
    return {name: path.read_text(encoding="utf-8")
            for name, path in phantom_hashes.LISTINGS.items()}


def _first_difference(expected: str, found: str) -> str:
    want = dict(line.split("  ", 1)[::-1] for line in expected.splitlines())
    got = dict(line.split("  ", 1)[::-1] for line in found.splitlines())
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            return f"{name}: committed {want.get(name)}, rendered {got.get(name)}"
    return "no difference"


def test_phantom_matches_committed_hashes():
    found = phantom_hashes.listings()
    for name, expected in _committed().items():
        assert found[name] == expected, (
            f"{name} phantom differs from {phantom_hashes.LISTINGS[name].name}: "
            f"{_first_difference(expected, found[name])}. If the change is intended, bump "
            "phantom_pgds.GENERATOR_VERSION and run python -m tests.phantom_hashes --write")


def test_phantom_matches_committed_hashes_without_simd():
    env = dict(os.environ, OPENCV_CPU_DISABLE=OPENCV_DISABLE,
               NPY_DISABLE_CPU_FEATURES=_numpy_dispatch_features(), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "tests.phantom_hashes", "--json",
                           "--no-opencv-optimizations"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout)
    for name, expected in _committed().items():
        assert found[name] == expected, (
            f"{name} phantom rendered without SIMD differs: "
            f"{_first_difference(expected, found[name])}")


def test_listing_covers_every_file_class():
    ci = _committed()["ci"]
    names = [line.split("  ", 1)[1] for line in ci.splitlines()]
    assert "manifest.csv" in names and "phi_truth.json" in names
    assert sum(n.startswith("images/") for n in names) == 72
    assert sum(n.startswith("masks/") for n in names) == 72
    sample = _committed()["default_sample"]
    assert "plan.json" in sample and sample.count("images/") >= phantom_hashes.DEFAULT_SAMPLE_CASES


# ----------------------------------------------------------------------------- portable ops
# Hand-written filters: checked against the libraries they replace (same maths; the libraries
# differ only in the last bits, by CPU).

def test_gaussian_blur_matches_scipy():
    from scipy import ndimage

    image = np.random.default_rng(0).random((37, 53))
    ours = portable.gaussian_blur(image, 1.7, 0.9)
    # scipy's 'mirror' is reflect-101; the same truncation radius (4 sigma).
    theirs = ndimage.gaussian_filter(image, sigma=(0.9, 1.7), mode="mirror", truncate=4.0)
    assert np.max(np.abs(ours - theirs)) < 1e-6


@pytest.mark.parametrize("method,cv2_flag", [("linear", "INTER_LINEAR"), ("cubic", "INTER_CUBIC")])
def test_resize_matches_opencv(method, cv2_flag):
    import cv2

    image = np.random.default_rng(1).random((9, 13))
    ours = portable.resize(image, 40, 31, method)
    theirs = cv2.resize(image.astype(np.float32), (40, 31), interpolation=getattr(cv2, cv2_flag))
    assert ours.shape == (31, 40)
    assert np.max(np.abs(ours - theirs)) < 1e-5


def test_exact_mean_and_rounding():
    values = np.random.default_rng(2).random((50, 70))
    assert portable.exact_mean(values) == pytest.approx(values.mean(), rel=1e-14)
    assert portable.to_uint8(np.array([-3.0, 0.49, 0.5, 254.5, 300.0])).tolist() == [0, 0, 1, 255, 255]


def test_gaussian_kernel_weights_sit_on_a_grid_before_normalising():
    kernel = portable.gaussian_kernel(1.3)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-15)
    assert len(kernel) == 2 * int(np.ceil(4 * 1.3)) + 1
    assert not kernel.flags.writeable
