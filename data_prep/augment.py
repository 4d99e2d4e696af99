"""Training-set augmentation as in Tang 2023 (section 2.2, Figure S2), with OpenCV.

Six methods, as the paper names them: distortion, zoom-in, tilt, zoom-out, crop, and a
combination of several. Each is a geometric warp with moderate, randomly drawn magnitudes
that keep the fetal face inside the frame:

- distortion: radial lens distortion, barrel or pincushion: the output pixel at radius r
  (in half-diagonals) samples the source at r(1 + k r^2), |k| in [0.15, 0.30], centre
  jittered by up to 5 %; via cv2.remap;
- zoom_in: scale 1.10-1.30 about a point chosen so no border shows;
- tilt: rotation by 5-15 degrees either way about the centre;
- zoom_out: scale 0.75-0.90, padded with black (the ultrasound background), placed at random
  inside the padding;
- crop: a random window of 75-90 % of each side, resized back to the input size;
- combination: 2 or 3 of the five above, distinct, in random order.

Every method is a map from output pixel to source pixel; a combination composes the maps and
samples the image once (one interpolation, not three). The same map, sampled with
nearest-neighbour, moves a truth mask with its image. Shape and dtype are kept: 2-D or
(H, W, C) arrays of uint8, uint16, float32 (and anything numpy can round-trip through float32).

`augment_training_split` writes the paper's offline augmentation: every TRAINING image yields
`multiplicity[label]` images in total, itself included ("2x normal, 6x disease": 845*2 = 1690
and 275*6 = 1650 in the paper); validation and test images are listed untouched. Copies keep
their original's `case_id`, so a case never spans splits. The random stream of each original
is seeded by (seed, sha256 of its image_path), so the result does not depend on row order.

`python -m data_prep augment --figure OUT.png --image FRAME` draws Figure S2 (the original and
one panel per method); `python -m data_prep augment --manifest M --splits S --out DIR` writes
DIR/images/..., DIR/manifest.csv (originals + copies, with `augmented_from` and
`augmentation`), DIR/splits.csv and DIR/run.json, all staged and moved in only on success.
Originals are not copied: DIR/manifest.csv points at them by relative path. Copies get an
empty `landmarks` cell (the warp does not move landmark points); `mask_path` and
`phi_mask_path` masks are warped with their image.

Note for the leakage audit: a geometric copy is 8+ phash bits from its original (measured on
pgds_sample), beyond the audit's near-duplicate threshold; what keeps copies out of the
held-out splits is their `case_id`, which the audit checks first.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping

import cv2
import numpy as np
import pandas as pd

from . import atomic
from .errors import InputError
from .io import read_grayscale
from .manifest import load_manifest, write_manifest
from .splits import load_splits

BASE_METHODS = ("distortion", "zoom_in", "tilt", "zoom_out", "crop")
METHODS = BASE_METHODS + ("combination",)
DEFAULT_MULTIPLICITY: dict[str, int] = {"normal": 2, "genetic_disease": 6}
MASK_COLUMNS = ("mask_path", "phi_mask_path")

# Magnitude ranges (see module docstring).
DISTORTION_K = (0.15, 0.30)
DISTORTION_CENTRE_JITTER = 0.05
ZOOM_IN_SCALE = (1.10, 1.30)
TILT_DEGREES = (5.0, 15.0)
ZOOM_OUT_SCALE = (0.75, 0.90)
CROP_FRACTION = (0.75, 0.90)
COMBINATION_SIZES = (2, 3)


# ----------------------------------------------------------------------------- transforms


@dataclass(frozen=True)
class Step:
    """One warp, stored as its output -> source map: an affine 2x3 matrix or a radial lens."""
    method: str
    matrix: np.ndarray | None = None          # 2x3, maps output (x, y, 1) to source (x, y)
    radial_k: float = 0.0
    centre: tuple[float, float] = (0.0, 0.0)  # radial centre (x, y), pixels
    radius: float = 1.0                       # radial normaliser, pixels

    def source_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.matrix is not None:
            m = self.matrix
            return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]
        dx, dy = x - self.centre[0], y - self.centre[1]
        gain = 1.0 + self.radial_k * (dx * dx + dy * dy) / (self.radius * self.radius)
        return self.centre[0] + dx * gain, self.centre[1] + dy * gain


@dataclass(frozen=True)
class Transform:
    """A drawn augmentation: its method name and the warps applied, in order."""
    method: str
    steps: tuple[Step, ...]

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(step.method for step in self.steps)


def _scale_about(scale: float, source_point: tuple[float, float],
                 output_point: tuple[float, float]) -> np.ndarray:
    """Output -> source affine of a zoom by `scale` taking source_point to output_point."""
    inv = 1.0 / scale
    return np.array([[inv, 0.0, source_point[0] - inv * output_point[0]],
                     [0.0, inv, source_point[1] - inv * output_point[1]]])


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _sample_step(method: str, height: int, width: int, rng: np.random.Generator) -> Step:
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    if method == "distortion":
        k = _sign(rng) * rng.uniform(*DISTORTION_K)
        jitter = rng.uniform(-DISTORTION_CENTRE_JITTER, DISTORTION_CENTRE_JITTER, size=2)
        return Step(method, radial_k=float(k),
                    centre=(cx + jitter[0] * width, cy + jitter[1] * height),
                    radius=float(np.hypot(width, height) / 2.0))
    if method == "zoom_in":
        scale = rng.uniform(*ZOOM_IN_SCALE)
        # The source window is (w/scale, h/scale); its centre may move while it stays inside.
        slack_x, slack_y = (width - width / scale) / 2.0, (height - height / scale) / 2.0
        centre = (cx + rng.uniform(-slack_x, slack_x), cy + rng.uniform(-slack_y, slack_y))
        return Step(method, matrix=_scale_about(scale, centre, (cx, cy)))
    if method == "tilt":
        angle = _sign(rng) * rng.uniform(*TILT_DEGREES)
        forward = cv2.getRotationMatrix2D((cx, cy), float(angle), 1.0)
        return Step(method, matrix=cv2.invertAffineTransform(forward))
    if method == "zoom_out":
        scale = rng.uniform(*ZOOM_OUT_SCALE)
        slack_x, slack_y = (width - width * scale) / 2.0, (height - height * scale) / 2.0
        placed = (cx + rng.uniform(-slack_x, slack_x), cy + rng.uniform(-slack_y, slack_y))
        return Step(method, matrix=_scale_about(scale, (cx, cy), placed))
    if method == "crop":
        fraction = rng.uniform(*CROP_FRACTION)
        x0 = rng.uniform(0.0, width * (1.0 - fraction))
        y0 = rng.uniform(0.0, height * (1.0 - fraction))
        # Pixel centres: output (p + 0.5) / size spans the window [x0, x0 + fraction * size].
        return Step(method, matrix=np.array([[fraction, 0.0, x0 + 0.5 * fraction - 0.5],
                                             [0.0, fraction, y0 + 0.5 * fraction - 0.5]]))
    raise ValueError(f"unknown augmentation {method!r}; choose from {METHODS}")


def sample_transform(method: str, shape: tuple[int, ...], rng: np.random.Generator) -> Transform:
    """Draw the parameters of `method` for an image of `shape` ((H, W) or (H, W, C))."""
    height, width = int(shape[0]), int(shape[1])
    if method == "combination":
        count = int(rng.choice(COMBINATION_SIZES))
        order = rng.permutation(len(BASE_METHODS))[:count]
        steps = tuple(_sample_step(BASE_METHODS[i], height, width, rng) for i in order)
        return Transform(method, steps)
    if method not in BASE_METHODS:
        raise ValueError(f"unknown augmentation {method!r}; choose from {METHODS}")
    return Transform(method, (_sample_step(method, height, width, rng),))


def source_maps(transform: Transform, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (map_x, map_y) for cv2.remap: the source pixel of every output pixel.

    Steps apply to the image in order, so an output pixel goes back through them in reverse.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    for step in reversed(transform.steps):
        x, y = step.source_of(x, y)
    return x.astype(np.float32), y.astype(np.float32)


_REMAP_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


def apply_transform(array: np.ndarray, transform: Transform, *, nearest: bool = False) -> np.ndarray:
    """Warp `array` (2-D or H x W x C) by `transform`; outside the source is 0 (black).

    Bilinear for images, nearest-neighbour (`nearest=True`) for label masks. Returns the
    same shape and dtype.
    """
    array = np.asarray(array)
    if array.ndim not in (2, 3) or min(array.shape[:2]) < 2:
        raise ValueError(f"expected a 2-D image or H x W x C array, got shape {array.shape}")
    map_x, map_y = source_maps(transform, array.shape[0], array.shape[1])
    work = array
    if array.dtype == bool:
        work = array.astype(np.uint8)
    elif array.dtype.type not in _REMAP_DTYPES:
        work = array.astype(np.float32)
    squeeze = work.ndim == 3 and work.shape[2] == 1
    if squeeze:
        work = work[:, :, 0]
    channels = work.shape[2] if work.ndim == 3 else 1
    if channels > 4:  # cv2.remap handles up to 4 channels at once
        warped = np.stack([apply_transform(work[:, :, c], transform, nearest=nearest)
                           for c in range(channels)], axis=2)
    else:
        warped = cv2.remap(np.ascontiguousarray(work), map_x, map_y,
                           cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if squeeze:
        warped = warped[:, :, None]
    if warped.dtype != array.dtype:
        if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
            warped = np.round(warped)
        warped = warped.astype(array.dtype)
    return warped


def augment_image(image: np.ndarray, method: str, rng: np.random.Generator) -> np.ndarray:
    """Augment one image with `method` (one of METHODS), drawing magnitudes from `rng`."""
    return apply_transform(image, sample_transform(method, np.shape(image), rng))


def augment_with_mask(image: np.ndarray, mask: np.ndarray, method: str,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Augment an image and move its truth mask by the identical warp (nearest-neighbour)."""
    if np.shape(mask)[:2] != np.shape(image)[:2]:
        raise ValueError(f"mask shape {np.shape(mask)} does not match image shape {np.shape(image)}")
    transform = sample_transform(method, np.shape(image), rng)
    return apply_transform(image, transform), apply_transform(mask, transform, nearest=True)


def random_augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Augment with a method drawn uniformly from METHODS (for on-the-fly training input)."""
    return augment_image(image, METHODS[int(rng.integers(len(METHODS)))], rng)


def _method_function(method: str) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return augment_image(image, method, rng)

    augment.__name__ = method
    augment.__doc__ = f"Augment `image` by {method.replace('_', '-')} with magnitudes drawn from `rng`."
    return augment


AUGMENTATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    method: _method_function(method) for method in METHODS}


# ----------------------------------------------------------------------------- offline augmentation


def image_rng(seed: int, image_path: str) -> np.random.Generator:
    """The random stream of one original: depends on the seed and its path, not on row order."""
    digest = hashlib.sha256(str(PurePosixPath(image_path.replace("\\", "/"))).encode()).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def copy_methods(count: int, rng: np.random.Generator) -> list[str]:
    """Methods for `count` copies of one original: all six in random order before any repeats."""
    methods: list[str] = []
    while len(methods) < count:
        methods.extend(METHODS[i] for i in rng.permutation(len(METHODS)))
    return methods[:count]


def _read_mask(path: Path, source: str, row: int, column: str) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise InputError(source, f"cannot read mask '{path}'", row=row, column=column)
    return mask


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype not in (np.uint8, np.uint16):
        array = np.clip(np.round(array * 255.0 if array.dtype.kind == "f" and array.max() <= 1.0
                                 else array), 0, 255).astype(np.uint8)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def _safe_relative(image_path: str) -> PurePosixPath:
    """image_path as a path inside the output folder (no '..', no absolute root)."""
    parts = [("_up_" if part == ".." else part)
             for part in PurePosixPath(image_path.replace("\\", "/")).parts if part not in ("/", ".")]
    return PurePosixPath(*parts) if parts else PurePosixPath("image")


def _select_splits(splits: pd.DataFrame, fold: int | None, source: str) -> pd.DataFrame:
    if "fold" not in splits.columns:
        return splits
    folds = splits["fold"].astype(int)
    if fold is None:
        if folds.nunique() > 1:
            raise InputError(source, f"has {folds.nunique()} folds; choose one with --fold",
                             column="fold")
        return splits
    if fold not in set(folds):
        raise InputError(source, f"has no fold {fold} (folds: {sorted(set(folds))})", column="fold")
    return splits[folds == fold]


def _norm(path: str) -> str:
    return str(PurePosixPath(os.path.normpath(str(path).replace("\\", "/")).replace("\\", "/")))


def augment_training_split(manifest_df: pd.DataFrame, splits_df: pd.DataFrame, out_dir: str | Path, *,
                           multiplicity: Mapping[str, int] = DEFAULT_MULTIPLICITY, seed: int = 0,
                           fold: int | None = None, image_root: str | Path | None = None,
                           force: bool = False, manifest_path: str | Path | None = None,
                           progress: bool = True) -> pd.DataFrame:
    """Write augmented copies of the training images and the augmented manifest.

    manifest_df: a manifest (from load_manifest; image files are found through its `abs_path`
    column, else relative to `image_root`). splits_df: its splits (one fold; pick with `fold`
    when it has several). Returns the augmented manifest -- originals of every split (paths
    now relative to out_dir) each followed by its copies -- with columns `augmented_from`
    (the original's image_path in this same manifest; empty for originals), `augmentation`
    (the method; empty for originals) and `split`. out_dir gets images/, manifest.csv (without `split`), splits.csv
    and run.json, built in a staging folder and moved in on success. An existing out_dir is
    replaced only with `force`.
    """
    source = str(manifest_path) if manifest_path else str(manifest_df.attrs.get("path", "manifest"))
    splits_source = str(splits_df.attrs.get("path", "splits"))
    out_dir = Path(out_dir)
    for column in ("image_path", "case_id", "label"):
        if column not in manifest_df.columns:
            raise InputError(source, "missing column", column=column)
    for column in ("image_path", "case_id", "split"):
        if column not in splits_df.columns:
            raise InputError(splits_source, "missing column", column=column)
    for label, count in multiplicity.items():
        if int(count) != count or count < 1:
            raise InputError(None, f"multiplicity for '{label}' must be a whole number >= 1, got {count}")
    if out_dir.exists() and not force:
        raise InputError(out_dir, "already exists; use --force to replace it")
    if "abs_path" not in manifest_df.columns and image_root is None:
        raise ValueError("manifest_df has no abs_path column: pass image_root")

    chosen = _select_splits(splits_df, fold, splits_source)
    split_of = dict(zip(chosen["image_path"].astype(str).map(_norm), chosen["split"].astype(str)))
    rows = manifest_df.reset_index(drop=True)
    abs_paths = (rows["abs_path"].astype(str).map(Path) if "abs_path" in rows.columns else
                 rows["image_path"].astype(str).map(lambda p: Path(image_root) / p))
    splits_per_row = []
    for position, image_path in enumerate(rows["image_path"].astype(str)):
        split = split_of.get(_norm(image_path))
        if split is None:
            raise InputError(source, f"image '{image_path}' is not in the splits file {splits_source}",
                             row=position + 1, column="image_path")
        if split == "train" and rows["label"].iloc[position] not in multiplicity:
            raise InputError(source, f"label '{rows['label'].iloc[position]}' has no multiplicity "
                             f"(given for: {', '.join(multiplicity)})", row=position + 1, column="label")
        splits_per_row.append(split)

    final_dir = out_dir.resolve()
    mask_columns = [c for c in MASK_COLUMNS if c in rows.columns]
    manifest_base = _manifest_base(manifest_df, manifest_path, image_root)
    if mask_columns and manifest_base is None:
        raise ValueError("cannot tell which folder mask paths are relative to: pass manifest_path")
    n_train = sum(s == "train" for s in splits_per_row)
    # Copies are named after their original's stem; add the suffix where two stems clash.
    name_keys = [str(_safe_relative(p).with_suffix("")) for p in rows["image_path"].astype(str)]
    clashing = {key for key, count in Counter(name_keys).items() if count > 1}
    records: list[dict] = []
    done = 0
    with atomic.staged_dir(out_dir, overwrite=True) as stage:
        for position, row in rows.iterrows():
            original = row.to_dict()
            image_path = str(original["image_path"])
            split = splits_per_row[position]
            base = dict(original)
            base["image_path"] = os.path.relpath(Path(abs_paths[position]).resolve(), final_dir)
            for column in mask_columns:
                if str(original.get(column, "")).strip():
                    base[column] = os.path.relpath(manifest_base / str(original[column]), final_dir)
            base.update(augmented_from="", augmentation="", split=split)
            base["abs_path"] = str(Path(abs_paths[position]).resolve())
            records.append(base)
            if split != "train":
                continue
            copies = int(multiplicity[str(original["label"])]) - 1
            if copies <= 0:
                done += 1
                continue
            rng = image_rng(seed, image_path)
            pixels = read_grayscale(Path(abs_paths[position]))
            masks = {column: _read_mask(manifest_base / str(original[column]), source, position + 1, column)
                     for column in mask_columns if str(original.get(column, "")).strip()}
            relative = _safe_relative(image_path)
            for number, method in enumerate(copy_methods(copies, rng), start=1):
                transform = sample_transform(method, pixels.shape, rng)
                base_name = relative.stem if name_keys[position] not in clashing else \
                    relative.name.replace(".", "_")
                stem = f"{base_name}__aug{number}_{method}"
                new_rel = PurePosixPath("images") / relative.parent / f"{stem}.png"
                _write_png(stage / new_rel, apply_transform(pixels, transform))
                copy = dict(original)
                copy.update(image_path=str(new_rel), augmented_from=base["image_path"],
                            augmentation=method, split=split, abs_path=str(final_dir / new_rel))
                if "landmarks" in copy:
                    copy["landmarks"] = None  # points are not moved by the warp
                for column, mask in masks.items():
                    if mask.shape[:2] != pixels.shape[:2]:
                        raise InputError(source, f"mask shape {mask.shape} differs from image shape "
                                         f"{pixels.shape}", row=position + 1, column=column)
                    suffix = "mask" if column == "mask_path" else column.removesuffix("_path")
                    mask_rel = PurePosixPath("images") / relative.parent / f"{stem}_{suffix}.png"
                    _write_png(stage / mask_rel, apply_transform(mask, transform, nearest=True))
                    copy[column] = str(mask_rel)
                records.append(copy)
            done += 1
            if progress and (done % 100 == 0 or done == n_train) and n_train >= 100:
                print(f"  augmented {done}/{n_train} training images", file=sys.stderr)

        result = pd.DataFrame.from_records(records)
        manifest_columns = [c for c in result.columns if c not in ("split", "abs_path")]
        write_manifest(result[manifest_columns], stage / "manifest.csv", force=True)
        atomic.write_csv(stage / "splits.csv", result[["image_path", "case_id", "split"]])
        from .provenance import write_run_json
        counts = result.groupby(["split", "label"]).size()
        write_run_json(stage, {"multiplicity": dict(multiplicity), "seed": seed, "fold": fold,
                               "methods": list(METHODS)},
                       seed=seed, extra={"source_manifest": source, "source_splits": splits_source,
                                         "counts": {f"{s}/{l}": int(n) for (s, l), n in counts.items()}},
                       force=True)
    result.attrs["path"] = str(out_dir / "manifest.csv")
    return result


def _manifest_base(manifest_df: pd.DataFrame, manifest_path: str | Path | None,
                   image_root: str | Path | None) -> Path | None:
    """The folder manifest paths are relative to (needed to find mask files)."""
    if manifest_path:
        return Path(manifest_path).resolve().parent
    for key in ("path", "source", "manifest_path"):
        if manifest_df.attrs.get(key):
            return Path(manifest_df.attrs[key]).resolve().parent
    if image_root is not None:
        return Path(image_root).resolve()
    if len(manifest_df) and "abs_path" in manifest_df.columns:
        image_abs = Path(str(manifest_df["abs_path"].iloc[0]))
        image_rel = PurePosixPath(str(manifest_df["image_path"].iloc[0]).replace("\\", "/"))
        if ".." not in image_rel.parts and image_abs.as_posix().endswith(image_rel.as_posix()):
            return image_abs.parents[len(image_rel.parts) - 1].resolve()
    return None


# ----------------------------------------------------------------------------- Figure S2


FIGURE_TITLES = {"distortion": "distortion", "zoom_in": "zoom-in", "tilt": "tilt",
                 "zoom_out": "zoom-out", "crop": "crop", "combination": "combination"}


def figure_s2(image: np.ndarray | str | Path, out_png: str | Path, seed: int = 0) -> Path:
    """The paper's Figure S2: the original frame and one panel per augmentation method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(image, np.ndarray):
        image = read_grayscale(Path(image))
    pixels = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    low, high = float(np.min(pixels)), float(np.max(pixels))
    panels = [("original", pixels)]
    for index, method in enumerate(METHODS):
        transform = sample_transform(method, pixels.shape, np.random.default_rng([seed, index]))
        title = FIGURE_TITLES[method]
        if method == "combination":
            title += "\n(" + " + ".join(FIGURE_TITLES[p] for p in transform.parts) + ")"
        panels.append((title, apply_transform(pixels, transform)))
    aspect = pixels.shape[0] / pixels.shape[1]
    figure, axes = plt.subplots(2, 4, figsize=(12, 6 * aspect + 0.8))
    for axis in axes.flat:
        axis.axis("off")
    for axis, (title, panel) in zip(axes.flat, panels):
        axis.imshow(panel, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        axis.set_title(title, fontsize=10)
    figure.suptitle(f"Augmentation methods (Tang 2023, Figure S2), seed {seed}", fontsize=11)
    figure.tight_layout()
    with atomic.atomic_path(out_png) as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)
    return Path(out_png)


# ----------------------------------------------------------------------------- command line


def _run(args: argparse.Namespace) -> int:
    if args.figure:
        if not args.image:
            raise InputError(None, "--figure needs --image FRAME")
        if not Path(args.image).is_file():
            raise InputError(args.image, "image not found")
        figure_s2(args.image, args.figure, seed=args.seed)
        print(f"wrote {args.figure}")
        return 0
    missing = [flag for flag, value in (("--manifest", args.manifest), ("--splits", args.splits),
                                        ("--out", args.out)) if not value]
    if missing:
        raise InputError(None, f"augmenting a training split needs {', '.join(missing)} "
                               "(or use --figure OUT.png --image FRAME)")
    manifest = load_manifest(args.manifest, check_images=True)
    splits = load_splits(args.splits)
    multiplicity = {"normal": args.normal_x, "genetic_disease": args.disease_x}
    result = augment_training_split(manifest, splits, args.out, multiplicity=multiplicity,
                                    seed=args.seed, fold=args.fold, force=args.force,
                                    manifest_path=args.manifest)
    counts = result.groupby(["split", "label"]).size()
    print(f"wrote {Path(args.out) / 'manifest.csv'} and splits.csv ({len(result)} images):")
    for (split, label), count in counts.items():
        print(f"  {split:5s} {label}: {count}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "augment", help="augment the training split (Tang 2023) or draw Figure S2",
        description="Either write augmented copies of the training images (--manifest, --splits, "
                    "--out) or draw the augmentation panel figure (--figure, --image).")
    parser.add_argument("--figure", default=None, help="PNG to write Figure S2 to (needs --image)")
    parser.add_argument("--image", default=None, help="frame to draw Figure S2 from")
    parser.add_argument("--manifest", default=None, help="manifest CSV")
    parser.add_argument("--splits", default=None, help="splits CSV made from that manifest")
    parser.add_argument("--out", default=None, help="output folder (images/, manifest.csv, splits.csv)")
    parser.add_argument("--fold", type=int, default=None,
                        help="fold of a k-fold/leave-one-group-out splits file to augment")
    parser.add_argument("--normal-x", type=int, default=DEFAULT_MULTIPLICITY["normal"],
                        help="images per normal training original, itself included (default 2)")
    parser.add_argument("--disease-x", type=int, default=DEFAULT_MULTIPLICITY["genetic_disease"],
                        help="images per genetic_disease training original, itself included (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.set_defaults(func=_run)
