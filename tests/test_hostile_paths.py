"""Paths a careless user gives: manifest cells with blanks, backslashes or doubled slashes, and
output flags that name a file or '.'. Each is either made to work (one spelling of every path
from the manifest on) or refused with one line and exit 2, before any heavy work; never a
traceback (issue "Trust", part 1)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep import atomic
from data_prep.__main__ import main as data_prep_main
from data_prep.errors import InputError, as_input_error, report_bad_input
from data_prep.manifest import load_manifest, normalize_path_text
from data_prep.splits import load_splits


@pytest.mark.parametrize("cell, expected", [
    (" a.png ", "a.png"), ("sub\\b.png", "sub/b.png"), ("sub\\\\b.png", "sub/b.png"),
    ("./sub//b.png", "sub/b.png"), ("../up/c.png", "../up/c.png"), ("", ""),
])
def test_normalize_path_text(cell, expected):
    assert normalize_path_text(cell) == expected


@pytest.fixture()
def messy(tmp_path) -> Path:
    """A manifest whose path cells are spelled three ways, and splits spelled a fourth."""
    (tmp_path / "sub").mkdir()
    for k, name in enumerate(("a.png", "sub/b.png", "sub/c.png", "d.png")):
        cv2.imwrite(str(tmp_path / name), (np.random.default_rng(k).random((30, 32)) * 255).astype(np.uint8))
    pd.DataFrame({"image_path": [" a.png ", "sub\\b.png", "./sub//c.png", "d.png"],
                  "case_id": ["c1", "c2", "c3", "c4"],
                  "label": ["normal", "genetic_disease", "normal", "genetic_disease"]}
                 ).to_csv(tmp_path / "manifest.csv", index=False)
    pd.DataFrame({"image_path": ["a.png", "sub/b.png ", "sub\\c.png", "d.png"],
                  "case_id": ["c1", "c2", "c3", "c4"], "split": ["train", "train", "val", "test"]}
                 ).to_csv(tmp_path / "splits.csv", index=False)
    return tmp_path


def test_manifest_and_splits_spell_paths_alike_so_training_tables_join(messy):
    from reproduce import train

    manifest = load_manifest(messy / "manifest.csv")
    assert list(manifest["image_path"]) == ["a.png", "sub/b.png", "sub/c.png", "d.png"]
    splits = load_splits(messy / "splits.csv")
    assert list(splits["image_path"]) == ["a.png", "sub/b.png", "sub/c.png", "d.png"]
    train_table, val_table = train.fold_tables(manifest, splits, ("normal", "genetic_disease"),
                                               "splits.csv")[0]
    assert len(train_table) == 2 and len(val_table) == 1
    assert all(Path(p).is_file() for p in train_table.paths + val_table.paths)


def test_splits_cli_writes_the_normalised_paths(messy, capsys):
    out = messy / "made.csv"
    assert data_prep_main(["splits", "--manifest", str(messy / "manifest.csv"), "--method",
                           "holdout", "--out", str(out)]) == 0
    assert set(pd.read_csv(out)["image_path"]) == {"a.png", "sub/b.png", "sub/c.png", "d.png"}


def test_atomic_write_onto_a_folder_is_one_line_bad_input(tmp_path):
    with pytest.raises(InputError, match="is a folder; give a file name"):
        atomic.write_text(tmp_path, "x")
    assert [p.name for p in tmp_path.iterdir()] == []   # no temp file left behind


@pytest.mark.parametrize("argv", [
    ["splits", "--method", "holdout", "--out", ".", "--force"],
    ["splits", "--method", "holdout", "--out", "afile/x.csv"],
    ["phantom", "--study", "cns", "--profile", "ci", "--out", "afile"],
])
def test_data_prep_outputs_that_cannot_be_are_refused_in_one_line(messy, capsys, monkeypatch, argv):
    monkeypatch.chdir(messy)
    (messy / "afile").write_text("not a folder")
    if argv[0] == "splits":
        argv = [argv[0], "--manifest", "manifest.csv", *argv[1:]]
    assert data_prep_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]


@pytest.mark.parametrize("argv, flag", [
    (["cns", "train", "--profile", "ci", "--runs", "afile"], "--runs"),
    (["cns", "all", "--profile", "ci", "--results", "afile/deeper"], "--results"),
    (["pgds", "train", "--profile", "ci", "--out", "afile"], "--runs"),
    (["pgds", "train", "--profile", "ci", "--runs", "afile"], "--runs"),
])
def test_study_folders_that_are_files_are_refused_before_any_work(tmp_path, capsys, monkeypatch,
                                                                   argv, flag):
    from reproduce.__main__ import main as reproduce_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    assert reproduce_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: afile: exists and is not a folder; choose another {flag}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]   # nothing rendered or trained


def test_os_errors_about_user_paths_become_input_errors(tmp_path, capsys, monkeypatch):
    def body():
        (tmp_path / "f").write_text("x")
        (tmp_path / "f" / "sub").mkdir()

    assert report_bad_input(body) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: ") and "f/sub" in line and "not a folder" in line
    assert as_input_error(PermissionError(13, "Permission denied", "/x")).one_line() == \
        "/x: permission denied; choose another path"
    # An internal error is not reported as bad input: exit 3, its traceback in a log.
    monkeypatch.setenv("SCREENING_ERROR_LOG_DIR", str(tmp_path / "logs"))
    assert report_bad_input(lambda: 1 / 0) == 3
    assert capsys.readouterr().err.startswith("internal error: ZeroDivisionError")


@pytest.mark.parametrize("content, name, what", [
    (b"hello\n", "w.keras", "its bytes are text"),
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "w.keras", "its bytes are a PNG image"),
    (b"PK\x03\x04" + bytes(20), "w.keras", "damaged zip archive"),
    (b"", "w.keras", "an empty file"),
    (b"hello\n", "w.weights.h5", "not an HDF5 weights file: its bytes are text"),
    (b"\xff\xd8\xff\xe0" + bytes(30), "w.h5", "a JPEG image"),
])
def test_a_weights_file_that_is_not_one_says_what_it_is(tmp_path, content, name, what):
    """Keras reports any .keras file it cannot open as "File not found", even one that exists."""
    from models.weights import WeightsMismatchError, check_weights_content

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(WeightsMismatchError, match=what):
        check_weights_content(path)


def test_predict_with_a_non_keras_weights_file_names_what_it_is(tmp_path, capsys):
    from reproduce.__main__ import main as reproduce_main

    weights = tmp_path / "model.keras"
    weights.write_text("not a model")
    (tmp_path / "images").mkdir()
    assert reproduce_main(["cns", "predict", "--images", str(tmp_path / "images"),
                           "--weights", str(weights)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "its bytes are text" in line and "File not found" not in line


def test_oversized_csv_field_names_row_and_column(tmp_path, capsys):
    import csv

    path = tmp_path / "manifest.csv"
    limit = csv.field_size_limit()
    path.write_text("image_path,case_id,label\na.png,c1,normal\nb.png,c2," + "x" * (limit + 5) + "\n")
    assert data_prep_main(["manifest", "--check", str(path)]) == 2
    line = capsys.readouterr().err.strip()
    assert line == (f"error: {path}, row 2, column 'label': a cell of {limit + 5:,} characters, "
                    f"above the {limit:,} a CSV field may hold (line 3)")
    assert csv.field_size_limit() == limit   # the limit is restored


def test_nul_byte_in_manifest_names_the_row(tmp_path, capsys):
    path = tmp_path / "manifest.csv"
    path.write_bytes(b"image_path,case_id,label\na.png,c1,normal\nb.png,c\x002,normal\n")
    code = data_prep_main(["manifest", "--check", str(path)])
    line = capsys.readouterr().err.strip()
    assert code == 2 and line.startswith(f"error: {path}")
    assert "Traceback" not in line
