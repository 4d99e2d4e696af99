"""How far a fresh run may land from the committed one: the spread over seeds, and the judge.

A phantom result is one draw. Another CPU, thread count or library build changes the last bits
of training, and over 30 epochs that is as good as another initialisation: the committed
number is not what another machine will print. So each study's committed results carry
`seed_spread.csv`: its headline metrics (`headline.csv`) from runs with several seeds (each a
new phantom, split and initialisation), and per metric an EXPECTED interval for one more run:

    mean +- t(0.975, n-1) * sd * sqrt(1 + 1/n)      (a 95 % prediction interval, normal model)

widened to at least +-`MIN_HALF_WIDTH` (three seeds that all print 1.00 do not make 0.99
unexpected) and clipped to [0, 1] (every headline metric is a proportion or an AUROC).

A fresh value is within expectation when it lies in that interval or its own 95 % CI (from its
table: bootstrap for AUROC and F1, Wilson with continuity correction for proportions) reaches
into it. Three seeds estimate the spread poorly and a proportion on ~165 test images moves in
steps of 0.006: a fresh VGG-19 with no false positive (specificity 1.000, CI 0.97-1.00, seen
under ONEDNN_MAX_CPU_ISA=AVX2) is no finding against seeds at 0.976-0.983, while a Pgds-ResNet
at AUROC 0.90 (CI about 0.85-0.94) against 0.963-1.000 is.

`python -m reproduce compare --expect COMMITTED FRESH` judges every headline metric of FRESH
against those intervals (exit 0: all within expectation, 1: some outside, 2: bad input). A
study folder without `seed_spread.csv` is judged against its committed CIs instead: every
metric column X of a table with X_lo and X_hi columns must fall inside [X_lo, X_hi].
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from data_prep.errors import InputError

SPREAD_FILE = "seed_spread.csv"
HEADLINE_FILE = "headline.csv"
MIN_HALF_WIDTH = 0.02
EXIT_OK, EXIT_OUTSIDE = 0, 1
SPREAD_COLUMNS = ("table", "key", "metric", "n_seeds", "seeds", "values", "mean", "sd", "min",
                  "max", "expect_lo", "expect_hi")


def expected_interval(values: Sequence[float], min_half_width: float = MIN_HALF_WIDTH,
                      bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float]:
    """95 % prediction interval for one more draw from the seeds' distribution."""
    from scipy import stats

    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(values) < 2:
        raise ValueError("an expected interval needs at least two seeds")
    n = len(values)
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    half = max(float(stats.t.ppf(0.975, n - 1)) * sd * math.sqrt(1.0 + 1.0 / n), min_half_width)
    lo, hi = min(mean - half, values.min()), max(mean + half, values.max())
    return max(bounds[0], lo), min(bounds[1], hi)


def seed_spread(headlines: Mapping[int, pd.DataFrame], key: str,
                table: str = HEADLINE_FILE) -> pd.DataFrame:
    """One row per (key value, metric) over the seeds' headline tables (same rows and
    columns in each); numeric columns only."""
    seeds = sorted(headlines)
    first = headlines[seeds[0]]
    metrics = [c for c in first.columns if c != key and pd.api.types.is_numeric_dtype(first[c])
               and not c.endswith(("_lo", "_hi"))]
    rows = []
    for key_value in first[key].astype(str):
        for metric in metrics:
            values = []
            for seed in seeds:
                frame = headlines[seed].set_index(headlines[seed][key].astype(str))
                values.append(float(frame.loc[key_value, metric]))
            finite = [v for v in values if np.isfinite(v)]
            if len(finite) < 2:
                continue
            lo, hi = expected_interval(finite)
            rows.append({"table": table, "key": key_value, "metric": metric,
                         "n_seeds": len(finite), "seeds": ";".join(map(str, seeds)),
                         "values": ";".join(f"{v:.4f}" for v in values),
                         "mean": float(np.mean(finite)), "sd": float(np.std(finite, ddof=1)),
                         "min": min(finite), "max": max(finite), "expect_lo": lo, "expect_hi": hi})
    return pd.DataFrame(rows, columns=list(SPREAD_COLUMNS))


# ----------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class Verdict:
    study: str
    table: str
    key: str
    metric: str
    committed: float
    fresh: float
    lo: float
    hi: float
    source: str       # "seeds 0;1;2" or "95% CI"
    fresh_lo: float = math.nan   # the fresh value's own 95 % CI, where its table gives one
    fresh_hi: float = math.nan

    @property
    def within(self) -> bool:
        """The fresh value lies in the expected interval, or its own CI reaches into it."""
        if not np.isfinite(self.fresh):
            return False
        lo, hi = self.fresh, self.fresh
        if np.isfinite(self.fresh_lo) and np.isfinite(self.fresh_hi):
            lo, hi = min(lo, self.fresh_lo), max(hi, self.fresh_hi)
        return bool(hi >= self.lo - 1e-12 and lo <= self.hi + 1e-12)


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(path, "missing; the fresh folder needs the same tables as the "
                               "committed one (run the study's `all` target)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable CSV: {err}") from None


def _value(frame: pd.DataFrame, path: Path, key: str, metric: str) -> float:
    key_column = frame.columns[0]
    rows = frame[frame[key_column].astype(str) == key]
    if rows.empty:
        raise InputError(path, f"no row '{key}'", column=str(key_column))
    if metric not in frame.columns:
        raise InputError(path, "metric column missing", column=metric)
    return float(pd.to_numeric(rows[metric], errors="coerce").iloc[0])


def judge_study(committed: Path, fresh: Path, study: str) -> list[Verdict]:
    """Verdicts for one study folder (committed/<study> against fresh/<study>)."""
    spread_path = committed / SPREAD_FILE
    verdicts = []
    if spread_path.is_file():
        spread = _read(spread_path)
        missing = [c for c in SPREAD_COLUMNS if c not in spread.columns]
        if missing:
            raise InputError(spread_path, "column missing", column=missing[0])
        tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
        for row in spread.itertuples(index=False):
            if row.table not in tables:
                tables[row.table] = (_read(committed / row.table), _read(fresh / row.table))
            mine, theirs = tables[row.table]
            key = str(row.key)
            fresh_ci = [(_value(theirs, fresh / row.table, key, f"{row.metric}_{side}")
                         if f"{row.metric}_{side}" in theirs.columns else math.nan)
                        for side in ("lo", "hi")]
            verdicts.append(Verdict(
                study, row.table, key, row.metric,
                _value(mine, committed / row.table, key, row.metric),
                _value(theirs, fresh / row.table, key, row.metric),
                float(row.expect_lo), float(row.expect_hi), f"seeds {row.seeds}", *fresh_ci))
        return verdicts
    for path in sorted(committed.glob("*.csv")):
        mine = _read(path)
        bounded = [c for c in mine.columns if f"{c}_lo" in mine.columns and f"{c}_hi" in mine.columns]
        if not bounded:
            continue
        theirs = _read(fresh / path.name)
        key_column = mine.columns[0]
        for _, row in mine.iterrows():
            for metric in bounded:
                verdicts.append(Verdict(
                    study, path.name, str(row[key_column]), metric, float(row[metric]),
                    _value(theirs, fresh / path.name, str(row[key_column]), metric),
                    float(row[f"{metric}_lo"]), float(row[f"{metric}_hi"]), "95% CI"))
    return verdicts


def study_folders(committed: Path) -> list[Path]:
    """The study folders under `committed` (results/ -> results/pgds, ...), or `committed`
    itself when it is one (it holds run.json)."""
    if (committed / "run.json").is_file():
        return [committed]
    return sorted(p for p in committed.iterdir() if p.is_dir() and (p / "run.json").is_file())


def judge(committed: str | Path, fresh: str | Path) -> list[Verdict]:
    committed, fresh = Path(committed), Path(fresh)
    for folder in (committed, fresh):
        if not folder.is_dir():
            raise InputError(folder, "results folder does not exist")
    folders = study_folders(committed)
    if not folders:
        raise InputError(committed, "holds no study results folder (a folder with run.json)")
    verdicts = []
    for folder in folders:
        other = fresh if folder == committed else fresh / folder.name
        if not other.is_dir():
            raise InputError(other, f"missing: the committed results have study '{folder.name}'")
        verdicts += judge_study(folder, other, folder.name)
    if not verdicts:
        raise InputError(committed, "has neither seed_spread.csv nor tables with CI columns to "
                                    "judge against")
    return verdicts


def report(verdicts: Sequence[Verdict], out=None) -> int:
    out = sys.stdout if out is None else out
    header = ("study", "key", "metric", "committed", "fresh", "fresh 95% CI", "expected", "from",
              "verdict")
    cells = [header] + [(v.study, v.key, v.metric, f"{v.committed:.3f}", f"{v.fresh:.3f}",
                         (f"{v.fresh_lo:.3f}-{v.fresh_hi:.3f}" if np.isfinite(v.fresh_lo) else "-"),
                         f"{v.lo:.3f}-{v.hi:.3f}", v.source,
                         "within" if v.within else "OUTSIDE") for v in verdicts]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=out)
    outside = [v for v in verdicts if not v.within]
    if outside:
        first = outside[0]
        print(f"\nSUMMARY: {len(outside)} of {len(verdicts)} headline values are OUTSIDE what "
              f"another run is expected to give (e.g. {first.study} {first.key} {first.metric} "
              f"{first.fresh:.3f}, expected {first.lo:.3f}-{first.hi:.3f}): not float noise or "
              "seed luck; look for a change of data, code or settings", file=out)
        return EXIT_OUTSIDE
    print(f"\nSUMMARY: all {len(verdicts)} headline values are within what another run is "
          "expected to give (the committed spread over seeds, or the committed CIs)", file=out)
    return EXIT_OK
