"""Hong 2021's headline numbers, one row per model: results/gs_vgg16/headline.csv and .md.

    python -m reproduce gs_vgg16 headline --profile default [--results results/gs_vgg16]

Read from the tables already written (table2_folds.csv, gradcam_localisation.csv), no model
loaded: Table 2's six metrics as the mean over the five test folds (with a 95 % t-interval of
that mean from the SD over folds, `<metric>_lo`, `_hi`), and the pointing game on the true
positives with its chance level and the energy share inside the truth masks (Wilson interval
with continuity correction). These are the values `python -m reproduce gs_vgg16 seeds` spreads
over seeds and `compare --expect` judges a run by. Expect on the default phantom (seed 0): mean
AUC about 0.91, pointing game on true positives about 0.91 (chance about 0.70).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.errors import InputError
from reproduce import seeds as seed_runs
from reproduce import stats, study
from reproduce.gs_vgg16 import pipeline

NAME = "headline"
# The acceptance on the default phantom.
TARGETS = {(pipeline.ARCH, "auc"): 0.90, (pipeline.ARCH, "pointing_game_correct"): 0.80}


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "missing: run the table and heat-map targets first "
                               "(python -m reproduce gs_vgg16 all)")
    return pd.read_csv(path)


def build_headline(results_dir: str | Path) -> pd.DataFrame:
    """The headline table (model, metrics, their _lo and _hi) from `results_dir` (the SD over
    folds is Table 2's)."""
    from scipy import stats as scipy_stats

    results_dir = Path(results_dir)
    folds = _read(results_dir / "table2_folds.csv")
    missing = [m for m in pipeline.METRICS if m not in folds.columns]
    if missing or folds.empty:
        raise InputError(results_dir / "table2_folds.csv", "no fold rows" if folds.empty else
                         "missing column", column=missing[0] if missing else None)
    row: dict = {"model": pipeline.ARCH}
    t = float(scipy_stats.t.ppf(0.975, len(folds) - 1)) if len(folds) > 1 else np.nan
    for metric in pipeline.METRICS:
        values = folds[metric].to_numpy(float)
        mean, sd = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else np.nan
        half = t * sd / np.sqrt(len(values))
        row.update({metric: mean, f"{metric}_lo": mean - half, f"{metric}_hi": mean + half})
    localisation = results_dir / "gradcam_localisation.csv"
    row.update(stats.pointing_game_headline(pd.read_csv(localisation) if localisation.is_file()
                                            else pd.DataFrame(columns=["correct"])))
    return pd.DataFrame([row])


def markdown(ctx: pipeline.StudyContext, table: pd.DataFrame) -> str:
    shown = table[[c for c in table.columns if not c.endswith(("_lo", "_hi"))]].copy()
    shown["model"] = shown["model"].map(lambda m: pipeline.SPEC.display_names.get(m, m))
    for column in shown.columns[1:]:
        shown[column] = shown[column].map(lambda v: "n/a" if not np.isfinite(v) else f"{v:.3f}")
    return "\n".join([
        "# Headline numbers of the Hong 2021 study (one run)",
        "",
        f"**{study.results_label(ctx)}.**",
        "",
        study.markdown_table(shown),
        "",
        "- Table 2's metrics: the mean over the five test folds (table2_folds.csv; SD and a "
        "95 % t-interval of the mean in headline.csv, the SD over folds in table2.md). Pointing game: the correctly called "
        "syndromic test faces of gradcam_localisation.csv, the rate a maximum dropped at random "
        "would reach, and the mean energy share inside the truth mask.",
        "- One run is one draw: `seed_spread.md` gives the spread over seeds "
        "(`python -m reproduce gs_vgg16 seeds`).",
    ]) + "\n"


run, build_parser, main = seed_runs.headline_command(
    build_headline, markdown, "python -m reproduce gs_vgg16 headline", __doc__.split("\n\n")[0],
    pipeline.add_common_args, pipeline.context_from_args)


if __name__ == "__main__":
    sys.exit(main())
