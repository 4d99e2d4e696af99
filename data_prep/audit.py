"""Leakage audit of a splits file: cases in two splits, and the same picture on both sides.

`python -m data_prep audit --manifest M --splits S [--out REPORT_DIR] [--hash-distance 6]`

Checks, in order:
1. The splits file is well formed (columns, split values train/val/test, integer folds) and
   matches the manifest row for row: every splits image is in the manifest with the same
   `case_id`, and every manifest image is in the splits (in every fold). Otherwise: one line
   naming the file, row and column, exit 2.
2. No `case_id` sits in two splits (within a fold). Otherwise: one line per case naming the
   splits file, the row, column `case_id` and the case, exit 2 (the images are not hashed).
3. No image has a copy on the other side of a split:
   - exact: identical file bytes (sha256 of the file) or identical decoded pixels (sha256 of
     the pixel array, its shape and dtype);
   - near: perceptual hashes within `--hash-distance` bits: both the 64-bit DCT hash
     (imagehash.phash) and the 64-bit difference hash (imagehash.dhash) must be that close,
     which survives resizing and JPEG re-encoding but not a different frame.
   - transformed: a copy flipped or turned by 90 degrees, rotated or sheared a little, cropped
     (>= 80 % of each side kept), or changed in brightness, contrast or gamma, as dataset
     exporters ship them. Stage 1, every pair: a 63-bit DCT hash of the histogram-equalised 64x64
     thumbnail (equalisation removes any increasing grey-level map), the 8 flips/rotations of one
     image against 9 crops of the other, both directions; each image's 6 nearest within 22 bits
     are candidates. Stage 2, candidates only: ORB keypoints (192 px, 200 features) matched under
     one similarity transform by RANSAC; >= 24 inliers is a copy. A candidate whose two images
     are already joined through found pairs is not verified, so a group of copies costs about one
     verification per member, and every group spanning two splits still yields a crossing pair.
     Measured on `data_prep.exporter_copies` over the 48 real frames (10 copies each, 528
     frames): recall 0.956 (copies paired with their source), 0 false pairs; copies' inliers are
     >= 32 at the 2nd percentile while distinct real frames reach at most 15 (the threshold 24
     sits in that gap). Rotation is what the hash alone cannot separate (copies up to 22 bits,
     distinct real frames from 10), hence the keypoint stage.
   Hamming distances are computed all-pairs with numpy (XOR of uint64 hashes and
   `np.bitwise_count`), in row blocks, so memory stays bounded for large sets.

Exit codes: 0 clean; 1 duplicate images across splits (input well formed, leak found);
2 bad input, including a case in two splits.

Threshold: on the 8 real pgds_sample frames and 40 hc18 frames (1128 distinct pairs) the
smallest phash distance between different images is 12 (dhash 8; both together 12), while
copies resized (0.3x-1.3x) and re-encoded as JPEG (quality 50-75) stay within 2 (dhash 3).
The default 6 sits in the middle of that gap.

The report (with `--out`): `duplicate_pairs.csv` (image_a, split_a, image_b, split_b, kind,
distance, dhash_distance, fold, case_a, case_b, detail, matched_keypoints; distance is the
phash Hamming distance, 0 for exact copies; kind is exact, near or transformed) and `audit_summary.txt`; the summary is printed too.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from . import atomic
from .errors import InputError
from .io import read_grayscale
from .manifest import load_manifest
from .splits import load_splits

DEFAULT_HASH_DISTANCE = 6
EXIT_CLEAN, EXIT_DUPLICATES, EXIT_BAD_INPUT = 0, 1, 2
PAIR_COLUMNS = ["image_a", "split_a", "image_b", "split_b", "kind", "distance", "dhash_distance",
                "fold", "case_a", "case_b", "detail", "matched_keypoints"]


@dataclass(frozen=True)
class CaseLeak:
    """A case found in more than one split; `row` is the splits row (1-based) that shows it."""
    case_id: str
    splits: tuple[str, ...]
    row: int
    fold: int | None = None

    def one_line(self, splits_path: str) -> str:
        where = "" if self.fold is None else f" in fold {self.fold}"
        return InputError(splits_path, f"case '{self.case_id}' is in more than one split{where} "
                          f"({', '.join(self.splits)}); split by case_id",
                          row=self.row, column="case_id").one_line()


@dataclass(frozen=True)
class DuplicatePair:
    image_a: str
    split_a: str
    image_b: str
    split_b: str
    kind: str                 # "exact", "near" or "transformed"
    distance: int             # phash Hamming distance (0 for exact copies)
    dhash_distance: int
    fold: int | None
    case_a: str
    case_b: str
    detail: str = ""
    matched_keypoints: int = 0  # ORB keypoints under one similarity transform ("transformed")


@dataclass
class AuditReport:
    manifest_path: str
    splits_path: str
    hash_distance: int
    n_images: int
    case_leaks: list[CaseLeak] = field(default_factory=list)
    exact_pairs: list[DuplicatePair] = field(default_factory=list)
    near_pairs: list[DuplicatePair] = field(default_factory=list)
    within_split_pairs: int = 0       # duplicate pairs that share a split in every fold: no leak
    images_hashed: bool = False
    min_distinct_distance: int | None = None  # smallest phash distance over pairs not reported as duplicates
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.case_leaks:
            return EXIT_BAD_INPUT
        return EXIT_DUPLICATES if (self.exact_pairs or self.near_pairs) else EXIT_CLEAN

    def pairs_frame(self) -> pd.DataFrame:
        rows = [pair.__dict__ for pair in self.exact_pairs + self.near_pairs]
        frame = pd.DataFrame(rows, columns=PAIR_COLUMNS)
        frame["fold"] = frame["fold"].astype("Int64")
        return frame

    def summary(self) -> str:
        lines = [f"leakage audit of {self.splits_path} against {self.manifest_path}: "
                 f"{self.n_images} images"]
        if self.case_leaks:
            lines.append(f"  {len(self.case_leaks)} case(s) in more than one split -> exit 2 "
                         "(images not hashed)")
            return "\n".join(lines)
        lines += [f"  cases in two splits: 0",
                  f"  exact duplicates across splits: {len(self.exact_pairs)} pair-fold(s)",
                  f"  near duplicates across splits (phash and dhash <= {self.hash_distance} bits): "
                  f"{sum(p.kind == 'near' for p in self.near_pairs)} pair-fold(s)",
                  f"  flipped/rotated/cropped/re-toned copies across splits (ORB keypoints): "
                  f"{sum(p.kind == 'transformed' for p in self.near_pairs)} pair-fold(s)",
                  f"  duplicate pairs kept within one split (not a leak): {self.within_split_pairs}"]
        if self.min_distinct_distance is not None:
            lines.append(f"  smallest phash distance between images not flagged: "
                         f"{self.min_distinct_distance} bits")
        verdict = {EXIT_CLEAN: "clean (exit 0)",
                   EXIT_DUPLICATES: "LEAK: the same picture sits on both sides of a split (exit 1)"}
        lines.append(f"  verdict: {verdict[self.exit_code]}  [{self.seconds:.1f} s]")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- reading


def _norm(path: str) -> str:
    """Compare paths as written, modulo './' and backslashes."""
    return str(PurePosixPath(os.path.normpath(str(path).replace("\\", "/")).replace("\\", "/")))


# ----------------------------------------------------------------------------- structure checks


def check_splits(manifest: pd.DataFrame, splits: pd.DataFrame, *, manifest_path: str,
                 splits_path: str) -> list[CaseLeak]:
    """Check splits rows against the manifest (InputError) and return the cases in two splits."""
    manifest_keys = manifest["image_path"].astype(str).map(_norm)
    duplicated = np.flatnonzero(manifest_keys.duplicated().to_numpy())
    if len(duplicated):
        raise InputError(manifest_path, f"image '{manifest['image_path'].iloc[duplicated[0]]}' is "
                         "listed twice", row=int(duplicated[0]) + 1, column="image_path")
    manifest_row = pd.Series(np.arange(len(manifest_keys)), index=manifest_keys.to_numpy())
    manifest_case = pd.Series(manifest["case_id"].astype(str).to_numpy(), index=manifest_keys.to_numpy())
    splits_keys = splits["image_path"].astype(str).map(_norm)
    splits_cases = splits["case_id"].astype(str).to_numpy()
    split_values = splits["split"].astype(str).to_numpy()
    expected_case = splits_keys.map(manifest_case)
    unknown = np.flatnonzero(expected_case.isna().to_numpy())
    if len(unknown):
        raise InputError(splits_path, f"image '{splits['image_path'].iloc[unknown[0]]}' is not in "
                         f"the manifest {manifest_path}", row=int(unknown[0]) + 1, column="image_path")
    mismatch = np.flatnonzero(expected_case.to_numpy() != splits_cases)
    if len(mismatch):
        position = int(mismatch[0])
        key = splits_keys.iloc[position]
        raise InputError(splits_path, f"case_id '{splits_cases[position]}' differs from the "
                         f"manifest's '{manifest_case[key]}' for this image (manifest row "
                         f"{int(manifest_row[key]) + 1})", row=position + 1, column="case_id")
    has_folds = "fold" in splits.columns
    folds = splits["fold"].astype(int).to_numpy() if has_folds else np.zeros(len(splits), dtype=int)
    splits_keys = splits_keys.to_numpy()
    leaks: list[CaseLeak] = []
    for fold in np.unique(folds):
        in_fold = np.flatnonzero(folds == fold)
        missing = manifest_row.index.difference(pd.Index(splits_keys[in_fold]))
        if len(missing):
            position = int(manifest_row[missing].min())
            where = f" (fold {fold})" if has_folds else ""
            raise InputError(manifest_path, f"image '{manifest['image_path'].iloc[position]}' is "
                             f"missing from the splits file {splits_path}{where}",
                             row=position + 1, column="image_path")
        part = pd.DataFrame({"case": splits_cases[in_fold], "split": split_values[in_fold],
                             "position": in_fold})
        first_split = part.groupby("case", sort=False)["split"].transform("first")
        crossing = part[part["split"] != first_split].drop_duplicates("case")
        for case, position in zip(crossing["case"], crossing["position"]):
            all_splits = tuple(sorted(set(part.loc[part["case"] == case, "split"])))
            leaks.append(CaseLeak(case, all_splits, int(position) + 1, int(fold) if has_folds else None))
    leaks.sort(key=lambda leak: leak.row)
    return leaks


# ----------------------------------------------------------------------------- fingerprints


@dataclass
class Fingerprints:
    file_sha256: list[str]
    pixel_sha256: list[str]
    phash: np.ndarray   # uint64, one per image
    dhash: np.ndarray   # uint64
    oriented: np.ndarray | None = None  # uint64 (n, 8): robust hash of the 8 flips/rotations
    cropped: np.ndarray | None = None   # uint64 (n, len(CROP_BOXES)): robust hash of crops
    # Each frame equalised at ORB_SIZE (stage 2 reads these instead of decoding files again).
    orb_frames: list[np.ndarray] | None = None


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    low, high = float(pixels.min()), float(pixels.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.round((pixels.astype(np.float64) - low) * scale).astype(np.uint8)


def _hash_bits(value: imagehash.ImageHash) -> np.uint64:
    return np.packbits(value.hash.flatten()).view(">u8")[0].astype(np.uint64)


def _gray8(path: Path) -> np.ndarray:
    pixels = read_grayscale(path)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return _to_uint8(pixels)


def fingerprint(path: Path) -> tuple[str, str, np.uint64, np.uint64, np.ndarray, np.ndarray,
                                     np.ndarray]:
    """(file sha256, pixel sha256, phash, dhash, 8 oriented hashes, crop hashes, the frame
    equalised at ORB_SIZE) of one image."""
    data = Path(path).read_bytes()
    pixels = read_grayscale(path)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    pixel_digest = hashlib.sha256(f"{pixels.shape}|{pixels.dtype}|".encode())
    pixel_digest.update(np.ascontiguousarray(pixels).tobytes())
    gray = _to_uint8(pixels)
    picture = Image.fromarray(gray)
    return (hashlib.sha256(data).hexdigest(), pixel_digest.hexdigest(),
            _hash_bits(imagehash.phash(picture)), _hash_bits(imagehash.dhash(picture)),
            *robust_hashes(gray), orb_frame(gray))


# ----------------------------------------------------------------------------- robust near duplicates
# Stage 1 (every pair, cheap): a 63-bit DCT hash of a histogram-equalised 64x64 thumbnail, of
# the 8 flips/rotations of one image against 9 crops of the other. Stage 2 (only a few nearest
# candidates per image): ORB keypoints matched under one similarity transform (RANSAC).

THUMB_SIZE, HASH_SIZE = 64, 32
# (top, left, height, width) as fractions of the frame: the full frame, centred 90 % and 80 %
# crops per axis, so a crop keeping >= 80 % of a side lands near one of them.
_AXIS_CROPS = ((0.0, 1.0), (0.05, 0.9), (0.1, 0.8))
CROP_BOXES = tuple((top, left, height, width) for top, height in _AXIS_CROPS
                   for left, width in _AXIS_CROPS)
CANDIDATE_DISTANCE = 22      # of 63 bits; exporter copies measured up to 22, see module docstring
CANDIDATES_PER_IMAGE = 6     # nearest candidates verified per image: bounds stage 2's cost
MIN_MATCHED_KEYPOINTS = 24   # RANSAC inliers; see module docstring for the measured gap
ORB_SIZE, ORB_FEATURES = 192, 200
# Pyramid levels (scale 1.2 each): frames are brought to ORB_SIZE first, so a copy differs in
# scale only by its crop (>= 80 % of a side kept: <= 1.25x); OpenCV's 8 levels cost 2x as much.
ORB_LEVELS = 3


def _dct_rows(n: int, keep: int) -> np.ndarray:
    k, x = np.arange(keep)[:, None], np.arange(n)[None, :]
    return np.cos(np.pi * (2 * x + 1) * k / (2 * n)).astype(np.float32)


_DCT = _dct_rows(HASH_SIZE, 8)
_BIT_WEIGHTS = (np.uint64(1) << np.arange(63, dtype=np.uint64))


def _dct_hashes(stack: np.ndarray) -> np.ndarray:
    """63-bit DCT hashes (8x8 lowest frequencies less DC, each above the median) of (m, 32, 32)."""
    # Two matrix products (BLAS): 40x faster than the same sum as one three-operand einsum.
    coefficients = (_DCT @ stack @ _DCT.T).reshape(len(stack), -1)[:, 1:]
    bits = coefficients > np.median(coefficients, axis=1, keepdims=True)
    return (bits.astype(np.uint64) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)


def _dihedral(pixels: np.ndarray, index: int) -> np.ndarray:
    return np.rot90(pixels if index < 4 else pixels.T, index % 4)


def robust_hashes(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(8 oriented hashes, len(CROP_BOXES) crop hashes) of one 2-D uint8 frame.

    Histogram equalisation first makes the hash blind to brightness, contrast and gamma (any
    increasing grey-level map); the 64x64 square thumbnail makes it blind to resizing.
    """
    thumb = cv2.equalizeHist(cv2.resize(pixels, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA))
    small = cv2.resize(thumb, (HASH_SIZE, HASH_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    oriented = np.stack([_dihedral(small, index) for index in range(8)])
    crops = []
    for top, left, height, width in CROP_BOXES:
        y0, x0 = round(top * THUMB_SIZE), round(left * THUMB_SIZE)
        y1, x1 = y0 + round(height * THUMB_SIZE), x0 + round(width * THUMB_SIZE)
        crops.append(cv2.resize(thumb[y0:y1, x0:x1], (HASH_SIZE, HASH_SIZE), interpolation=cv2.INTER_AREA))
    return _dct_hashes(oriented), _dct_hashes(np.stack(crops).astype(np.float32))


def robust_distances(oriented: np.ndarray, cropped: np.ndarray) -> np.ndarray:
    """(n, n) uint8: the fewest differing bits between any orientation of one image and any
    crop of the other, in either direction (diagonal 255)."""
    n = len(oriented)
    best = np.full((n, n), 255, dtype=np.uint8)
    for o in range(oriented.shape[1]):
        for c in range(cropped.shape[1]):
            np.minimum(best, np.bitwise_count(oriented[:, o, None] ^ cropped[None, :, c]), out=best)
    best = np.minimum(best, best.T)
    np.fill_diagonal(best, 255)
    return best


def candidate_pairs(distances: np.ndarray, *, max_distance: int = CANDIDATE_DISTANCE,
                    per_image: int = CANDIDATES_PER_IMAGE) -> set[tuple[int, int]]:
    """Pairs i < j within max_distance where j is among i's `per_image` nearest or i among j's."""
    n = len(distances)
    if n < 2:
        return set()
    k = min(per_image, n - 1)
    nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(n), k)
    cols = nearest.ravel()
    keep = distances[rows, cols] <= max_distance
    return {(int(min(a, b)), int(max(a, b))) for a, b in zip(rows[keep], cols[keep])}




def orb_frame(pixels: np.ndarray) -> np.ndarray:
    """The frame resized to ORB_SIZE on its long side and histogram-equalised (uint8)."""
    h, w = pixels.shape
    scale = ORB_SIZE / max(h, w)
    return cv2.equalizeHist(cv2.resize(
        pixels, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA))


class OrbFeatures:
    """ORB keypoints of the equalised frame (`orb_frame`), and of its mirror image on first use:
    ORB is invariant to rotation, so the mirror covers the other four of the 8 flips/rotations."""

    def __init__(self, small: np.ndarray):
        self.small = small
        self.views: dict[bool, tuple[np.ndarray, np.ndarray | None]] = {}

    def view(self, mirrored: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if mirrored not in self.views:
            image = np.ascontiguousarray(self.small[:, ::-1]) if mirrored else self.small
            # One detector per call: cheap to make, and nothing is shared between threads.
            detector = cv2.ORB_create(nfeatures=ORB_FEATURES, fastThreshold=10, nlevels=ORB_LEVELS)
            keypoints, descriptors = detector.detectAndCompute(image, None)
            self.views[mirrored] = (np.float32([k.pt for k in keypoints]).reshape(-1, 2), descriptors)
        return self.views[mirrored]


def matched_keypoints(a: OrbFeatures, b: OrbFeatures, mirrored: bool) -> int:
    """RANSAC inliers of the best similarity transform taking a's keypoints onto b's (onto b's
    mirror image if `mirrored`)."""
    points_a, descriptors_a = a.view(False)
    points_b, descriptors_b = b.view(mirrored)
    if descriptors_a is None or descriptors_b is None or min(len(points_a), len(points_b)) < 3:
        return 0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(descriptors_a, descriptors_b)
    if len(matches) < 3:
        return 0
    source = points_a[[m.queryIdx for m in matches]]
    target = points_b[[m.trainIdx for m in matches]]
    # 500 iterations (OpenCV: 2000) find a 2-point model among 16 % inliers with p > 0.99999
    # (copies keep >= 32 inliers of <= 200 matches); most pairs are not copies and run them all.
    _, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC,
                                             ransacReprojThreshold=3.0, maxIters=500)
    return 0 if inliers is None else int(inliers.sum())


def _mirrored(prints: Fingerprints, i: int, j: int) -> bool:
    """Whether the closest orientation/crop match of i and j is a mirror image (a flip or a
    transpose, orientations 4-7), in the direction that gives the robust distance."""
    best = []
    for a, b in ((i, j), (j, i)):
        grid = np.bitwise_count(prints.oriented[a][:, None] ^ prints.cropped[b][None, :])
        best.append((int(grid.min()), int(np.unravel_index(grid.argmin(), grid.shape)[0])))
    return min(best)[1] >= 4


class _Components:
    """Union-find over image indices: a candidate inside one component needs no verifying."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)


def transformed_copies(paths: list[Path], prints: Fingerprints, *, workers: int | None = None,
                       skip: set[tuple[int, int]] = frozenset()
                       ) -> dict[tuple[int, int], tuple[int, int]]:
    """Pairs (i, j) found as flipped/rotated/cropped/re-toned copies: {(i, j): (robust hash
    distance, matched keypoints)}.

    Candidates are verified nearest first, in batches, and a candidate whose two images are
    already joined (through `skip` or verified pairs) is not verified: a group of copies costs
    one verification per member, and every group that spans two splits still has a reported
    pair that crosses them.
    """
    distances = robust_distances(prints.oriented, prints.cropped)
    candidates = sorted(candidate_pairs(distances) - set(skip), key=lambda pair: distances[pair])
    if not candidates:
        return {}
    components = _Components(len(paths))
    for i, j in skip:
        components.join(i, j)
    workers = workers or min(4, os.cpu_count() or 1)
    features: dict[int, list] = {}
    found = {}
    batch_size = 8 * workers
    with ThreadPoolExecutor(max_workers=workers) as pool:
        position = 0
        while position < len(candidates):
            batch = []
            while position < len(candidates) and len(batch) < batch_size:
                i, j = candidates[position]
                position += 1
                if components.find(i) != components.find(j):
                    batch.append((i, j))
            new = sorted({k for pair in batch for k in pair} - set(features))
            features.update((k, OrbFeatures(prints.orb_frames[k] if prints.orb_frames is not None
                                            else orb_frame(_gray8(paths[k])))) for k in new)
            counts = pool.map(lambda pair: matched_keypoints(features[pair[0]], features[pair[1]],
                                                             _mirrored(prints, *pair)), batch)
            for (i, j), count in zip(batch, counts):
                if count >= MIN_MATCHED_KEYPOINTS:
                    found[(i, j)] = (int(distances[i, j]), count)
                    components.join(i, j)
    return found


def fingerprints(paths: list[Path], *, workers: int | None = None, progress: bool = True) -> Fingerprints:
    """Fingerprint images in a small thread pool (decoding and resizing release the GIL)."""
    workers = workers or min(4, os.cpu_count() or 1)
    results = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for count, result in enumerate(pool.map(fingerprint, paths), start=1):
            results.append(result)
            if progress and len(paths) >= 500 and (count % 500 == 0 or count == len(paths)):
                print(f"  hashed {count}/{len(paths)} images", file=sys.stderr)
    return Fingerprints([r[0] for r in results], [r[1] for r in results],
                        np.array([r[2] for r in results], dtype=np.uint64),
                        np.array([r[3] for r in results], dtype=np.uint64),
                        np.array([r[4] for r in results], dtype=np.uint64).reshape(-1, 8),
                        np.array([r[5] for r in results], dtype=np.uint64).reshape(-1, len(CROP_BOXES)),
                        [r[6] for r in results])


def hamming_pairs(hashes: np.ndarray, max_distance: int, *, block_cells: int = 1 << 22
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j whose 64-bit hashes differ in <= max_distance bits: (i, j, distance)."""
    n = len(hashes)
    rows_per_block = max(1, block_cells // max(n, 1))
    found_i, found_j, found_d = [], [], []
    for start in range(0, n, rows_per_block):
        stop = min(n, start + rows_per_block)
        distance = np.bitwise_count(hashes[start:stop, None] ^ hashes[None, :])
        i, j = np.nonzero(distance <= max_distance)
        i = i + start
        keep = j > i
        found_i.append(i[keep])
        found_j.append(j[keep])
        found_d.append(distance[i[keep] - start, j[keep]])
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return (np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64),
            np.concatenate(found_d).astype(np.int64))


def min_pair_distance(hashes: np.ndarray, exclude: set[tuple[int, int]], *,
                      block_cells: int = 1 << 22) -> int | None:
    """Smallest Hamming distance over pairs i < j not in `exclude` (None for < 2 images)."""
    n = len(hashes)
    if n < 2:
        return None
    best = 65
    rows_per_block = max(1, block_cells // n)
    for start in range(0, n, rows_per_block):
        stop = min(n, start + rows_per_block)
        distance = np.bitwise_count(hashes[start:stop, None] ^ hashes[None, :]).astype(np.int64)
        rows = np.arange(start, stop)[:, None]
        distance[np.arange(n)[None, :] <= rows] = 65
        for i, j in exclude:
            if start <= i < stop:
                distance[i - start, j] = 65
        best = min(best, int(distance.min()))
    return best if best <= 64 else None


def _same_value_pairs(values: list[str]) -> set[tuple[int, int]]:
    groups: dict[str, list[int]] = {}
    for index, value in enumerate(values):
        groups.setdefault(value, []).append(index)
    pairs = set()
    for members in groups.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                pairs.add((members[a], members[b]))
    return pairs


@dataclass(frozen=True)
class PairEvidence:
    kind: str                  # "exact", "near" or "transformed"
    detail: str = ""
    matched_keypoints: int = 0


def duplicate_pairs(paths: list[Path], prints: Fingerprints, *,
                    hash_distance: int = DEFAULT_HASH_DISTANCE, workers: int | None = None
                    ) -> dict[tuple[int, int], PairEvidence]:
    """Every pair i < j of images that are copies of one another, whatever their splits."""
    exact_by_file = _same_value_pairs(prints.file_sha256)
    exact = exact_by_file | _same_value_pairs(prints.pixel_sha256)
    found = {pair: PairEvidence("exact", "identical file bytes" if pair in exact_by_file
                                else "identical pixels") for pair in exact}
    near_i, near_j, _ = hamming_pairs(prints.phash, hash_distance)
    for i, j in zip(near_i.tolist(), near_j.tolist()):
        if (i, j) not in found and \
                int(np.bitwise_count(prints.dhash[i] ^ prints.dhash[j])) <= hash_distance:
            found[(i, j)] = PairEvidence("near")
    for pair, (distance, keypoints) in transformed_copies(paths, prints, workers=workers,
                                                          skip=set(found)).items():
        found[pair] = PairEvidence("transformed", f"robust hash {distance} bits, "
                                   f"{keypoints} keypoints under one similarity transform", keypoints)
    return found


# ----------------------------------------------------------------------------- audit


def audit(manifest_path: str | Path, splits_path: str | Path, *,
          hash_distance: int = DEFAULT_HASH_DISTANCE, workers: int | None = None,
          progress: bool = True) -> AuditReport:
    """Audit a splits file for leakage; see the module docstring for what is checked.

    Raises InputError for malformed input; returns case leaks (without hashing images) or the
    exact and near-duplicate image pairs that sit in different splits, one entry per fold.
    """
    started = time.perf_counter()
    if not 0 <= hash_distance <= 64:
        raise InputError(None, f"hash distance must be between 0 and 64 bits, got {hash_distance}")
    manifest_path, splits_path = Path(manifest_path), Path(splits_path)
    # check_images: a cheap header/CRC check that names the manifest row of a broken file.
    manifest = load_manifest(manifest_path, check_images=True)
    splits = load_splits(splits_path)
    leaks = check_splits(manifest, splits, manifest_path=str(manifest_path),
                         splits_path=str(splits_path))
    report = AuditReport(str(manifest_path), str(splits_path), hash_distance, len(manifest),
                         case_leaks=leaks)
    if leaks:
        report.seconds = time.perf_counter() - started
        return report

    if "abs_path" in manifest.columns:
        paths = [Path(p) for p in manifest["abs_path"]]
    else:
        paths = [manifest_path.parent / p for p in manifest["image_path"].astype(str)]
    prints = fingerprints(paths, workers=workers, progress=progress)

    found = duplicate_pairs(paths, prints, hash_distance=hash_distance, workers=workers)

    keys = manifest["image_path"].astype(str).map(_norm).to_numpy()
    image_paths = manifest["image_path"].astype(str).to_numpy()
    cases = manifest["case_id"].astype(str).to_numpy()
    has_folds = "fold" in splits.columns
    fold_values = splits["fold"].to_numpy() if has_folds else np.zeros(len(splits), dtype=int)
    split_of: dict[int, dict[str, str]] = {}
    for fold, key, split in zip(fold_values, splits["image_path"].astype(str).map(_norm),
                                splits["split"].astype(str)):
        split_of.setdefault(int(fold), {})[key] = split

    for (i, j), evidence in sorted(found.items()):
        phash_d = int(np.bitwise_count(prints.phash[i] ^ prints.phash[j]))
        dhash_d = int(np.bitwise_count(prints.dhash[i] ^ prints.dhash[j]))
        is_exact = evidence.kind == "exact"
        crossed = False
        for fold, mapping in sorted(split_of.items()):
            split_a, split_b = mapping[keys[i]], mapping[keys[j]]
            if split_a == split_b:
                continue
            crossed = True
            pair = DuplicatePair(image_paths[i], split_a, image_paths[j], split_b, evidence.kind,
                                 0 if is_exact else phash_d, dhash_d, fold if has_folds else None,
                                 cases[i], cases[j], evidence.detail, evidence.matched_keypoints)
            (report.exact_pairs if is_exact else report.near_pairs).append(pair)
        report.within_split_pairs += int(not crossed)

    report.min_distinct_distance = min_pair_distance(prints.phash, set(found))
    report.images_hashed = True
    report.seconds = time.perf_counter() - started
    return report


def write_report(report: AuditReport, out_dir: str | Path) -> Path:
    """Write duplicate_pairs.csv and audit_summary.txt into out_dir (atomically, file by file)."""
    out_dir = Path(out_dir)
    atomic.write_csv(out_dir / "duplicate_pairs.csv", report.pairs_frame())
    atomic.write_text(out_dir / "audit_summary.txt", report.summary() + "\n")
    return out_dir


# ----------------------------------------------------------------------------- command line


def _run(args: argparse.Namespace) -> int:
    report = audit(args.manifest, args.splits, hash_distance=args.hash_distance)
    if report.case_leaks:
        for leak in report.case_leaks[:20]:
            print(f"error: {leak.one_line(report.splits_path)}", file=sys.stderr)
        if len(report.case_leaks) > 20:
            print(f"error: ... and {len(report.case_leaks) - 20} more cases in two splits",
                  file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report.summary())
    for pair in (report.exact_pairs + report.near_pairs)[:20]:
        fold = "" if pair.fold is None else f" [fold {pair.fold}]"
        print(f"  {pair.kind} (phash {pair.distance}, dhash {pair.dhash_distance}){fold}: "
              f"{pair.image_a} ({pair.split_a}) ~ {pair.image_b} ({pair.split_b})")
    if args.out:
        write_report(report, args.out)
        print(f"wrote {Path(args.out) / 'duplicate_pairs.csv'} and audit_summary.txt")
    return report.exit_code


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit", help="leakage audit: cases in two splits, exact and near-duplicate images",
        description="Check a splits file against its manifest. Exit 0 clean; 1 duplicate images "
                    "across splits; 2 bad input, including a case_id in two splits.")
    parser.add_argument("--manifest", required=True, help="manifest CSV the splits were made from")
    parser.add_argument("--splits", required=True, help="splits CSV (image_path, case_id, split[, fold])")
    parser.add_argument("--out", default=None,
                        help="folder for duplicate_pairs.csv and audit_summary.txt (default: print only)")
    parser.add_argument("--hash-distance", type=int, default=DEFAULT_HASH_DISTANCE,
                        choices=range(0, 65), metavar="BITS",
                        help="largest Hamming distance (of 64 bits, for both phash and dhash) "
                             f"counted as a near duplicate (default {DEFAULT_HASH_DISTANCE})")
    parser.set_defaults(func=_run)
