"""`python -m reproduce compare`: exit 0 within tolerance, 1 beyond it, 2 on bad input."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from reproduce import compare

TABLE1 = pd.DataFrame({
    "model": ["Pgds-ResNet", "ResNet-34"],
    "AUROC (95%CI)": ["0.98 (0.97–0.99)", "0.83 (0.80–0.86)"],   # display text: not compared
    "auroc": [0.98, 0.83],
    "auroc_lo": [0.97, 0.80],
    "sensitivity": [0.89, 0.50],
    "n": [186, 186],
    "f_value": [0.196, 15.921],
    "note": ["best", "deeper"],                                   # text after metrics: skipped
})
TABLE2 = pd.DataFrame({
    "subtype": ["T13", "T18", "T21", "rare"],
    "number": [16, 13, 12, 45],
    "sensitivity": [0.75, 0.92, 0.83, 0.96],
})
SUMMARY = pd.DataFrame({"accuracy": [0.945], "auroc": [0.993]})   # no key column


def write_results(root: Path, tables: dict[str, pd.DataFrame] | None = None) -> Path:
    tables = tables or {"pgds/table1.csv": TABLE1, "pgds/table2.csv": TABLE2,
                        "cns/summary.csv": SUMMARY}
    for name, frame in tables.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    (root / "run.json").write_text("{}")  # not a table: ignored
    return root


def changed(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[row, column] = value
    return frame


@pytest.fixture
def folders(tmp_path):
    return write_results(tmp_path / "a"), write_results(tmp_path / "b")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = compare.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_identical_folders_exit_0(folders, capsys):
    code, out, _ = run(capsys, *folders)
    assert code == 0
    assert "== pgds/table1.csv ==" in out and "== cns/summary.csv ==" in out
    # 2 rows x 5 metrics + 4 x 2 + 1 x 2
    assert "SUMMARY: all 20 values in 3 tables within tolerance" in out
    assert "not compared (text columns): AUROC (95%CI), note" in out


@pytest.mark.parametrize("table, row, column, value, expected_code", [
    ("pgds/table1.csv", 1, "auroc", 0.86, 1),       # +0.03 > AUROC tolerance 0.02
    ("pgds/table1.csv", 1, "auroc", 0.845, 0),      # +0.015 within 0.02
    ("pgds/table1.csv", 1, "auroc", 0.85, 0),       # +0.02 exactly (float noise aside)
    ("pgds/table1.csv", 0, "sensitivity", 0.93, 0),  # +0.04 within 0.05
    ("pgds/table1.csv", 0, "sensitivity", 0.95, 1),  # +0.06
    ("pgds/table1.csv", 0, "n", 187, 1),            # counts are exact
    ("pgds/table1.csv", 0, "f_value", 0.1961, 1),   # no pattern: 1e-6
    ("pgds/table2.csv", 3, "number", 44, 1),
    ("cns/summary.csv", 0, "accuracy", 0.96, 0),    # +0.015 within 0.05
    ("pgds/table1.csv", 0, "AUROC (95%CI)", "0.70 (0.60–0.80)", 0),  # display text ignored
])
def test_one_change(tmp_path, capsys, table, row, column, value, expected_code):
    base = {"pgds/table1.csv": TABLE1, "pgds/table2.csv": TABLE2, "cns/summary.csv": SUMMARY}
    a = write_results(tmp_path / "a", base)
    b = write_results(tmp_path / "b", {**base, table: changed(base[table], row, column, value)})
    code, out, _ = run(capsys, a, b)
    assert code == expected_code, out
    if expected_code == 1:
        lines = [line for line in out.splitlines() if "EXCEEDS" in line]
        assert len(lines) == 1 and lines[0].split()[0] == column, out
        assert "SUMMARY: 1 of 20 values" in out and f"{table}: 1" in out


def test_exceeding_row_shows_both_values_diff_and_tolerance(tmp_path, capsys):
    a = write_results(tmp_path / "a")
    b = write_results(tmp_path / "b", {"pgds/table1.csv": changed(TABLE1, 1, "auroc", 0.86),
                                       "pgds/table2.csv": TABLE2, "cns/summary.csv": SUMMARY})
    code, out, _ = run(capsys, a, b)
    line = next(line for line in out.splitlines() if "EXCEEDS" in line)
    assert line.split() == ["auroc", "ResNet-34", "0.83", "0.86", "+0.03", "0.02", "EXCEEDS"]
    rows = compare.compare_dirs(a, b)
    bad = [r for r in rows if not r.ok]
    assert len(bad) == 1 and bad[0].table == "pgds/table1.csv"
    assert bad[0].diff == pytest.approx(0.03)


def test_table_missing_in_one_folder_exits_2_naming_it(folders, capsys):
    a, b = folders
    (b / "pgds" / "table2.csv").unlink()
    code, out, err = run(capsys, a, b)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and "pgds/table2.csv" in err and "only in A" in err


def test_missing_folder_exits_2(tmp_path, capsys):
    a = write_results(tmp_path / "a")
    code, _, err = run(capsys, a, tmp_path / "nope")
    assert code == 2 and "nope" in err and "does not exist" in err


def test_mismatching_row_key_names_file_row_and_column(tmp_path, capsys):
    a = write_results(tmp_path / "a")
    b = write_results(tmp_path / "b", {"pgds/table1.csv": TABLE1,
                                       "pgds/table2.csv": changed(TABLE2, 2, "subtype", "T22"),
                                       "cns/summary.csv": SUMMARY})
    code, _, err = run(capsys, a, b)
    assert code == 2
    assert "table2.csv, row 3, column 'subtype'" in err and "'T21'" in err


@pytest.mark.parametrize("b_tables, message", [
    ({"cns/summary.csv": pd.concat([SUMMARY, SUMMARY])}, "row 2"),            # extra row
    ({"pgds/table1.csv": TABLE1.drop(columns="f_value")}, "column 'f_value'"),
    ({"pgds/table1.csv": changed(TABLE1.astype({"auroc": object}), 1, "auroc", "high")},
     "row 2, column 'auroc'"),
    ({"pgds/table2.csv": pd.concat([TABLE2, TABLE2.iloc[:1]])}, "duplicate row key 'T13'"),
])
def test_other_bad_input_exits_2(tmp_path, capsys, b_tables, message):
    base = {"pgds/table1.csv": TABLE1, "pgds/table2.csv": TABLE2, "cns/summary.csv": SUMMARY}
    a = write_results(tmp_path / "a", base)
    b = write_results(tmp_path / "b", {**base, **b_tables})
    code, _, err = run(capsys, a, b)
    assert code == 2 and message in err, err


def test_tolerance_file_overrides_defaults(tmp_path, capsys):
    a = write_results(tmp_path / "a")
    b = write_results(tmp_path / "b", {"pgds/table1.csv": changed(TABLE1, 1, "auroc", 0.86),
                                       "pgds/table2.csv": TABLE2, "cns/summary.csv": SUMMARY})
    loose = tmp_path / "loose.json"
    loose.write_text(json.dumps({"auroc": 0.05}))
    assert run(capsys, a, b, "--tolerance-file", loose)[0] == 0
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"auroc*": 0.01}))
    code, out, _ = run(capsys, a, b, "--tolerance-file", strict)
    assert code == 1 and "0.01" in next(l for l in out.splitlines() if "EXCEEDS" in l)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"auroc": -1}', "'auroc'"),
    ('{"auroc": "0.1"}', "'auroc'"),
])
def test_bad_tolerance_file_exits_2(folders, tmp_path, capsys, content, message):
    path = tmp_path / "tol.json"
    path.write_text(content)
    code, _, err = run(capsys, *folders, "--tolerance-file", path)
    assert code == 2 and "tol.json" in err and message in err


def test_atol_and_rtol_flags(tmp_path, capsys):
    a = write_results(tmp_path / "a")
    b = write_results(tmp_path / "b", {"pgds/table1.csv": changed(TABLE1, 1, "f_value", 16.0),
                                       "pgds/table2.csv": TABLE2, "cns/summary.csv": SUMMARY})
    assert run(capsys, a, b)[0] == 1                      # +0.079 on an unmatched metric
    assert run(capsys, a, b, "--atol", "0.1")[0] == 0
    assert run(capsys, a, b, "--rtol", "0.01")[0] == 0    # 0.01 * 16 = 0.16


@pytest.mark.parametrize("metric, atol", [
    ("AUROC", 0.02), ("auroc_lo", 0.02), ("Sensitivity", 0.05), ("specificity_hi", 0.05),
    ("p-value", 0.05), ("p_value", 0.05), ("anova_p", 0.05), ("F1", 0.05), ("n", 0.0),
    ("Number", 0.0), ("n_images", 0.0), ("tp", 0.0), ("F-value", compare.DEFAULT_ATOL),
    ("train_seconds", math.inf),
])
def test_default_tolerance_patterns(metric, atol):
    assert compare.Tolerances().atol_for(metric) == atol


def test_nan_cells_agree_only_with_nan(tmp_path):
    a = write_results(tmp_path / "a", {"t.csv": pd.DataFrame({"k": ["x", "y"],
                                                              "auroc": [math.nan, 0.5]})})
    b = write_results(tmp_path / "b", {"t.csv": pd.DataFrame({"k": ["x", "y"],
                                                              "auroc": [math.nan, math.nan]})})
    rows = compare.compare_dirs(a, b)
    assert [r.ok for r in rows] == [True, False]


def test_rows_matched_by_key_not_order_and_hidden_files_ignored(tmp_path, capsys):
    a = write_results(tmp_path / "a")
    b = write_results(tmp_path / "b", {"pgds/table1.csv": TABLE1.iloc[::-1],
                                       "pgds/table2.csv": TABLE2, "cns/summary.csv": SUMMARY})
    shutil.copy(b / "pgds" / "table2.csv", b / "pgds" / ".table3.csv.tmp123.csv")
    assert run(capsys, a, b)[0] == 0


def test_forced_key_columns(tmp_path, capsys):
    frame = pd.DataFrame({"fold": [0, 1], "auroc": [0.9, 0.8]})
    a = write_results(tmp_path / "a", {"folds.csv": frame})
    b = write_results(tmp_path / "b", {"folds.csv": frame.iloc[::-1]})
    assert run(capsys, a, b)[0] == 1                    # matched by position: 0.9 vs 0.8
    code, out, _ = run(capsys, a, b, "--key", "fold")
    assert code == 0 and "SUMMARY: all 2 values" in out


def test_compare_dirs_accepts_a_pattern_mapping(tmp_path):
    a = write_results(tmp_path / "a")
    b = write_results(tmp_path / "b", {"pgds/table1.csv": changed(TABLE1, 1, "auroc", 0.86),
                                       "pgds/table2.csv": TABLE2, "cns/summary.csv": SUMMARY})
    assert all(r.ok for r in compare.compare_dirs(a, b, {"auroc": 0.05}))
    assert not all(r.ok for r in compare.compare_dirs(a, b, None))


@pytest.mark.parametrize("expect", [False, True])
def test_folders_of_different_profiles_are_refused_saying_so(tmp_path, capsys, expect):
    import json

    from reproduce.compare import main as compare_main

    for name, profile in (("a", "default"), ("b", "ci")):
        folder = tmp_path / name / "cns"
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"config": {"profile": profile, "study": "cns"}}))
        (folder / "t.csv").write_text("task,accuracy\n4class,0.9\n")
    argv = [str(tmp_path / "a"), str(tmp_path / "b")] + (["--expect"] if expect else [])
    assert compare_main(argv) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "profile 'ci'" in line and "profile 'default'" in line and "not comparable" in line
    # The same profile on both sides compares as before.
    (tmp_path / "b" / "cns" / "run.json").write_text(json.dumps({"config": {"profile": "default"}}))
    if not expect:
        assert compare_main(argv) == 0
