"""`python -m reproduce pgds train` audits its splits for leakage before it trains anything.

The verdicts are `python -m data_prep audit`'s: a case in two splits is bad input (exit 2, the
splits file, row and column `case_id`); identical images on both sides of a split are a finding
(exit 1); near duplicates too on a user manifest unless `--accept-near-duplicates`. The CLI is
called in-process (keras is imported once); `--folds 7` (a fold the splits lack) is the cheap
proof that the audit let a run through: it fails AFTER the audit, with exit 2 naming the fold.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from reproduce import train
from tests.test_train import write_tiny_study


def _leak_case(folder: Path) -> None:
    """The first test image's case_id becomes a training case's: one case in two splits."""
    for name in ("manifest.csv", "splits.csv"):
        frame = pd.read_csv(folder / name)
        test_image = pd.read_csv(folder / "splits.csv").query("split == 'test'")["image_path"].iloc[0]
        frame.loc[frame["image_path"] == test_image, "case_id"] = "case000"
        frame.to_csv(folder / name, index=False)


def _test_image(folder: Path) -> Path:
    splits = pd.read_csv(folder / "splits.csv")
    return folder / splits.query("split == 'test' and image_path.str.endswith('.png')")["image_path"].iloc[0]


def _exact_copy(folder: Path) -> None:
    """A test image becomes a byte copy of a training PNG (c001.png, case001, train)."""
    shutil.copyfile(folder / "images/c001.png", _test_image(folder))


def _near_copy(folder: Path) -> None:
    """A test image becomes the training PNG c001.png three grey levels brighter."""
    pixels = cv2.imread(str(folder / "images/c001.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(_test_image(folder)), np.clip(pixels.astype(int) + 3, 0, 255).astype(np.uint8))


def _clean(folder: Path) -> None:
    pass


CASES = [
    # (name, change, extra flags, exit code, words the one stderr line holds)
    ("case in two splits", _leak_case, [], 2, ["splits.csv", "row", "column 'case_id'", "case000"]),
    ("case in two splits, flag", _leak_case, ["--accept-near-duplicates"], 2, ["case000"]),
    ("identical image", _exact_copy, [], 1, ["leakage audit", "identical", "images/c001.png"]),
    ("identical image, flag", _exact_copy, ["--accept-near-duplicates"], 1, ["identical"]),
    ("near duplicate", _near_copy, [], 1, ["near-duplicate", "--accept-near-duplicates"]),
    ("near duplicate accepted", _near_copy, ["--accept-near-duplicates"], 2, ["fold 7 is not in"]),
    ("clean", _clean, [], 2, ["fold 7 is not in"]),
]


@pytest.mark.parametrize("name,change,flags,code,words", CASES, ids=[c[0] for c in CASES])
def test_train_refuses_leaking_splits(name, change, flags, code, words, tmp_path, capsys):
    manifest, splits = write_tiny_study(tmp_path / "data", n_cases=12)
    change(tmp_path / "data")
    runs = tmp_path / "runs"
    argv = ["--study", "pgds", "--profile", "ci", "--manifest", str(manifest), "--splits",
            str(splits), "--runs", str(runs), "--architectures", "pgds_resnet", "--folds", "7",
            *flags]
    assert train.main(argv) == code
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, errors
    for word in words:
        assert word in errors[0], errors[0]
    assert not (runs / "pgds").exists()   # nothing trained, no run folder made


def test_help_names_the_audit(capsys):
    with pytest.raises(SystemExit):
        train.main(["--study", "pgds", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "leakage audit" in text and "--accept-near-duplicates" in text
