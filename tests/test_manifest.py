"""Manifest: bad manifests exit 2 with one line naming file, row and column, writing nothing;
good ones round-trip; --from-folders builds the authors' sample layout; --case-pattern groups."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep.__main__ import main as data_prep_main
from data_prep.errors import InputError
from data_prep.io import write_dicom_grayscale
from data_prep.manifest import (OPTIONAL_COLUMNS, REQUIRED_COLUMNS, load_manifest,
                                manifest_from_folders, parse_landmarks, summarize,
                                validate_manifest, write_manifest)


def cli(argv: list[str]) -> int:
    """`python -m data_prep manifest ...` in-process, as the console would run it."""
    return data_prep_main(["manifest", *argv])


def _gray(seed: int, shape=(40, 44)) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


@pytest.fixture()
def images(tmp_path) -> Path:
    """tmp/img with good files a.png, b.png, c.jpg, d.dcm and broken ones."""
    folder = tmp_path / "img"
    folder.mkdir()
    for index, name in enumerate(("a.png", "b.png", "c.jpg", "m.png")):
        assert cv2.imwrite(str(folder / name), _gray(index))
    write_dicom_grayscale(folder / "d.dcm", np.stack([_gray(5), _gray(6)]))
    data = (folder / "c.jpg").read_bytes()
    (folder / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (folder / "noise.png").write_bytes(np.random.default_rng(1).bytes(500))
    (folder / "notes.txt").write_text("not an image\n")
    return tmp_path


GOOD = ("image_path,case_id,label\n"
        "img/a.png,c1,normal\n"
        "img/b.png,c2,genetic_disease\n"
        "img/c.jpg,c2,genetic_disease\n")

# (id, manifest text (None: the file is absent), extra argv, row, column, message fragment)
BAD = [
    ("file_missing", None, [], None, None, "manifest not found"),
    ("empty_file", "", [], None, None, "empty manifest"),
    ("header_only", "image_path,case_id,label\n", [], None, None, "no rows"),
    ("missing_required_column", "image_path,case_id\nimg/a.png,c1\n", [], None, "label",
     "missing required column"),
    ("duplicate_column", "image_path,case_id,label,label\nimg/a.png,c1,normal,normal\n", [],
     None, "label", "twice"),
    ("wrong_field_count", "image_path,case_id,label\nimg/a.png,c1,normal\nimg/b.png,c2\n", [], 2,
     None, "has 2 fields"),
    ("empty_case_id", "image_path,case_id,label\nimg/a.png,c1,normal\nimg/b.png,,normal\n", [], 2,
     "case_id", "missing case_id"),
    ("empty_label", "image_path,case_id,label\nimg/a.png,c1,\n", [], 1, "label", "missing label"),
    ("unknown_label", "image_path,case_id,label\nimg/a.png,c1,normal\nimg/b.png,c2,T21\n",
     ["--labels", "normal,genetic_disease"], 2, "label",
     "unknown label 'T21' (allowed: normal, genetic_disease)"),
    ("case_with_two_labels", "image_path,case_id,label\nimg/a.png,c1,normal\n"
     "img/b.png,c1,genetic_disease\n", [], 2, "label", "labelled 'normal' in row 1"),
    ("duplicate_image_path", "image_path,case_id,label\nimg/a.png,c1,normal\nimg/b.png,c2,normal\n"
     "./img//a.png,c3,normal\n", [], 3, "image_path", "rows 1 and 3"),
    ("empty_image_path", "image_path,case_id,label\n,c1,normal\n", [], 1, "image_path",
     "missing image_path"),
    ("image_missing", "image_path,case_id,label\nimg/a.png,c1,normal\nimg/zzz.png,c2,normal\n", [],
     2, "image_path", "image file not found"),
    ("image_truncated", "image_path,case_id,label\nimg/a.png,c1,normal\nimg/trunc.jpg,c2,normal\n",
     [], 2, "image_path", "truncated JPEG"),
    ("image_random_bytes", "image_path,case_id,label\nimg/noise.png,c1,normal\n", [], 1,
     "image_path", "not a readable image"),
    ("non_image_file", "image_path,case_id,label\nimg/a.png,c1,normal\nimg/notes.txt,c2,normal\n",
     [], 2, "image_path", "not an image"),
    ("image_is_folder", "image_path,case_id,label\nimg,c1,normal\n", [], 1, "image_path",
     "is a folder"),
    ("gestational_week_text", "image_path,case_id,label,gestational_week\nimg/a.png,c1,normal,24\n"
     "img/b.png,c2,normal,twenty\n", [], 2, "gestational_week", "'twenty' is not a number"),
    ("gestational_week_range", "image_path,case_id,label,gestational_week\n"
     "img/a.png,c1,normal,240\n", [], 1, "gestational_week", "outside 0-45"),
    ("age_months_negative", "image_path,case_id,label,age_months\nimg/a.png,c1,normal,-3\n", [], 1,
     "age_months", "outside"),
    ("landmarks_nine", "image_path,case_id,label,landmarks\nimg/a.png,c1,normal,1 2 3 4 5 6 7 8 9\n",
     [], 1, "landmarks", "10 numbers"),
    ("landmarks_text", "image_path,case_id,label,landmarks\n"
     "img/a.png,c1,normal,1 2 3 4 5 6 7 8 9 x\n", [], 1, "landmarks", "'x' is not a number"),
    ("mask_missing", "image_path,case_id,label,mask_path\nimg/a.png,c1,normal,img/nomask.png\n", [],
     1, "mask_path", "not found"),
    # The first error in file order wins: row 1's missing image before row 2's bad number,
    # and within a row the column order of the header decides.
    ("first_error_in_file_order", "image_path,case_id,label,gestational_week\n"
     "img/gone.png,c1,normal,20\nimg/b.png,c2,normal,abc\n", [], 1, "image_path", "not found"),
    ("first_error_within_row", "label,case_id,image_path\nnormal,,img/gone.png\n", [], 1,
     "case_id", "missing case_id"),
]


@pytest.mark.parametrize("name, text, extra, row, column, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_manifest_exits_2_with_one_line(images, capsys, name, text, extra, row, column,
                                            fragment):
    manifest = images / f"{name}.csv"
    if text is not None:
        manifest.write_text(text)
    before = sorted(p.name for p in images.rglob("*"))
    assert cli(["--check", str(manifest), *extra]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("error: ") and str(manifest) in line
    assert fragment in line
    if row is not None:
        assert f"row {row}," in line or f"row {row}:" in line
    else:
        assert "row " not in line.split(": ")[1]
    if column is not None:
        assert f"column '{column}'" in line
    assert captured.out == ""
    assert sorted(p.name for p in images.rglob("*")) == before  # nothing written


def test_good_manifest_round_trip(images, capsys):
    manifest = images / "good.csv"
    manifest.write_text("image_path,case_id,label,subtype,gestational_week,age_months,landmarks,"
                        "center,extra_note\n"
                        "img/a.png,c1,normal,normal,24.5,,,GZ,first\n"
                        "img/b.png , c2 ,genetic_disease,T21,,7,\"1,2,3,4,5,6,7,8,9,10\",GZ,\n"
                        "img/d.dcm,c3,genetic_disease,T18,30,,1 2 3 4 5 6 7 8 9 10.5,SZ,\n"
                        "\n")  # a trailing blank line is not a row
    frame = load_manifest(manifest, labels=["normal", "genetic_disease"])
    assert len(frame) == 3 and list(frame.index) == [0, 1, 2]
    assert list(frame.columns)[:9] == ["image_path", "case_id", "label", "subtype",
                                       "gestational_week", "age_months", "landmarks", "center",
                                       "extra_note"]
    assert frame["image_path"].tolist() == ["img/a.png", "img/b.png", "img/d.dcm"]
    assert frame["case_id"].tolist() == ["c1", "c2", "c3"]
    assert frame["gestational_week"].dtype == np.float64
    assert frame["gestational_week"].iloc[0] == 24.5 and math.isnan(frame["gestational_week"].iloc[1])
    assert frame["age_months"].iloc[1] == 7.0
    assert frame["landmarks"].iloc[0] is None
    assert frame["landmarks"].iloc[1] == tuple(float(v) for v in range(1, 11))
    assert frame["landmarks"].iloc[2][-1] == 10.5
    assert frame["abs_path"].tolist() == [str((images / p).resolve()) for p in
                                          ("img/a.png", "img/b.png", "img/d.dcm")]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["abs_path"])
    assert frame.attrs["path"] == str(manifest)
    # Revalidating the loaded frame gives the same frame (numbers and tuples parse back).
    again = validate_manifest(frame.drop(columns="abs_path"), manifest)
    pd.testing.assert_frame_equal(again, frame)
    # Written back and reloaded: identical.
    copy = write_manifest(frame, images / "copy.csv")
    pd.testing.assert_frame_equal(load_manifest(copy).drop(columns="abs_path"),
                                  frame.drop(columns="abs_path"))
    assert "abs_path" not in pd.read_csv(copy).columns
    assert cli(["--check", str(manifest), "--labels", "normal,genetic_disease"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"ok: {manifest}: 3 rows, 3 cases; labels: genetic_disease 2, normal 1"


def test_columns_constants_match_the_data_contract():
    assert REQUIRED_COLUMNS == ("image_path", "case_id", "label")
    assert set(OPTIONAL_COLUMNS) == {"subtype", "gestational_week", "center", "age_months", "sex",
                                     "landmarks", "mask_path", "phi_mask_path", "view"}


def test_check_images_false_touches_no_image(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("image_path,case_id,label\nnowhere/a.png,c1,normal\n")
    frame = load_manifest(manifest, check_images=False)
    assert frame["abs_path"].iloc[0] == str(tmp_path.resolve() / "nowhere" / "a.png")
    with pytest.raises(InputError, match="row 1, column 'image_path'"):
        load_manifest(manifest)


@pytest.mark.parametrize("text, expected", [
    ("1 2 3 4 5 6 7 8 9 10", tuple(range(1, 11))),
    ("1,2,3,4,5,6,7,8,9,10", tuple(range(1, 11))),
    ("[1; 2; 3; 4; 5; 6; 7; 8; 9; 10]", tuple(range(1, 11))),
    (" 0.5  -1e1 3 4 5 6 7 8 9 10 ", (0.5, -10.0, 3, 4, 5, 6, 7, 8, 9, 10)),
])
def test_parse_landmarks(text, expected):
    assert parse_landmarks(text) == tuple(float(v) for v in expected)


@pytest.mark.parametrize("text", ["", "1 2 3", "1 2 3 4 5 6 7 8 9 10 11", "1 2 3 4 5 6 7 8 9 nan",
                                  "1 2 3 4 5 6 7 8 9 inf"])
def test_parse_landmarks_rejects(text):
    with pytest.raises(ValueError):
        parse_landmarks(text)


# --------------------------------------------------------------------------- from folders

@pytest.mark.shared_data
def test_from_folders_on_the_authors_sample(pgds_sample_dir, tmp_path, capsys):
    out = tmp_path / "sample_manifest.csv"
    assert cli(["--from-folders", str(pgds_sample_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"wrote {out}: 8 rows, 8 cases; labels: genetic_disease 4, normal 4")
    frame = load_manifest(out, labels=["normal", "genetic_disease"])
    assert len(frame) == 8 and frame["case_id"].nunique() == 8
    assert frame["label"].value_counts().to_dict() == {"normal": 4, "genetic_disease": 4}
    assert frame["image_path"].tolist() == sorted(frame["image_path"])
    assert set(frame["case_id"]) == {p.stem for p in pgds_sample_dir.glob("*/*.jpg")}
    for _, row in frame.iterrows():
        assert Path(row["abs_path"]).parent.name == row["label"]
        assert Path(row["abs_path"]).resolve() == (out.parent / row["image_path"]).resolve()
    # Deterministic: building again gives byte-identical output; without --force it refuses.
    first = out.read_bytes()
    assert cli(["--from-folders", str(pgds_sample_dir), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli(["--from-folders", str(pgds_sample_dir), "--out", str(out), "--force"]) == 0
    assert out.read_bytes() == first


def _label_tree(root: Path, files: dict[str, list[str]]) -> None:
    for label, names in files.items():
        for index, name in enumerate(names):
            path = root / label / name
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), _gray(index)) if not name.endswith(".dcm") else \
                write_dicom_grayscale(path, _gray(index))


@pytest.mark.parametrize("pattern, expected_cases", [
    (None, ["p01_f1", "p01_f2", "p02_f1", "p07_f1", "p07_f2", "p07_f3"]),
    (r"^(p\d+)_", ["p01", "p01", "p02", "p07", "p07", "p07"]),
    (r"_f(?P<frame>\d)|(?P<case>p\d+)", ["p01", "p01", "p02", "p07", "p07", "p07"]),
])
def test_case_pattern_groups_files_into_cases(tmp_path, pattern, expected_cases):
    root = tmp_path / "data"
    _label_tree(root, {"normal": ["p01_f1.png", "p01_f2.png", "p02_f1.jpg"],
                       "genetic_disease": ["p07_f1.png", "p07_f2.PNG", "p07_f3.dcm"]})
    (root / "normal" / "readme.txt").write_text("ignored: not an image")
    (root / "normal" / ".hidden.png").write_bytes(b"ignored: hidden")
    frame = manifest_from_folders(root, case_pattern=pattern)
    ordered = frame.sort_values("case_id", kind="stable")
    assert ordered["case_id"].tolist() == expected_cases
    assert frame["image_path"].tolist() == sorted(frame["image_path"])
    assert frame["image_path"].iloc[0] == "genetic_disease/p07_f1.png"  # relative to root
    assert set(frame["label"]) == {"normal", "genetic_disease"}
    argv = ["--from-folders", str(root)] + (["--case-pattern", pattern] if pattern else [])
    assert cli(argv) == 0
    written = load_manifest(root / "manifest.csv")
    assert written["case_id"].nunique() == len(set(expected_cases))


def test_nested_case_folders_and_suffixless_dicom(tmp_path):
    root = tmp_path / "data"
    _label_tree(root, {"normal": ["caseA/1.png", "caseB/1.png"], "genetic_disease": ["caseC/1.png"]})
    write_dicom_grayscale(root / "normal" / "caseA" / "IM0002", _gray(9))
    frame = manifest_from_folders(root, out=tmp_path / "elsewhere" / "m.csv")
    assert frame["case_id"].tolist() == ["caseC/1", "caseA/1", "caseA/IM0002", "caseB/1"]
    assert frame["image_path"].iloc[0] == "../data/genetic_disease/caseC/1.png"
    with pytest.raises(InputError, match="case '1.png' is under label 'normal'"):
        manifest_from_folders(root, case_pattern=r"(.*)")  # same name in two label folders


@pytest.mark.parametrize("setup, argv_extra, fragment", [
    ("nomatch", ["--case-pattern", r"^(p\d+)_"], "does not match --case-pattern"),
    ("nomatch", ["--case-pattern", r"(p\d+"], "not a valid regular expression"),
    ("nomatch", ["--case-pattern", r"(p)(\d+)"], "exactly one group"),
    ("same_case_two_labels", [], "under label"),
    ("image_at_top", [], "directly in the root folder"),
    ("empty", [], "no image files found"),
    ("corrupt_image", [], "truncated JPEG"),
    ("exists", [], "already exists"),
])
def test_from_folders_errors_write_nothing(tmp_path, capsys, setup, argv_extra, fragment):
    root = tmp_path / "data"
    root.mkdir()
    if setup == "nomatch":
        _label_tree(root, {"normal": ["p01_f1.png", "scan.png"]})
    elif setup == "same_case_two_labels":
        _label_tree(root, {"normal": ["x.png"], "genetic_disease": ["x.png"]})
    elif setup == "image_at_top":
        _label_tree(root, {"normal": ["x.png"]})
        assert cv2.imwrite(str(root / "stray.png"), _gray(1))
    elif setup == "empty":
        (root / "normal").mkdir()
        (root / "normal" / "notes.txt").write_text("x")
    elif setup == "corrupt_image":
        _label_tree(root, {"normal": ["x.jpg"]})
        data = (root / "normal" / "x.jpg").read_bytes()
        (root / "normal" / "x.jpg").write_bytes(data[:200])
    elif setup == "exists":
        _label_tree(root, {"normal": ["x.png"]})
        (root / "manifest.csv").write_text("keep me\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert cli(["--from-folders", str(root), *argv_extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0]
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_check_rejects_from_folders_only_flags(images, capsys):
    manifest = images / "good.csv"
    manifest.write_text(GOOD)
    assert cli(["--check", str(manifest), "--force"]) == 2
    assert "only apply to --from-folders" in capsys.readouterr().err


def test_summarize():
    frame = pd.DataFrame({"image_path": ["a", "b", "c"], "case_id": ["1", "1", "2"],
                          "label": ["x", "x", "y"]})
    assert summarize(frame) == "3 rows, 2 cases; labels: x 2, y 1"


def test_check_of_3000_images_reads_headers_not_pixels(tmp_path, monkeypatch):
    """Header/CRC checks, not full decodes: 3,000 440x400 JPEG+PNG rows, none decoded, and
    checking a row costs well under decoding it (ratio measured in this run: ~15x here)."""
    import data_prep.io as image_io

    folder = tmp_path / "many"
    folder.mkdir()
    base = cv2.GaussianBlur(_gray(0, (400, 440)), (0, 0), 3)
    sources = {"jpg": tmp_path / "src.jpg", "png": tmp_path / "src.png"}
    for suffix, source in sources.items():
        source.write_bytes(cv2.imencode(f".{suffix}", base)[1].tobytes())
    rows = ["image_path,case_id,label"]
    for index in range(3000):
        suffix = "jpg" if index % 3 else "png"
        name = f"f{index:04d}.{suffix}"
        os.link(sources[suffix], folder / name)  # 3,000 files without 60 MB of writes
        rows.append(f"many/{name},case{index // 4},{'normal' if (index // 4) % 2 else 'genetic_disease'}")
    manifest = tmp_path / "big.csv"
    manifest.write_text("\n".join(rows) + "\n")
    decodes = []
    real_decode = image_io._decode_with_cv2
    monkeypatch.setattr(image_io, "_decode_with_cv2",
                        lambda *args: decodes.append(args[0]) or real_decode(*args))
    start = time.perf_counter()
    frame = load_manifest(manifest, labels=["normal", "genetic_disease"])
    check_per_row = (time.perf_counter() - start) / len(frame)
    assert len(frame) == 3000 and decodes == []
    sample = [folder / Path(path).name for path in frame["image_path"][:300]]
    start = time.perf_counter()
    for path in sample:
        image_io.read_grayscale(path)
    decode_per_row = (time.perf_counter() - start) / len(sample)
    assert len(decodes) == len(sample)  # the counter sees decodes, so `decodes == []` can fail
    assert check_per_row < decode_per_row / 3, (
        f"checking a row {check_per_row * 1e6:.0f} us vs decoding it {decode_per_row * 1e6:.0f} us")


def test_console_exit_code_and_single_stderr_line(images, repo_root):
    """The real process: `python -m data_prep manifest --check` exits 2 with one stderr line."""
    import subprocess
    import sys

    manifest = images / "bad.csv"
    manifest.write_text("image_path,case_id,label\nimg/a.png,,normal\n")
    done = subprocess.run([sys.executable, "-m", "data_prep", "manifest", "--check", str(manifest)],
                          cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    # OpenCV itself warns at import when OPENCV_CPU_DISABLE names a feature this CPU lacks (the
    # portability check's environment on a CPU without AVX-512); that line is not ours.
    ours = [line for line in done.stderr.splitlines()
            if not line.startswith("OPENCV: Trying to disable unavailable CPU feature")]
    assert ours == [f"error: {manifest}, row 1, column 'case_id': missing case_id"]
