"""SIGKILL in the middle of writing results and of de-identification (issue "Trust", part 1).

Training killed mid-epoch is tests/test_train.py::test_sigkill_mid_epoch_then_resume_equals_
uninterrupted (a test hook kills at a chosen batch). Here no hook exists, so each command is
run once to the end (the reference, timed), then started again and SIGKILLed after a series
of delays spread over that time. After each kill: every result file that exists under its
expected name is whole (the reference's bytes, or JSON that parses); then the same command
runs to the end, and its results equal the reference's; the inputs are unchanged (sha256).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import pytest

REPO = Path(__file__).resolve().parent.parent
KILL_FRACTIONS = (0.4, 0.65, 0.85, 0.97)   # of the reference run's wall time


def sha256_tree(folder: Path, skip: Sequence[Path] = ()) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(p.is_relative_to(s) for s in skip)}


def visible_files(folder: Path) -> dict[str, bytes]:
    """Files under `folder` whose path has no hidden part (temporaries are '.name.XXXX')."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


def run_to_end(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return time.perf_counter() - started


def kill_after(command: list[str], cwd: Path, seconds: float) -> bool:
    """Start `command`, SIGKILL it after `seconds`; True when it was killed (not yet done)."""
    process = subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    return process.returncode == -signal.SIGKILL


def _same_dicom(data: bytes, reference: bytes) -> bool:
    """Whole and the same as the reference but for UIDs: de-identification draws new UIDs
    every run (one map per run), so the bytes of two complete runs differ there."""
    import io

    import numpy as np
    import pydicom

    def elements(ds):
        return {e.tag: (e.VR, None if e.VR == "UI" else (
            [elements(item) for item in e.value] if e.VR == "SQ" else e.value))
            for e in ds if e.tag != 0x7FE00010}

    ours, theirs = (pydicom.dcmread(io.BytesIO(d)) for d in (data, reference))
    return (elements(ours) == elements(theirs)
            and np.array_equal(ours.pixel_array, theirs.pixel_array))


def assert_whole(found: dict[str, bytes], reference: dict[str, bytes], volatile: set[str]) -> None:
    """No partial file: each result is the reference's bytes, or (volatile) parses whole; a
    DICOM is whole and the reference's but for its fresh UIDs."""
    unexpected = sorted(set(found) - set(reference))
    assert not unexpected, f"files the finished run does not write: {unexpected}"
    for name, data in found.items():
        if Path(name).name in volatile:
            json.loads(data)
        elif name.endswith(".dcm"):
            assert _same_dicom(data, reference[name]), f"{name} differs from the finished run's"
        else:
            assert data == reference[name], f"{name} differs from the finished run's (partial?)"


def kill_and_rerun(command: list[str], cwd: Path, out: Path, inputs, volatile: set[str]) -> int:
    """The test's body; `inputs()` hashes the inputs. Returns how many starts were killed."""
    before = inputs()
    seconds = run_to_end(command, cwd)
    reference = visible_files(out)
    assert reference, f"{command} wrote nothing under {out}"
    killed = 0
    for fraction in KILL_FRACTIONS:
        killed += kill_after(command, cwd, fraction * seconds)
        assert_whole(visible_files(out), reference, volatile)
        assert inputs() == before, "an input changed"
    assert killed, "every start finished before its kill: nothing was tested"
    run_to_end(command, cwd)
    final = visible_files(out)
    assert sorted(final) == sorted(reference)
    assert_whole(final, reference, volatile)
    assert inputs() == before, "an input changed"
    return killed


# ----------------------------------------------------------------------------- deidentify

@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory) -> Path:
    from data_prep import phantom

    folder = tmp_path_factory.mktemp("sigkill_phantom")
    return phantom.generate_phantom("pgds", "ci", folder / "in", seed=0, dicom=True,
                                    progress=False).parent


def test_sigkill_during_deidentify_then_rerun(phantom_folder, tmp_path):
    """The ci phantom's 72 DICOM frames: identifiers stripped, outside the sector blanked."""
    out = tmp_path / "deid"
    command = [sys.executable, "-m", "data_prep", "deidentify", "--manifest",
               str(phantom_folder / "manifest_dicom.csv"), "--out", str(out), "--force",
               "--progress-every", "0"]
    killed = kill_and_rerun(command, tmp_path, out, lambda: sha256_tree(phantom_folder),
                            volatile={"deid_report.json"})
    print(f"deidentify: {killed}/{len(KILL_FRACTIONS)} starts killed mid-run, rerun complete")


# ----------------------------------------------------------------------------- results

def test_sigkill_while_writing_results_then_rerun(pgds_ci_context, tmp_path):
    """`python -m reproduce pgds table1` (models trained once by pgds_ci_context) killed while it
    predicts, bootstraps and writes table1.{csv,md} and run.json."""
    ctx = pgds_ci_context
    out = tmp_path / "results" / "pgds"
    command = [sys.executable, "-m", "reproduce", "pgds", "table1", "--profile", ctx.profile,
               "--runs", str(ctx.runs_dir), "--results", str(out), "--seed", str(ctx.seed)]
    study = ctx.runs_dir / "pgds" / ctx.profile

    def inputs() -> dict[str, str]:   # the prepared data and every trained model
        return {**sha256_tree(study / "data"),
                **{str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in sorted(study.rglob("*.keras"))}}

    killed = kill_and_rerun(command, tmp_path, out, inputs, volatile={"run.json"})
    print(f"pgds table1: {killed}/{len(KILL_FRACTIONS)} starts killed mid-run, rerun complete")
