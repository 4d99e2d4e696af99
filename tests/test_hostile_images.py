"""Image files that lie: about their type (a BMP, TIFF or DICOM named .png/.jpg) and about their
size (a decompression bomb: a small file that declares 30000 x 30000 pixels).

Issue "Trust", part 1: such a file passed `manifest --check` and then crashed TensorFlow's
decoder, or grew `deidentify` past 14 GB. Every reader now decides the format from the bytes
and compares the size a file declares with a pixel limit before decoding anything.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import struct  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from data_prep import io  # noqa: E402
from data_prep.__main__ import main as data_prep_main  # noqa: E402

GRAY = cv2.GaussianBlur((np.random.default_rng(7).random((48, 64)) * 255).astype(np.uint8),
                        (5, 5), 0)


def _write(kind: str, path: Path, array: np.ndarray = GRAY) -> Path:
    """`array` saved as `kind` (bmp, tiff, dicom, png, jpeg) under `path`, whatever its suffix."""
    if kind == "dicom":
        io.write_dicom_grayscale(path, array)
        return path
    ok, data = cv2.imencode({"bmp": ".bmp", "tiff": ".tif", "png": ".png", "jpeg": ".jpg"}[kind], array)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A structurally valid PNG of a few kB that declares width x height 8-bit RGBA pixels."""
    row = b"\x00" + bytes(4 * width)
    body = zlib.compress(row * 64, 9)   # only a few rows: decoding would fail late, and huge
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))
    path.write_bytes(data)
    return path


def jpeg_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A small real JPEG whose frame header is rewritten to declare width x height."""
    ok, encoded = cv2.imencode(".jpg", GRAY)
    data = bytearray(encoded.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


# ----------------------------------------------------------------------------- type by content


@pytest.mark.parametrize("kind, name", [("bmp", "frame.png"), ("tiff", "frame.jpg"),
                                        ("dicom", "frame.png"), ("png", "frame.jpg"),
                                        ("jpeg", "frame.png")])
def test_format_comes_from_the_bytes_not_the_name(tmp_path, kind, name):
    path = _write(kind, tmp_path / name)
    assert io.image_format(path) == kind
    assert io.verify_image(path).kind == kind
    assert np.array_equal(io.read_grayscale(path), GRAY if kind != "jpeg" else io.read_grayscale(path))


@pytest.mark.parametrize("kind, name", [("bmp", "frame.png"), ("tiff", "frame.jpg"),
                                        ("dicom", "frame.png"), ("png", "frame.jpg")])
def test_pipeline_decodes_a_misnamed_file_as_what_it_is(tmp_path, kind, name):
    """Before: a BMP named .png went to tf.io.decode_png and crashed the input pipeline."""
    from reproduce import input_pipeline as pipe

    path = _write(kind, tmp_path / name)
    assert pipe.uses_tf_decoder(str(path)) == (kind == "png")
    table = pipe.ImageTable((str(path),), np.zeros(1, np.int64))
    spec = pipe.PipelineSpec(size_wh=(64, 48), channels=1, num_classes=2)
    (image, _), = pipe.eval_dataset(table, spec, batch_size=1).as_numpy_iterator()
    expected = (GRAY - GRAY.min()) / float(GRAY.max() - GRAY.min())
    np.testing.assert_allclose(image[0, ..., 0], expected, atol=1e-6)


def test_text_named_png_is_refused_by_the_pipeline_with_its_name(tmp_path):
    from reproduce import input_pipeline as pipe

    path = tmp_path / "notes.png"
    path.write_text("patient list\n")
    assert not pipe.uses_tf_decoder(str(path))
    with pytest.raises(Exception, match="notes.png"):
        table = pipe.ImageTable((str(path),), np.zeros(1, np.int64))
        spec = pipe.PipelineSpec(size_wh=(64, 48), channels=1, num_classes=2)
        list(pipe.eval_dataset(table, spec, batch_size=1).as_numpy_iterator())


# ----------------------------------------------------------------------------- decompression bombs


@pytest.mark.parametrize("make", [png_bomb, jpeg_bomb], ids=["png", "jpeg"])
@pytest.mark.parametrize("reader", [io.verify_image, io.read_grayscale],
                         ids=["verify_image", "read_grayscale"])
def test_bomb_is_refused_before_decoding(tmp_path, make, reader):
    path = make(tmp_path / "bomb.png")
    assert path.stat().st_size < 1_000_000
    with pytest.raises(io.ImageReadError, match=r"bomb\.png.*30000x30000 = 900,000,000 pixels.*"
                                                r"limit of 40,000,000"):
        reader(path)


@pytest.mark.parametrize("kind", ["png", "jpeg", "bmp", "tiff", "dicom"])
def test_every_format_obeys_the_limit_and_the_env_raises_it(tmp_path, monkeypatch, kind):
    path = _write(kind, tmp_path / f"frame.{kind}")
    pixels = GRAY.size
    monkeypatch.setenv(io.MAX_PIXELS_ENV, str(pixels - 1))
    for reader in (io.verify_image, io.read_grayscale):
        with pytest.raises(io.ImageReadError, match=f"{GRAY.shape[1]}x{GRAY.shape[0]}"):
            reader(path)
    monkeypatch.setenv(io.MAX_PIXELS_ENV, str(pixels))
    assert io.verify_image(path).width == GRAY.shape[1]
    assert io.read_grayscale(path).shape == GRAY.shape


@pytest.mark.parametrize("value", ["lots", "0", "-5"])
def test_bad_limit_is_one_line_bad_input(monkeypatch, value, tmp_path):
    from data_prep.errors import InputError

    monkeypatch.setenv(io.MAX_PIXELS_ENV, value)
    with pytest.raises(InputError, match=io.MAX_PIXELS_ENV):
        io.verify_image(_write("png", tmp_path / "a.png"))


def _manifest(folder: Path, names: list[str]) -> Path:
    rows = [{"image_path": name, "case_id": f"c{i}", "label": "normal"} for i, name in enumerate(names)]
    path = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_manifest_check_refuses_a_bomb_and_max_pixels_admits_a_large_frame(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(io.MAX_PIXELS_ENV, raising=False)
    _write("png", tmp_path / "ok.png")
    png_bomb(tmp_path / "bomb.png")
    assert data_prep_main(["manifest", "--check", str(_manifest(tmp_path, ["ok.png", "bomb.png"]))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "bomb.png" in err[-1] and "decompression bomb" in err[-1] and "Traceback" not in "\n".join(err)
    # A large but honest frame: refused at a low limit, admitted when --max-pixels raises it.
    big = np.zeros((600, 800), np.uint8)
    _write("png", tmp_path / "big.png", big)
    manifest = _manifest(tmp_path, ["ok.png", "big.png"])
    assert data_prep_main(["manifest", "--check", str(manifest), "--max-pixels", "100000"]) == 2
    assert "big.png" in capsys.readouterr().err
    assert data_prep_main(["manifest", "--check", str(manifest), "--max-pixels", "480000"]) == 0


def test_deidentify_refuses_a_bomb_in_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(io.MAX_PIXELS_ENV, raising=False)
    images = tmp_path / "in"
    images.mkdir()
    png_bomb(images / "bomb.png")
    out = tmp_path / "out"
    code = data_prep_main(["deidentify", "--images", str(images), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "bomb.png" in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*.png"))


def test_tiff_header_is_read_without_decoding(tmp_path):
    """The TIFF size comes from Pillow's lazy open (first IFD), checked against what cv2 reads."""
    path = tmp_path / "t.tif"
    Image.fromarray(GRAY).save(path)
    assert io._declared_size(path, path.read_bytes(), "tiff") == (GRAY.shape[1], GRAY.shape[0])


@pytest.mark.parametrize("fraction", [0.95, 0.7, 0.45])
def test_truncated_compressed_dicom_says_truncated_not_no_pixel_data(tmp_path, fraction):
    """Before: pydicom drops an encapsulated element the file ends inside (a warning only),
    and the reader said "DICOM file has no PixelData element"."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    whole = tmp_path / "whole.dcm"
    io.write_dicom_grayscale(whole, GRAY)
    ds = pydicom.dcmread(whole)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([cv2.imencode(".jpg", GRAY)[1].tobytes()])
    ds["PixelData"].VR = "OB"
    ds.save_as(whole, enforce_file_format=True)
    assert io.verify_image(whole).kind == "dicom"
    data = whole.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: int(len(data) * fraction)])
    for reader in (io.verify_image, io.read_grayscale):
        with pytest.raises(io.ImageReadError, match=r"cut\.dcm: truncated DICOM"):
            reader(cut)
