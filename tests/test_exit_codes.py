"""The exit-code contract of every command (data_prep.errors): 0 done, 1 a finding, 2 bad input
in one line, 3 an internal error in one line with its traceback in a log file -- never 1."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from data_prep import errors
from data_prep.errors import InputError, report_bad_input

REPO = Path(__file__).resolve().parents[1]


def _crash():
    raise ZeroDivisionError("division by zero\nsecond line")


@pytest.mark.parametrize("body, code, first_words", [
    (lambda: 0, errors.EXIT_DONE, None),
    (lambda: None, errors.EXIT_DONE, None),
    (lambda: 1, errors.EXIT_FINDING, None),
    (lambda: (_ for _ in ()).throw(InputError("m.csv", "bad label", row=3, column="label")),
     errors.EXIT_BAD_INPUT, "error: m.csv, row 3, column 'label': bad label"),
    (lambda: open("/proc/definitely/not/here/x", "w"), errors.EXIT_INTERNAL_ERROR,
     "internal error: FileNotFoundError"),
    (_crash, errors.EXIT_INTERNAL_ERROR, "internal error: ZeroDivisionError: division by zero"),
])
def test_exit_code_contract(body, code, first_words, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(errors.ERROR_LOG_ENV, str(tmp_path / "logs"))
    assert report_bad_input(body) == code
    err = capsys.readouterr().err
    if first_words is None:
        assert err == ""
        return
    assert err.count("\n") == 1 and err.startswith(first_words), err
    if code == errors.EXIT_INTERNAL_ERROR:
        logs = list((tmp_path / "logs").iterdir())
        assert len(logs) == 1 and str(logs[0]) in err
        text = logs[0].read_text()
        assert "Traceback (most recent call last)" in text and "command:" in text
        assert "Traceback" not in err


def test_internal_errors_are_never_exit_1_in_a_real_command(tmp_path):
    # A command whose body crashes (a monkeypatched reader): one line, exit 3, log written.
    code = ("import sys; import data_prep.manifest as m; "
            "m.load_manifest = lambda *a, **k: 1 / 0; "
            "from data_prep.__main__ import main; sys.exit(main(['manifest', '--check', 'x.csv']))")
    env = {"PYTHONPATH": str(REPO), errors.ERROR_LOG_ENV: str(tmp_path / "logs"),
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == errors.EXIT_INTERNAL_ERROR, done.stderr
    assert done.stderr.startswith("internal error: ZeroDivisionError") and "Traceback" not in done.stderr
    assert len(list((tmp_path / "logs").iterdir())) == 1


def test_every_command_line_entry_point_reports_through_the_contract():
    entry_points = ["data_prep/__main__.py", "reproduce/study.py", "reproduce/train.py",
                    "reproduce/compare.py", "reproduce/all.py", "reproduce/pgds/predict.py"]
    for path in entry_points:
        assert "report_bad_input(" in (REPO / path).read_text(), path
