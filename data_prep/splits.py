"""Case-level splits: hold-out train/val/test, stratified group k-fold, leave-one-group-out.

Every split is made on `case_id` (a pregnancy or a child), never on images, so frames of one
case -- and, later, their augmented copies -- always land on the same side. The paper (Tang 2023,
section 2.2) says "the division of this dataset occurred at the case level rather than at the
image level"; the authors' public code instead used Keras' `validation_split` over shuffled
images, which leaks. Results are deterministic for a seed.

Splits CSV (what `python -m data_prep splits` writes), one row per image, or per image and fold:

- hold-out (`--method holdout`): columns `image_path, case_id, split`; one row per image.
- k-fold (`--method kfold`) and leave-one-group-out (`--method logo`): "long" format, columns
  `image_path, case_id, split, fold` (plus `held_out` for logo: the group left out). Every
  image appears once in every fold: `split == "test"` in the one fold that tests it, and
  `train` (or `val`, when `--val-size` > 0) in the others. `iter_folds` reads either shape.

Stratification happens at the case level: a case's class is its images' label (or subtype);
a case whose images disagree is an InputError naming the case. Fractions are of cases. Each
class is split on its own (per-class `GroupShuffleSplit` with a whole number of cases), so
every split holds each class whenever that class has enough cases (>= 2 for test, >= 3 for
test and val), and each split's share per class is within half a case of the asked fraction.
"""
from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, LeaveOneGroupOut, StratifiedGroupKFold

from . import atomic
from .errors import InputError

SPLIT_VALUES = ("train", "val", "test")
METHODS = ("holdout", "kfold", "logo")
STRATIFY_COLUMNS = ("label", "subtype")
GROUP_COLUMNS = ("case_id", "center")


class Fold(NamedTuple):
    """One train/val/test partition; `fold` is 0 for a hold-out split."""
    fold: int
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


# ----------------------------------------------------------------------------- validation


def _source(frame: pd.DataFrame, default: str) -> str:
    """The file a frame came from (load_manifest/load_splits record it in `attrs`)."""
    for key in ("path", "source", "manifest_path"):
        if frame.attrs.get(key):
            return str(frame.attrs[key])
    return default


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...] | list[str], source: str) -> None:
    for column in columns:
        if column not in frame.columns:
            raise InputError(source, f"missing column (has: {', '.join(map(str, frame.columns))})",
                             column=column)
        values = frame[column].astype(str).str.strip()
        empty = np.flatnonzero((values == "").to_numpy() | frame[column].isna().to_numpy())
        if len(empty):
            raise InputError(source, "empty value", row=int(empty[0]) + 1, column=column)


def _check_fractions(test_size: float, val_size: float) -> None:
    for name, value in (("test_size", test_size), ("val_size", val_size)):
        if not 0.0 <= value < 1.0:
            raise InputError(None, f"{name} must be in [0, 1), got {value}")
    if test_size + val_size >= 1.0:
        raise InputError(None, f"test_size + val_size must be below 1 (got {test_size} + {val_size})")


def case_strata(manifest: pd.DataFrame, stratify: str = "label") -> pd.Series:
    """The class of each case (index: case_id, sorted), from its images' `stratify` column.

    Raises InputError naming the first row whose value disagrees with its case's earlier rows.
    """
    source = _source(manifest, "manifest")
    if stratify not in STRATIFY_COLUMNS:
        raise InputError(None, f"stratify must be one of {STRATIFY_COLUMNS}, got {stratify!r}")
    _require_columns(manifest, ["image_path", "case_id", stratify], source)
    cases = manifest["case_id"].astype(str).to_numpy()
    values = manifest[stratify].astype(str).to_numpy()
    first_value: dict[str, tuple[str, int]] = {}
    for position, (case, value) in enumerate(zip(cases, values)):
        if case not in first_value:
            first_value[case] = (value, position)
        elif first_value[case][0] != value:
            earlier, earlier_pos = first_value[case]
            raise InputError(source, f"case '{case}' has images with {stratify} '{earlier}' "
                             f"(row {earlier_pos + 1}) and '{value}'; a case must have one "
                             f"{stratify} to be stratified", row=position + 1, column=stratify)
    return pd.Series({case: value for case, (value, _) in first_value.items()},
                     name=stratify).sort_index()


# ----------------------------------------------------------------------------- allocation


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _allocate(n_cases: int, test_size: float, val_size: float) -> tuple[int, int]:
    """Whole numbers of test and val cases for one class of `n_cases` cases.

    Nearest to the asked fractions, but at least one test case when test_size > 0 and the
    class has >= 2 cases, at least one val case when val_size > 0 and it has >= 3, and
    always at least one training case.
    """
    n_test = _round_half_up(n_cases * test_size)
    n_val = _round_half_up(n_cases * val_size)
    if test_size > 0 and n_cases >= 2:
        n_test = max(n_test, 1)
    if val_size > 0 and n_cases >= 3:
        n_val = max(n_val, 1)
    while n_test + n_val > n_cases - 1 and n_test + n_val > 0:
        # Give cases back to training, from the larger of the two held-out sets (val first on ties).
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_test, n_val


def _pick_cases(case_ids: np.ndarray, n_pick: int, random_state: int) -> set[str]:
    """Choose `n_pick` of `case_ids` at random (scikit-learn's GroupShuffleSplit, whole groups)."""
    if n_pick <= 0:
        return set()
    if n_pick >= len(case_ids):
        return set(case_ids.tolist())
    splitter = GroupShuffleSplit(n_splits=1, test_size=n_pick, random_state=random_state)
    _, picked = next(splitter.split(case_ids, groups=case_ids))
    return set(case_ids[picked].tolist())


def _seed_for(*parts: int) -> int:
    """A 31-bit random_state for scikit-learn derived from several integers."""
    return int(np.random.default_rng([int(p) for p in parts]).integers(0, 2**31 - 1))


def split_cases(strata: pd.Series, *, test_size: float, val_size: float, seed: int,
                salt: int = 0) -> pd.Series:
    """Assign each case (index of `strata`) to train/val/test, class by class.

    Cases are sorted first, so the result depends only on the set of cases, their classes and
    the seed -- not on the manifest's row order.
    """
    strata = strata.sort_index()
    assignment = pd.Series("train", index=strata.index, dtype=object, name="split")
    for class_index, (value, members) in enumerate(strata.groupby(strata, sort=True)):
        case_ids = np.asarray(sorted(members.index.astype(str)), dtype=object)
        n_test, n_val = _allocate(len(case_ids), test_size, val_size)
        test_cases = _pick_cases(case_ids, n_test, _seed_for(seed, salt, class_index, 0))
        rest = np.asarray([c for c in case_ids if c not in test_cases], dtype=object)
        val_cases = _pick_cases(rest, n_val, _seed_for(seed, salt, class_index, 1))
        assignment.loc[list(test_cases)] = "test"
        assignment.loc[list(val_cases)] = "val"
    return assignment


# ----------------------------------------------------------------------------- public splits


def case_level_split(manifest: pd.DataFrame, *, test_size: float = 0.2, val_size: float = 0.1,
                     stratify: str = "label", seed: int = 0) -> pd.DataFrame:
    """Hold-out split at the case level, stratified by each case's label (or subtype).

    Returns one row per manifest image (manifest order): `image_path, case_id, split`.
    `test_size` and `val_size` are fractions of the cases of each class.
    """
    _check_fractions(test_size, val_size)
    strata = case_strata(manifest, stratify)
    assignment = split_cases(strata, test_size=test_size, val_size=val_size, seed=seed)
    case_ids = manifest["case_id"].astype(str)
    return pd.DataFrame({"image_path": manifest["image_path"].astype(str).to_numpy(),
                         "case_id": case_ids.to_numpy(),
                         "split": case_ids.map(assignment).to_numpy()})


def _long_format(manifest: pd.DataFrame, test_masks: list[np.ndarray], *, stratify: str,
                 val_size: float, seed: int, held_out: list[str] | None = None) -> pd.DataFrame:
    """One row per (fold, image): test where the fold's mask is set, val/train for the rest."""
    image_paths = manifest["image_path"].astype(str).to_numpy()
    case_ids = manifest["case_id"].astype(str).to_numpy()
    strata = case_strata(manifest, stratify) if val_size > 0 else None
    frames = []
    for fold, test_mask in enumerate(test_masks):
        split = np.where(test_mask, "test", "train").astype(object)
        if strata is not None:
            train_cases = sorted(set(case_ids[~test_mask]))
            inner = split_cases(strata.loc[train_cases], test_size=0.0, val_size=val_size,
                                seed=seed, salt=fold + 1)
            val_cases = set(inner.index[inner == "val"])
            split[np.isin(case_ids, list(val_cases)) & ~test_mask] = "val"
        frame = pd.DataFrame({"image_path": image_paths, "case_id": case_ids, "split": split,
                              "fold": fold})
        if held_out is not None:
            frame["held_out"] = held_out[fold]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def stratified_group_kfold(manifest: pd.DataFrame, *, k: int = 5, stratify: str = "label",
                           seed: int = 0, val_size: float = 0.0) -> pd.DataFrame:
    """k folds over cases (scikit-learn StratifiedGroupKFold, shuffled with `seed`).

    Long format (see module docstring): each image is `test` in exactly one fold. With
    `val_size` > 0, that fraction of each fold's non-test cases (per class) becomes `val`.
    """
    if k < 2:
        raise InputError(None, f"k must be at least 2, got {k}")
    _check_fractions(0.0, val_size)
    strata = case_strata(manifest, stratify)
    n_cases = len(strata)
    if n_cases < k:
        raise InputError(_source(manifest, "manifest"),
                         f"{n_cases} cases cannot make {k} folds (need at least k cases)",
                         column="case_id")
    y = manifest[stratify].astype(str).to_numpy()
    groups = manifest["case_id"].astype(str).to_numpy()
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "The least populated class has only n members": expected for rare subtypes.
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        test_masks = []
        for _, test_index in splitter.split(np.zeros(len(y)), y, groups):
            mask = np.zeros(len(y), dtype=bool)
            mask[test_index] = True
            test_masks.append(mask)
    return _long_format(manifest, test_masks, stratify=stratify, val_size=val_size, seed=seed)


def leave_one_group_out(manifest: pd.DataFrame, *, group: str = "case_id", val_size: float = 0.0,
                        stratify: str = "label", seed: int = 0) -> pd.DataFrame:
    """One fold per group (case or center; scikit-learn LeaveOneGroupOut), groups sorted.

    Long format with a `held_out` column naming the group tested in each fold. With
    group="center" every case must sit in one center (else InputError naming the row).
    """
    source = _source(manifest, "manifest")
    if group not in GROUP_COLUMNS:
        raise InputError(None, f"group must be one of {GROUP_COLUMNS}, got {group!r}")
    _check_fractions(0.0, val_size)
    _require_columns(manifest, ["image_path", "case_id", group], source)
    groups = manifest[group].astype(str).to_numpy()
    if group != "case_id":
        seen: dict[str, str] = {}
        for position, (case, value) in enumerate(zip(manifest["case_id"].astype(str), groups)):
            if seen.setdefault(case, value) != value:
                raise InputError(source, f"case '{case}' appears in {group} '{seen[case]}' and "
                                 f"'{value}'; a case must belong to one {group}",
                                 row=position + 1, column=group)
    unique_groups = np.unique(groups)
    if len(unique_groups) < 2:
        raise InputError(source, f"leave-one-{group}-out needs at least 2 distinct values, "
                         f"found {len(unique_groups)}", column=group)
    test_masks, held_out = [], []
    for _, test_index in LeaveOneGroupOut().split(np.zeros(len(groups)), groups=groups):
        mask = np.zeros(len(groups), dtype=bool)
        mask[test_index] = True
        test_masks.append(mask)
        held_out.append(str(groups[test_index[0]]))
    return _long_format(manifest, test_masks, stratify=stratify, val_size=val_size, seed=seed,
                        held_out=held_out)


# ----------------------------------------------------------------------------- reading splits


def load_splits(path: str | Path) -> pd.DataFrame:
    """Read and check a splits CSV (columns, split values, integer folds).

    Raises InputError naming the file, row and column of the first problem. The frame's
    `attrs["path"]` records the file; a `fold` column comes back as int.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "splits file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable CSV: {err}") from None
    if "image_path" in frame.columns:   # spelled as data_prep.manifest spells it
        from .manifest import normalize_path_text

        frame["image_path"] = frame["image_path"].map(normalize_path_text)
    validate_splits(frame, source=str(path))
    if "fold" in frame.columns:
        frame["fold"] = frame["fold"].astype(int)
    frame.attrs["path"] = str(path)
    return frame


def validate_splits(frame: pd.DataFrame, *, source: str = "splits") -> None:
    """Check required columns, split values, integer folds and one row per image per fold."""
    _require_columns(frame, ["image_path", "case_id", "split"], source)
    bad = np.flatnonzero(~frame["split"].astype(str).isin(SPLIT_VALUES).to_numpy())
    if len(bad):
        raise InputError(source, f"split '{frame['split'].iloc[bad[0]]}' is not one of "
                         f"{', '.join(SPLIT_VALUES)}", row=int(bad[0]) + 1, column="split")
    keys = pd.DataFrame({"image_path": frame["image_path"].astype(str)})
    if "fold" in frame.columns:
        folds = pd.to_numeric(frame["fold"], errors="coerce")
        bad = np.flatnonzero((folds.isna() | (folds != folds.round()) | (folds < 0)).to_numpy())
        if len(bad):
            raise InputError(source, f"fold '{frame['fold'].iloc[bad[0]]}' is not a "
                             "non-negative integer", row=int(bad[0]) + 1, column="fold")
        keys["fold"] = folds.astype(int)
    duplicated = np.flatnonzero(keys.duplicated().to_numpy())
    if len(duplicated):
        where = " in the same fold" if "fold" in frame.columns else ""
        raise InputError(source, f"image '{frame['image_path'].iloc[duplicated[0]]}' is listed "
                         f"twice{where}", row=int(duplicated[0]) + 1, column="image_path")


def iter_folds(splits: pd.DataFrame) -> Iterator[Fold]:
    """Yield `Fold(fold, train, val, test)` per fold (one fold, numbered 0, for a hold-out).

    Each part keeps the splits' columns (minus `fold`) with a fresh index; `val` may be empty.
    """
    def parts(frame: pd.DataFrame, fold: int) -> Fold:
        frame = frame.drop(columns=[c for c in ("fold",) if c in frame.columns])
        pick = {name: frame[frame["split"] == name].reset_index(drop=True) for name in SPLIT_VALUES}
        return Fold(fold, pick["train"], pick["val"], pick["test"])

    if "fold" not in splits.columns:
        yield parts(splits, 0)
        return
    folds = splits["fold"].astype(int)
    for fold in sorted(folds.unique()):
        yield parts(splits[folds == fold], int(fold))


def summarize(splits: pd.DataFrame, manifest: pd.DataFrame, stratify: str = "label") -> str:
    """Counts of cases and images per split (and per class) as text, folds one line each."""
    strata = manifest.set_index(manifest["image_path"].astype(str))[stratify].astype(str) \
        if stratify in manifest.columns else None
    lines = []
    folds = list(iter_folds(splits))
    shown = folds if len(folds) <= 12 else folds[:5] + folds[-2:]
    for fold in shown:
        cells = []
        for name in SPLIT_VALUES:
            part = getattr(fold, name)
            text = f"{name} {part['case_id'].nunique()} cases/{len(part)} images"
            if strata is not None and len(part):
                counts = part["image_path"].map(strata).value_counts().sort_index()
                text += " (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"
            cells.append(text)
        prefix = f"fold {fold.fold}: " if "fold" in splits.columns else ""
        lines.append(prefix + "; ".join(cells))
        if len(folds) > 12 and fold is shown[4]:
            lines.append(f"... ({len(folds) - 7} more folds)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


def _run(args: argparse.Namespace) -> int:
    from .manifest import load_manifest

    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(out, "already exists; use --force to overwrite it")
    manifest = load_manifest(args.manifest, check_images=False)
    if args.method == "holdout":
        splits = case_level_split(manifest, test_size=args.test_size, val_size=args.val_size,
                                  stratify=args.stratify, seed=args.seed)
    elif args.method == "kfold":
        splits = stratified_group_kfold(manifest, k=args.k, stratify=args.stratify, seed=args.seed,
                                        val_size=args.val_size)
    else:
        splits = leave_one_group_out(manifest, group=args.group, val_size=args.val_size,
                                     stratify=args.stratify, seed=args.seed)
    atomic.write_csv(out, splits)
    print(f"wrote {out} ({args.method}, seed {args.seed}, {splits['case_id'].nunique()} cases, "
          f"{manifest.shape[0]} images)")
    print(summarize(splits, manifest, args.stratify))
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "splits", help="case-level train/val/test splits, k-fold or leave-one-group-out",
        description="Split a manifest at the case level (never by image) and write a splits CSV: "
                    "image_path, case_id, split[, fold]. Deterministic for --seed.")
    parser.add_argument("--manifest", required=True, help="manifest CSV (image_path, case_id, label, ...)")
    parser.add_argument("--out", required=True, help="splits CSV to write")
    parser.add_argument("--method", choices=METHODS, default="holdout",
                        help="holdout: one train/val/test split; kfold: stratified group k-fold; "
                             "logo: leave one group (case or center) out (default holdout)")
    parser.add_argument("--k", type=int, default=5, help="number of folds for kfold (default 5)")
    parser.add_argument("--group", choices=GROUP_COLUMNS, default="case_id",
                        help="group left out per fold for logo (default case_id)")
    parser.add_argument("--test-size", type=float, default=0.2,
                        help="holdout: fraction of each class's cases for test (default 0.2)")
    parser.add_argument("--val-size", type=float, default=None,
                        help="fraction of cases for validation: of all cases for holdout "
                             "(default 0.1), of each fold's non-test cases for kfold/logo (default 0)")
    parser.add_argument("--stratify", choices=STRATIFY_COLUMNS, default="label",
                        help="case class to balance across splits (default label)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.set_defaults(func=_run_with_defaults)


def _run_with_defaults(args: argparse.Namespace) -> int:
    if args.val_size is None:
        args.val_size = 0.1 if args.method == "holdout" else 0.0
    return _run(args)

