"""Regression check of the whole Pgds study at the `ci` profile against a committed golden folder.

`tests/golden/pgds_ci/` holds the tables (CSV) that `python -m reproduce pgds all --profile ci`
wrote when the golden was last accepted. This test regenerates every target from the session's
ci models (the `pgds_ci_context` fixture trains them once) and compares the two folders with
`python -m reproduce compare`, so a silent change in any stage -- phantom, de-identification,
split, training, prediction, statistics, Grad-CAM scoring -- fails CI.

To accept an intended change, regenerate the golden tables as tests/golden/README.md says and
review their diff before committing.
"""
from __future__ import annotations

from pathlib import Path

from reproduce import compare
from reproduce.pgds import all as pgds_all

GOLDEN = Path(__file__).resolve().parent / "golden" / "pgds_ci"


def test_golden_folder_has_every_table():
    names = {p.name for p in GOLDEN.glob("*.csv")}
    assert {"table1.csv", "table2.csv", "table3.csv", "gradcam_localisation.csv"} <= names


def test_ci_profile_matches_golden(pgds_ci_context, tmp_path, capsys):
    ctx = pgds_ci_context
    results = tmp_path / "results"
    code = pgds_all.main(["--profile", "ci", "--runs", str(ctx.runs_dir), "--results", str(results),
                          "--seed", str(ctx.seed)])
    assert code == 0
    # Only the golden's tables are compared (figures are not committed to the golden folder).
    fresh = tmp_path / "fresh_tables"
    fresh.mkdir()
    for golden_table in GOLDEN.glob("*.csv"):
        (fresh / golden_table.name).write_bytes((results / golden_table.name).read_bytes())
    capsys.readouterr()
    code = compare.main([str(GOLDEN), str(fresh)])
    report = capsys.readouterr().out
    assert code == 0, report
