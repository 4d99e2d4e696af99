"""Tang 2023 Table 1: Pgds-ResNet, ResNet-34, VGG-16 and VGG-19 on the test split.

    python -m reproduce.pgds.table1 --profile ci|default|paper [--manifest M] [--runs runs]
        [--results results/pgds] [--threshold-rule max_f1|youden] [--seed 0] [--force]

Each architecture is trained once over the profile's epoch grid on the case-level split and
the snapshot with the smallest validation loss is kept (reproduce.pgds.pipeline; models are
reused when already trained). Each model's operating threshold is chosen on ITS OWN training
split predictions by the threshold rule (best F1, the paper's; or Youden's J). On the test
split: AUROC (95% CI, stratified bootstrap), sensitivity and specificity (95% CI, Wilson with
continuity correction), F1 (bootstrap CI), and the paper's "ANOVA against the gold standard"
(one-way ANOVA of the calls against the labels, F and p; reproduce.stats.anova_vs_gold).

Writes results/pgds/table1.csv (one row per model: string keys `model`, `architecture`,
then numeric columns) and table1.md (the paper's values beside the reproduced ones).
On the `default` phantom, Pgds-ResNet's AUROC is expected to be >= 0.90.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np
import pandas as pd

from reproduce.pgds import pipeline

NAME = "table1"


def model_row(ctx: pipeline.StudyContext, arch: str) -> dict:
    """Every Table 1 number of one architecture (numeric, flat)."""
    from reproduce import stats

    test = pipeline.test_rows(ctx, arch)
    threshold = pipeline.operating_threshold(ctx, arch)
    y_true, score = test["y_true"].to_numpy(), test["score"].to_numpy()
    finite = threshold if np.isfinite(threshold) else float(np.max(score)) + 1.0
    report = stats.binary_report(y_true, score, finite, n_boot=ctx.n_boot, seed=ctx.seed)
    calls = (score >= threshold).astype(int)
    anova_f, anova_p = stats.anova_vs_gold(y_true, calls)
    values = report.as_dict()
    row = {"model": pipeline.DISPLAY_NAMES[arch], "architecture": arch}
    for name in ("auroc", "sensitivity", "specificity", "f1", "accuracy"):
        row[name], row[f"{name}_lo"], row[f"{name}_hi"] = (values[name], values[f"{name}_lo"],
                                                          values[f"{name}_hi"])
    row.update(anova_f=anova_f, anova_p=anova_p, threshold=threshold, n_test=len(test),
               n_pos=report.n_pos, n_neg=report.n_neg, tp=report.tp, fn=report.fn,
               tn=report.tn, fp=report.fp, n_boot=ctx.n_boot,
               selected_epoch=int(pipeline.selection_record(ctx, arch)["epoch"]))
    return row


def paper_columns(model: str) -> dict:
    from reproduce.paper_values import TANG2023_TABLE1

    paper = {row.model: row for row in TANG2023_TABLE1}.get(model)
    if paper is None:
        return {}
    return {"paper_auroc": paper.auroc.value, "paper_auroc_lo": paper.auroc.lo,
            "paper_auroc_hi": paper.auroc.hi, "paper_sensitivity": paper.sensitivity.value,
            "paper_sensitivity_lo": paper.sensitivity.lo, "paper_sensitivity_hi": paper.sensitivity.hi,
            "paper_specificity": paper.specificity.value, "paper_specificity_lo": paper.specificity.lo,
            "paper_specificity_hi": paper.specificity.hi, "paper_f1": paper.f1,
            "paper_anova_p": paper.p_value, "paper_anova_f": paper.f_value}


def build_table(ctx: pipeline.StudyContext) -> pd.DataFrame:
    rows = []
    for arch in pipeline.ARCHITECTURES:
        row = model_row(ctx, arch)
        row.update(paper_columns(row["model"]))
        rows.append(row)
    return pd.DataFrame(rows)


def _p_text(p: float, upper: bool = False) -> str:
    if upper:
        return f"<{p:g}"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown(ctx: pipeline.StudyContext, table: pd.DataFrame) -> str:
    from reproduce.paper_values import TANG2023_TABLE1

    paper = {row.model: row for row in TANG2023_TABLE1}
    shown = []
    for row in table.to_dict("records"):
        ref = paper[row["model"]]
        shown.append({
            "Model": row["model"],
            "AUROC (95% CI) paper": str(ref.auroc),
            "AUROC reproduced": pipeline.ci_text(row["auroc"], row["auroc_lo"], row["auroc_hi"]),
            "Sensitivity (95% CI) paper": str(ref.sensitivity),
            "Sensitivity reproduced": pipeline.ci_text(row["sensitivity"], row["sensitivity_lo"],
                                                       row["sensitivity_hi"]),
            "Specificity (95% CI) paper": str(ref.specificity),
            "Specificity reproduced": pipeline.ci_text(row["specificity"], row["specificity_lo"],
                                                       row["specificity_hi"]),
            "F1 paper": f"{ref.f1:.2f}",
            "F1 reproduced": pipeline.ci_text(row["f1"], row["f1_lo"], row["f1_hi"]),
            "ANOVA p paper": _p_text(ref.p_value, ref.p_is_upper_bound),
            "p reproduced": _p_text(row["anova_p"]),
            "F paper": f"{ref.f_value:.3f}",
            "F reproduced": f"{row['anova_f']:.3f}",
            "Threshold": pipeline.threshold_text(row['threshold']),
            "TP/FN/TN/FP": f"{row['tp']}/{row['fn']}/{row['tn']}/{row['fp']}",
            "Epoch": str(row["selected_epoch"]),
        })
    first = table.iloc[0]
    rule = {"max_f1": "the best F1 on the training split (the paper's rule; 0.16 in the paper)",
            "youden": "Youden's J on the training split (the authors' test script; the paper "
                      "uses the best F1)"}[ctx.threshold_rule]
    grid = pipeline.train_config(ctx, pipeline.ARCHITECTURES[0]).epoch_grid
    lines = [
        "# Table 1. Four architectures on the test split (Tang 2023, Table 1)",
        "",
        f"**{pipeline.results_label(ctx)}.**",
        "",
        pipeline.markdown_table(pd.DataFrame(shown)),
        "",
        f"- Test split: {int(first['n_test'])} images ({int(first['n_pos'])} genetic disease, "
        f"{int(first['n_neg'])} normal); the paper's: 186 (86 / 100).",
        f"- Threshold: each model's own, chosen by {rule}; a call is \"genetic disease\" when "
        "P(genetic disease) >= threshold.",
        f"- Training: each model trained once over the epoch grid {grid} and the snapshot with "
        "the smallest validation loss kept (Epoch column), on a case-level split "
        f"(test {pipeline.TEST_SIZE:g}, validation {pipeline.VAL_SIZE:g} of each subtype's cases).",
        "- ANOVA: one-way ANOVA of the test images' binary calls against their gold-standard "
        "labels (scipy f_oneway, 1 and 2N-2 df), the reading that regenerates the paper's F "
        "values. It tests whether the model calls disease as often as it occurs (fn vs fp), "
        "not accuracy: a high p is what the paper calls 'no difference from the gold standard'.",
        *pipeline.common_notes(ctx),
        "",
        "How to read: compare each 'reproduced' column with the 'paper' column to its left. On "
        "the phantom the numbers say how well each model learns the synthetic markers from "
        "the phantom's few cases; they are not an estimate of the models' accuracy on real "
        "fetal ultrasound.",
    ]
    return "\n".join(lines) + "\n"


def run(ctx: pipeline.StudyContext) -> tuple:
    pipeline.check_results_dir(ctx)
    table = build_table(ctx)
    return pipeline.write_table(ctx, NAME, table, markdown(ctx, table))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce.pgds.table1",
                                     description=__doc__.split("\n\n")[0])
    pipeline.add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return pipeline.run_cli(lambda args: (run(pipeline.context_from_args(args)), 0)[1],
                            build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
