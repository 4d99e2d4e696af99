"""The manifest: one CSV row per image, validated before anything uses it.

Columns (the data contract of DESIGN.md):
- required: `image_path` (relative to the manifest's folder), `case_id` (the pregnancy or child;
  every split is made on it), `label` (class name);
- optional: `subtype`, `gestational_week` (number of weeks, 0-45), `center`, `age_months`
  (0-300), `sex`, `landmarks` (10 numbers: five face points x1 y1 ... x5 y5, separated by
  spaces, commas or semicolons), `mask_path` and `phi_mask_path` (phantom truth masks, relative
  paths), `view`. Other columns are kept untouched.

`load_manifest(path)` reads every cell as text, checks the file top to bottom and raises one
`InputError` for the FIRST problem in file order, naming the manifest, the 1-based data row
(header excluded; blank lines are not rows) and the column. It returns a DataFrame with the
original columns (text stripped of surrounding blanks), `gestational_week` and `age_months` as
floats (NaN when empty), `landmarks` as a tuple of 10 floats (None when empty), and `abs_path`,
the absolute path of each image. `attrs["path"]` holds the manifest's path.

Checks: missing/empty file, header (required columns present, no duplicate or unnamed column),
field count per row, empty `image_path`/`case_id`/`label`, label outside `labels` (when given),
one case under two labels, duplicate image (same file through any spelling of its path, both
rows named), numbers, landmarks, and -- with `check_images` -- that every image and mask file
exists and is a complete image `data_prep.io` can read (a header/CRC/length check, decoding only
where no cheap check exists: see `data_prep.io.verify_image`). 3,000 JPEG rows check in well
under a second.

`manifest_from_folders(root)` builds a manifest from one sub-folder per label (the authors'
`sample/normal`, `sample/genetic_disease` layout), one case per file unless `case_pattern`
says how a file name encodes its case.

CLI: `python -m data_prep manifest --from-folders DIR [--case-pattern REGEX] [--out M.csv]
[--force]` writes a manifest (validated first; atomic; never overwrites without --force);
`python -m data_prep manifest --check M.csv [--labels normal,genetic_disease]` validates and
prints a one-line summary. Bad input: exit code 2 and one line on stderr, nothing written.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import posixpath
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from .atomic import write_csv
from .errors import InputError
from .io import IMAGE_SUFFIXES, ImageReadError, is_dicom, verify_image

__all__ = [
    "LANDMARK_COUNT",
    "MANIFEST_NAME",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "add_cli",
    "load_manifest",
    "manifest_from_folders",
    "parse_landmarks",
    "summarize",
    "validate_manifest",
    "write_manifest",
]

REQUIRED_COLUMNS = ("image_path", "case_id", "label")
OPTIONAL_COLUMNS = ("subtype", "gestational_week", "center", "age_months", "sex", "landmarks",
                    "mask_path", "phi_mask_path", "view")
LANDMARK_COUNT = 10
MANIFEST_NAME = "manifest.csv"

_NUMERIC_RANGES = {"gestational_week": (0.0, 45.0, "weeks"), "age_months": (0.0, 300.0, "months")}
_PATH_COLUMNS = ("image_path", "mask_path", "phi_mask_path")
_LANDMARK_SPLIT = re.compile(r"[\s,;]+")


# --------------------------------------------------------------------------- reading the CSV

def _located_csv_error(path: Path, err: csv.Error, records: list[list[str]],
                       line: int) -> InputError:
    """csv.Error (an oversized field, a stray NUL, ...) as an InputError naming the row and,
    for an oversized field, its column: the record is re-read with the limit lifted."""
    row = len([r for r in records[1:] if any(r)]) + 1 if records else None
    message = f"not a readable CSV file: {err}"
    if "field larger than field limit" in str(err) and records:
        limit = csv.field_size_limit()
        with open(path, newline="", encoding="utf-8-sig") as handle:
            csv.field_size_limit(sys.maxsize)
            try:
                record = next(itertools.islice(csv.reader(handle), len(records), None), [])
            finally:
                csv.field_size_limit(limit)
        long = next((i for i, cell in enumerate(record) if len(cell) > limit), None)
        if long is not None:
            column = records[0][long] if long < len(records[0]) else f"#{long + 1}"
            return InputError(path, f"a cell of {len(record[long]):,} characters, above the "
                                    f"{limit:,} a CSV field may hold (line {line})", row=row,
                              column=column)
    return InputError(path, f"{message} (line {line})", row=row)


def _read_csv_text(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and data records of a CSV, as stripped strings; blank records are skipped."""
    records: list[list[str]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            try:
                for record in reader:
                    records.append([cell.strip() for cell in record])
            except csv.Error as err:
                raise _located_csv_error(path, err, records, reader.line_num) from None
    except FileNotFoundError:
        raise InputError(path, "manifest not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a manifest CSV file") from None
    except UnicodeDecodeError as err:
        raise InputError(path, f"not UTF-8 text (byte {err.start}); save the manifest as UTF-8 "
                               f"CSV") from None
    except csv.Error as err:
        raise InputError(path, f"not a readable CSV file: {err}") from None
    except OSError as err:
        raise InputError(path, f"cannot read the manifest: {err.strerror or err}") from None
    records = [record for record in records if any(record)]
    if not records:
        raise InputError(path, "empty manifest: no header and no rows")
    header, rows = records[0], records[1:]
    for index, name in enumerate(header, start=1):
        if not name:
            raise InputError(path, f"header column {index} has no name")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputError(path, "column appears twice in the header", column=name)
        seen.add(name)
    for column in REQUIRED_COLUMNS:
        if column not in header:
            raise InputError(path, f"missing required column (header has: {', '.join(header)})",
                             column=column)
    if not rows:
        raise InputError(path, "empty manifest: a header but no rows")
    width = len(header)
    for number, record in enumerate(rows, start=1):
        if len(record) > width and not any(record[width:]):
            del record[width:]  # trailing empty cells, as spreadsheets write them
        if len(record) != width:
            raise InputError(path, f"has {len(record)} fields, the header has {width}", row=number)
    return header, rows


def load_manifest(path: str | Path, *, labels: Sequence[str] | None = None,
                  check_images: bool = True) -> pd.DataFrame:
    """Read and validate a manifest CSV; see the module docstring for what comes back."""
    path = Path(path)
    header, rows = _read_csv_text(path)
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    return validate_manifest(frame, path, labels=labels, check_images=check_images)


# --------------------------------------------------------------------------- validation

def parse_landmarks(text: str) -> tuple[float, ...]:
    """'x1 y1 ... x5 y5' (spaces, commas or semicolons) -> 10 finite floats; ValueError if not."""
    parts = [part for part in _LANDMARK_SPLIT.split(text.strip().strip("[]()")) if part]
    if len(parts) != LANDMARK_COUNT:
        raise ValueError(f"landmarks must be {LANDMARK_COUNT} numbers (x1 y1 ... x5 y5), "
                         f"got {len(parts)}")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"landmarks must be {LANDMARK_COUNT} numbers, '{part}' is not a "
                             f"number") from None
        if not math.isfinite(value):
            raise ValueError(f"landmarks must be finite numbers, got '{part}'")
        values.append(value)
    return tuple(values)


def _parse_number(column: str, text: str) -> float:
    low, high, unit = _NUMERIC_RANGES[column]
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a number ({unit})") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{text} is outside {low:g}-{high:g} {unit}")
    return value


def normalize_path_text(value: str) -> str:
    """A manifest or splits path cell as every later step spells it: surrounding blanks
    removed, backslashes as forward slashes, repeated slashes and './' folded
    ('sub\\a.png ' -> 'sub/a.png')."""
    text = str(value).strip().replace("\\", "/")
    return posixpath.normpath(text) if text else text   # 'sub//a.png', './a.png' -> one spelling


def _resolve(base: Path, relative: str) -> str:
    """Absolute, normalised path of a manifest path cell (either slash works)."""
    return os.path.normpath(os.path.join(base, relative.replace("\\", "/")))


def _short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def validate_manifest(frame: pd.DataFrame, manifest_path: str | Path, *,
                      labels: Sequence[str] | None = None,
                      check_images: bool = True) -> pd.DataFrame:
    """Validate a manifest held in memory (all cells text) as `load_manifest` does.

    `manifest_path` is where the manifest lives (or will be written): paths are relative to
    its folder and errors name it. Returns a new frame (see the module docstring).
    Without `check_images` no image file is touched (neither existence nor content).
    """
    manifest_path = Path(manifest_path)
    base = manifest_path.resolve().parent
    for column in REQUIRED_COLUMNS:
        if column not in frame.columns:
            raise InputError(manifest_path, "missing required column", column=column)
    if len(frame) == 0:
        raise InputError(manifest_path, "empty manifest: a header but no rows")
    allowed = None if labels is None else [str(label) for label in labels]
    columns = [str(column) for column in frame.columns]
    # Empty cells may arrive as NaN/None from an in-memory frame: they mean "".
    text = frame.astype(object).where(frame.notna(), "").astype(str)
    text = text.apply(lambda series: series.str.strip())
    cells = text.to_numpy(dtype=object)

    numbers: dict[str, list[float]] = {column: [] for column in _NUMERIC_RANGES if column in columns}
    landmarks: list[tuple[float, ...] | None] = []
    abs_paths: list[str] = []
    first_row_of_path: dict[str, int] = {}
    label_of_case: dict[str, tuple[str, int]] = {}

    for index in range(cells.shape[0]):
        row = index + 1
        values = dict(zip(columns, cells[index]))
        for column in columns:
            value = values[column]
            if column == "image_path":
                if not value:
                    raise InputError(manifest_path, "missing image_path", row=row, column=column)
                absolute = _resolve(base, value)
                if absolute in first_row_of_path:
                    raise InputError(manifest_path, f"duplicate image: '{_short(value)}' is the "
                                     f"same file as row {first_row_of_path[absolute]} (rows "
                                     f"{first_row_of_path[absolute]} and {row})", row=row,
                                     column=column)
                first_row_of_path[absolute] = row
                abs_paths.append(absolute)
                if check_images:
                    _check_image_file(manifest_path, row, column, value, absolute)
            elif column in ("mask_path", "phi_mask_path"):
                if value and check_images:
                    _check_image_file(manifest_path, row, column, value, _resolve(base, value))
            elif column == "case_id":
                if not value:
                    raise InputError(manifest_path, "missing case_id", row=row, column=column)
            elif column == "label":
                if not value:
                    raise InputError(manifest_path, "missing label", row=row, column=column)
                if allowed is not None and value not in allowed:
                    raise InputError(manifest_path, f"unknown label '{_short(value)}' (allowed: "
                                     f"{', '.join(allowed)})", row=row, column=column)
                case = values["case_id"]
                if case:
                    earlier = label_of_case.setdefault(case, (value, row))
                    if earlier[0] != value:
                        raise InputError(manifest_path, f"case '{_short(case)}' is labelled "
                                         f"'{earlier[0]}' in row {earlier[1]} and '{value}' here;"
                                         f" a case has one label", row=row, column=column)
            elif column in _NUMERIC_RANGES:
                if not value:
                    numbers[column].append(math.nan)
                    continue
                try:
                    numbers[column].append(_parse_number(column, value))
                except ValueError as err:
                    raise InputError(manifest_path, f"{column}: {err}", row=row,
                                     column=column) from None
            elif column == "landmarks":
                if not value:
                    landmarks.append(None)
                    continue
                try:
                    landmarks.append(parse_landmarks(value))
                except ValueError as err:
                    raise InputError(manifest_path, str(err), row=row, column=column) from None

    result = text.copy()
    result.index = pd.RangeIndex(len(result))
    # One spelling of every path from here on (splits, audit, de-identification, training all
    # join on image_path): stripped, forward slashes. A Windows-made manifest's 'sub\\a.png'
    # would otherwise pass this check and fail to match its own splits row later.
    for column in _PATH_COLUMNS:
        if column in result.columns:
            result[column] = result[column].map(normalize_path_text)
    for column, parsed in numbers.items():
        result[column] = pd.Series(parsed, dtype="float64")
    if "landmarks" in columns:
        result["landmarks"] = pd.Series(landmarks, dtype=object)
    result["abs_path"] = abs_paths
    result.attrs["path"] = str(manifest_path)
    result.attrs["manifest_path"] = str(manifest_path.resolve())
    return result


def _check_image_file(manifest_path: Path, row: int, column: str, value: str,
                      absolute: str) -> None:
    if not os.path.isfile(absolute):
        what = "is a folder, not an image file" if os.path.isdir(absolute) else \
            f"image file not found ({absolute})"
        raise InputError(manifest_path, f"'{_short(value)}' {what}", row=row, column=column)
    try:
        verify_image(absolute)
    except ImageReadError as err:
        raise InputError(manifest_path, f"'{_short(value)}' is not a readable image: "
                         f"{err.message}", row=row, column=column) from None


# --------------------------------------------------------------------------- summaries, writing

def summarize(frame: pd.DataFrame) -> str:
    """'8 rows, 8 cases; labels: genetic_disease 4, normal 4' (labels sorted)."""
    counts = frame["label"].value_counts().sort_index()
    per_label = ", ".join(f"{label} {count}" for label, count in counts.items())
    return f"{len(frame)} rows, {frame['case_id'].nunique()} cases; labels: {per_label}"


def _manifest_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, tuple):
        return " ".join(f"{v:g}" for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def write_manifest(frame: pd.DataFrame, path: str | Path, *, force: bool = False) -> Path:
    """Write a manifest CSV atomically (without `abs_path`); refuse to overwrite unless force."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(path, "already exists; pass --force to overwrite it")
    columns = [column for column in frame.columns if column != "abs_path"]
    out = pd.DataFrame({column: [_manifest_text(v) for v in frame[column]] for column in columns},
                       columns=columns)
    try:
        write_csv(path, out)
    except OSError as err:
        raise InputError(path, f"cannot write the manifest: {err.strerror or err}") from None
    return path


# --------------------------------------------------------------------------- from folders

def _compile_case_pattern(case_pattern: str) -> re.Pattern:
    try:
        pattern = re.compile(case_pattern)
    except re.error as err:
        raise InputError(None, f"--case-pattern '{case_pattern}' is not a valid regular "
                               f"expression: {err}") from None
    if "case" not in pattern.groupindex and pattern.groups != 1:
        raise InputError(None, f"--case-pattern '{case_pattern}' must have exactly one group, "
                               f"or a group named 'case' like (?P<case>...), to say which part "
                               f"of the file name is the case")
    return pattern


def _is_image_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    return suffix == "" and is_dicom(path)


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _images_under(folder: Path) -> Iterable[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not _hidden(path.relative_to(folder)) and _is_image_file(path):
            yield path


def manifest_from_folders(root: str | Path, *, case_pattern: str | None = None,
                          out: str | Path | None = None) -> pd.DataFrame:
    """Manifest of `root/<label>/...` images: columns image_path, case_id, label.

    Every non-hidden sub-folder of `root` is a label; every image file below it (suffixes
    `data_prep.io.IMAGE_SUFFIXES`, or a suffix-less DICOM) is one row. `case_id` is the file's
    path inside its label folder without the suffix (the file stem for a flat folder), unless
    `case_pattern` -- a regex with one group or a group named `case`, searched in the file name
    -- extracts it. `image_path` is relative to the folder of `out` (default
    `root/manifest.csv`), with '/' separators. Rows sorted by image_path. Nothing is written.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder" if root.exists() else "folder not found")
    out = Path(out) if out is not None else root / MANIFEST_NAME
    base = out.resolve().parent
    pattern = _compile_case_pattern(case_pattern) if case_pattern is not None else None

    for path in sorted(root.iterdir()):
        if path.is_file() and not path.name.startswith(".") and _is_image_file(path) \
                and path.resolve() != out.resolve():
            raise InputError(path, "image directly in the root folder: put each image in a "
                                   "sub-folder named by its label")

    records = []
    label_of_case: dict[str, tuple[str, Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = folder.name
        for image in _images_under(folder):
            if pattern is None:
                case = image.relative_to(folder).with_suffix("").as_posix()
            else:
                match = pattern.search(image.name)
                case = None
                if match is not None:
                    case = match.group("case") if "case" in pattern.groupindex else match.group(1)
                if not case:
                    raise InputError(image, f"file name does not match --case-pattern "
                                            f"'{pattern.pattern}' (no case found in it)")
            earlier = label_of_case.setdefault(case, (label, image))
            if earlier[0] != label:
                raise InputError(image, f"case '{case}' is under label '{label}' here and under "
                                        f"'{earlier[0]}' in {earlier[1]}; give --case-pattern so "
                                        f"that different cases get different ids")
            relative = Path(os.path.relpath(image.resolve(), base)).as_posix()
            records.append((relative, case, label))
    if not records:
        raise InputError(root, f"no image files found in its sub-folders (looked for "
                               f"{', '.join(IMAGE_SUFFIXES)} and DICOM files without suffix)")
    frame = pd.DataFrame(records, columns=list(REQUIRED_COLUMNS), dtype=str)
    frame = frame.sort_values("image_path", kind="stable").reset_index(drop=True)
    frame.attrs["path"] = str(out)
    return frame


# --------------------------------------------------------------------------- command line

def _parse_labels(text: str | None) -> list[str] | None:
    if text is None:
        return None
    labels = [label.strip() for label in text.split(",") if label.strip()]
    if not labels:
        raise InputError(None, f"--labels '{text}' names no label (give e.g. "
                               f"normal,genetic_disease)")
    return labels


def run(args: argparse.Namespace) -> int:
    from .io import apply_max_pixels

    apply_max_pixels(args)
    labels = _parse_labels(args.labels)
    if args.check is not None:
        stray = [flag for flag, value in (("--case-pattern", args.case_pattern),
                                          ("--out", args.out), ("--force", args.force)) if value]
        if stray:
            raise InputError(None, f"{', '.join(stray)} only apply to --from-folders, not --check")
        frame = load_manifest(args.check, labels=labels, check_images=not args.skip_image_check)
        print(f"ok: {args.check}: {summarize(frame)}")
        return 0

    root = Path(args.from_folders)
    out = Path(args.out) if args.out is not None else root / MANIFEST_NAME
    if out.exists() and not args.force:
        raise InputError(out, "already exists; pass --force to overwrite it")
    frame = manifest_from_folders(root, case_pattern=args.case_pattern, out=out)
    validate_manifest(frame, out, labels=labels, check_images=not args.skip_image_check)
    write_manifest(frame, out, force=args.force)
    print(f"wrote {out}: {summarize(frame)}")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "manifest",
        help="build a manifest from label folders, or validate one",
        description="Build a manifest CSV (image_path, case_id, label) from one sub-folder per "
                    "label, or check an existing manifest. Bad input exits 2 with one line "
                    "naming the file, row and column; nothing is written then.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--from-folders", metavar="DIR",
                      help="folder with one sub-folder per label (e.g. normal/, "
                           "genetic_disease/); each image file is one row")
    mode.add_argument("--check", metavar="M.csv",
                      help="validate this manifest and print a one-line summary")
    parser.add_argument("--case-pattern", metavar="REGEX",
                        help="regular expression with one group (or a group named 'case') that "
                             "extracts the case id from each file name; default: one case per "
                             "file (the file stem)")
    parser.add_argument("--out", metavar="M.csv",
                        help="where to write the manifest built by --from-folders "
                             "(default: DIR/manifest.csv); image paths are relative to its folder")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing manifest (--from-folders)")
    parser.add_argument("--labels", metavar="A,B",
                        help="comma-separated list of allowed labels, e.g. "
                             "normal,genetic_disease; any other label is an error")
    parser.add_argument("--skip-image-check", action="store_true",
                        help="do not open the image files (by default each must exist and be a "
                             "complete, readable image)")
    from .io import add_max_pixels_argument

    add_max_pixels_argument(parser)
    parser.set_defaults(func=run)
    return parser
