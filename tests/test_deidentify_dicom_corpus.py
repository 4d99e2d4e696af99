"""De-identification of the DICOM files that ship inside pydicom (`pydicom/data/test_files`).

Every file is de-identified or refused; a refusal is one line naming the file and saying why
(no pixel data, cut short, an incomplete pixel module, a codestream no decoder accepts). The
encodings a hospital sends -- PALETTE COLOR, JPEG Lossless process 14, JPEG-LS lossless and
near-lossless, JPEG 2000 with YBR_RCT, JPEG Extended, big-endian, 1- and 32-bit samples --
de-identify, are written back as native Explicit VR Little Endian with an Image Pixel module
that fits the pixels, and keep their decoded pixels exactly where the sector is kept. Where
pydicom ships the same pixels in several encodings, the outputs are compared with each other.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.pixels import apply_color_lut
from pydicom.uid import ExplicitVRLittleEndian

from data_prep import deidentify as deid
from data_prep.errors import InputError

CORPUS = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
CORPUS_FILES = sorted(CORPUS.glob("*.dcm"))

# Every refusal over the folder, with what its one line must say.
NO_PIXELS = "no PixelData element (not an image)"
REFUSED = {
    "ExplVR_BigEndNoMeta.dcm": "without preamble or file meta has " + NO_PIXELS,
    "ExplVR_LitEndNoMeta.dcm": "without preamble or file meta has " + NO_PIXELS,
    "rtstruct.dcm": "without preamble or file meta has " + NO_PIXELS,
    "no_meta.dcm": "not a DICOM file",
    "UN_sequence.dcm": NO_PIXELS,
    "empty_charset_LEI.dcm": NO_PIXELS,
    "no_meta_group_length.dcm": NO_PIXELS,
    "priv_SQ.dcm": NO_PIXELS,
    "reportsi.dcm": NO_PIXELS,
    "reportsi_with_empty_number_tags.dcm": NO_PIXELS,
    "rtplan.dcm": NO_PIXELS,
    "rtplan_truncated.dcm": NO_PIXELS,
    "test-SR.dcm": NO_PIXELS,
    "waveform_ecg.dcm": NO_PIXELS,
    "meta_missing_tsyntax.dcm": "pixel module incomplete: missing or zero Rows",
    "nested_priv_SQ.dcm": "pixel module incomplete: missing or zero Rows",
    "MR_truncated.dcm": "truncated DICOM pixel data: 8130 bytes, expected 8192",
    "badVR.dcm": "NumberOfFrames '1A' is not a number",
    # Corrupt codestreams: an invalid JPEG scan header (Ss/Se), a sequence delimiter in a J2K.
    "JPEG-lossy.dcm": "scan start must be zero",
    "JPEG2000-embedded-sequence-delimiter.dcm": "failed to read the header",
}

# The encodings issue 17 names: file -> (PhotometricInterpretation, BitsAllocated) written.
NAMED = {
    "examples_palette.dcm": ("RGB", 8),             # ultrasound frame, PALETTE COLOR
    "SC_rgb_jpeg_gdcm.dcm": ("RGB", 8),             # JPEG Lossless process 14 SV1
    "MR_small_jpeg_ls_lossless.dcm": ("MONOCHROME2", 16),
    "JPEGLSNearLossless_08.dcm": ("MONOCHROME2", 8),
    "JPEGLSNearLossless_16.dcm": ("MONOCHROME2", 16),
    "SC_rgb_jls_lossy_line.dcm": ("RGB", 8),        # JPEG-LS near-lossless colour
    "examples_jpeg2k.dcm": ("RGB", 8),              # JPEG 2000, YBR_RCT
    "GDCMJ2K_TextGBR.dcm": ("RGB", 8),              # JPEG 2000, YBR_RCT
    "JPGExtended.dcm": ("MONOCHROME2", 16),         # JPEG Extended, 12-bit
    "MR_small_bigendian.dcm": ("MONOCHROME2", 16),
    "SC_rgb_small_odd_big_endian.dcm": ("RGB", 8),
    "liver_1frame.dcm": ("MONOCHROME2", 1),
    "liver_expb_1frame.dcm": ("MONOCHROME2", 1),
    "rtdose.dcm": ("MONOCHROME2", 32),
    "SC_rgb_rle_32bit.dcm": ("RGB", 32),
    "image_dfl.dcm": ("MONOCHROME2", 8),            # deflated
}

# Same pixels, other encodings: their de-identified pixels must equal the first one's
# (times a constant factor for the deeper samples).
SAME_PIXELS = [
    ("MR_small.dcm", "MR_small_RLE.dcm", 1), ("MR_small.dcm", "MR_small_bigendian.dcm", 1),
    ("MR_small.dcm", "MR_small_expb.dcm", 1), ("MR_small.dcm", "MR_small_implicit.dcm", 1),
    ("MR_small.dcm", "MR_small_jp2klossless.dcm", 1),
    ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm", 1),
    ("SC_rgb_rle.dcm", "SC_rgb_jpeg_gdcm.dcm", 1), ("SC_rgb_rle.dcm", "SC_rgb_gdcm_KY.dcm", 1),
    ("SC_rgb_rle.dcm", "SC_rgb_rle_16bit.dcm", 0x0101),
    ("SC_rgb_rle.dcm", "SC_rgb_rle_32bit.dcm", 0x01010101),
    ("SC_rgb_small_odd.dcm", "SC_rgb_small_odd_big_endian.dcm", 1),
    ("rtdose.dcm", "rtdose_expb.dcm", 1), ("rtdose.dcm", "rtdose_rle.dcm", 1),
    ("rtdose_1frame.dcm", "rtdose_expb_1frame.dcm", 1),
    ("rtdose_1frame.dcm", "rtdose_rle_1frame.dcm", 1),
    ("liver_1frame.dcm", "liver_expb_1frame.dcm", 1),
]


def _deidentify(name: str, out: Path) -> tuple[dict, Path]:
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the odd values these files hold
        row = deid.deidentify_file(CORPUS / name, out / name)
    return row, out / name


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory) -> tuple[dict[str, Path], dict[str, str]]:
    out = tmp_path_factory.mktemp("corpus")
    done, refused = {}, {}
    for path in CORPUS_FILES:
        try:
            done[path.name] = _deidentify(path.name, out)[1]
        except InputError as err:
            refused[path.name] = str(err)
    return done, refused


def test_every_file_is_deidentified_or_refused_with_its_reason(corpus_run):
    done, refused = corpus_run
    assert len(CORPUS_FILES) == 78
    assert sorted(refused) == sorted(REFUSED)
    assert len(done) == 58 and len(refused) == 20
    for name, message in refused.items():
        assert "\n" not in message and name in message, message
        assert REFUSED[name] in message, message


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_encodings_are_written_native_and_consistent(corpus_run, name):
    photometric, bits = NAMED[name]
    path = corpus_run[0][name]
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == photometric and ds.BitsAllocated == bits
    assert ds.BurnedInAnnotation in ("NO", "YES")
    assert "RedPaletteColorLookupTableData" not in ds
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = (ds.Rows * ds.Columns * ds.SamplesPerPixel * bits * frames + 7) // 8
    assert len(ds.PixelData) in (expected, expected + 1)  # padded to an even length
    assert ds.pixel_array.shape[-2 if ds.SamplesPerPixel == 1 else -3:][:2] == (ds.Rows, ds.Columns)


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_encodings_keep_their_decoded_pixels_where_kept(tmp_path, name):
    """Written back losslessly: a mask keeping the frame's upper-left part keeps exactly the
    decoded pixels there and black elsewhere (the writer, apart from sector detection)."""
    loaded = deid._load_dicom(CORPUS / name)
    height, width = loaded.gray.shape
    mask = np.zeros((height, width), bool)
    mask[: height * 2 // 3, : width * 2 // 3] = True
    sector = deid.SectorResult(mask, "rectangle", (0, 0, width * 2 // 3, height * 2 // 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deid._write_dicom(loaded, sector, CORPUS / name, tmp_path / name, {})
    written = pydicom.dcmread(tmp_path / name).pixel_array.reshape(loaded.pixels.shape)
    assert loaded.pixels[:, mask].any()
    assert np.array_equal(written[:, mask], loaded.pixels[:, mask])
    # Blanked to black: the lowest stored value (none of them is MONOCHROME1).
    black = -(1 << (loaded.pixel_format.bits_stored - 1)) if loaded.pixel_format.signed else 0
    assert (written[:, ~mask] == black).all()


def test_palette_is_applied_through_its_lookup_tables(tmp_path):
    name = "examples_palette.dcm"
    source = pydicom.dcmread(CORPUS / name)
    colours = apply_color_lut(source.pixel_array, source)  # 16-bit entries, multiples of 256
    assert colours.dtype == np.uint16 and not np.any(colours & 0xFF)
    loaded = deid._load_dicom(CORPUS / name)
    assert np.array_equal(loaded.pixels[0], (colours >> 8).astype(np.uint8))
    assert loaded.pixels[0].std(axis=-1).mean() > 0  # a colour image, not grey levels


def test_jpeg2000_rct_is_returned_as_rgb():
    """examples_jpeg2k.dcm (YBR_RCT) holds examples_rgb_color.dcm's frame at twice the size:
    without the inverse colour transform the green and blue means would be near zero."""
    j2k = deid._load_dicom(CORPUS / "examples_jpeg2k.dcm").pixels[0].astype(float)
    rgb = deid._load_dicom(CORPUS / "examples_rgb_color.dcm").pixels[0].astype(float)
    assert np.allclose(j2k.mean(axis=(0, 1)), rgb.mean(axis=(0, 1)), atol=1.0)


@pytest.mark.parametrize("reference,other,factor", SAME_PIXELS,
                         ids=[other for _, other, _ in SAME_PIXELS])
def test_same_pixels_in_other_encodings_deidentify_alike(tmp_path, reference, other, factor):
    _, first = _deidentify(reference, tmp_path / "a")
    _, second = _deidentify(other, tmp_path / "b")
    first_px = pydicom.dcmread(first).pixel_array.astype(np.int64)
    second_px = pydicom.dcmread(second).pixel_array.astype(np.int64)
    assert first_px.shape == second_px.shape
    assert np.array_equal(first_px * factor, second_px)


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan.dcm", "JPEG-lossy.dcm"])
def test_cli_refuses_a_file_without_intact_pixels_with_exit_2(tmp_path, name):
    import shutil
    import subprocess
    import sys

    source = tmp_path / "in"
    source.mkdir()
    shutil.copyfile(CORPUS / "MR_small.dcm", source / "MR_small.dcm")
    shutil.copyfile(CORPUS / name, source / name)
    done = subprocess.run([sys.executable, "-m", "data_prep", "deidentify", "--images",
                           str(source), "--out", str(tmp_path / "out")],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                          text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-1000:]
    assert name in lines[-1] and REFUSED[name] in lines[-1]
    assert not (tmp_path / "out").exists()  # nothing written
