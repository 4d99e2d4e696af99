"""The CNS reader study (reproduce.cns.readers): CSV validation, simulated readers, the table.

Fast: no model is trained; the patient-level frame is made by hand.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep.errors import InputError
from reproduce.cns import pipeline, readers

CLASSES = pipeline.LABELS


def _patients(n: int = 20, seed: int = 3) -> pd.DataFrame:
    """n patients cycling through the 5 classes; the model right on the even ones."""
    rng = np.random.default_rng(seed)
    y_true = np.arange(n) % len(CLASSES)
    predicted = np.where(np.arange(n) % 2 == 0, y_true, (y_true + 1) % len(CLASSES))
    proba = rng.dirichlet(np.ones(len(CLASSES)), size=n) * 0.3
    proba[np.arange(n), predicted] += 0.7
    frame = pd.DataFrame({"case_id": [f"case{i:02d}" for i in range(n)], "y_true": y_true})
    for k, name in enumerate(CLASSES):
        frame[f"p_{name}"] = proba[:, k]
    frame["predicted"] = predicted
    return frame


def _write(tmp_path: Path, rows: list[dict], columns=None) -> Path:
    path = tmp_path / "readers.csv"
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


def _good_rows() -> list[dict]:
    rows = []
    for reader, level in (("r1", "junior"), ("r2", "senior")):
        for case in ("case00", "case01"):
            for with_ai in (0, 1):
                rows.append({"case_id": case, "reader": reader, "reader_level": level,
                             "with_ai": with_ai, "call": "normal", "seconds": 30 + with_ai})
    return rows


CASES = [f"case{i:02d}" for i in range(20)]


def test_valid_csv_loads(tmp_path):
    calls = readers.load_reader_csv(_write(tmp_path, _good_rows()), CASES, CLASSES)
    assert list(calls.columns) == list(readers.CALL_COLUMNS)
    assert len(calls) == 8 and not calls["simulated"].any()
    assert set(calls["reader_level"]) == {"junior", "senior"}


@pytest.mark.parametrize("change, row, column, words", [
    (lambda r: r[2].update(case_id="nobody"), 3, "case_id", "not one of"),
    (lambda r: r[1].update(call="hydrocephalus"), 2, "call", "not a class"),
    (lambda r: r[4].update(with_ai=2), 5, "with_ai", "0 (without AI) or 1"),
    (lambda r: r[0].update(seconds=0), 1, "seconds", "positive"),
    (lambda r: r[0].update(seconds=-3), 1, "seconds", "positive"),
    (lambda r: r[6].update(seconds="fast"), 7, "seconds", "positive"),
    (lambda r: r[3].update(reader=""), 4, "reader", "empty"),
    (lambda r: r[1].update(reader_level="senior"), 2, "reader_level", "reader_level"),
    (lambda r: r.append(dict(r[1])), 9, "case_id", "twice"),
    (lambda r: r.pop(1), 1, "with_ai", "both without and with AI"),
])
def test_csv_errors_name_row_and_column(tmp_path, change, row, column, words):
    rows = _good_rows()
    change(rows)
    path = _write(tmp_path, rows)
    with pytest.raises(InputError) as err:
        readers.load_reader_csv(path, CASES, CLASSES)
    assert err.value.row == row and err.value.column == column
    assert words in err.value.message
    assert str(path) in err.value.one_line() and f"row {row}" in err.value.one_line()


@pytest.mark.parametrize("missing", readers.REQUIRED_COLUMNS)
def test_csv_missing_column(tmp_path, missing):
    rows = [{k: v for k, v in r.items() if k != missing} for r in _good_rows()]
    with pytest.raises(InputError) as err:
        readers.load_reader_csv(_write(tmp_path, rows), CASES, CLASSES)
    assert err.value.column == missing and "missing required column" in err.value.message


def test_csv_without_level_and_case_insensitive_call(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "reader_level"} for r in _good_rows()]
    rows[0]["call"] = "Anencephaly"
    calls = readers.load_reader_csv(_write(tmp_path, rows), CASES, CLASSES)
    assert calls["call"].iloc[0] == "anencephaly" and set(calls["reader_level"]) == {""}
    table = readers.build_table(_patients(), calls, CLASSES)
    assert list(table["kind"]) == ["model", "reader", "reader", "all"]


def test_csv_not_found_and_empty(tmp_path):
    with pytest.raises(InputError, match="not found"):
        readers.load_reader_csv(tmp_path / "absent.csv", CASES, CLASSES)
    path = _write(tmp_path, [], columns=list(readers.REQUIRED_COLUMNS))
    with pytest.raises(InputError, match="no reader calls"):
        readers.load_reader_csv(path, CASES, CLASSES)


def test_simulation_is_deterministic_and_shaped():
    patients = _patients(30)
    first = readers.simulate_readers(patients, CLASSES, seed=5)
    again = readers.simulate_readers(patients, CLASSES, seed=5)
    other = readers.simulate_readers(patients, CLASSES, seed=6)
    pd.testing.assert_frame_equal(first, again)
    assert not first["call"].equals(other["call"]) or not first["seconds"].equals(other["seconds"])
    n_readers = len(readers.SIMULATED_READERS)
    assert len(first) == 2 * n_readers * len(patients)
    assert list(first.columns) == list(readers.CALL_COLUMNS) and first["simulated"].all()
    assert first.groupby(["reader", "case_id"]).size().eq(2).all()
    assert set(first["call"]) <= set(CLASSES) and (first["seconds"] > 0).all()
    assert first["reader_level"].value_counts().to_dict() == {"junior": 120, "senior": 120}


def test_simulation_rules_hold():
    patients = _patients(200, seed=1)
    calls = readers.simulate_readers(patients, CLASSES, seed=0)
    truth = dict(zip(patients["case_id"], (CLASSES[i] for i in patients["y_true"])))
    model = dict(zip(patients["case_id"], (CLASSES[i] for i in patients["predicted"])))
    confident = dict(zip(patients["case_id"], patients[[f"p_{c}" for c in CLASSES]].max(axis=1)
                         >= readers.CONFIDENT_PROBABILITY))
    without = calls[calls["with_ai"] == 0].set_index(["reader", "case_id"])
    with_ai = calls[calls["with_ai"] == 1].set_index(["reader", "case_id"])
    for key, own in without["call"].items():
        after = with_ai.loc[key, "call"]
        case = key[1]
        if own == truth[case]:
            assert after == own                      # a correct own call is kept
        elif after != own:
            assert after == model[case] and confident[case]  # only ever the model's call
    # AI makes reads faster on average (the assumed speed-up)
    assert with_ai["seconds"].mean() < without["seconds"].mean()


def test_table_on_hand_made_frame():
    patients = pd.DataFrame({"case_id": ["a", "b", "c", "d"], "y_true": [0, 1, 2, 3],
                             "predicted": [0, 1, 2, 0]})          # model: 3/4
    rows = []

    def read(reader, level, calls0, calls1, s0, s1):
        for flag, calls, secs in ((0, calls0, s0), (1, calls1, s1)):
            for case, call, sec in zip("abcd", calls, secs):
                rows.append({"case_id": case, "reader": reader, "reader_level": level,
                             "with_ai": flag, "call": CLASSES[call], "seconds": sec,
                             "simulated": False})

    # r1: 2/4 without, 4/4 with; r2: 3/4 both, one improved and one worsened
    read("r1", "junior", [0, 1, 0, 0], [0, 1, 2, 3], [10, 20, 30, 40], [5, 10, 15, 20])
    read("r2", "senior", [0, 1, 2, 0], [0, 1, 0, 3], [8, 8, 8, 8], [8, 8, 8, 8])
    table = readers.build_table(patients, pd.DataFrame(rows), CLASSES)
    assert list(table["row"]) == [readers.MODEL_ROW, "r1", "r2", "junior readers",
                                  "senior readers", readers.ALL_ROW]
    by = table.set_index("row")
    assert by.loc[readers.MODEL_ROW, "model_accuracy"] == 0.75
    assert by.loc["r1", "accuracy_without_ai"] == 0.5 and by.loc["r1", "accuracy_with_ai"] == 1.0
    assert by.loc["r1", "improved"] == 2 and by.loc["r1", "worsened"] == 0
    assert by.loc["r1", "switched_to_model"] == 1 and by.loc["r2", "switched_to_model"] == 0
    assert by.loc["r2", "accuracy_without_ai"] == 0.75 and by.loc["r2", "accuracy_with_ai"] == 0.75
    assert by.loc["r2", "improved"] == 1 and by.loc["r2", "worsened"] == 1
    assert by.loc["r2", "mcnemar_p"] == 1.0 and by.loc["r2", "mcnemar_method"] == "exact binomial"
    assert by.loc["r1", "mcnemar_p"] == pytest.approx(0.5)       # exact: 2 discordant, both one way
    assert by.loc["r1", "mean_seconds_without_ai"] == 25 and by.loc["r1", "mean_seconds_with_ai"] == 12.5
    assert by.loc["r1", "wilcoxon_p"] == pytest.approx(0.125)    # exact, 4 positive differences
    assert math.isnan(by.loc["r2", "wilcoxon_p"])                # no time difference at all
    assert by.loc[readers.ALL_ROW, "n_reads"] == 8
    assert by.loc[readers.ALL_ROW, "accuracy_with_ai"] == pytest.approx(7 / 8)
    assert by.loc["junior readers", "accuracy_without_ai"] == 0.5
    # the model alone is counted once per distinct case, also on pooled rows
    assert by.loc[readers.ALL_ROW, "model_accuracy"] == 0.75
    assert by.loc[readers.ALL_ROW, "model_accuracy_lo"] == pytest.approx(
        by.loc[readers.MODEL_ROW, "model_accuracy_lo"])
    from reproduce import stats
    lo, hi = stats.proportion_ci(2, 4, method="wilson")[1:]
    assert by.loc["r1", "accuracy_without_ai_lo"] == pytest.approx(lo)
    assert by.loc["r1", "accuracy_without_ai_hi"] == pytest.approx(hi)
    assert (table["paper"] == readers.PAPER_TEXT).all()
    assert not table.attrs["simulated"]


def _ctx(tmp_path, **fields):
    return pipeline.StudyContext(spec=pipeline.TASKS["5class"], profile="ci",
                                 runs_dir=tmp_path / "runs", results_dir=tmp_path / "results",
                                 **fields)


def test_simulated_label_in_markdown_and_figure(tmp_path):
    patients = _patients(25)
    calls = readers.simulate_readers(patients, CLASSES, seed=0)
    table = readers.build_table(patients, calls, CLASSES)
    assert table.attrs["simulated"] and (table.loc[table["kind"] != "model", "simulated"] == 1).all()
    text = readers.markdown(_ctx(tmp_path), table, patients)
    assert "model was confident on" in text
    assert "SIMULATED READERS" in text and "(simulated)" not in text.split("\n")[0]
    assert readers.PAPER_TEXT in text and "ASSUMPTION" in text
    assert "simulated junior 1" in text
    fig = readers.figure(table, calls, title="test")
    assert "SIMULATED" in fig._suptitle.get_text()
    fig.savefig(tmp_path / "f.png")


def test_user_data_without_csv_is_refused(tmp_path):
    ctx = _ctx(tmp_path, manifest=tmp_path / "m.csv")
    with pytest.raises(InputError, match="simulated only on the phantom"):
        readers.reader_calls(ctx, _patients())
    phantom = _ctx(tmp_path)
    assert readers.reader_calls(phantom, _patients())["simulated"].all()
    path = _write(tmp_path, _good_rows())
    user = dataclasses.replace(ctx, readers=path)
    assert not readers.reader_calls(user, _patients())["simulated"].any()


def test_cli_refuses_user_data_without_readers(tmp_path, capsys):
    code = readers.main(["--profile", "ci", "--manifest", str(tmp_path / "m.csv"),
                         "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res")])
    assert code == 2 and "simulated only on the phantom" in capsys.readouterr().err
