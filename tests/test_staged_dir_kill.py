"""A process SIGKILLed inside `atomic.staged_dir` (deidentify, phantom, augment, predict) leaves
its staging folder behind; the next run for the same output removes it, and puts back an old
output that the killed run had moved aside (issue "Trust", part 1)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from data_prep import atomic

ROOT = Path(__file__).resolve().parents[1]

KILLED_INSIDE = """
import os, signal, sys
from pathlib import Path
from data_prep import atomic
with atomic.staged_dir(Path(sys.argv[1]), overwrite=True) as stage:
    (stage / "half.txt").write_text("half-written")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_killed_stage_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "deid"
    result = subprocess.run([sys.executable, "-c", KILLED_INSIDE, str(out)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == -9
    left = list(tmp_path.glob(".deid.staging.*"))
    assert len(left) == 1 and not out.exists()
    with atomic.staged_dir(out, overwrite=True) as stage:
        (stage / "done.txt").write_text("complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deid"]
    assert [p.name for p in out.iterdir()] == ["done.txt"]


def test_an_old_output_moved_aside_by_a_killed_run_is_put_back(tmp_path):
    out = tmp_path / "deid"
    trash = tmp_path / f".deid.old.{_dead_pid()}.abcd"
    (trash / "deid").mkdir(parents=True)
    (trash / "deid" / "previous.txt").write_text("the last good output")
    stage = tmp_path / f".deid.staging.{_dead_pid()}.efgh"
    stage.mkdir()
    removed = atomic.remove_stale_stages(out)
    assert sorted(p.name for p in removed) == sorted([trash.name, stage.name])
    assert (out / "previous.txt").read_text() == "the last good output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deid"]


def test_a_live_runs_stage_is_kept(tmp_path):
    out = tmp_path / "deid"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stage = tmp_path / f".deid.staging.{live.pid}.ijkl"
        stage.mkdir()
        assert atomic.remove_stale_stages(out) == []
        assert stage.is_dir()
    finally:
        live.kill()
        live.wait()
    assert [p.name for p in atomic.remove_stale_stages(out)] == [stage.name]
