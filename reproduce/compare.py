"""Compare two results folders table by table: `python -m reproduce compare DIR_A DIR_B`.

Every `*.csv` that both folders hold (matched by relative path, recursively, e.g.
`pgds/table1.csv`; hidden files such as unfinished atomic writes are ignored) is read with
pandas. Its leading text columns are the row keys (e.g. `model`, `subtype`); every numeric
column is a metric and is compared cell by cell, B minus A, against a tolerance:

    |B - A| <= atol(metric) + rtol * max(|A|, |B|)

`atol` comes from the first glob pattern (case-insensitive, on the column name with spaces
and hyphens read as underscores) that matches the metric: the patterns of `--tolerance-file`
first, in file order, then `DEFAULT_TOLERANCES`, then `--atol` (default 1e-6) for metrics no
pattern matches. Two NaNs agree; one NaN does not.

Not compared: text columns that are not keys, such as "0.89 (0.80–0.95)" display strings
(a leading text column whose values all start like a number, "<0.01" or "77/86", is such a
display column, not a key; `--key` names the key columns outright when this guess is wrong),
and any file other than `*.csv`. A table without text columns is matched row by row.

Prints one aligned table per CSV (metric, key, A, B, diff, tol, status ok/EXCEEDS) and a
summary line. Tables of the committed seed runs (`*/seeds/seed<N>/`) are compared only when
both folders have them.

`--expect` is the other question: not "did anything change beyond float noise?" but "is this
fresh run within what another machine or seed is expected to give?": DIR_A's headline values
against the committed spread over seeds (reproduce/expectation.py). Exit status: 0 all within tolerance, 1 some difference exceeds it, 2 bad input
(a missing folder, a table in only one folder, rows or columns that do not match, a bad
tolerance file), reported as one line naming the file, row and column.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from data_prep.errors import InputError, report_bad_input

EXIT_OK = 0
EXIT_EXCEEDS = 1

# Absolute tolerance by metric-name pattern: the first match wins. Counts are exact;
# proportions get the spread a re-run on another machine or seed shows on ~200 test images.
DEFAULT_TOLERANCES: dict[str, float] = {
    "n": 0.0, "n_*": 0.0, "*_n": 0.0, "number*": 0.0, "*count*": 0.0, "correct": 0.0,
    "total": 0.0, "hits": 0.0, "tp": 0.0, "fp": 0.0, "tn": 0.0, "fn": 0.0,
    "*auroc*": 0.02, "*auc*": 0.02,
    "*sensitivity*": 0.05, "*specificity*": 0.05, "*recall*": 0.05, "*precision*": 0.05,
    "*accuracy*": 0.05, "*f1*": 0.05, "*hit_rate*": 0.05, "*energy*": 0.05,
    "p": 0.05, "p_value*": 0.05, "*_p_value*": 0.05, "pvalue*": 0.05, "*_p": 0.05,
    "*seconds*": math.inf, "*runtime*": math.inf,
}
DEFAULT_ATOL = 1e-6
_NUMBER_LIKE = re.compile(r"^\s*[<>≤≥~]?\s*[-+]?(\d|\.\d)")


@dataclass
class Tolerances:
    """Glob pattern -> absolute tolerance (first match wins), a fallback and a relative term."""

    patterns: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    default_atol: float = DEFAULT_ATOL
    rtol: float = 0.0

    def atol_for(self, metric: str) -> float:
        name = re.sub(r"[\s\-]+", "_", metric.strip().lower())
        for pattern, atol in self.patterns.items():
            if fnmatch.fnmatchcase(name, pattern.lower()):
                return atol
        return self.default_atol

    def allowed(self, metric: str, a: float, b: float) -> float:
        return self.atol_for(metric) + self.rtol * max(abs(a), abs(b))


@dataclass(frozen=True)
class Row:
    """One compared cell: B - A against its tolerance."""

    table: str
    metric: str
    key: str
    a: float
    b: float
    diff: float
    tol: float
    ok: bool


def load_tolerance_file(path: str | Path) -> dict[str, float]:
    """A JSON object {glob pattern: absolute tolerance}; `Infinity` ignores a metric."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "tolerance file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise InputError(path, "must be a JSON object mapping metric patterns to tolerances")
    patterns: dict[str, float] = {}
    for pattern, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                or math.isnan(value):
            raise InputError(path, f"tolerance for pattern {pattern!r} must be a number >= 0, "
                                   f"got {value!r}")
        patterns[str(pattern)] = float(value)
    return patterns


def make_tolerances(tolerance_file: str | Path | None = None, atol: float = DEFAULT_ATOL,
                    rtol: float = 0.0) -> Tolerances:
    patterns = load_tolerance_file(tolerance_file) if tolerance_file else {}
    for pattern, value in DEFAULT_TOLERANCES.items():
        patterns.setdefault(pattern, value)
    return Tolerances(patterns=patterns, default_atol=atol, rtol=rtol)


# --------------------------------------------------------------------------------------------
# Reading tables
# --------------------------------------------------------------------------------------------
def _csv_tables(folder: Path) -> dict[str, Path]:
    tables = {}
    for path in folder.rglob("*.csv"):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            tables[relative.as_posix()] = path
    return tables


def _read(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(path, "empty CSV (no header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable CSV: {err}") from None
    if frame.columns.duplicated().any():
        column = str(frame.columns[frame.columns.duplicated()][0])
        raise InputError(path, "duplicate column name", column=column)
    return frame


def _is_numeric(column: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return True
    present = column.dropna()
    return bool(pd.to_numeric(present, errors="coerce").notna().all())


def _as_numbers(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").astype(float).to_numpy()


def _looks_like_display(column: pd.Series) -> bool:
    present = column.dropna().astype(str)
    return len(present) > 0 and bool(present.map(lambda v: bool(_NUMBER_LIKE.match(v))).all())


def _key_columns(frame: pd.DataFrame, forced: Sequence[str] | None, path: Path) -> list[str]:
    if forced:
        missing = [c for c in forced if c not in frame.columns]
        if missing:
            raise InputError(path, "key column missing", column=missing[0])
        return list(forced)
    keys = []
    for name in frame.columns:
        column = frame[name]
        if _is_numeric(column) or _looks_like_display(column):
            break
        keys.append(str(name))
    return keys


def _row_keys(frame: pd.DataFrame, keys: list[str], path: Path) -> list[str]:
    if not keys:
        return [f"row {i + 1}" for i in range(len(frame))]
    labels = [" / ".join("" if pd.isna(v) else str(v) for v in values)
              for values in frame[keys].itertuples(index=False, name=None)]
    seen: dict[str, int] = {}
    for i, label in enumerate(labels, start=1):
        if label in seen:
            raise InputError(path, f"duplicate row key {label!r} (also row {seen[label]})",
                             row=i, column=keys[0])
        seen[label] = i
    return labels


def compare_tables(name: str, path_a: Path, path_b: Path, tolerances: Tolerances,
                   key_columns: Sequence[str] | None = None) -> tuple[list[Row], list[str]]:
    """Rows for one table, and the names of the non-numeric, non-key columns skipped."""
    frame_a, frame_b = _read(path_a), _read(path_b)
    keys_a = _key_columns(frame_a, key_columns, path_a)
    keys_b = _key_columns(frame_b, key_columns, path_b)
    if keys_a != keys_b:
        differing = sorted(set(keys_a) ^ set(keys_b)) or keys_b
        raise InputError(path_b, f"key columns {keys_b} differ from {keys_a} in {path_a}",
                         column=differing[0])
    labels_a = _row_keys(frame_a, keys_a, path_a)
    labels_b = _row_keys(frame_b, keys_b, path_b)
    index_b = {label: i for i, label in enumerate(labels_b)}
    for i, label in enumerate(labels_a, start=1):
        if label not in index_b:
            raise InputError(path_a, f"row key {label!r} has no match in {path_b}", row=i,
                             column=keys_a[0] if keys_a else None)
    index_a = set(labels_a)
    for i, label in enumerate(labels_b, start=1):
        if label not in index_a:
            raise InputError(path_b, f"row key {label!r} has no match in {path_a}", row=i,
                             column=keys_b[0] if keys_b else None)

    metrics, skipped = [], []
    for column in [c for c in frame_a.columns if c not in keys_a]:
        numeric_a = _is_numeric(frame_a[column])
        if column not in frame_b.columns:
            if numeric_a:
                raise InputError(path_b, f"metric column missing (present in {path_a})",
                                 column=str(column))
            skipped.append(str(column))
            continue
        numeric_b = _is_numeric(frame_b[column])
        if numeric_a and numeric_b:
            metrics.append(column)
        elif numeric_a != numeric_b:
            text_path, frame = (path_b, frame_b) if numeric_a else (path_a, frame_a)
            values = frame[column]
            bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
            raise InputError(text_path, f"{values.iloc[row - 1]!r} is not a number, but the "
                                        "same column is numeric in the other folder",
                             row=row, column=str(column))
        else:
            skipped.append(str(column))
    for column in frame_b.columns:
        if column not in frame_a.columns and column not in keys_b \
                and _is_numeric(frame_b[column]):
            raise InputError(path_a, f"metric column missing (present in {path_b})",
                             column=str(column))

    order_b = [index_b[label] for label in labels_a]
    rows = []
    for column in metrics:
        values_a = _as_numbers(frame_a[column])
        values_b = _as_numbers(frame_b[column])[order_b]
        for label, a, b in zip(labels_a, values_a, values_b):
            if math.isnan(a) or math.isnan(b):
                diff, tol, ok = math.nan, tolerances.atol_for(str(column)), \
                    math.isnan(a) and math.isnan(b)
            else:
                diff = float(b - a)
                tol = tolerances.allowed(str(column), float(a), float(b))
                # float noise: 0.85 - 0.83 is 0.0200000000000000178, still within 0.02
                ok = abs(diff) <= tol + 1e-12 * max(1.0, abs(a), abs(b))
            rows.append(Row(name, str(column), label, float(a), float(b), diff, tol, ok))
    return rows, skipped


def _check_folder(folder: Path) -> Path:
    folder = Path(folder)
    if not folder.exists():
        raise InputError(folder, "results folder does not exist")
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    return folder


def _only_in_seed_runs(name: str) -> bool:
    """Tables of the extra seed runs (`<study>/seeds/seed<N>/...`, reproduce.seeds) are part
    of the committed results only; a fresh run_all has none, which is no difference."""
    return "seeds" in Path(name).parts[:-1]


def _pair_tables(dir_a: Path, dir_b: Path) -> list[tuple[str, Path, Path]]:
    tables_a, tables_b = _csv_tables(dir_a), _csv_tables(dir_b)
    for tables, other in ((tables_a, tables_b), (tables_b, tables_a)):
        for name in [n for n in tables if n not in other and _only_in_seed_runs(n)]:
            del tables[name]
    only_a = sorted(set(tables_a) - set(tables_b))
    only_b = sorted(set(tables_b) - set(tables_a))
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"only in A ({dir_a}): {', '.join(only_a)}")
        if only_b:
            parts.append(f"only in B ({dir_b}): {', '.join(only_b)}")
        first = tables_a[only_a[0]] if only_a else tables_b[only_b[0]]
        raise InputError(first, "table present in one folder only; " + "; ".join(parts))
    if not tables_a:
        raise InputError(dir_a, f"no *.csv tables in either folder (B: {dir_b})")
    return [(name, tables_a[name], tables_b[name]) for name in sorted(tables_a)]


def compare_dirs(dir_a: str | Path, dir_b: str | Path,
                 tolerances: Tolerances | Mapping[str, float] | None = None,
                 key_columns: Sequence[str] | None = None) -> list[Row]:
    """Every numeric cell of every table both folders hold, in table, column, row order.

    `tolerances` is a `Tolerances`, or a {pattern: atol} mapping checked before the
    built-in patterns, or None for the defaults.
    """
    if tolerances is None:
        tolerances = Tolerances()
    elif not isinstance(tolerances, Tolerances):
        tolerances = Tolerances(patterns={**dict(tolerances), **{
            k: v for k, v in DEFAULT_TOLERANCES.items() if k not in tolerances}})
    dir_a, dir_b = _check_folder(Path(dir_a)), _check_folder(Path(dir_b))
    rows: list[Row] = []
    for name, path_a, path_b in _pair_tables(dir_a, dir_b):
        rows.extend(compare_tables(name, path_a, path_b, tolerances, key_columns)[0])
    return rows


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def _number(value: float, spec: str = ".6g") -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def format_rows(rows: Sequence[Row]) -> str:
    """An aligned text table: metric, key, A, B, diff, tol, status."""
    header = ("metric", "key", "A", "B", "diff", "tol", "status")
    cells = [header] + [(r.metric, r.key, _number(r.a), _number(r.b), _number(r.diff, "+.3g"),
                         _number(r.tol, ".3g"), "ok" if r.ok else "EXCEEDS") for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = {2, 3, 4, 5}
    lines = []
    for row in cells:
        parts = [cell.rjust(w) if i in numeric else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _profiles(folder: Path) -> dict[str, tuple[Path, str]]:
    """{run.json's path relative to `folder`: (its path, the profile it records)}."""
    found = {}
    for path in sorted(folder.rglob("run.json")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue   # an unreadable run.json says nothing about the profile
        config = record.get("config") if isinstance(record, dict) else None
        profile = (config or {}).get("profile") if isinstance(config, dict) else None
        if isinstance(profile, str):
            found[str(path.relative_to(folder))] = (path, profile)
    return found


def check_same_profiles(dir_a: Path, dir_b: Path) -> None:
    """Bad input when a run.json both folders hold records two different profiles: tables
    of a ci and a default run differ by design, not by float noise or seed."""
    profiles_b = _profiles(dir_b)
    for name, (path_a, profile_a) in _profiles(dir_a).items():
        if name in profiles_b and profiles_b[name][1] != profile_a:
            path_b, profile_b = profiles_b[name]
            raise InputError(path_b, f"profile '{profile_b}', but {path_a} is profile "
                                     f"'{profile_a}': results of different profiles are not "
                                     "comparable (run both with one --profile)")


def report(dir_a: Path, dir_b: Path, tolerances: Tolerances,
           key_columns: Sequence[str] | None = None, out=None) -> int:
    """Print every table's comparison and a summary; return the exit status (0 or 1)."""
    out = sys.stdout if out is None else out
    dir_a, dir_b = _check_folder(Path(dir_a)), _check_folder(Path(dir_b))
    check_same_profiles(dir_a, dir_b)
    pairs = _pair_tables(dir_a, dir_b)
    results = [(name, *compare_tables(name, pa, pb, tolerances, key_columns))
               for name, pa, pb in pairs]
    print(f"A: {dir_a}\nB: {dir_b}\n", file=out)
    total, exceeding = 0, {}
    for name, rows, skipped in results:
        print(f"== {name} ==", file=out)
        print(format_rows(rows) if rows else "(no numeric columns)", file=out)
        if skipped:
            print(f"not compared (text columns): {', '.join(skipped)}", file=out)
        print(file=out)
        total += len(rows)
        bad = sum(not r.ok for r in rows)
        if bad:
            exceeding[name] = bad
    if exceeding:
        detail = ", ".join(f"{name}: {count}" for name, count in exceeding.items())
        print(f"SUMMARY: {sum(exceeding.values())} of {total} values in {len(results)} tables "
              f"EXCEED their tolerance ({detail})", file=out)
        return EXIT_EXCEEDS
    print(f"SUMMARY: all {total} values in {len(results)} tables within tolerance", file=out)
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("dir_a", metavar="DIR_A", type=Path,
                        help="first results folder (e.g. the committed results/)")
    parser.add_argument("dir_b", metavar="DIR_B", type=Path,
                        help="second results folder (e.g. a fresh run); diff = B - A")
    parser.add_argument("--tolerance-file", type=Path, default=None, metavar="T.json",
                        help="JSON object {metric glob pattern: absolute tolerance}, checked "
                             "before the built-in patterns; Infinity ignores a metric")
    parser.add_argument("--atol", type=_non_negative, default=DEFAULT_ATOL,
                        help="absolute tolerance for metrics no pattern matches "
                             f"(default {DEFAULT_ATOL:g})")
    parser.add_argument("--rtol", type=_non_negative, default=0.0,
                        help="relative tolerance added to every metric's absolute one, "
                             "times max(|A|, |B|) (default 0)")
    parser.add_argument("--expect", action="store_true",
                        help="judge DIR_B (a fresh run) against what another run is expected to "
                             "give: the committed spread over seeds in DIR_A (seed_spread.csv), "
                             "else DIR_A's CIs, instead of float-noise tolerances; exit 1 when "
                             "a headline value falls outside (reproduce/expectation.py)")
    parser.add_argument("--key", action="append", default=None, metavar="COLUMN",
                        help="a row-key column (repeat for several); default: the leading "
                             "text columns of each table")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce compare",
        description="Compare the numeric metrics of two results folders, table by table; "
                    "exit 1 when a difference exceeds its tolerance, 2 on bad input.")
    return add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.expect:
        from reproduce import expectation

        check_same_profiles(_check_folder(Path(args.dir_a)), _check_folder(Path(args.dir_b)))
        return expectation.report(expectation.judge(args.dir_a, args.dir_b))
    tolerances = make_tolerances(args.tolerance_file, args.atol, args.rtol)
    return report(args.dir_a, args.dir_b, tolerances, args.key)


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `compare` on a subparsers object (for `python -m reproduce`)."""
    parser = subparsers.add_parser(
        "compare", help="compare two results folders' tables within tolerances",
        description=build_parser().description)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_bad_input(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
