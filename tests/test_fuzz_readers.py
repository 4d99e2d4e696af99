"""Fuzzing every reader of user input with hypothesis (issue "Trust", part 1).

Readers: the manifest CSV (data_prep.manifest), the splits CSV (data_prep.splits), the reader
CSVs (reproduce.pgds.readers, reproduce.cns.readers), image bytes (PNG, JPEG) and DICOM bytes
(data_prep.io). Each gets random bytes and bytes mutated from a valid file (bytes flipped,
inserted, deleted, cut short, a line doubled or dropped). The contract: the reader returns (a
mutation can leave a file valid) or raises `InputError` whose message is ONE line naming the
file; never another exception, and no example slower than its deadline (a hang). A few
command-line runs (`python -m data_prep audit`) show the same inputs give exit 2, one stderr
line and no traceback.

Reproducible: `derandomize=True` (the examples are a function of the test), no example
database; the default example count (150 per reader) keeps the file well under a minute on 2 CPU cores.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from data_prep import io  # noqa: E402
from data_prep.errors import EXIT_BAD_INPUT, InputError, report_bad_input  # noqa: E402
from data_prep.manifest import load_manifest  # noqa: E402
from data_prep.splits import load_splits  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# SCREENING_FUZZ_EXAMPLES=5000 for a longer hunt than the default suite's.
EXAMPLES = int(os.environ.get("SCREENING_FUZZ_EXAMPLES", "150"))
FUZZ = settings(derandomize=True, database=None, deadline=3000, max_examples=EXAMPLES,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

GRAY = cv2.GaussianBlur((np.random.default_rng(3).random((24, 32)) * 255).astype(np.uint8), (5, 5), 0)


def _encoded(suffix: str) -> bytes:
    ok, data = cv2.imencode(suffix, GRAY)
    assert ok
    return data.tobytes()


def _dicom_bytes(folder: Path) -> bytes:
    return io.write_dicom_grayscale(folder / "valid.dcm", GRAY).read_bytes()


MANIFEST = (b"image_path,case_id,label,gestational_week\n"
            b"images/a.png,case1,normal,20\nimages/b.jpg,case2,genetic_disease,22.5\n")
SPLITS = (b"image_path,case_id,split,fold\nimages/a.png,case1,train,0\n"
          b"images/b.jpg,case2,test,0\nimages/a.png,case1,test,1\nimages/b.jpg,case2,train,1\n")
PGDS_READERS = b"image_path,reader,reader_level,call\nimages/b.jpg,r1,junior,1\nimages/b.jpg,r2,senior,0\n"
CNS_READERS = (b"case_id,reader,reader_level,with_ai,call,seconds\np1,r1,junior,0,normal,12\n"
               b"p1,r1,junior,1,anencephaly,9.5\n")
CNS_CLASSES = ("normal", "anencephaly", "encephalocele", "holoprosencephaly", "rachischisis")


# ----------------------------------------------------------------------------- mutations

@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """`valid` after 1-4 random edits: flip, insert, delete, cut, or double/drop a line."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut", "line"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif kind == "cut":
            del data[at:]
        else:
            lines = bytes(data).split(b"\n")
            index = draw(st.integers(0, len(lines) - 1))
            lines[index:index + 1] = [] if draw(st.booleans()) else [lines[index]] * 2
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def fuzzed(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, random text (CSV-looking), or `valid` mutated."""
    text = st.text(st.sampled_from(list(",\n\r\"' ;\t0123456789.-eE") + ["a", "é", "\x00", "\ufeff"]),
                   max_size=200).map(lambda s: s.encode("utf-8"))
    return st.one_of(st.binary(max_size=400), text, mutated(valid))


def assert_contract(read: Callable[[Path], object], path: Path) -> None:
    """`read(path)` returns, or raises InputError: one line naming `path`; nothing else."""
    try:
        read(path)
    except InputError as err:
        line = err.one_line()
        assert "\n" not in line and "\r" not in line, repr(line)
        assert str(path) in line, line
        # the CLI contract: report_bad_input turns it into exit 2
        assert report_bad_input(lambda: read(path)) == EXIT_BAD_INPUT


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A folder with images/a.png and images/b.jpg (valid) that the fuzzed CSVs name."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "images").mkdir()
    (folder / "images/a.png").write_bytes(_encoded(".png"))
    (folder / "images/b.jpg").write_bytes(_encoded(".jpg"))
    return folder


def _put(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _pgds_images() -> pd.DataFrame:
    return pd.DataFrame({"image_path": ["images/a.png", "images/b.jpg"], "case_id": ["case1", "case2"],
                         "split": ["train", "test"]})


# ----------------------------------------------------------------------------- in-process

def test_valid_inputs_are_read(study, tmp_path):
    """The seeds of the mutations are valid: a mutation that breaks one is a real test."""
    assert len(load_manifest(_put(study, "m.csv", MANIFEST))) == 2
    assert len(load_splits(_put(study, "s.csv", SPLITS))) == 4
    from reproduce.cns.readers import load_reader_csv as cns_readers
    from reproduce.pgds.readers import load_reader_csv as pgds_readers

    assert len(pgds_readers(_put(study, "r.csv", PGDS_READERS), _pgds_images())) == 2
    assert len(cns_readers(_put(study, "c.csv", CNS_READERS), ["p1"], CNS_CLASSES)) == 2
    for name, data in [("x.png", _encoded(".png")), ("x.jpg", _encoded(".jpg")),
                       ("x.dcm", _dicom_bytes(tmp_path))]:
        assert io.read_grayscale(_put(tmp_path, name, data)).shape == GRAY.shape


@FUZZ
@given(data=fuzzed(MANIFEST))
def test_fuzz_manifest(study, data):
    assert_contract(load_manifest, _put(study, "manifest_fuzz.csv", data))


@FUZZ
@given(data=fuzzed(SPLITS))
def test_fuzz_splits(study, data):
    assert_contract(load_splits, _put(study, "splits_fuzz.csv", data))


@FUZZ
@given(data=fuzzed(PGDS_READERS))
def test_fuzz_pgds_reader_csv(study, data):
    from reproduce.pgds.readers import load_reader_csv

    assert_contract(lambda p: load_reader_csv(p, _pgds_images()), _put(study, "readers_fuzz.csv", data))


@FUZZ
@given(data=fuzzed(CNS_READERS))
def test_fuzz_cns_reader_csv(study, data):
    from reproduce.cns.readers import load_reader_csv

    assert_contract(lambda p: load_reader_csv(p, ["p1"], CNS_CLASSES),
                    _put(study, "cns_readers_fuzz.csv", data))


def _read_image(path: Path) -> None:
    io.verify_image(path)
    io.read_grayscale(path)


IMAGE_KINDS = [("png", ".png"), ("jpeg", ".jpg")]


@FUZZ
@pytest.mark.parametrize("kind,suffix", IMAGE_KINDS, ids=[k for k, _ in IMAGE_KINDS])
@given(data=st.data())
def test_fuzz_image_bytes(kind, suffix, tmp_path, data):
    raw = data.draw(st.one_of(st.binary(max_size=400), mutated(_encoded(suffix))))
    assert_contract(_read_image, _put(tmp_path, f"fuzz{suffix}", raw))


@pytest.fixture(scope="module")
def valid_dicom(tmp_path_factory) -> bytes:
    return _dicom_bytes(tmp_path_factory.mktemp("dicom"))


@FUZZ
@given(data=st.data())
def test_fuzz_dicom_bytes(valid_dicom, tmp_path, data):
    raw = data.draw(st.one_of(mutated(valid_dicom), st.binary(max_size=200).map(
        lambda tail: valid_dicom[:132] + tail)))   # the preamble + DICM, then garbage

    def read(path: Path) -> None:
        _read_image(path)
        io.count_frames(path)

    assert_contract(read, _put(tmp_path, "fuzz.dcm", raw))


# ----------------------------------------------------------------------------- the CLI

def _first_bad(valid: bytes, read: Callable[[Path], object], folder: Path, name: str, seed: int) -> Path:
    """The first of a seeded series of mutations of `valid` that `read` refuses."""
    rng = np.random.default_rng(seed)
    for _ in range(500):
        data = bytearray(valid)
        for _ in range(3):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        path = _put(folder, name, bytes(data))
        try:
            read(path)
        except InputError:
            return path
    raise AssertionError(f"no refused mutation of {name} in 500 tries")


def _cli(folder: Path, manifest: str = "m.csv", splits: str = "s.csv") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep", "audit", "--manifest", manifest,
                           "--splits", splits], cwd=folder, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


CLI_CASES = ["manifest", "splits", "image", "dicom"]


@pytest.mark.parametrize("what", CLI_CASES)
def test_cli_gives_exit_2_and_one_line(what, tmp_path):
    """`python -m data_prep audit` over a refused mutation: exit 2, one line, no traceback."""
    (tmp_path / "images").mkdir()
    _put(tmp_path, "images/a.png", _encoded(".png"))
    _put(tmp_path, "images/b.jpg", _encoded(".jpg"))
    _put(tmp_path, "m.csv", MANIFEST)
    _put(tmp_path, "s.csv", SPLITS)
    if what == "manifest":
        _first_bad(MANIFEST, load_manifest, tmp_path, "m.csv", seed=1)
    elif what == "splits":
        _first_bad(SPLITS, load_splits, tmp_path, "s.csv", seed=2)
    elif what == "image":
        _first_bad(_encoded(".png"), _read_image, tmp_path, "images/a.png", seed=3)
    else:
        io.write_dicom_grayscale(tmp_path / "images/a.dcm", GRAY)
        _put(tmp_path, "m.csv", MANIFEST.replace(b"a.png", b"a.dcm"))
        _put(tmp_path, "s.csv", SPLITS.replace(b"a.png", b"a.dcm"))
        _first_bad((tmp_path / "images/a.dcm").read_bytes(), _read_image, tmp_path, "images/a.dcm", seed=4)
    result = _cli(tmp_path)
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
