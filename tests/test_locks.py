"""One process per run or results folder (data_prep.atomic.folder_lock): a second command
into the same folder is refused in one line, the first finishes untouched, and a killed
holder leaves no lock behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep import atomic
from data_prep.errors import InputError
from reproduce import train
from tests.test_train import REPO, write_tiny_study
from tests.test_train_schedule import train_schedule

HOLD = ("import sys, time; from data_prep.atomic import folder_lock\n"
        "with folder_lock(sys.argv[1], 'run'):\n"
        "    print('held', flush=True); time.sleep(120)\n")


def _hold(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_second_process_is_refused_and_a_killed_holder_releases(tmp_path):
    folder = tmp_path / "runs" / "fold0"
    holder = _hold(folder)
    try:
        with pytest.raises(InputError, match="in use by another running command"):
            with atomic.folder_lock(folder, "run"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with atomic.folder_lock(folder, "run"):   # the kernel released the dead holder's lock
        with atomic.folder_lock(folder, "run"):   # re-entrant within one process
            pass
    assert not any(folder.iterdir())   # no lock file left behind


def test_lock_leaves_no_empty_folder_it_created(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic.folder_lock(tmp_path / "new" / "results", "results"):
            raise RuntimeError("the command failed before writing anything")
    assert not (tmp_path / "new" / "results").exists()


def test_two_trainings_into_one_run_folder(tmp_path):
    """The second training is refused in one line while the first runs on to a complete,
    uncorrupted run (they used to delete each other's temporary checkpoints)."""
    manifest, splits = write_tiny_study(tmp_path / "study")
    run_dir = tmp_path / "run"
    # 40 epochs of the tiny model: long enough to be still training when the second one starts.
    command = [sys.executable, "-c",
               "from tests.test_train_schedule import _subprocess_main; _subprocess_main()",
               str(run_dir), str(manifest), str(splits), json.dumps({"epoch_grid": [40]})]
    first = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                                     "TF_CPP_MIN_LOG_LEVEL": "2"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "run.json").exists():   # written inside the lock
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
        time.sleep(0.05)
    with pytest.raises(InputError, match="in use by another running command"):
        train_schedule(run_dir, manifest, splits, epoch_grid=(40,))
    assert first.poll() is None   # refused while the first was still training
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    selection = json.loads((run_dir / train.SELECTION_FILE).read_text())
    assert (run_dir / train.SELECTED_MODEL).is_file() and selection["epochs_completed"] == 40


def test_results_folder_of_a_running_study_command_is_refused(tmp_path):
    results = tmp_path / "results" / "cns"
    holder = _hold(results)
    try:
        done = subprocess.run([sys.executable, "-m", "reproduce", "cns", "tables", "--profile", "ci",
                               "--runs", str(tmp_path / "runs"), "--results", str(results)],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=300)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {results}: this results folder "
                                                           "is in use")
    assert not (tmp_path / "runs").exists()   # refused before any work


def test_waiting_lock_says_so_and_gets_the_folder_when_the_holder_ends(tmp_path):
    folder = tmp_path / "runs" / "cns" / "ci"
    holder = _hold(folder)
    said = []

    def end_holder_soon():
        said.append("waiting")
        holder.send_signal(signal.SIGKILL)

    with atomic.folder_lock(folder, "study work", wait=True, on_wait=end_holder_soon):
        assert said == ["waiting"] and holder.wait(timeout=30) == -9
