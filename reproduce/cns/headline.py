"""The CNS study's headline numbers, one row per task: results/cns/headline.csv and .md.

    python -m reproduce cns headline --profile default [--results results/cns]

Read from the tables already written (accuracy.csv; gradcam_localisation_<task>.csv), no model
loaded: image- and patient-level accuracy, micro and macro AUROC (patients), and the pointing
game on correctly classified anomalous images with its chance level and the energy share
inside the masks, each with its 95 % CI (`<metric>_lo`, `_hi`: the tables' Wilson intervals,
Wilson with continuity correction for the pointing game). These are the values
`python -m reproduce cns seeds` spreads over seeds and `compare --expect` judges a run by.
Expect on the default phantom (seed 0): 4-class patient accuracy about 0.91, 5-class macro
AUROC about 0.93, 5-class pointing game about 0.73.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.errors import InputError
from reproduce import seeds as seed_runs
from reproduce import stats, study
from reproduce.cns import pipeline

NAME = "headline"
ACCURACY_METRICS = ("image_accuracy", "patient_accuracy_mean", "patient_accuracy_majority",
                    "micro_auroc", "macro_auroc")
LOCALISATION = ("pointing_game_correct", "pointing_game_chance_correct", "energy_inside_correct")
# The acceptance on the default phantom (honest selection, grouped 5-fold).
TARGETS = {("4class", "patient_accuracy_mean"): 0.90, ("4class", "macro_auroc"): 0.95,
           ("5class", "macro_auroc"): 0.95, ("5class", "pointing_game_correct"): 0.80}


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "missing: run the table and heat-map targets first "
                               "(python -m reproduce cns all)")
    return pd.read_csv(path)


def build_headline(results_dir: str | Path) -> pd.DataFrame:
    """The headline table (task, metrics, their _lo/_hi) from the tables in `results_dir`."""
    results_dir = Path(results_dir)
    accuracy = _read(results_dir / "accuracy.csv")
    rows = []
    for task in pipeline.TASK_NAMES:
        part = accuracy[accuracy["task"] == task].set_index("metric")
        if part.empty:
            continue
        row: dict = {"task": task}
        for metric in ACCURACY_METRICS:
            found = metric in part.index
            row[metric] = float(part.loc[metric, "value"]) if found else np.nan
            row[f"{metric}_lo"] = float(part.loc[metric, "ci_lo"]) if found else np.nan
            row[f"{metric}_hi"] = float(part.loc[metric, "ci_hi"]) if found else np.nan
        localisation = results_dir / f"gradcam_localisation_{task}.csv"
        row.update(stats.pointing_game_headline(pd.read_csv(localisation) if localisation.is_file()
                                                else pd.DataFrame(columns=["correct"])))
        rows.append(row)
    if not rows:
        raise InputError(results_dir / "accuracy.csv", "no task's rows", column="task")
    return pd.DataFrame(rows)


def markdown(ctx: pipeline.StudyContext, table: pd.DataFrame) -> str:
    shown = table[[c for c in table.columns if not c.endswith(("_lo", "_hi"))]].copy()
    shown["task"] = shown["task"].map(lambda t: pipeline.TASK_TITLES.get(t, t))
    for column in shown.columns[1:]:
        shown[column] = shown[column].map(lambda v: "n/a" if not np.isfinite(v) else f"{v:.3f}")
    return "\n".join([
        "# Headline numbers of the CNS study (one run)",
        "",
        f"**{study.results_label(ctx)}.**",
        "",
        study.markdown_table(shown),
        "",
        "- From accuracy.csv (pooled out-of-fold test predictions; patient level by mean "
        "softmax and by majority vote) and gradcam_localisation_<task>.csv (correctly "
        "classified anomalous test images: pointing-game hit rate, the rate a maximum dropped at "
        "random would reach, mean energy share inside the mask).",
        "- One run is one draw: `seed_spread.md` gives the spread over seeds "
        "(`python -m reproduce cns seeds`).",
    ]) + "\n"


run, build_parser, main = seed_runs.headline_command(
    build_headline, markdown, "python -m reproduce cns headline", __doc__.split("\n\n")[0],
    pipeline.add_common_args, pipeline.context_from_args)


if __name__ == "__main__":
    sys.exit(main())
