"""Exporter-style copies of a frame: what public data sets ship as "augmented" duplicates.

`exporter_copy(pixels, rng)` returns one copy of a 2-D uint8 frame and a short description of
what was done; `exporter_copies(pixels, count, seed)` returns `count` of them, deterministic in
`seed`. Each copy draws, independently:

- one of the eight flips/rotations by 90 degrees (identity included) with probability 0.6;
- a small rotation (up to +-10 degrees) and/or shear (up to +-0.1) about the centre, black corners,
  with probability 0.5;
- a crop keeping 80-100 % of each side at a random offset, with probability 0.5;
- brightness (+-25 grey levels), contrast (x0.75-1.3) and gamma (0.7-1.4), each with probability 0.5;
- a final resize (0.5-1.3x) and JPEG re-encoding (quality 50-95), each with probability 0.5.

It is the leakage audit's test bench (`tests/test_audit.py`, `bench/bench_audit.py`): the sizes
above are what augmentation pipelines' defaults produce, "a little" in the audit's contract.
"""
from __future__ import annotations

import cv2
import numpy as np

DIHEDRAL_NAMES = ("id", "fliplr", "flipud", "rot90", "rot180", "rot270", "transpose", "antitranspose")


def dihedral(pixels: np.ndarray, index: int) -> np.ndarray:
    """The index-th of the eight flips/rotations by 90 degrees (0 = identity)."""
    return [lambda a: a, np.fliplr, np.flipud, lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 2),
            lambda a: np.rot90(a, 3), lambda a: a.T, lambda a: np.rot90(a, 2).T][index](pixels)


def exporter_copy(pixels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One exporter-style copy of a 2-D uint8 frame and what was done to it."""
    out = np.asarray(pixels, dtype=np.uint8)
    done = []
    if rng.random() < 0.5:
        h, w = out.shape
        keep_h, keep_w = rng.uniform(0.8, 1.0, 2)
        ch, cw = max(8, round(h * keep_h)), max(8, round(w * keep_w))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        out = out[top:top + ch, left:left + cw]
        done.append(f"crop {keep_w:.2f}x{keep_h:.2f}")
    if rng.random() < 0.5:
        h, w = out.shape
        angle, shear = rng.uniform(-10, 10), rng.uniform(-0.1, 0.1)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        shear_matrix = np.array([[1, shear, -shear * h / 2], [0, 1, 0], [0, 0, 1]])
        matrix = matrix @ shear_matrix
        out = cv2.warpAffine(out, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        done.append(f"rotate {angle:+.1f} shear {shear:+.2f}")
    if rng.random() < 0.6:
        index = int(rng.integers(0, 8))
        out = np.ascontiguousarray(dihedral(out, index))
        done.append(DIHEDRAL_NAMES[index])
    values = out.astype(np.float32)
    if rng.random() < 0.5:
        contrast = rng.uniform(0.75, 1.3)
        values = (values - values.mean()) * contrast + values.mean()
        done.append(f"contrast {contrast:.2f}")
    if rng.random() < 0.5:
        shift = rng.uniform(-25, 25)
        values = values + shift
        done.append(f"brightness {shift:+.0f}")
    if rng.random() < 0.5:
        gamma = rng.uniform(0.7, 1.4)
        values = 255.0 * (np.clip(values, 0, 255) / 255.0) ** gamma
        done.append(f"gamma {gamma:.2f}")
    out = np.clip(np.round(values), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        scale = rng.uniform(0.5, 1.3)
        h, w = out.shape
        out = cv2.resize(out, (max(8, round(w * scale)), max(8, round(h * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        done.append(f"resize {scale:.2f}")
    if rng.random() < 0.5:
        quality = int(rng.integers(50, 96))
        ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok, "JPEG encoding failed"
        out = cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)
        done.append(f"jpeg q{quality}")
    return out, ", ".join(done) or "unchanged"


def exporter_copies(pixels: np.ndarray, count: int, seed: int) -> list[tuple[np.ndarray, str]]:
    """`count` exporter-style copies of one frame, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    return [exporter_copy(pixels, rng) for _ in range(count)]


def write_copy_set(frames: list[np.ndarray], copies_per_frame: int, seed: int,
                   out_dir) -> tuple[list, np.ndarray, list[str]]:
    """Write each frame and `copies_per_frame` exporter copies of it as PNG files under out_dir.

    Returns (paths, source index of every path, description of every path). Copy k of frame f
    uses seed `seed * 100_003 + f`, so one frame's copies do not depend on the others.
    """
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, sources, descriptions = [], [], []
    for index, frame in enumerate(frames):
        versions = [(frame, "original")] + exporter_copies(frame, copies_per_frame, seed * 100_003 + index)
        for number, (pixels, description) in enumerate(versions):
            path = out_dir / f"f{index:03d}_c{number:02d}.png"
            assert cv2.imwrite(str(path), pixels), path
            paths.append(path)
            sources.append(index)
            descriptions.append(description)
    return paths, np.array(sources), descriptions


def score_pairs(pairs, sources: np.ndarray) -> tuple[float, int]:
    """(recall, false pairs) of flagged pairs (i, j) against the source index of every image.

    A copy counts as found when it is paired with any other image of its source (its original
    or another copy: either puts the two on one side of a split); a false pair joins two sources.
    """
    sources = np.asarray(sources)
    copies = np.flatnonzero(np.r_[False, sources[1:] == sources[:-1]])  # all but each source's first
    linked = np.zeros(len(sources), dtype=bool)
    false_pairs = 0
    for i, j in pairs:
        if sources[i] == sources[j]:
            linked[i] = linked[j] = True
        else:
            false_pairs += 1
    return float(linked[copies].mean()) if len(copies) else 1.0, false_pairs
