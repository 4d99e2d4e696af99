"""Tang 2023 Table 3: Pgds-ResNet against junior, attending and senior readers.

    python -m reproduce.pgds.table3 --profile ci|default|paper [--manifest M] [--readers R]
        [--runs runs] [--results results/pgds] [--threshold-rule max_f1|youden] [--seed 0]

The reader study is on 100 randomly drawn test images (Tang 2023 s2.6; all test images when
there are fewer, as on the phantom). Reader calls come from `--readers R` (DESIGN.md: case_id
or image_path, reader, reader_level, call) or, on the phantom, from SIMULATED readers whose
per-image error rates follow the paper's Table 3 (reproduce.pgds.readers); every output then
says "simulated readers". Pgds-ResNet is called at its training-split threshold on the SAME
images as each reader. Per reader: accuracy, sensitivity and specificity with 95% CIs (Wilson
with continuity correction), McNemar's test of model versus reader on the paired correctness
(exact binomial below 25 discordant pairs, else chi-square with continuity correction; the
method is named) and Cohen's kappa between their calls (reproduce.stats.reader_comparison).

Writes results/pgds/table3.csv (keys `row`, `reader_level`; numeric columns; the McNemar
method as text at the end) and table3.md with the paper's values beside.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np
import pandas as pd

from reproduce.pgds import pipeline

NAME = "table3"
ARCH = "pgds_resnet"


def _metric_columns(prefix: str, metrics: dict) -> dict:
    row = {}
    for name in ("accuracy", "sensitivity", "specificity"):
        estimate = metrics[name]
        row[f"{prefix}{name}"], row[f"{prefix}{name}_lo"], row[f"{prefix}{name}_hi"] = estimate
    return row


def _paper(level: str) -> dict:
    from reproduce.paper_values import TANG2023_TABLE3

    paper = {row.reader: row for row in TANG2023_TABLE3}.get(level)
    if paper is None:
        return {}
    return {"paper_accuracy": paper.accuracy, "paper_sensitivity": paper.sensitivity.value,
            "paper_sensitivity_lo": paper.sensitivity.lo, "paper_sensitivity_hi": paper.sensitivity.hi,
            "paper_specificity": paper.specificity.value, "paper_specificity_lo": paper.specificity.lo,
            "paper_specificity_hi": paper.specificity.hi}


def build_table(ctx: pipeline.StudyContext) -> pd.DataFrame:
    from data_prep.errors import InputError
    from reproduce import stats

    calls = pipeline.reader_calls(ctx)
    predictions = pipeline.predictions(ctx, ARCH).set_index("image_path")
    threshold = pipeline.operating_threshold(ctx, ARCH)
    simulated = bool(calls["simulated"].all())
    source = ctx.readers if ctx.readers is not None else pipeline.manifest_path(ctx)

    images = list(dict.fromkeys(calls["image_path"]))
    y_all = predictions.loc[images, "y_true"].to_numpy().astype(int)
    model_all = (predictions.loc[images, "score"].to_numpy() >= threshold).astype(int)
    if y_all.min() == y_all.max():
        raise InputError(source, "the reader-study images hold one class only; Table 3 needs "
                         "diseased and normal images")
    rows = [{"row": pipeline.DISPLAY_NAMES[ARCH], "reader_level": "model", "simulated": 0,
             "n_images": len(images), "n_pos": int(y_all.sum()), "n_neg": int(len(y_all) - y_all.sum()),
             **_metric_columns("", stats.call_metrics(y_all, model_all)),
             "mcnemar_p": np.nan, "mcnemar_statistic": np.nan, "discordant": np.nan,
             "kappa": np.nan, "threshold": threshold, **_paper(pipeline.DISPLAY_NAMES[ARCH]),
             "mcnemar_method": ""}]
    level_order = {level: i for i, level in enumerate(pipeline.READER_LEVELS)}
    readers = sorted(calls.groupby("reader", sort=False),
                     key=lambda item: (level_order.get(item[1]["reader_level"].iloc[0], 99), item[0]))
    for reader, group in readers:
        paths = group["image_path"].tolist()
        y_true = predictions.loc[paths, "y_true"].to_numpy().astype(int)
        model_calls = (predictions.loc[paths, "score"].to_numpy() >= threshold).astype(int)
        if y_true.min() == y_true.max():
            raise InputError(source, f"reader '{reader}' read images of one class only; "
                             "sensitivity and specificity need both", column="reader")
        comparison = stats.reader_comparison(y_true, model_calls, group["call"].to_numpy().astype(int))
        level = str(group["reader_level"].iloc[0])
        rows.append({
            "row": str(reader), "reader_level": level, "simulated": int(bool(group["simulated"].all())),
            "n_images": len(paths), "n_pos": int(y_true.sum()), "n_neg": int(len(y_true) - y_true.sum()),
            **_metric_columns("", comparison["reader"]),
            **_metric_columns("model_", comparison["model"]),
            "mcnemar_p": comparison["mcnemar"]["p"],
            "mcnemar_statistic": comparison["mcnemar"]["statistic"],
            "discordant": comparison["mcnemar"]["discordant"],
            "kappa": comparison["kappa"], "threshold": threshold, **_paper(level),
            "mcnemar_method": comparison["mcnemar"]["method"],
        })
    table = pd.DataFrame(rows)
    ordered = [c for c in table.columns if c != "mcnemar_method"] + ["mcnemar_method"]
    table = table[ordered]
    table.attrs["simulated"] = simulated
    return table


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown(ctx: pipeline.StudyContext, table: pd.DataFrame) -> str:
    from reproduce.paper_values import TANG2023_TABLE3

    paper = {row.reader: row for row in TANG2023_TABLE3}
    simulated = bool(table.loc[table["reader_level"] != "model", "simulated"].astype(bool).all())
    shown = []
    for row in table.to_dict("records"):
        key = pipeline.DISPLAY_NAMES[ARCH] if row["reader_level"] == "model" else row["reader_level"]
        ref = paper.get(key)
        shown.append({
            "Reader": row["row"] + (" (simulated)" if row["simulated"]
                                   and "simulated" not in row["row"] else ""),
            "Level": row["reader_level"],
            "Images": str(row["n_images"]),
            "Accuracy paper": f"{ref.accuracy:.2f}" if ref else "",
            "Accuracy reproduced": pipeline.ci_text(row["accuracy"], row["accuracy_lo"], row["accuracy_hi"]),
            "Sensitivity (95% CI) paper": str(ref.sensitivity) if ref else "",
            "Sensitivity reproduced": pipeline.ci_text(row["sensitivity"], row["sensitivity_lo"],
                                                       row["sensitivity_hi"]),
            "Specificity (95% CI) paper": str(ref.specificity) if ref else "",
            "Specificity reproduced": pipeline.ci_text(row["specificity"], row["specificity_lo"],
                                                       row["specificity_hi"]),
            "McNemar p (model vs reader)": _p_text(row["mcnemar_p"]),
            "McNemar method": row["mcnemar_method"],
            "Cohen's kappa": f"{row['kappa']:.2f}" if np.isfinite(row["kappa"]) else "",
        })
    model_row = table.iloc[0]
    n_images = int(model_row["n_images"])
    n_test = len(pipeline.test_rows(ctx, ARCH))
    drawn = (f"{n_images} test images drawn at random (seed {ctx.seed}) from {n_test}"
             if n_test > pipeline.READER_STUDY_IMAGES else
             f"all {n_images} test images (fewer than the paper's {pipeline.READER_STUDY_IMAGES})")
    title_tag = " -- SIMULATED READERS" if simulated else ""
    lines = [
        f"# Table 3. Pgds-ResNet versus sonographers (Tang 2023, Table 3){title_tag}",
        "",
        f"**{pipeline.results_label(ctx)}{'; simulated readers' if simulated else ''}.**",
        "",
        pipeline.markdown_table(pd.DataFrame(shown)),
        "",
        f"- Reader-study images: {drawn}; {int(model_row['n_pos'])} genetic disease, "
        f"{int(model_row['n_neg'])} normal. The paper: 100 images.",
    ]
    if simulated:
        lines.append(
            "- SIMULATED READERS: the phantom has no sonographers. Each simulated reader calls "
            "every image on its own, 'genetic disease' with probability = the paper's "
            "sensitivity of that level for diseased images and 1 - specificity for normal ones "
            "(junior 0.42/0.73, attending 0.79/0.72, senior 0.88/0.93), seeded and independent "
            "of the image content. Their rows only show that the comparison machinery works; "
            "they say nothing about real sonographers.")
    else:
        lines.append(f"- Reader calls from {ctx.readers}.")
    lines += [
        f"- Pgds-ResNet called at its training-split threshold "
        f"{pipeline.threshold_text(float(model_row['threshold']))} "
        f"({ctx.threshold_rule}); each reader row compares the model with that reader on the "
        "same images.",
        "- McNemar: paired test of the model's and the reader's correctness (exact binomial "
        "when fewer than 25 discordant pairs, else chi-square with continuity correction). "
        "Kappa: Cohen's kappa between the model's and the reader's calls.",
        *pipeline.common_notes(ctx)[:2],
        "",
        "How to read: a small McNemar p says the model and that reader are right on different "
        "numbers of images; kappa says how often they agree beyond chance. Compare each "
        "reproduced rate with the paper's to its left.",
    ]
    return "\n".join(lines) + "\n"


def run(ctx: pipeline.StudyContext) -> tuple:
    pipeline.check_results_dir(ctx)
    table = build_table(ctx)
    return pipeline.write_table(ctx, NAME, table, markdown(ctx, table))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce.pgds.table3",
                                     description=__doc__.split("\n\n")[0])
    pipeline.add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return pipeline.run_cli(lambda args: (run(pipeline.context_from_args(args)), 0)[1],
                            build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
