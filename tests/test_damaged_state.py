"""Damaged training state (issue 17): a truncated or empty newest checkpoint, or a truncated
state.json, is named and passed over for the commit before it, and the resumed run still ends
where an uninterrupted one does; a damaged snapshot of a finished run never replaces a good
selected.keras. Every model file's size and sha256 are recorded when written (state.json)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.errors import InputError
from reproduce import train
from tests.test_train import (CLASSES, REPO, WEIGHT_TOLERANCE, max_weight_diff, tiny_builder,
                              tiny_config, tiny_tables, train_tiny, write_tiny_study)

FINAL = "checkpoints/epoch_0003.keras"


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.fixture(scope="module")
def killed_after_epoch_2(tmp_path_factory):
    """(study, a run folder killed in epoch 3: commits after epochs 1 and 2, an uninterrupted
    reference)."""
    root = tmp_path_factory.mktemp("damaged")
    manifest, splits = write_tiny_study(root / "study")
    command = [sys.executable, "-c", "from tests.test_train import _subprocess_main; _subprocess_main()",
               str(root / "killed"), str(manifest), str(splits)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    killed = subprocess.Popen(command, cwd=REPO, env={**env, train.KILL_ENV: "3:2"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    train_tiny(root / "reference", manifest, splits, augment="on_the_fly")
    output, _ = killed.communicate(timeout=300)
    assert killed.returncode == -9, output
    state = json.loads((root / "killed" / train.STATE_FILE).read_text())
    assert state["epochs_completed"] == 2 and set(state["files"]) >= {
        "checkpoints/epoch_0002.keras", "snapshots/epoch_0002.keras"}
    previous = json.loads((root / "killed" / train.PREVIOUS_STATE_FILE).read_text())
    assert previous["epochs_completed"] == 1
    return manifest, splits, root


@pytest.mark.parametrize("damage, resumed_from, named", [
    ("truncate_checkpoint", 1, "epoch_0002.keras has"),
    ("empty_checkpoint", 1, "epoch_0002.keras has 0 bytes"),
    ("flip_checkpoint_byte", 1, "its sha256 differs"),
    ("truncate_state", 1, "state.json is damaged (JSONDecodeError)"),
    ("nothing", 2, None),
])
def test_damaged_newest_commit_falls_back_and_ends_as_uninterrupted(killed_after_epoch_2, tmp_path,
                                                                    capsys, damage, resumed_from,
                                                                    named):
    manifest, splits, root = killed_after_epoch_2
    run = tmp_path / "run"
    shutil.copytree(root / "killed", run)
    newest = run / "checkpoints/epoch_0002.keras"
    if damage == "truncate_checkpoint":
        _truncate(newest)
    elif damage == "empty_checkpoint":
        newest.write_bytes(b"")
    elif damage == "flip_checkpoint_byte":
        data = bytearray(newest.read_bytes())
        data[len(data) // 2] ^= 0xFF
        newest.write_bytes(bytes(data))
    elif damage == "truncate_state":
        _truncate(run / train.STATE_FILE, 0.6)
    assert train.RunState.load(run).epochs_completed == resumed_from
    err = capsys.readouterr().err
    if named:
        assert named in err and f"resuming from {train.PREVIOUS_STATE_FILE} (epoch 1)" in err
    else:
        assert "warning" not in err
    train_tiny(run, manifest, splits, augment="on_the_fly")
    assert max_weight_diff(root / "reference" / FINAL, run / FINAL) <= WEIGHT_TOLERANCE


def test_no_intact_commit_is_one_clear_error(killed_after_epoch_2, tmp_path):
    manifest, splits, root = killed_after_epoch_2
    run = tmp_path / "run"
    shutil.copytree(root / "killed", run)
    _truncate(run / train.STATE_FILE, 0.6)
    (run / "checkpoints/epoch_0001.keras").write_bytes(b"")
    with pytest.raises(InputError, match="no intact checkpoint to resume from: .*state.json is "
                                         "damaged.*epoch_0001.keras has 0 bytes.*--force"):
        train_tiny(run, manifest, splits, augment="on_the_fly")
    train_table, val_table = tiny_tables(manifest, splits)
    result = train.train_run(tiny_config(augment="on_the_fly"), train_table, val_table, CLASSES,
                             run, manifest=manifest, builder=tiny_builder, verbose=0, force=True)
    assert result.epochs_trained == 3   # --force starts again


def test_damaged_snapshot_never_replaces_a_good_selected_model(killed_after_epoch_2, tmp_path, capsys):
    manifest, splits, root = killed_after_epoch_2
    run = tmp_path / "run"
    shutil.copytree(root / "reference", run)
    selection = json.loads((run / train.SELECTION_FILE).read_text())
    good = (run / train.SELECTED_MODEL).read_bytes()
    snapshot = run / selection["source"]
    _truncate(snapshot)
    result = train_tiny(run, manifest, splits, augment="on_the_fly")   # finished: finalize again
    assert (run / train.SELECTED_MODEL).read_bytes() == good
    assert result.selected_epoch == selection["epoch"] and result.epochs_trained == 0
    assert f"{snapshot} has" in capsys.readouterr().err
    _truncate(run / train.SELECTED_MODEL)
    with pytest.raises(InputError, match=r"the selected model cannot be made from it; use --force"):
        train_tiny(run, manifest, splits, augment="on_the_fly")
