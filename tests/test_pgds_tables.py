"""Tang 2023 Tables 1-3 on the `ci` profile (models from the session's `pgds_ci_context`):
the scripts run alone, write .csv + .md with the expected rows and columns and the paper's
values beside ours, are deterministic, and `python -m reproduce compare` can read them.
Table 2's per-subtype arithmetic is checked on a hand-made example."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from reproduce.pgds import pipeline, table1, table2, table3


def _argv(ctx) -> list[str]:
    return ["--profile", ctx.profile, "--seed", str(ctx.seed), "--runs", str(ctx.runs_dir),
            "--results", str(ctx.results_dir), "--threshold-rule", ctx.threshold_rule]


@pytest.fixture(scope="module")
def written_tables(pgds_ci_context):
    """Run the three table scripts once, as a user would (their main with CLI arguments)."""
    for module in (table1, table2, table3):
        assert module.main(_argv(pgds_ci_context)) == 0
    results = pgds_ci_context.results_dir
    return {name: (pd.read_csv(results / f"{name}.csv"), (results / f"{name}.md").read_text())
            for name in ("table1", "table2", "table3")}


def test_table1_rows_columns_and_paper_values(written_tables, pgds_ci_context):
    frame, text = written_tables["table1"]
    assert frame["model"].tolist() == ["Pgds-ResNet", "ResNet-34", "VGG-16", "VGG-19"]
    assert frame["architecture"].tolist() == list(pipeline.ARCHITECTURES)
    for column in ("auroc", "auroc_lo", "auroc_hi", "sensitivity", "sensitivity_lo",
                   "sensitivity_hi", "specificity", "specificity_lo", "specificity_hi", "f1",
                   "anova_p", "anova_f", "n_test", "threshold", "selected_epoch",
                   "paper_auroc", "paper_anova_f"):
        assert pd.api.types.is_numeric_dtype(frame[column]), column
    assert (frame["auroc_lo"] <= frame["auroc"]).all() and (frame["auroc"] <= frame["auroc_hi"]).all()
    assert (frame["n_pos"] + frame["n_neg"] == frame["n_test"]).all()
    assert (frame["n_boot"] == 200).all()
    # each model's own threshold, as recorded beside its model
    for arch, threshold in zip(frame["architecture"], frame["threshold"]):
        record = json.loads((pipeline.run_dir(pgds_ci_context, arch) / "threshold.json").read_text())
        assert threshold == pytest.approx(record["threshold"])
    for fragment in ("PHANTOM (synthetic) data, ci profile -- not the paper's data",
                     "0.98 (0.97–0.99)", "0.89 (0.80–0.95)", "15.921", "0.658",
                     "AUROC (95% CI) paper", "AUROC reproduced", "200 replicates",
                     "Wilson score interval with continuity correction", "best F1",
                     "How to read"):
        assert fragment in text, fragment


def test_table2_rows_and_definitions(written_tables):
    frame, text = written_tables["table2"]
    assert frame["row"].tolist() == ["All genetic diseases", "Trisomy 13", "Trisomy 18",
                                     "Trisomy 21", "Rare genetic diseases"]
    assert frame["subtype"].tolist() == ["all", "T13", "T18", "T21", "rare"]
    everything = frame.iloc[0]
    subtypes = frame.iloc[1:]
    assert subtypes["number"].sum() == everything["number"]
    assert subtypes["correct"].sum() == everything["correct"]
    assert (frame["accuracy"] == frame["sensitivity"]).all()  # the paper's "accuracy (k/n)"
    # literal negatives: every test image outside the subtype; vs normal: normal images only
    assert (frame["n_negatives"] == frame["n_test"] - frame["number"]).all()
    assert (frame["n_normal"] == everything["n_negatives"]).all()
    assert (frame["specificity_vs_normal"] == everything["specificity"]).all()
    assert everything["specificity"] == everything["specificity_vs_normal"]
    for fragment in ("0.75 (12/16)", "0.95 (0.90–0.97)", "Specificity vs normal only",
                     "cannot come from a binary model", "170, 173, 174, 141", "PHANTOM"):
        assert fragment in text, fragment


def test_table2_matches_table1_pgds_row(written_tables):
    one, _ = written_tables["table1"]
    two, _ = written_tables["table2"]
    pgds, everything = one.iloc[0], two.iloc[0]
    for column in ("sensitivity", "sensitivity_lo", "sensitivity_hi", "specificity", "f1", "threshold"):
        assert everything[column] == pytest.approx(pgds[column]), column


def test_subtype_row_by_hand():
    """6 test images: T21 x2 (one called), T13 x1 (called), normal x3 (one called)."""
    test = pd.DataFrame({"subtype": ["T21", "T21", "T13", "normal", "normal", "normal"],
                         "y_true": [1, 1, 1, 0, 0, 0]})
    calls = np.array([1, 0, 1, 1, 0, 0])
    t21 = table2.subtype_row(test, calls, "T21")
    assert (t21["number"], t21["correct"], t21["sensitivity"]) == (2, 1, 0.5)
    assert (t21["tn"], t21["fp"], t21["n_negatives"]) == (2, 2, 4)       # T13 called -> FP
    assert t21["specificity"] == pytest.approx(0.5)
    assert (t21["tn_normal"], t21["fp_normal"]) == (2, 1)
    assert t21["specificity_vs_normal"] == pytest.approx(2 / 3)
    assert t21["f1"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))
    assert t21["f1_vs_normal"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    everything = table2.subtype_row(test, calls, "all")
    assert (everything["number"], everything["correct"], everything["n_negatives"]) == (3, 2, 3)
    assert everything["specificity"] == everything["specificity_vs_normal"]
    missing = table2.subtype_row(test, calls, "rare")
    assert missing["number"] == 0 and np.isnan(missing["sensitivity"])


def test_table3_model_and_simulated_readers(written_tables):
    frame, text = written_tables["table3"]
    assert frame["row"].tolist() == ["Pgds-ResNet", "simulated junior", "simulated attending",
                                     "simulated senior"]
    assert frame["reader_level"].tolist() == ["model", "junior", "attending", "senior"]
    assert frame["simulated"].tolist() == [0, 1, 1, 1]
    readers_only = frame.iloc[1:]
    assert readers_only["mcnemar_p"].between(0, 1).all()
    assert readers_only["mcnemar_method"].isin(
        ["exact binomial", "chi-square with continuity correction"]).all()
    assert (frame["n_images"] == frame["n_images"].iloc[0]).all()  # the SAME images
    # the model row of each reader is the model on the same images
    assert (readers_only["model_sensitivity"] == frame["sensitivity"].iloc[0]).all()
    assert list(frame.columns[:2]) == ["row", "reader_level"] and frame.columns[-1] == "mcnemar_method"
    for fragment in ("SIMULATED READERS", "simulated readers", "0.42 (0.26–0.61)", "0.93",
                     "McNemar", "kappa", "fewer than the paper's 100"):
        assert fragment in text, fragment


def test_tables_are_deterministic_and_comparable(written_tables, pgds_ci_context, tmp_path):
    from reproduce import compare

    again = dataclasses.replace(pgds_ci_context, results_dir=tmp_path / "pgds")
    for module in (table1, table2, table3):
        assert module.main(_argv(again)) == 0
    mine = tmp_path / "first"  # only these three tables (figures may add CSVs to the folder)
    mine.mkdir()
    for name in ("table1", "table2", "table3"):
        first = (pgds_ci_context.results_dir / f"{name}.csv").read_text()
        assert (again.results_dir / f"{name}.csv").read_text() == first, name
        (mine / f"{name}.csv").write_text(first)
    only_tables = tmp_path / "second"
    only_tables.mkdir()
    for name in ("table1", "table2", "table3"):
        (only_tables / f"{name}.csv").write_text((again.results_dir / f"{name}.csv").read_text())
    assert compare.main([str(mine), str(only_tables)]) == 0
    run = json.loads((again.results_dir / "run.json").read_text())
    assert {"table1", "table2", "table3"} <= set(run["outputs"])
    assert run["config"]["training"]["pgds_resnet"]["width"] == 4


def test_table_refuses_results_of_another_config(written_tables, pgds_ci_context, capsys):
    argv = _argv(dataclasses.replace(pgds_ci_context, threshold_rule="youden"))
    assert table2.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("error: ") and "another config" in error[-1]


def test_table3_with_user_readers(written_tables, pgds_ci_context, tmp_path):
    frame = pipeline.predictions(pgds_ci_context, "pgds_resnet")
    test = frame[frame["split"] == "test"]
    path = tmp_path / "readers.csv"
    pd.DataFrame({"image_path": list(test["image_path"]) * 2,
                  "reader": ["Dr A"] * len(test) + ["Dr B"] * len(test),
                  "reader_level": ["senior"] * len(test) + ["junior"] * len(test),
                  "call": list(test["y_true"]) + [1] * len(test)}).to_csv(path, index=False)
    ctx = dataclasses.replace(pgds_ci_context, readers=path, results_dir=tmp_path / "res")
    assert table3.main(_argv(ctx) + ["--readers", str(path)]) == 0
    out = pd.read_csv(ctx.results_dir / "table3.csv")
    assert out["row"].tolist() == ["Pgds-ResNet", "Dr B", "Dr A"]  # junior before senior
    assert out["simulated"].tolist() == [0, 0, 0]
    assert out["sensitivity"].iloc[2] == 1.0 and out["specificity"].iloc[2] == 1.0
    assert out["specificity"].iloc[1] == 0.0
    assert "SIMULATED" not in (ctx.results_dir / "table3.md").read_text()
