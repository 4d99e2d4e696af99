"""Run records carry no path of the machine they ran on, and committed results come from a
clean tree (no '+dirty' commit)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from data_prep import provenance

REPO = Path(__file__).resolve().parent.parent
ABSOLUTE_PATH = re.compile(r'"(/(?:work|tmp|root|home|Users|mnt|opt|var)/[^"]*)"')


@pytest.mark.parametrize("argv,expected", [
    (["/somewhere/repo/reproduce/__main__.py", "all", "--force"], "python -m reproduce all --force"),
    (["/x/y/run.py", "--manifest", "/data/patients/m.csv"], "run.py --manifest .../m.csv"),
    (["-c", "x"], "python -c ... x"),
])
def test_command_line_keeps_no_machine_path(argv, expected):
    assert provenance.command_line(argv) == expected


def test_portable_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert provenance.portable_path(None) is None
    assert provenance.portable_path("runs/m.csv") == "runs/m.csv"
    assert provenance.portable_path(tmp_path / "runs" / "m.csv") == "runs/m.csv"
    assert provenance.portable_path("/elsewhere/DOE_JANE/m.csv") == ".../m.csv"


def test_run_record_paths_are_portable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text("image_path\n")
    record = provenance.run_record({}, seed=0, manifest=manifest)
    assert record["manifest"] == "m.csv"
    assert not ABSOLUTE_PATH.search(json.dumps(record))


def test_committed_run_records_hold_no_machine_path_and_no_dirty_commit():
    records = sorted((REPO / "results").rglob("run.json"))
    assert records, "results/ holds no run.json"
    for path in records:
        text = path.read_text(encoding="utf-8")
        found = ABSOLUTE_PATH.search(text)
        assert found is None, f"{path.relative_to(REPO)} holds the machine path {found.group(1)}"
        commit = json.loads(text).get("git_commit", "")
        assert not commit.endswith("+dirty"), f"{path.relative_to(REPO)}: results of a dirty tree"
