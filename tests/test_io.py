"""Readers: every supported kind round-trips to the right 2-D grayscale array; every broken file
raises ImageReadError naming the file. Test files are built here with numpy/cv2/Pillow/pydicom."""
from __future__ import annotations

import io as stdio
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless,
                         JPEGBaseline8Bit, JPEGLossless, RLELossless, generate_uid)

from data_prep.errors import InputError
from data_prep.io import (IMAGE_SUFFIXES, ImageReadError, count_frames,
                          decodable_transfer_syntaxes, is_dicom, read_grayscale, verify_image,
                          write_dicom_grayscale)

RNG = np.random.default_rng(20230601)


def _smooth(shape, dtype=np.uint8, seed=0):
    """A smooth image (gradients + blobs) that survives JPEG at high quality almost unchanged."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx / max(w - 1, 1) * 0.6 + yy / max(h - 1, 1) * 0.3 + rng.random() * 0.1)
    if len(shape) == 3:
        base = np.stack([np.roll(base, k * 7, axis=1) for k in range(shape[2])], axis=-1)
    return np.clip(base * top, 0, top).round().astype(dtype)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Reference BT.601 luma in float, from an RGB(.., 3) array."""
    rgb = rgb.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


# --------------------------------------------------------------------------- raster formats

def _write_cv2(path, array):
    assert cv2.imwrite(str(path), array)


def _case_gray8_png(tmp):
    a = (RNG.random((37, 53)) * 255).astype(np.uint8)
    _write_cv2(tmp / "g8.png", a)
    return tmp / "g8.png", a.astype(float), np.uint8, 0


def _case_gray16_png(tmp):
    a = (RNG.random((37, 53)) * 65535).astype(np.uint16)
    _write_cv2(tmp / "g16.png", a)
    return tmp / "g16.png", a.astype(float), np.uint16, 0


def _case_rgb8_png_pillow(tmp):
    rgb = (RNG.random((31, 45, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp / "rgb8.png")
    return tmp / "rgb8.png", _luma(rgb), np.uint8, 1


def _case_rgba8_png_pillow(tmp):
    rgba = (RNG.random((31, 45, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp / "rgba8.png")
    return tmp / "rgba8.png", _luma(rgba[..., :3]), np.uint8, 1


def _case_rgb16_png(tmp):
    rgb = (RNG.random((31, 45, 3)) * 65535).astype(np.uint16)
    _write_cv2(tmp / "rgb16.png", rgb[..., ::-1])  # cv2 writes BGR order
    return tmp / "rgb16.png", _luma(rgb), np.uint16, 2  # cv2 fixed-point coefficients


def _case_rgba16_png(tmp):
    rgba = (RNG.random((31, 45, 4)) * 65535).astype(np.uint16)
    _write_cv2(tmp / "rgba16.png", rgba[..., [2, 1, 0, 3]])  # BGRA on disk means RGBA here
    return tmp / "rgba16.png", _luma(rgba[..., :3]), np.uint16, 2


def _case_gray8_jpeg(tmp):
    a = _smooth((60, 80))
    _write_cv2(tmp / "g8.jpg", a)
    return tmp / "g8.jpg", a.astype(float), np.uint8, 3  # lossy, smooth content: within 3 levels


def _case_rgb_jpeg(tmp):
    rgb = _smooth((60, 80, 3))
    Image.fromarray(rgb, "RGB").save(tmp / "rgb.jpeg", quality=98, subsampling=0)
    return tmp / "rgb.jpeg", _luma(rgb), np.uint8, 4


def _case_bmp(tmp):
    a = (RNG.random((20, 30)) * 255).astype(np.uint8)
    _write_cv2(tmp / "g.bmp", a)
    return tmp / "g.bmp", a.astype(float), np.uint8, 0


def _case_tiff16(tmp):
    a = (RNG.random((20, 30)) * 65535).astype(np.uint16)
    _write_cv2(tmp / "g16.tif", a)
    return tmp / "g16.tif", a.astype(float), np.uint16, 0


def _case_png_named_jpg(tmp):
    a = (RNG.random((10, 12)) * 255).astype(np.uint8)
    _write_cv2(tmp / "real.png", a)
    (tmp / "named.jpg").write_bytes((tmp / "real.png").read_bytes())
    return tmp / "named.jpg", a.astype(float), np.uint8, 0


@pytest.mark.parametrize("make", [
    _case_gray8_png, _case_gray16_png, _case_rgb8_png_pillow, _case_rgba8_png_pillow,
    _case_rgb16_png, _case_rgba16_png, _case_gray8_jpeg, _case_rgb_jpeg, _case_bmp, _case_tiff16,
    _case_png_named_jpg,
], ids=lambda f: f.__name__[6:])
def test_raster_round_trip(tmp_path, make):
    path, expected, dtype, atol = make(tmp_path)
    gray = read_grayscale(path)
    assert gray.ndim == 2 and gray.shape == expected.shape
    assert gray.dtype == dtype
    assert np.abs(gray.astype(float) - expected).max() <= atol
    info = verify_image(path)
    assert (info.height, info.width, info.frames) == (*expected.shape, 1)
    assert count_frames(path) == 1


def test_image_suffixes_cover_the_formats_cv2_reads():
    assert IMAGE_SUFFIXES[:4] == (".jpg", ".jpeg", ".png", ".dcm")
    assert {".bmp", ".tif", ".tiff"} <= set(IMAGE_SUFFIXES)
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)


# --------------------------------------------------------------------------- DICOM builders

def _dicom(path: Path, frames: np.ndarray, *, photometric="MONOCHROME2", bits_allocated=8,
           bits_stored=None, signed=False, planar=0, pixel_bytes=None, tsyntax=ExplicitVRLittleEndian,
           extra=None, preamble=True) -> Path:
    """Write a DICOM built field by field (frames: (N,H,W) or (N,H,W,3))."""
    frames = np.asarray(frames)
    count, rows, columns = frames.shape[:3]
    samples = frames.shape[3] if frames.ndim == 4 else 1
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = tsyntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    if count > 1:
        ds.NumberOfFrames = count
    if samples == 3:
        ds.PlanarConfiguration = planar
    if pixel_bytes is None:
        dtype = {(8, False): "<u1", (8, True): "<i1", (16, False): "<u2", (16, True): "<i2"}[
            (bits_allocated, signed)]
        data = frames.astype(dtype)
        if samples == 3 and planar == 1:
            data = data.transpose(0, 3, 1, 2)
        pixel_bytes = np.ascontiguousarray(data).tobytes()
    if len(pixel_bytes) % 2:
        pixel_bytes += b"\0"
    ds.add_new(0x7FE00010, "OB" if bits_allocated == 8 or tsyntax.is_encapsulated else "OW",
               pixel_bytes)
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        # A bare data set: no preamble, no file meta, implicit VR (old archives write these).
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        buffer = stdio.BytesIO()
        pydicom.filewriter.write_dataset(pydicom.filebase.DicomFileLike(buffer), ds)
        path.write_bytes(buffer.getvalue())
    return path


def _frames(count, rows, columns, top, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, top + 1, size=(count, rows, columns))


def _dcm_mono2_8(tmp):
    f = _frames(1, 24, 32, 255)
    return _dicom(tmp / "m2_8.dcm", f), [f[0]], np.uint8, 0


def _dcm_mono2_12_in_16(tmp):
    f = _frames(1, 24, 32, 4095)
    return _dicom(tmp / "m2_12.dcm", f, bits_allocated=16, bits_stored=12), [f[0]], np.uint16, 0


def _dcm_mono2_16(tmp):
    f = _frames(1, 24, 32, 65535)
    return _dicom(tmp / "m2_16.dcm", f, bits_allocated=16), [f[0]], np.uint16, 0


def _dcm_multiframe_8(tmp):
    f = _frames(5, 16, 20, 255)
    return _dicom(tmp / "multi.dcm", f), list(f), np.uint8, 0


def _dcm_multiframe_16(tmp):
    f = _frames(3, 16, 20, 1023)
    return _dicom(tmp / "multi16.dcm", f, bits_allocated=16, bits_stored=10), list(f), np.uint16, 0


def _dcm_mono1_8(tmp):
    f = _frames(1, 24, 32, 255)
    return _dicom(tmp / "m1_8.dcm", f, photometric="MONOCHROME1"), [255 - f[0]], np.uint8, 0


def _dcm_mono1_12(tmp):
    f = _frames(2, 24, 32, 4095)
    path = _dicom(tmp / "m1_12.dcm", f, photometric="MONOCHROME1", bits_allocated=16,
                  bits_stored=12)
    return path, [4095 - f[0], 4095 - f[1]], np.uint16, 0


def _dcm_rgb_interleaved(tmp):
    f = _frames(1, 24, 32, 255)[..., None].repeat(3, axis=-1)
    f[..., 1] = 255 - f[..., 1]
    f[..., 2] //= 3
    return _dicom(tmp / "rgb0.dcm", f, photometric="RGB"), [_luma(f[0])], np.uint8, 1


def _dcm_rgb_planar(tmp):
    f = np.stack([_frames(2, 24, 32, 255, seed=s) for s in (1, 2, 3)], axis=-1)
    path = _dicom(tmp / "rgb1.dcm", f, photometric="RGB", planar=1)
    return path, [_luma(f[0]), _luma(f[1])], np.uint8, 1


def _ybr_full(rgb):
    rgb = rgb.astype(float)
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    cb = 128 - 0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2]
    cr = 128 + 0.5 * rgb[..., 0] - 0.418688 * rgb[..., 1] - 0.081312 * rgb[..., 2]
    return np.clip(np.rint(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)


def _dcm_ybr_full(tmp):
    rgb = _smooth((24, 32, 3))[None]
    ybr = _ybr_full(rgb)
    return _dicom(tmp / "ybr.dcm", ybr, photometric="YBR_FULL"), [ybr[0, ..., 0]], np.uint8, 2


def _dcm_ybr_full_422(tmp):
    rgb = _smooth((24, 32, 3))[None]
    ybr = _ybr_full(rgb)[0].astype(float)
    y = ybr[..., 0]
    cb = (ybr[:, 0::2, 1] + ybr[:, 1::2, 1]) / 2
    cr = (ybr[:, 0::2, 2] + ybr[:, 1::2, 2]) / 2
    packed = np.stack([y[:, 0::2], y[:, 1::2], cb, cr], axis=-1).round().astype(np.uint8)
    path = _dicom(tmp / "ybr422.dcm", ybr[None].astype(np.uint8), photometric="YBR_FULL_422",
                  pixel_bytes=packed.tobytes())
    return path, [y], np.uint8, 2


def _dcm_signed_16(tmp):
    f = _frames(1, 16, 16, 2000) - 1000
    path = _dicom(tmp / "signed.dcm", f, bits_allocated=16, signed=True)
    return path, [f[0] + 32768], np.uint16, 0  # shifted by the lowest storable value


def _dcm_rescale_negative_intercept(tmp):
    f = _frames(1, 16, 16, 4095)
    path = _dicom(tmp / "rescale.dcm", f, bits_allocated=16, bits_stored=12,
                  extra={"RescaleSlope": "1", "RescaleIntercept": "-1024"})
    return path, [f[0]], np.uint16, 0  # v - 1024, shifted up by 1024 to stay non-negative


def _dcm_rescale_positive(tmp):
    f = _frames(1, 16, 16, 255)
    path = _dicom(tmp / "rescale2.dcm", f, extra={"RescaleSlope": "2", "RescaleIntercept": "10"})
    return path, [2 * f[0] + 10], np.uint16, 0  # output range 10..520 needs 16 bits


def _dcm_without_preamble(tmp):
    f = _frames(1, 12, 14, 255)
    return _dicom(tmp / "bare.dcm", f, preamble=False), [f[0]], np.uint8, 0


def _dcm_without_suffix(tmp):
    f = _frames(2, 12, 14, 255)
    return _dicom(tmp / "IM000001", f), list(f), np.uint8, 0


def _dcm_rle(tmp):
    f = _frames(3, 16, 20, 255)
    path = _dicom(tmp / "rle_src.dcm", f)
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(tmp / "rle.dcm", enforce_file_format=True)
    return tmp / "rle.dcm", list(f), np.uint8, 0


def _dcm_jpeg_baseline(tmp):
    frames = [_smooth((40, 48), seed=s) for s in (1, 2)]
    encoded = [cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for a in frames]
    expected = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED) for b in encoded]
    path = _dicom(tmp / "jpeg.dcm", np.stack(frames), tsyntax=JPEGBaseline8Bit,
                  pixel_bytes=encapsulate(encoded))
    return path, expected, np.uint8, 1


def _dcm_jpeg2000_lossless(tmp):
    a = _frames(1, 32, 40, 255)[0].astype(np.uint8)
    buffer = stdio.BytesIO()
    Image.fromarray(a, "L").save(buffer, format="JPEG2000", irreversible=False, no_jp2=True)
    path = _dicom(tmp / "j2k.dcm", a[None], tsyntax=JPEG2000Lossless,
                  pixel_bytes=encapsulate([buffer.getvalue()]))
    return path, [a], np.uint8, 0


def _dcm_written_by_helper(tmp):
    f = _frames(4, 20, 24, 65535).astype(np.uint16)
    return write_dicom_grayscale(tmp / "helper.dcm", f), list(f), np.uint16, 0


@pytest.mark.parametrize("make", [
    _dcm_mono2_8, _dcm_mono2_12_in_16, _dcm_mono2_16, _dcm_multiframe_8, _dcm_multiframe_16,
    _dcm_mono1_8, _dcm_mono1_12, _dcm_rgb_interleaved, _dcm_rgb_planar, _dcm_ybr_full,
    _dcm_ybr_full_422, _dcm_signed_16, _dcm_rescale_negative_intercept, _dcm_rescale_positive,
    _dcm_without_preamble, _dcm_without_suffix, _dcm_rle, _dcm_jpeg_baseline,
    _dcm_jpeg2000_lossless, _dcm_written_by_helper,
], ids=lambda f: f.__name__[5:])
def test_dicom_round_trip(tmp_path, make):
    path, expected_frames, dtype, atol = make(tmp_path)
    assert is_dicom(path)
    assert count_frames(path) == len(expected_frames)
    info = verify_image(path)
    assert (info.kind, info.frames) == ("dicom", len(expected_frames))
    for index, expected in enumerate(expected_frames):
        gray = read_grayscale(path, frame=index)
        assert gray.ndim == 2 and gray.shape == expected.shape
        assert gray.dtype == dtype
        assert np.abs(gray.astype(float) - np.asarray(expected, dtype=float)).max() <= atol
    assert (info.height, info.width) == expected_frames[0].shape


def test_decodable_transfer_syntaxes_lists_native_and_pillow_ones():
    names = decodable_transfer_syntaxes()
    for uid in (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian), str(RLELossless),
                str(JPEGBaseline8Bit)):
        assert uid in names


# --------------------------------------------------------------------------- broken files

def _bad_truncated_jpeg(tmp):
    data = cv2.imencode(".jpg", _smooth((120, 160)))[1].tobytes()
    (tmp / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    return tmp / "cut.jpg", "truncated JPEG"


def _bad_jpeg_missing_only_eoi(tmp):
    data = cv2.imencode(".jpg", _smooth((120, 160)))[1].tobytes()
    (tmp / "noeoi.jpg").write_bytes(data[:-2])
    return tmp / "noeoi.jpg", "end-of-image"


def _bad_truncated_jpeg_with_exif_thumbnail(tmp):
    # An APP1 block that holds a complete small JPEG (with its own FF D9) must not hide the
    # truncation of the main image.
    thumb = cv2.imencode(".jpg", _smooth((8, 8)))[1].tobytes()
    main = cv2.imencode(".jpg", _smooth((120, 160)))[1].tobytes()
    app1 = b"Exif\0\0" + thumb
    segment = b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1
    data = main[:2] + segment + main[2:]
    (tmp / "thumb_ok.jpg").write_bytes(data)
    assert read_grayscale(tmp / "thumb_ok.jpg").shape == (120, 160)
    (tmp / "thumb.jpg").write_bytes(data[: len(data) - 400])
    return tmp / "thumb.jpg", "truncated JPEG"


def _bad_truncated_png(tmp):
    data = cv2.imencode(".png", (RNG.random((60, 60)) * 255).astype(np.uint8))[1].tobytes()
    (tmp / "cut.png").write_bytes(data[: len(data) // 2])
    return tmp / "cut.png", "truncated PNG"


def _bad_png_crc(tmp):
    data = bytearray(cv2.imencode(".png", (RNG.random((60, 60)) * 255).astype(np.uint8))[1])
    data[len(data) // 2] ^= 0xFF
    (tmp / "crc.png").write_bytes(bytes(data))
    return tmp / "crc.png", "CRC"


def _bad_random_bytes_png(tmp):
    (tmp / "noise.png").write_bytes(np.random.default_rng(3).bytes(2000))
    return tmp / "noise.png", "not an image"


def _bad_empty_file(tmp):
    (tmp / "empty.jpg").write_bytes(b"")
    return tmp / "empty.jpg", "empty file"


def _bad_text_named_dcm(tmp):
    (tmp / "notes.dcm").write_text("patient notes, not an image\n" * 20)
    return tmp / "notes.dcm", "not a DICOM file"


def _bad_text_named_jpg(tmp):
    (tmp / "notes.jpg").write_text("hello")
    return tmp / "notes.jpg", "not an image"


def _bad_dicom_without_pixel_data(tmp):
    path = write_dicom_grayscale(tmp / "nopix.dcm", np.zeros((4, 4), np.uint8))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    return path, "no PixelData"


def _bad_dicom_truncated_pixels(tmp):
    path = write_dicom_grayscale(tmp / "short.dcm", np.zeros((3, 40, 40), np.uint8))
    data = path.read_bytes()
    # Shorten the pixel data element and its declared length consistently: a cut-off transfer.
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:1000]
    ds.save_as(path, enforce_file_format=True)
    assert len(path.read_bytes()) < len(data)
    return path, "truncated DICOM pixel data"


def _bad_dicom_cut_file(tmp):
    path = write_dicom_grayscale(tmp / "cutfile.dcm", np.zeros((3, 40, 40), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])
    return path, "DICOM"


def _bad_dicom_12bit_allocated(tmp):
    f = _frames(1, 4, 4, 100)
    path = _dicom(tmp / "b12.dcm", f, pixel_bytes=f.astype("<u2").tobytes(),
                  extra={"BitsAllocated": 12, "BitsStored": 12, "HighBit": 11})
    return path, "BitsAllocated 12"


def _bad_dicom_palette(tmp):
    f = _frames(1, 4, 4, 100)
    return _dicom(tmp / "pal.dcm", f, photometric="PALETTE COLOR"), "PALETTE COLOR"


def _bad_dicom_jpeg_lossless_garbage(tmp):
    f = _frames(1, 4, 4, 100)
    path = _dicom(tmp / "jls.dcm", f, tsyntax=JPEGLossless,
                  pixel_bytes=encapsulate([b"\xff\xd8" * 7 + b"\xff\xd9"]))
    return path, "JPEG Lossless"


def _bad_dicom_jpeg_frame_cut(tmp):
    data = cv2.imencode(".jpg", _smooth((40, 48)))[1].tobytes()
    path = _dicom(tmp / "jcut.dcm", np.zeros((1, 40, 48)), tsyntax=JPEGBaseline8Bit,
                  pixel_bytes=encapsulate([data[: len(data) // 2]]))
    return path, "DICOM pixel data"


def _bad_missing_file(tmp):
    return tmp / "absent.png", "file not found"


def _bad_directory(tmp):
    (tmp / "folder.png").mkdir()
    return tmp / "folder.png", "directory"


def _bad_float_tiff(tmp):
    _write_cv2(tmp / "float.tif", RNG.random((8, 8)).astype(np.float32))
    return tmp / "float.tif", "unsupported bit depth"


BROKEN = [
    _bad_truncated_jpeg, _bad_jpeg_missing_only_eoi, _bad_truncated_jpeg_with_exif_thumbnail,
    _bad_truncated_png, _bad_png_crc, _bad_random_bytes_png, _bad_empty_file, _bad_text_named_dcm,
    _bad_text_named_jpg, _bad_dicom_without_pixel_data, _bad_dicom_truncated_pixels,
    _bad_dicom_cut_file, _bad_dicom_jpeg_frame_cut, _bad_dicom_12bit_allocated, _bad_dicom_palette,
    _bad_dicom_jpeg_lossless_garbage,
    _bad_missing_file, _bad_directory, _bad_float_tiff,
]


@pytest.mark.parametrize("reader", [read_grayscale, verify_image], ids=["read", "verify"])
@pytest.mark.parametrize("make", BROKEN, ids=lambda f: f.__name__[5:])
def test_broken_file_raises_one_line_naming_it(tmp_path, make, reader):
    path, reason = make(tmp_path)
    with pytest.raises(ImageReadError) as caught:
        reader(path)
    message = str(caught.value)
    assert path.name in message
    assert reason.lower() in message.lower()
    assert "\n" not in message
    assert isinstance(caught.value, InputError)


@pytest.mark.parametrize("frame", [1, -1, 99])
def test_frame_out_of_range_names_file(tmp_path, frame):
    png = tmp_path / "one.png"
    _write_cv2(png, np.zeros((4, 4), np.uint8))
    dcm = write_dicom_grayscale(tmp_path / "cine.dcm", np.zeros((3, 4, 4), np.uint8))
    for path, frames in ((png, 1), (dcm, 3)):
        if 0 <= frame < frames:
            continue
        with pytest.raises(ImageReadError, match=rf"{path.name}.*frame {frame} out of range"):
            read_grayscale(path, frame=frame)


def test_verify_checks_every_compressed_frame(tmp_path):
    """Frame 0 decodes, but a later frame is cut short or missing: verify_image must say so."""
    encoded = [cv2.imencode(".jpg", _smooth((40, 48), seed=s))[1].tobytes() for s in (1, 2, 3)]
    cut = _dicom(tmp_path / "cut_last.dcm", np.zeros((3, 40, 48)), tsyntax=JPEGBaseline8Bit,
                 pixel_bytes=encapsulate(encoded[:2] + [encoded[2][:300]]))
    short = _dicom(tmp_path / "two_of_three.dcm", np.zeros((2, 40, 48)), tsyntax=JPEGBaseline8Bit,
                   pixel_bytes=encapsulate(encoded[:2]), extra={"NumberOfFrames": 3})
    for path, reason in ((cut, "frame 2 has no end-of-image marker"), (short, "2 compressed")):
        assert read_grayscale(path, frame=0).shape == (40, 48)
        with pytest.raises(ImageReadError, match=reason):
            verify_image(path)
    with pytest.raises(ImageReadError, match="cut_last.dcm"):
        read_grayscale(cut, frame=2)


# --------------------------------------------------------------------------- is_dicom, writer

def test_is_dicom_by_preamble_or_suffix(tmp_path):
    dicom_no_suffix = write_dicom_grayscale(tmp_path / "IMG0001", np.zeros((4, 4), np.uint8))
    (tmp_path / "text.dcm").write_text("x")
    _write_cv2(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "UPPER.DCM").write_bytes(dicom_no_suffix.read_bytes())
    table = {dicom_no_suffix: True, tmp_path / "text.dcm": True, tmp_path / "a.png": False,
             tmp_path / "UPPER.DCM": True, tmp_path / "absent": False}
    for path, expected in table.items():
        assert is_dicom(path) is expected, path


def test_write_dicom_grayscale_writes_a_valid_us_object(tmp_path):
    single = write_dicom_grayscale(tmp_path / "one.dcm", np.full((5, 6), 7, np.uint8),
                                   extra_tags={"PatientName": "Doe^Jane", "PatientID": "P123"})
    multi = write_dicom_grayscale(tmp_path / "many.dcm", np.zeros((3, 5, 6), np.uint16),
                                  photometric="MONOCHROME1")
    one = pydicom.dcmread(single)  # no force: preamble and file meta are present
    many = pydicom.dcmread(multi)
    assert one.Modality == many.Modality == "US"
    assert one.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1"          # Ultrasound Image Storage
    assert many.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1"         # US Multi-frame
    assert "NumberOfFrames" not in one and int(many.NumberOfFrames) == 3
    assert one.file_meta.MediaStorageSOPInstanceUID == one.SOPInstanceUID
    assert one.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert str(one.PatientName) == "Doe^Jane" and one.PatientID == "P123"
    assert (one.BitsAllocated, many.BitsAllocated, many.PhotometricInterpretation) == (
        8, 16, "MONOCHROME1")
    uids = {one.SOPInstanceUID, many.SOPInstanceUID, one.StudyInstanceUID, many.StudyInstanceUID,
            one.SeriesInstanceUID, many.SeriesInstanceUID}
    assert len(uids) == 6
    assert read_grayscale(single).tolist() == [[7] * 6] * 5
    assert not list(tmp_path.glob(".*"))  # atomic write leaves no temporary file


@pytest.mark.parametrize("frames, kwargs, message", [
    (np.zeros((4, 4), np.float32), {}, "uint8 or uint16"),
    (np.zeros((2, 2, 4, 4), np.uint8), {}, "shape"),
    (np.zeros((4, 4), np.uint8), {"photometric": "RGB"}, "photometric"),
    (np.zeros((4, 4), np.uint8), {"extra_tags": {"PatientNmae": "x"}}, "PatientNmae"),
])
def test_write_dicom_grayscale_rejects_bad_arguments(tmp_path, frames, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_dicom_grayscale(tmp_path / "x.dcm", frames, **kwargs)
    assert not (tmp_path / "x.dcm").exists()


# --------------------------------------------------------------------------- real frames

@pytest.mark.shared_data
def test_reads_all_pgds_sample_frames(pgds_sample_dir):
    paths = sorted(pgds_sample_dir.glob("*/*.jpg"))
    assert len(paths) == 8
    for path in paths:
        gray = read_grayscale(path)
        assert gray.shape == (400, 440) and gray.dtype == np.uint8
        # What the authors' code reads: cv2.imread(path, 0).
        assert np.array_equal(gray, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
        assert verify_image(path) == verify_image(path).__class__("jpeg", 440, 400, 1)


@pytest.mark.shared_data
def test_reads_hc18_pngs_and_masks(hc18_dir):
    paths = sorted(hc18_dir.glob("*_HC.png"))[:3] + sorted(hc18_dir.glob("*_HC_Mask.png"))[:2]
    assert len(paths) == 5
    for path in paths:
        gray = read_grayscale(path)
        assert gray.shape == (540, 800) and gray.dtype == np.uint8
        assert np.array_equal(gray, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
        info = verify_image(path)
        assert (info.kind, info.width, info.height) == ("png", 800, 540)


@pytest.mark.shared_data
def test_truncated_copy_of_a_real_frame_is_caught(pgds_sample_dir, tmp_path):
    source = sorted(pgds_sample_dir.glob("normal/*.jpg"))[0]
    data = source.read_bytes()
    for keep in (0.3, 0.9, 0.999):
        cut = tmp_path / f"cut_{keep}.jpg"
        cut.write_bytes(data[: int(len(data) * keep)])
        for reader in (read_grayscale, verify_image):
            with pytest.raises(ImageReadError, match="truncated JPEG"):
                reader(cut)
