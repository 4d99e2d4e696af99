"""Face-photo de-identification: every metadata value planted in a photo is gone from every
output byte, the pixels are kept upright, and no output is named after the input file."""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep.__main__ import main as data_prep_main
from data_prep.deidentify_photo import read_photo

# Values planted in the input photos; none may appear in any output file.
PLANTED = {
    "date_time_original": "2019:07:14 10:22:33",
    "artist": "PLANTED-ARTIST-JANE-DOE",
    "owner": "PLANTED-CAMERA-OWNER",
    "body_serial": "PLANTED-BODY-SN-4711",
    "lens_serial": "PLANTED-LENS-SN-0815",
    "gps_datum": "PLANTED-GPS-DATUM",
    "thumbnail_comment": "PLANTED-THUMBNAIL-COMMENT",
    "xmp": "PLANTED-XMP-CREATOR",
    "iptc": "PLANTED-IPTC-BYLINE",
    "icc": "PLANTED-ICC-PROFILE",
    "jpeg_comment": "PLANTED-JPEG-COMMENT",
    "png_text": "PLANTED-PNG-TEXT",
    "png_itxt": "PLANTED-PNG-ITXT",
    "png_exif_artist": "PLANTED-PNG-EXIF-ARTIST",
}
# Input stems that are names: they must not reach any output name or byte.
JPEG_NAME = "DOE_JANE_2019-07-14"
PNG_NAME = "ROE_RICHARD_clinic"

_ASCII, _SHORT, _LONG, _RATIONAL = 2, 3, 4, 5
_TYPE_SIZE = {_ASCII: 1, _SHORT: 2, _LONG: 4, _RATIONAL: 8}


def _ifd(entries, start: int, next_ifd: int = 0) -> bytes:
    """One little-endian TIFF IFD at offset `start`: entries (tag, type, values), its values
    that do not fit in 4 bytes placed right after it."""
    entries = sorted(entries)
    data_at = start + 2 + 12 * len(entries) + 4
    table, data = b"", b""
    for tag, kind, values in entries:
        if kind == _ASCII:
            raw, count = values.encode("ascii") + b"\x00", len(values) + 1
        elif kind == _RATIONAL:
            raw, count = b"".join(struct.pack("<II", *v) for v in values), len(values)
        else:
            raw = b"".join(struct.pack("<H" if kind == _SHORT else "<I", v) for v in values)
            count = len(values)
        if len(raw) <= 4:
            table += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\x00")
        else:
            table += struct.pack("<HHII", tag, kind, count, data_at + len(data))
            data += raw + (b"\x00" if len(raw) % 2 else b"")
    return struct.pack("<H", len(entries)) + table + struct.pack("<I", next_ifd) + data


def _exif_block(orientation: int, thumbnail: bytes) -> bytes:
    """TIFF-structured EXIF: IFD0 (orientation, artist) -> Exif IFD (date, owner, serials),
    GPS IFD (position, datum), and IFD1 holding a JPEG thumbnail."""
    def size(entries):
        return len(_ifd(entries, 0))

    exif_entries = [(0x9003, _ASCII, PLANTED["date_time_original"]),
                    (0xA430, _ASCII, PLANTED["owner"]), (0xA431, _ASCII, PLANTED["body_serial"]),
                    (0xA435, _ASCII, PLANTED["lens_serial"])]
    gps_entries = [(0x0001, _ASCII, "N"), (0x0002, _RATIONAL, [(47, 1), (22, 1), (3456, 100)]),
                   (0x0012, _ASCII, PLANTED["gps_datum"])]
    ifd0_draft = [(0x0112, _SHORT, [orientation]), (0x013B, _ASCII, PLANTED["artist"]),
                  (0x8769, _LONG, [0]), (0x8825, _LONG, [0])]
    at_ifd0 = 8
    at_exif = at_ifd0 + size(ifd0_draft)
    at_gps = at_exif + size(exif_entries)
    ifd1_draft = [(0x0201, _LONG, [0]), (0x0202, _LONG, [len(thumbnail)])]
    at_ifd1 = at_gps + size(gps_entries)
    at_thumb = at_ifd1 + size(ifd1_draft)
    ifd0 = [(0x0112, _SHORT, [orientation]), (0x013B, _ASCII, PLANTED["artist"]),
            (0x8769, _LONG, [at_exif]), (0x8825, _LONG, [at_gps])]
    ifd1 = [(0x0201, _LONG, [at_thumb]), (0x0202, _LONG, [len(thumbnail)])]
    tiff = (b"II*\x00" + struct.pack("<I", at_ifd0) + _ifd(ifd0, at_ifd0, next_ifd=at_ifd1)
            + _ifd(exif_entries, at_exif) + _ifd(gps_entries, at_gps) + _ifd(ifd1, at_ifd1)
            + thumbnail)
    assert len(tiff) == at_thumb + len(thumbnail)
    return b"Exif\x00\x00" + tiff


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _with_segments(jpeg: bytes, segments: list[bytes]) -> bytes:
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def _pattern(height: int, width: int) -> np.ndarray:
    """Smooth colour quadrants that tell every rotation and flip apart, JPEG-friendly."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[: height // 2, : width // 2] = (220, 40, 40)
    rgb[: height // 2, width // 2:] = (40, 200, 40)
    rgb[height // 2:, : width // 2] = (40, 40, 220)
    rgb[height // 2:, width // 2:] = (230, 230, 60)
    return rgb


def planted_jpeg(path: Path, rgb: np.ndarray, orientation: int = 6) -> Path:
    """A JPEG of `rgb` (stored pixels) with every kind of metadata a camera or editor writes."""
    ok, thumb = cv2.imencode(".jpg", cv2.cvtColor(cv2.resize(rgb, (16, 12)), cv2.COLOR_RGB2BGR))
    thumbnail = _with_segments(thumb.tobytes(), [_segment(0xFE, PLANTED["thumbnail_comment"].encode())])
    ok, body = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    xmp = (b"http://ns.adobe.com/xap/1.0/\x00<?xpacket begin=''?><x:xmpmeta xmlns:x='adobe:ns:meta/'>"
           b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'><rdf:Description "
           b"xmlns:dc='http://purl.org/dc/elements/1.1/'><dc:creator>" + PLANTED["xmp"].encode()
           + b"</dc:creator></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end='w'?>")
    iim = b"\x1c\x02\x50" + struct.pack(">H", len(PLANTED["iptc"])) + PLANTED["iptc"].encode()
    iim += b"\x00" * (len(iim) % 2)
    iptc = b"Photoshop 3.0\x00" + b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" \
        + struct.pack(">I", len(iim)) + iim
    icc = b"ICC_PROFILE\x00\x01\x01" + PLANTED["icc"].encode() + b"\x00" * 64
    data = _with_segments(body.tobytes(), [
        _segment(0xE1, _exif_block(orientation, thumbnail)), _segment(0xE1, xmp),
        _segment(0xE2, icc), _segment(0xED, iptc), _segment(0xFE, PLANTED["jpeg_comment"].encode())])
    path.write_bytes(data)
    return path


def planted_png(path: Path, rgb: np.ndarray, orientation: int = 3) -> Path:
    """A PNG with tEXt, zTXt, iTXt (one of them XMP) and an eXIf chunk holding the orientation."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Author", PLANTED["png_text"])
    info.add_text("Comment", PLANTED["png_text"] + "-z", zip=True)
    info.add_itxt("Description", PLANTED["png_itxt"])
    info.add_itxt("XML:com.adobe.xmp", f"<x:xmpmeta><dc:creator>{PLANTED['xmp']}</dc:creator>"
                                       f"</x:xmpmeta>")
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x013B] = PLANTED["png_exif_artist"]
    Image.fromarray(rgb).save(path, pnginfo=info, exif=exif.tobytes())
    return path


def _png_chunks(data: bytes) -> list[bytes]:
    kinds, pos = [], 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kinds.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return kinds


def _every_output_byte_is_clean(out: Path, names: tuple[str, ...]) -> list[Path]:
    files = [p for p in sorted(out.rglob("*")) if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for key, value in PLANTED.items():
            assert value.encode() not in data, (path.name, key)
            assert value.encode("utf-16-le") not in data, (path.name, key)
        for name in names:
            assert name.encode() not in data, (path.name, name)
            assert name not in path.relative_to(out).as_posix()
    return files


@pytest.fixture()
def planted(tmp_path) -> Path:
    """photos/DOE_JANE....jpg (orientation 6) and photos/ROE_RICHARD....png (orientation 3)."""
    folder = tmp_path / "in"
    (folder / "photos").mkdir(parents=True)
    planted_jpeg(folder / "photos" / f"{JPEG_NAME}.jpg", _pattern(40, 64))
    planted_png(folder / "photos" / f"{PNG_NAME}.png", _pattern(30, 50))
    pd.DataFrame({"image_path": [f"photos/{JPEG_NAME}.jpg", f"photos/{PNG_NAME}.png"],
                  "case_id": ["child01", "child02"], "label": ["syndrome", "healthy"],
                  "age_months": ["30", "41"], "sex": ["F", "M"],
                  "notes": [PLANTED["artist"], ""]}).to_csv(folder / "manifest.csv", index=False)
    return folder


def test_planted_inputs_really_carry_the_metadata(planted):
    """The check below can fail: the inputs hold every planted value, readable by Pillow."""
    from PIL import ExifTags, Image

    jpeg = planted / "photos" / f"{JPEG_NAME}.jpg"
    raw = jpeg.read_bytes()
    assert all(PLANTED[k].encode() in raw for k in PLANTED if not k.startswith("png"))
    with Image.open(jpeg) as image:
        exif = image.getexif()
        assert exif[0x0112] == 6 and exif[0x013B] == PLANTED["artist"]
        assert exif.get_ifd(ExifTags.IFD.Exif)[0xA431] == PLANTED["body_serial"]
        assert exif.get_ifd(ExifTags.IFD.GPSInfo)[0x0012] == PLANTED["gps_datum"]
        assert exif.get_ifd(ExifTags.IFD.IFD1)[0x0202] > 0
    photo = read_photo(jpeg)
    assert {"exif", "exif_thumbnail", "xmp", "icc_profile", "iptc_photoshop",
            "jpeg_comment"} <= set(photo.metadata)
    png = read_photo(planted / "photos" / f"{PNG_NAME}.png")
    assert {"png_tEXt", "png_zTXt", "png_iTXt", "png_eXIf"} <= set(png.metadata)


def test_read_photo_applies_the_exif_orientation(planted):
    stored_jpeg, stored_png = _pattern(40, 64), _pattern(30, 50)
    jpeg = read_photo(planted / "photos" / f"{JPEG_NAME}.jpg")
    assert jpeg.orientation == 6 and jpeg.pixels.shape == (64, 40, 3)
    clockwise = np.rot90(stored_jpeg, k=-1)   # orientation 6: turn 90 degrees clockwise
    error = np.abs(jpeg.pixels.astype(int) - clockwise).mean()
    wrong = np.abs(jpeg.pixels.astype(int) - np.rot90(stored_jpeg, k=1)).mean()
    assert error < 4 < wrong, (error, wrong)
    png = read_photo(planted / "photos" / f"{PNG_NAME}.png")
    assert png.orientation == 3
    np.testing.assert_array_equal(png.pixels, np.rot90(stored_png, k=2))   # lossless: exact


def test_grey_16_bit_photos_become_8_bit_rgb_and_dicom_is_refused(tmp_path):
    from data_prep.io import ImageReadError, write_dicom_grayscale

    grey16 = (np.arange(40 * 50).reshape(40, 50) * 32).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), grey16)
    photo = read_photo(tmp_path / "g16.png")
    assert photo.pixels.shape == (40, 50, 3) and photo.pixels.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(photo.pixels[:, :, channel],
                                      np.round(grey16 / 257).astype(np.uint8))
    write_dicom_grayscale(tmp_path / "frame.dcm", np.zeros((1, 16, 16), np.uint8))
    with pytest.raises(ImageReadError, match="not a photo"):
        read_photo(tmp_path / "frame.dcm")


def test_deidentify_photo_cli_removes_every_planted_value(planted, tmp_path, capsys):
    out = tmp_path / "deid"
    assert data_prep_main(["deidentify-photo", "--manifest", str(planted / "manifest.csv"),
                           "--out", str(out)]) == 0
    files = _every_output_byte_is_clean(out, (JPEG_NAME, PNG_NAME, "DOE", "ROE_RICHARD"))
    names = sorted(p.relative_to(out).as_posix() for p in files)
    assert names == ["manifest.csv", "photo_deid_report.csv", "photo_deid_report.json",
                     "photos/000001.png", "photos/000002.png"]
    for png in ("photos/000001.png", "photos/000002.png"):
        assert set(_png_chunks((out / png).read_bytes())) == {b"IHDR", b"IDAT", b"IEND"}
    first = cv2.cvtColor(cv2.imread(str(out / "photos/000001.png")), cv2.COLOR_BGR2RGB)
    assert first.shape == (64, 40, 3)   # upright: orientation 6 applied
    np.testing.assert_array_equal(first, read_photo(planted / "photos" / f"{JPEG_NAME}.jpg").pixels)
    second = cv2.cvtColor(cv2.imread(str(out / "photos/000002.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(second, np.rot90(_pattern(30, 50), k=2))
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert list(manifest.columns) == ["image_path", "case_id", "label", "age_months", "sex"]
    assert list(manifest["image_path"]) == ["photos/000001.png", "photos/000002.png"]
    report = pd.read_csv(out / "photo_deid_report.csv")
    assert list(report["orientation_applied"]) == [6, 3]
    assert "exif_thumbnail" in report["metadata_removed"][0]
    assert "notes" in (out / "photo_deid_report.json").read_text()   # the dropped column, named
    assert "de-identified 2 photos" in capsys.readouterr().err


def test_deidentify_photo_refuses_to_overwrite_and_names_a_bad_row(planted, tmp_path, capsys):
    out = tmp_path / "deid"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert data_prep_main(["deidentify-photo", "--manifest", str(planted / "manifest.csv"),
                           "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    (planted / "photos" / "notes.txt").write_text("not a photo")
    bad = planted / "bad.csv"
    bad.write_text("image_path,case_id,label\nphotos/notes.txt,c1,healthy\n")
    assert data_prep_main(["deidentify-photo", "--manifest", str(bad), "--out",
                           str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "row 1" in err and "image_path" in err
    assert not (tmp_path / "other").exists()


def test_faces_cli_crops_carry_no_planted_value(tmp_path, capsys):
    """The aligned crops of `faces` are de-identified the same way (a real face, real EXIF)."""
    from skimage import data

    folder = tmp_path / "in"
    folder.mkdir()
    planted_jpeg(folder / f"{JPEG_NAME}.jpg", np.rot90(data.astronaut(), k=1).copy(), orientation=6)
    pd.DataFrame({"image_path": [f"{JPEG_NAME}.jpg"], "case_id": ["child01"],
                  "label": ["syndrome"]}).to_csv(folder / "manifest.csv", index=False)
    out = tmp_path / "faces"
    assert data_prep_main(["faces", "--manifest", str(folder / "manifest.csv"), "--out",
                           str(out), "--size", "112"]) == 0
    files = _every_output_byte_is_clean(out, (JPEG_NAME, "DOE"))
    assert sorted(p.relative_to(out).as_posix() for p in files) == [
        "detections.csv", "faces/000001.png", "faces_report.json", "manifest.csv"]
    assert set(_png_chunks((out / "faces/000001.png").read_bytes())) == {b"IHDR", b"IDAT", b"IEND"}
    detections = pd.read_csv(out / "detections.csv")
    assert list(detections["status"]) == ["ok"]   # found only because the photo was turned upright
