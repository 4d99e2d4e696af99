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
   Hamming distances are computed all-pairs with numpy (XOR of uint64 hashes and
   `np.bitwise_count`), in row blocks, so memory stays bounded for large sets.

Exit codes: 0 clean; 1 duplicate images across splits (input well formed, leak found);
2 bad input, including a case in two splits.

Threshold: on the 8 real pgds_sample frames and 40 hc18 frames (1128 distinct pairs) the
smallest phash distance between different images is 12 (dhash 8; both together 12), while
copies resized (0.3x-1.3x) and re-encoded as JPEG (quality 50-75) stay within 2 (dhash 3).
The default 6 sits in the middle of that gap.

The report (with `--out`): `duplicate_pairs.csv` (image_a, split_a, image_b, split_b, kind,
distance, dhash_distance, fold, case_a, case_b, detail; distance is the phash Hamming
distance, 0 for exact copies) and `audit_summary.txt`; the summary is printed too.
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
                "fold", "case_a", "case_b", "detail"]


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
    kind: str                 # "exact" or "near"
    distance: int             # phash Hamming distance (0 for exact copies)
    dhash_distance: int
    fold: int | None
    case_a: str
    case_b: str
    detail: str = ""


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
                  f"{len(self.near_pairs)} pair-fold(s)",
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


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    low, high = float(pixels.min()), float(pixels.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.round((pixels.astype(np.float64) - low) * scale).astype(np.uint8)


def _hash_bits(value: imagehash.ImageHash) -> np.uint64:
    return np.packbits(value.hash.flatten()).view(">u8")[0].astype(np.uint64)


def fingerprint(path: Path) -> tuple[str, str, np.uint64, np.uint64]:
    """(file sha256, pixel sha256, phash, dhash) of one image."""
    data = Path(path).read_bytes()
    pixels = read_grayscale(path)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    pixel_digest = hashlib.sha256(f"{pixels.shape}|{pixels.dtype}|".encode())
    pixel_digest.update(np.ascontiguousarray(pixels).tobytes())
    picture = Image.fromarray(_to_uint8(pixels))
    return (hashlib.sha256(data).hexdigest(), pixel_digest.hexdigest(),
            _hash_bits(imagehash.phash(picture)), _hash_bits(imagehash.dhash(picture)))


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
                        np.array([r[3] for r in results], dtype=np.uint64))


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

    exact_by_file = _same_value_pairs(prints.file_sha256)
    exact = exact_by_file | _same_value_pairs(prints.pixel_sha256)
    near_i, near_j, _ = hamming_pairs(prints.phash, hash_distance)
    candidates = {(int(i), int(j)) for i, j in zip(near_i, near_j)
                  if int(np.bitwise_count(prints.dhash[i] ^ prints.dhash[j])) <= hash_distance}
    candidates |= exact

    keys = manifest["image_path"].astype(str).map(_norm).to_numpy()
    image_paths = manifest["image_path"].astype(str).to_numpy()
    cases = manifest["case_id"].astype(str).to_numpy()
    has_folds = "fold" in splits.columns
    fold_values = splits["fold"].to_numpy() if has_folds else np.zeros(len(splits), dtype=int)
    split_of: dict[int, dict[str, str]] = {}
    for fold, key, split in zip(fold_values, splits["image_path"].astype(str).map(_norm),
                                splits["split"].astype(str)):
        split_of.setdefault(int(fold), {})[key] = split

    for i, j in sorted(candidates):
        phash_d = int(np.bitwise_count(prints.phash[i] ^ prints.phash[j]))
        dhash_d = int(np.bitwise_count(prints.dhash[i] ^ prints.dhash[j]))
        is_exact = (i, j) in exact
        detail = ("identical file bytes" if (i, j) in exact_by_file else
                  "identical pixels" if is_exact else "")
        crossed = False
        for fold, mapping in sorted(split_of.items()):
            split_a, split_b = mapping[keys[i]], mapping[keys[j]]
            if split_a == split_b:
                continue
            crossed = True
            pair = DuplicatePair(image_paths[i], split_a, image_paths[j], split_b,
                                 "exact" if is_exact else "near", 0 if is_exact else phash_d,
                                 dhash_d, fold if has_folds else None, cases[i], cases[j], detail)
            (report.exact_pairs if is_exact else report.near_pairs).append(pair)
        report.within_split_pairs += int(not crossed)

    report.min_distinct_distance = min_pair_distance(prints.phash, candidates)
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
