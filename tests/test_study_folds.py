"""Folds of every --cv kind (reproduce.study.cross_validation_splits): no fold puts one patient
on both sides, every image is tested exactly once, validation comes from training patients."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep.errors import InputError
from reproduce import study


def _manifest(n_cases: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    labels = ("normal", "anencephaly", "encephalocele", "holoprosencephaly", "rachischisis")
    for case in range(n_cases):
        label = labels[case % len(labels)]
        for view in range(int(rng.integers(1, 4))):
            rows.append({"image_path": f"images/P{case:03d}_{view}.png", "case_id": f"P{case:03d}",
                         "label": label, "center": f"centre-{case % 4}"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("cv,expected_folds", [("holdout", 1), ("kfold", 5), ("lopo", 40), ("loco", 4)])
def test_no_fold_puts_a_patient_on_both_sides(cv, expected_folds):
    manifest = _manifest()
    splits, info = study.cross_validation_splits(manifest, cv, k=5, val_size=0.1, seed=3)
    assert info["cv"] == cv
    folds = splits.groupby("fold") if "fold" in splits.columns else [(0, splits)]
    count = 0
    tested = []
    for _, fold in folds:
        count += 1
        sides = fold.groupby("case_id")["split"].nunique()
        assert (sides == 1).all(), f"{cv}: a patient sits in two splits of one fold"
        assert set(fold["split"]) <= {"train", "val", "test"}
        assert (fold["split"] == "val").any(), f"{cv}: no validation patients"
        tested += list(fold.loc[fold["split"] == "test", "image_path"])
    assert count == expected_folds
    if cv != "holdout":
        assert sorted(tested) == sorted(manifest["image_path"])   # each image tested once
    if cv == "loco":
        for _, fold in splits.groupby("fold"):
            test_centres = set(manifest.set_index("image_path").loc[
                fold.loc[fold["split"] == "test", "image_path"], "center"])
            assert len(test_centres) == 1


def test_validation_patients_are_never_test_patients_of_the_same_fold():
    splits, _ = study.cross_validation_splits(_manifest(), "kfold", k=5, val_size=0.2, seed=1)
    for _, fold in splits.groupby("fold"):
        val = set(fold.loc[fold["split"] == "val", "case_id"])
        test = set(fold.loc[fold["split"] == "test", "case_id"])
        assert val and not (val & test)


def test_unknown_cv_and_missing_centre_are_refused():
    with pytest.raises(InputError, match="--cv must be one of"):
        study.cross_validation_splits(_manifest(), "bootstrap")
    with pytest.raises(InputError, match="needs a 'center' column"):
        study.cross_validation_splits(_manifest().drop(columns=["center"]), "loco")
