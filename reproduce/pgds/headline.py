"""The Pgds study's headline numbers, one row per model: results/pgds/headline.csv and .md.

    python -m reproduce pgds headline --profile default [--results results/pgds]

Read from the tables already written (table1.csv; gradcam_localisation.csv for Pgds-ResNet,
the model Figure 4 explains): AUROC, sensitivity, specificity, F1 and accuracy of every model,
and for Pgds-ResNet the pointing game on its true positives, its chance level and the energy
share inside the masks, each with its 95 % CI (`<metric>_lo`, `_hi`: the tables' bootstrap or
Wilson-with-continuity-correction intervals). These are the values `python -m reproduce pgds seeds` spreads over
seeds and `python -m reproduce compare --expect` judges a fresh run by.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from data_prep.errors import InputError
from reproduce.pgds import pipeline

NAME = "headline"
METRICS = ("auroc", "sensitivity", "specificity", "f1", "accuracy")
LOCALISATION = ("pointing_game_tp", "pointing_game_chance_tp", "energy_inside_tp")
# The targets on the default phantom, checked for the mean and the worst seed.
TARGETS = {("Pgds-ResNet", "auroc"): 0.90, ("Pgds-ResNet", "pointing_game_tp"): 0.80}


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "missing: run the table and figure targets first "
                               "(python -m reproduce pgds all)")
    return pd.read_csv(path)


def build_headline(results_dir: str | Path) -> pd.DataFrame:
    """The headline table from the tables in `results_dir` (no model is loaded)."""
    from reproduce.pgds.figure4 import DEFAULT_ARCH

    results_dir = Path(results_dir)
    from reproduce import stats

    table1 = _read(results_dir / "table1.csv")
    bounds = [f"{m}_{side}" for m in METRICS for side in ("lo", "hi") if f"{m}_{side}" in table1]
    frame = table1[["model", *METRICS, *bounds]].copy()
    for column in (*LOCALISATION, "pointing_game_tp_lo", "pointing_game_tp_hi"):
        frame[column] = np.nan
    localisation = results_dir / "gradcam_localisation.csv"
    if localisation.is_file():
        scores = pd.read_csv(localisation)
        if "pointing_game_hit" in scores.columns:
            positives = scores[scores["true_positive"].astype(bool)]
            row = frame["model"] == pipeline.DISPLAY_NAMES[DEFAULT_ARCH]
            if len(positives):
                hits = int(positives["pointing_game_hit"].astype(bool).sum())
                _, lo, hi = stats.proportion_ci(hits, len(positives), stats.PGDS_PROPORTION_CI)
                frame.loc[row, "pointing_game_tp"] = hits / len(positives)
                frame.loc[row, ["pointing_game_tp_lo", "pointing_game_tp_hi"]] = [lo, hi]
                frame.loc[row, "pointing_game_chance_tp"] = float(positives["chance_hit"].mean())
                frame.loc[row, "energy_inside_tp"] = float(positives["energy_inside"].mean())
    return frame.reset_index(drop=True)


def markdown(ctx: pipeline.StudyContext, table: pd.DataFrame) -> str:
    shown = table[[c for c in table.columns if not c.endswith(("_lo", "_hi"))]].copy()
    for column in shown.columns[1:]:
        shown[column] = shown[column].map(lambda v: "n/a" if not np.isfinite(v) else f"{v:.3f}")
    return "\n".join([
        "# Headline numbers of the Pgds study (one run)",
        "",
        f"**{pipeline.results_label(ctx)}.**",
        "",
        pipeline.markdown_table(shown),
        "",
        "- From table1.csv (test split, each model's training-split threshold) and "
        "gradcam_localisation.csv (Pgds-ResNet's true positives: pointing-game hit rate, the "
        "rate a maximum dropped at random would reach, mean energy share inside the mask).",
        "- One run is one draw: `seed_spread.md` gives the spread over seeds, and "
        "`python -m reproduce compare --expect` judges another run against it.",
    ]) + "\n"


def run(ctx: pipeline.StudyContext) -> tuple:
    pipeline.check_results_dir(ctx)
    table = build_headline(ctx.results_dir)
    return pipeline.write_table(ctx, NAME, table, markdown(ctx, table))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce pgds headline",
                                     description=__doc__.split("\n\n")[0])
    pipeline.add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return pipeline.run_cli(lambda args: (run(pipeline.context_from_args(args)), 0)[1],
                            build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
