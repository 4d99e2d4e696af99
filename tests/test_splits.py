"""Case-level splits: no case in two splits, stratification, determinism, folds, errors, CLI."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from data_prep import splits as sp
from data_prep.errors import InputError

SUBTYPES = ("T21", "T18", "T13", "rare")


def make_manifest(n_normal: int = 120, n_disease: int = 40, *, seed: int = 0,
                  n_centers: int = 3) -> pd.DataFrame:
    """Toy manifest: 1-3 images per case, disease cases spread over the four subtypes."""
    rng = np.random.default_rng(seed)
    rows = []
    for case in range(n_normal + n_disease):
        disease = case >= n_normal
        subtype = SUBTYPES[case % 4] if disease else "normal"
        for image in range(int(rng.integers(1, 4))):
            rows.append({"image_path": f"img/c{case:03d}_{image}.png", "case_id": f"c{case:03d}",
                         "label": "genetic_disease" if disease else "normal",
                         "subtype": subtype, "center": f"h{case % n_centers}"})
    return pd.DataFrame(rows, dtype=str)


@pytest.fixture(scope="module")
def manifest() -> pd.DataFrame:
    return make_manifest()


def run_split(method: str, manifest: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    if method == "holdout":
        return sp.case_level_split(manifest, seed=seed)
    if method == "holdout_subtype":
        return sp.case_level_split(manifest, stratify="subtype", seed=seed)
    if method == "kfold":
        return sp.stratified_group_kfold(manifest, k=5, seed=seed)
    if method == "kfold_val":
        return sp.stratified_group_kfold(manifest, k=4, seed=seed, val_size=0.15)
    if method == "logo_center":
        return sp.leave_one_group_out(manifest, group="center", val_size=0.1, seed=seed)
    if method == "logo_case":
        return sp.leave_one_group_out(manifest.iloc[:40], group="case_id")
    raise AssertionError(method)


ALL_METHODS = ["holdout", "holdout_subtype", "kfold", "kfold_val", "logo_center", "logo_case"]


@pytest.mark.parametrize("method", ALL_METHODS)
def test_no_case_in_two_splits(manifest, method):
    splits = run_split(method, manifest)
    assert set(splits["split"]) <= set(sp.SPLIT_VALUES)
    per_fold = splits.groupby(["fold", "case_id"]) if "fold" in splits else splits.groupby("case_id")
    assert per_fold["split"].nunique().max() == 1
    sp.validate_splits(splits)  # a well-formed splits table


@pytest.mark.parametrize("method", ["holdout", "holdout_subtype", "kfold", "kfold_val", "logo_center"])
def test_deterministic_for_seed_and_different_across_seeds(manifest, method):
    first, again, other = (run_split(method, manifest, seed) for seed in (7, 7, 8))
    pd.testing.assert_frame_equal(first, again)
    assert not first["split"].equals(other["split"])


def test_holdout_does_not_depend_on_row_order(manifest):
    shuffled = manifest.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a = sp.case_level_split(manifest, seed=1).groupby("case_id")["split"].first()
    b = sp.case_level_split(shuffled, seed=1).groupby("case_id")["split"].first()
    pd.testing.assert_series_equal(a.sort_index(), b.sort_index())


@pytest.mark.parametrize("stratify, test_size, val_size", [
    ("label", 0.2, 0.1), ("label", 0.3, 0.0), ("subtype", 0.2, 0.1), ("subtype", 0.25, 0.15)])
def test_holdout_proportions_per_class(manifest, stratify, test_size, val_size):
    splits = sp.case_level_split(manifest, test_size=test_size, val_size=val_size, stratify=stratify)
    case_class = manifest.groupby("case_id")[stratify].first()
    case_split = splits.groupby("case_id")["split"].first()
    table = pd.crosstab(case_class, case_split)
    for cls, row in table.iterrows():
        n = row.sum()
        assert abs(row.get("test", 0) - test_size * n) <= 1, (cls, row.to_dict())
        assert abs(row.get("val", 0) - val_size * n) <= 1, (cls, row.to_dict())
        assert row["train"] > 0 and row.get("test", 0) > 0
        assert (row.get("val", 0) > 0) == (val_size > 0)
    overall = case_split.value_counts(normalize=True)
    assert overall["test"] == pytest.approx(test_size, abs=0.02)
    assert overall.get("val", 0.0) == pytest.approx(val_size, abs=0.02)


@pytest.mark.parametrize("n_cases, expected", [
    (1, {"train": 1}), (2, {"train": 1, "test": 1}), (3, {"train": 1, "val": 1, "test": 1}),
    (10, {"train": 7, "val": 1, "test": 2}), (100, {"train": 70, "val": 10, "test": 20})])
def test_small_classes_reach_every_split_when_possible(n_cases, expected):
    rows = [{"image_path": f"{i}.png", "case_id": f"k{i}", "label": "rare_class"} for i in range(n_cases)]
    rows += [{"image_path": f"n{i}.png", "case_id": f"n{i}", "label": "normal"} for i in range(50)]
    splits = sp.case_level_split(pd.DataFrame(rows), test_size=0.2, val_size=0.1)
    counts = splits[splits["case_id"].str.startswith("k")]["split"].value_counts().to_dict()
    assert counts == expected


def test_kfold_every_case_tested_exactly_once(manifest):
    splits = sp.stratified_group_kfold(manifest, k=5, seed=2)
    assert sorted(splits["fold"].unique()) == [0, 1, 2, 3, 4]
    tests = splits[splits["split"] == "test"]
    assert tests.groupby("case_id")["fold"].nunique().max() == 1
    assert set(tests["case_id"]) == set(manifest["case_id"])
    assert len(tests) == len(manifest)  # every image tested once
    assert (splits.groupby("fold").size() == len(manifest)).all()
    for fold in sp.iter_folds(splits):
        test_labels = manifest.set_index("image_path").loc[fold.test["image_path"], "label"]
        assert set(test_labels) == {"normal", "genetic_disease"}
        share = (test_labels == "genetic_disease").mean()
        assert share == pytest.approx(0.25, abs=0.1)  # 40 of 160 cases are diseased


def test_kfold_val_comes_from_training_cases(manifest):
    splits = sp.stratified_group_kfold(manifest, k=4, val_size=0.15, seed=0)
    for fold in sp.iter_folds(splits):
        train, val, test = (set(part["case_id"]) for part in (fold.train, fold.val, fold.test))
        assert not (train & val) and not (train & test) and not (val & test)
        assert len(val) == pytest.approx(0.15 * (len(train) + len(val)), abs=2)


def test_kfold_too_few_cases_is_input_error():
    with pytest.raises(InputError, match="cannot make 5 folds"):
        sp.stratified_group_kfold(make_manifest(2, 2), k=5)


def test_logo_by_center(manifest):
    splits = sp.leave_one_group_out(manifest, group="center")
    centers = manifest.set_index("image_path")["center"]
    assert sorted(splits["held_out"].unique()) == ["h0", "h1", "h2"]
    for fold in sp.iter_folds(splits):
        held = splits.loc[splits["fold"] == fold.fold, "held_out"].iloc[0]
        assert set(centers.loc[fold.test["image_path"]]) == {held}
        assert held not in set(centers.loc[fold.train["image_path"]])
        assert len(fold.train) + len(fold.test) == len(manifest)


def test_logo_by_case_has_one_fold_per_case(manifest):
    part = manifest[manifest["case_id"].isin(["c000", "c001", "c150"])]
    splits = sp.leave_one_group_out(part, group="case_id")
    assert splits["fold"].nunique() == 3
    assert splits[splits["split"] == "test"].groupby("fold")["case_id"].nunique().eq(1).all()


def test_logo_case_in_two_centers_is_input_error():
    manifest = pd.DataFrame({"image_path": ["a.png", "b.png", "c.png"], "case_id": ["p1", "p2", "p1"],
                             "label": ["normal"] * 3, "center": ["h0", "h1", "h1"]})
    with pytest.raises(InputError) as err:
        sp.leave_one_group_out(manifest, group="center")
    assert (err.value.row, err.value.column) == (3, "center")
    assert "case 'p1'" in str(err.value)


@pytest.mark.parametrize("stratify", ["label", "subtype"])
def test_mixed_label_case_is_input_error_naming_the_case(stratify):
    manifest = pd.DataFrame({"image_path": ["a.png", "b.png", "c.png", "d.png"],
                             "case_id": ["p1", "p2", "p1", "p3"],
                             "label": ["normal", "normal", "genetic_disease", "normal"],
                             "subtype": ["normal", "normal", "T21", "normal"]})
    manifest.attrs["path"] = "toy.csv"
    with pytest.raises(InputError) as err:
        sp.case_level_split(manifest, stratify=stratify)
    assert (err.value.row, err.value.column, err.value.file) == (3, stratify, "toy.csv")
    assert "case 'p1'" in err.value.one_line()


@pytest.mark.parametrize("kwargs, message", [
    ({"test_size": 1.0}, "test_size"), ({"val_size": -0.1}, "val_size"),
    ({"test_size": 0.6, "val_size": 0.4}, "below 1"), ({"stratify": "center"}, "stratify")])
def test_bad_parameters_are_input_errors(manifest, kwargs, message):
    with pytest.raises(InputError, match=message):
        sp.case_level_split(manifest, **kwargs)


def test_missing_or_empty_columns_name_row_and_column():
    with pytest.raises(InputError) as err:
        sp.case_level_split(pd.DataFrame({"image_path": ["a"], "case_id": ["x"]}))
    assert err.value.column == "label"
    with pytest.raises(InputError) as err:
        sp.case_level_split(pd.DataFrame({"image_path": ["a", "b"], "case_id": ["x", " "],
                                          "label": ["normal", "normal"]}))
    assert (err.value.row, err.value.column) == (2, "case_id")


def test_iter_folds_holdout_is_fold_zero(manifest):
    splits = sp.case_level_split(manifest)
    (fold,) = list(sp.iter_folds(splits))
    assert fold.fold == 0
    assert len(fold.train) + len(fold.val) + len(fold.test) == len(manifest)
    assert set(fold.val["split"]) == {"val"}


@pytest.mark.parametrize("csv_text, row, column", [
    ("image_path,case_id,split\na.png,p1,train\nb.png,p2,testing\n", 2, "split"),
    ("image_path,case_id,split\na.png,p1,train\na.png,p1,train\n", 2, "image_path"),
    ("image_path,case_id,split,fold\na.png,p1,train,0\na.png,p1,test,x\n", 2, "fold"),
    ("image_path,case_id,split\na.png,,train\n", 1, "case_id"),
    ("image_path,split\na.png,train\n", None, "case_id"),
])
def test_load_splits_rejects_bad_rows(tmp_path, csv_text, row, column):
    path = tmp_path / "splits.csv"
    path.write_text(csv_text)
    with pytest.raises(InputError) as err:
        sp.load_splits(path)
    assert (err.value.file, err.value.row, err.value.column) == (str(path), row, column)


def test_load_splits_round_trip(tmp_path, manifest):
    splits = sp.stratified_group_kfold(manifest, k=3)
    splits.to_csv(tmp_path / "s.csv", index=False)
    loaded = sp.load_splits(tmp_path / "s.csv")
    pd.testing.assert_frame_equal(loaded, splits, check_dtype=False)


# ----------------------------------------------------------------------------- command line


def cli(argv: list[str]) -> int:
    """Run `python -m data_prep splits ...` the way data_prep.__main__ does."""
    parser = argparse.ArgumentParser()
    sp.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["splits", *argv])
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"error: {err.one_line()}")
        return 2


@pytest.mark.parametrize("extra, has_fold", [
    (["--method", "holdout", "--stratify", "subtype"], False),
    (["--method", "kfold", "--k", "3"], True),
    (["--method", "logo", "--group", "center"], True)])
def test_cli_writes_splits_and_refuses_overwrite(tmp_path, manifest, capsys, extra, has_fold):
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "splits.csv"
    argv = ["--manifest", str(tmp_path / "manifest.csv"), "--out", str(out), "--seed", "3", *extra]
    assert cli(argv) == 0
    written = sp.load_splits(out)
    assert ("fold" in written.columns) == has_fold
    assert list(written.columns[:3]) == ["image_path", "case_id", "split"]
    before = out.read_bytes()
    assert cli(argv) == 2
    assert "already exists" in capsys.readouterr().out
    assert out.read_bytes() == before
    assert cli(argv + ["--force"]) == 0
    assert out.read_bytes() == before  # same seed, same file


def test_cli_mixed_label_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text("image_path,case_id,label\na.png,p1,normal\nb.png,p1,genetic_disease\n")
    assert cli(["--manifest", str(path), "--out", str(tmp_path / "s.csv")]) == 2
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0 and "row 2" in line and "column 'label'" in line and "p1" in line
    assert not (tmp_path / "s.csv").exists()
