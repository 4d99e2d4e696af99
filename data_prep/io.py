"""Image readers: JPEG, PNG, BMP/TIFF and DICOM into one 2-D grayscale array.

`read_grayscale(path)` returns a 2-D `uint8` array for 8-bit sources and `uint16` for 16-bit
PNG/TIFF and for DICOM with BitsStored > 8, whatever the file holds:

- colour (RGB, BGR, RGBA, DICOM RGB / YBR_* / PALETTE COLOR) becomes ITU-R BT.601 luma
  (0.299 R + 0.587 G + 0.114 B, what cv2 COLOR_RGB2GRAY does); alpha is dropped;
- DICOM MONOCHROME1 is inverted so that bright means echo, as in MONOCHROME2;
- DICOM Modality LUT / Rescale Slope+Intercept is applied; when its output range would go
  below zero (signed data, negative intercept) the whole range is shifted up by its lowest
  possible value, so the array stays unsigned and the same stored value always maps to the same
  output (a per-file constant, not a per-image minimum). A rescale whose output range spans
  more than 65,536 values cannot be held in uint16 and is skipped (stored values are used).
  Per-image min-max normalisation downstream (`data_prep.preprocess`) makes the model input
  independent of any positive linear rescale anyway;
- `frame` picks one frame of a multi-frame DICOM (cine loop).

DICOM transfer syntaxes decoded with the pinned plugins (requirements.txt: pylibjpeg with its
libjpeg, openjpeg and rle plugins, pyjpegls, besides Pillow): Implicit/Explicit VR Little
Endian, Explicit VR Big Endian, Deflated Explicit VR Little Endian, RLE Lossless, JPEG Baseline,
JPEG Extended (8 and 12 bit), JPEG Lossless (processes 14 and 14 SV1), JPEG-LS lossless and
near-lossless, JPEG 2000 (lossless and lossy, YBR_RCT / YBR_ICT returned as RGB) and HTJ2K.
Samples of 1 (packed bits), 8, 16 and 32 bits; PALETTE COLOR is applied through the file's
lookup tables (`dicom_palette_to_rgb`) and read as the luma of the colours. A 32-bit frame whose
values do not fit in uint16 is scaled by 65535 / its maximum (a per-image factor).
`decodable_transfer_syntaxes()` lists what this installation can decode.

Anything wrong with a file -- missing, empty, not an image, truncated (a JPEG without its
end-of-image marker after the scan data, a PNG without IEND or with a bad chunk CRC, DICOM pixel
data shorter than Rows x Columns x frames), unsupported bit depth or photometric
interpretation, frame out of range -- raises `ImageReadError`, whose one-line message names the
file and what is wrong. No library traceback escapes. Not detectable: bytes garbled inside a
JPEG's entropy-coded data (JPEG has no checksum; libjpeg decodes it with a "Corrupt JPEG data"
warning on stderr, as every JPEG reader does). JPEG EXIF orientation is not applied (the pixel
grid is used as stored, as in cv2.imread with IMREAD_UNCHANGED).

The format is read from the file's first bytes (`image_format`), never from its name. Before
anything is decoded, the size a file declares (JPEG frame header, PNG IHDR, BMP/TIFF header,
DICOM Rows x Columns) is compared with `max_pixels()` per frame (40 million unless
$DATA_PREP_MAX_PIXELS or a command's `--max-pixels` says otherwise): a few-kB decompression
bomb is refused with one line, not decoded into gigabytes.

`verify_image(path)` runs the same structural checks without decoding pixels (tens of
microseconds per JPEG/PNG header walk plus one CRC pass) and returns the image's size and
frame count; the manifest validator uses it. Encapsulated (compressed) DICOM, BMP and TIFF have
no cheap complete check, so `verify_image` decodes them (for compressed DICOM: the first
frame, plus a check that every frame's compressed data is present and ends with its marker).

`write_dicom_grayscale` writes a valid ultrasound DICOM (Modality US; SOP class Ultrasound Image
Storage, or Ultrasound Multi-frame Image Storage for several frames) from uint8/uint16 frames,
for test files, phantoms and de-identification checks.
"""
from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from .atomic import atomic_path
from .errors import InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageInfo",
    "ImageReadError",
    "count_frames",
    "decodable_transfer_syntaxes",
    "image_format",
    "is_dicom",
    "max_pixels",
    "read_grayscale",
    "verify_image",
    "write_dicom_grayscale",
]

# Suffixes (lower case) treated as images when scanning folders. cv2 5 reads BMP and TIFF
# (checked by tests/test_io.py); DICOM files without a suffix are found by `is_dicom`.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".dcm", ".bmp", ".tif", ".tiff")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_BMP_SIGNATURE = b"BM"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")
_HEAD_BYTES = 132  # enough for the DICOM preamble + 'DICM'

# Decompression bombs: a few-kB PNG or JPEG can declare 30000 x 30000 pixels (3.6 GB decoded
# as RGBA). Every reader compares the size a file DECLARES with this limit before decoding
# anything. 40 megapixels per frame is ten times a 4K frame and far above any ultrasound frame
# or face photo; raise it with the environment variable below (or `--max-pixels` of the
# `manifest` and `deidentify` commands, which set it).
DEFAULT_MAX_PIXELS = 40_000_000
MAX_PIXELS_ENV = "DATA_PREP_MAX_PIXELS"

# DICOM photometric interpretations this reader turns into grayscale.
_DICOM_GRAY = ("MONOCHROME1", "MONOCHROME2")
# Three-sample interpretations the decoders return as RGB (YBR_ICT / YBR_RCT: JPEG 2000's
# irreversible / reversible colour transforms, undone by the decoder).
_DICOM_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
# One sample per pixel, an index into the file's red/green/blue lookup tables.
DICOM_PALETTE = "PALETTE COLOR"
# Bits per sample this reader decodes: 1 (packed bits, e.g. segmentations), 8, 16, 32.
_DICOM_BITS_ALLOCATED = (1, 8, 16, 32)

_US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
_US_MULTIFRAME_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


class ImageReadError(InputError):
    """An image file that cannot be read: names the file and what is wrong, on one line."""

    def __init__(self, file: str | Path | None, message: str):
        super().__init__(file, message)


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What a cheap header check learns about an image file."""

    kind: str      # "jpeg", "png", "dicom", "bmp", "tiff"
    width: int
    height: int
    frames: int


# --------------------------------------------------------------------------- file sniffing

def _read_head(path: Path) -> bytes:
    """First bytes of `path`, with missing / directory / empty / unreadable as ImageReadError."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageReadError(path, "cannot read the file: permission denied") from None
    except OSError as err:
        raise ImageReadError(path, f"cannot read the file: {err.strerror or err}") from None
    if not head:
        raise ImageReadError(path, "empty file (0 bytes)")
    return head


def _has_dicom_preamble(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def is_dicom(path: str | Path) -> bool:
    """True for a file with the 'DICM' marker at byte 128, or any file named *.dcm.

    A file that cannot be opened is not DICOM unless its name ends in .dcm.
    """
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            return _has_dicom_preamble(handle.read(_HEAD_BYTES))
    except OSError:
        return False


def _sniff(path: Path, head: bytes) -> str:
    """The file's format from its first bytes (the suffix only decides for .dcm without preamble)."""
    if _has_dicom_preamble(head):
        return "dicom"
    if head.startswith(_JPEG_SOI + b"\xff"):
        return "jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(_TIFF_SIGNATURES):
        return "tiff"
    if head.startswith(_BMP_SIGNATURE) and len(head) >= 26:
        return "bmp"
    if path.suffix.lower() == ".dcm":
        return "dicom"  # a DICOM data set written without the 128-byte preamble
    described = "text" if _looks_like_text(head) else "unrecognised binary data"
    raise ImageReadError(path, f"not an image file ({described}; expected JPEG, PNG, BMP, TIFF "
                               f"or DICOM)")


_OTHER_SIGNATURES = ((b"PK\x03\x04", "a zip archive"), (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
                     (b"\x93NUMPY", "a NumPy .npy array"))


def describe_bytes(head: bytes) -> str:
    """What a file's first bytes look like, for messages: "a PNG image", "text", ..."""
    if not head:
        return "an empty file (0 bytes)"
    try:
        kind = _sniff(Path("x"), head)
        return {"dicom": "a DICOM file", "jpeg": "a JPEG image", "png": "a PNG image",
                "tiff": "a TIFF image", "bmp": "a BMP image"}[kind]
    except ImageReadError:
        pass
    for signature, what in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return what
    return "text" if _looks_like_text(head) else "unrecognised binary data"


def image_format(path: str | Path) -> str:
    """"jpeg", "png", "bmp", "tiff" or "dicom", from the file's first bytes, never its name (a
    BMP named .png is a BMP). Raises `ImageReadError` for a file that is none of them."""
    path = Path(path)
    return _sniff(path, _read_head(path))


def max_pixels() -> int:
    """The per-frame pixel limit: $DATA_PREP_MAX_PIXELS, else DEFAULT_MAX_PIXELS."""
    import os

    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        raise InputError(None, f"{MAX_PIXELS_ENV}={value!r} is not a whole number of pixels") from None
    if limit < 1:
        raise InputError(None, f"{MAX_PIXELS_ENV}={value!r} must be at least 1")
    return limit


def add_max_pixels_argument(parser) -> None:
    """`--max-pixels N` on a command that reads images (sets the limit for this process)."""
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help=f"refuse any image frame that declares more than N pixels, before "
                             f"decoding it (default: ${MAX_PIXELS_ENV} or "
                             f"{DEFAULT_MAX_PIXELS:,})")


def apply_max_pixels(args) -> None:
    """Make `--max-pixels` the limit of this process (and of the processes it starts)."""
    import os

    value = getattr(args, "max_pixels", None)
    if value is None:
        return
    if value < 1:
        raise InputError(None, f"--max-pixels {value}: must be at least 1")
    os.environ[MAX_PIXELS_ENV] = str(value)


def _check_pixels(path: Path, width: int, height: int) -> None:
    """Refuse a frame that declares more pixels than `max_pixels()`, before it is decoded."""
    limit = max_pixels()
    if width * height > limit:
        raise ImageReadError(path, f"declares {width}x{height} = {width * height:,} pixels per "
                                   f"frame, above the limit of {limit:,} (a decompression bomb, "
                                   f"or raise the limit with --max-pixels or {MAX_PIXELS_ENV})")


def _declared_size(path: Path, data: bytes, kind: str) -> tuple[int, int]:
    """(width, height) a BMP or TIFF header declares, read without decoding pixels."""
    if kind == "bmp":
        header = struct.unpack("<I", data[14:18])[0] if len(data) >= 18 else 0
        if header == 12 and len(data) >= 22:   # OS/2 BITMAPCOREHEADER: 16-bit sizes
            width, height = struct.unpack("<HH", data[18:22])
        elif len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
        else:
            raise ImageReadError(path, "truncated BMP: the file ends inside its header")
        return abs(width), abs(height)
    from PIL import Image, UnidentifiedImageError

    import io as _io
    try:
        with Image.open(_io.BytesIO(data)) as image:   # lazy: reads the first IFD only
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as err:
        raise ImageReadError(path, f"cannot parse the {kind.upper()} header: "
                                   f"{_first_line(err)}") from None


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_all(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ImageReadError(path, f"cannot read the file: {err.strerror or err}") from None


# --------------------------------------------------------------------------- JPEG / PNG checks

# Start-of-frame markers (not DHT C4, JPG C8, DAC CC).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                          0xCF})
_SOF_PLAIN = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended, progressive Huffman


def _check_jpeg(path: Path, data: bytes) -> tuple[int, int, bool]:
    """Walk the JPEG header segments; return (width, height, is_plain_8bit).

    Truncation test: entropy-coded data never contains FF D9 (0xFF bytes are stuffed with 00),
    so a complete file has its end-of-image marker after the first start-of-scan. Walking the
    segment lengths skips APPn blocks, so an EXIF thumbnail's own EOI is not mistaken for it.
    """
    size = len(data)
    pos = 2
    width = height = 0
    precision = 0
    sof = None
    while True:
        if pos < size and data[pos] != 0xFF:  # tolerate junk between segments, as libjpeg does
            pos = data.find(b"\xff", pos)
            if pos < 0:
                pos = size
        while pos < size and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= size:
            raise ImageReadError(path, "truncated JPEG: the file ends inside its header")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            raise ImageReadError(path, "corrupt JPEG: end-of-image marker before any image data")
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if pos + 2 > size:
            raise ImageReadError(path, "truncated JPEG: the file ends inside its header")
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2 or pos + length > size:
            raise ImageReadError(path, "truncated JPEG: the file ends inside its header")
        if marker in _SOF_MARKERS:
            if length < 8:
                raise ImageReadError(path, "corrupt JPEG: frame header too short")
            precision = data[pos + 2]
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            sof = marker
        if marker == 0xDA:
            scan_start = pos
            break
        pos += length
    if sof is None:
        raise ImageReadError(path, "corrupt JPEG: no frame header before the image data")
    if width == 0 or height == 0:
        raise ImageReadError(path, f"unsupported JPEG: zero image size ({width}x{height})")
    if data.rfind(b"\xff\xd9", scan_start) < 0:
        raise ImageReadError(path, "truncated JPEG: no end-of-image marker after the image data "
                                   "(file cut short)")
    return width, height, (sof in _SOF_PLAIN and precision == 8)


_PNG_COLOUR_TYPES = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def _check_png(path: Path, data: bytes) -> tuple[int, int]:
    """Walk the PNG chunks, checking each CRC; return (width, height)."""
    size = len(data)
    pos = len(_PNG_SIGNATURE)
    width = height = 0
    seen_idat = False
    first = True
    while True:
        if pos + 12 > size:
            raise ImageReadError(path, "truncated PNG: the file ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > size:
            raise ImageReadError(path, f"truncated PNG: chunk {kind!r} runs past the end of the file")
        body = data[pos + 4:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:end])
        if zlib.crc32(body) != crc:
            name = kind.decode("latin-1")
            raise ImageReadError(path, f"corrupt PNG: CRC mismatch in chunk '{name}'")
        if first:
            if kind != b"IHDR" or length != 13:
                raise ImageReadError(path, "corrupt PNG: first chunk is not IHDR")
            width, height, depth, colour = struct.unpack(">IIBB", data[pos + 8:pos + 18])
            if width == 0 or height == 0:
                raise ImageReadError(path, f"corrupt PNG: zero image size ({width}x{height})")
            if depth not in _PNG_COLOUR_TYPES.get(colour, ()):
                raise ImageReadError(path, f"unsupported PNG: bit depth {depth} with colour type "
                                           f"{colour}")
            first = False
        elif kind == b"IDAT":
            seen_idat = True
        elif kind == b"IEND":
            break
        pos = end
    if not seen_idat:
        raise ImageReadError(path, "corrupt PNG: no image data (IDAT chunk)")
    return width, height


def _decode_with_cv2(path: Path, data: bytes, kind: str) -> np.ndarray:
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageReadError(path, f"cannot decode {kind.upper()} data: "
                                   f"{str(err).strip().splitlines()[-1]}") from None
    if image is None:
        raise ImageReadError(path, f"cannot decode {kind.upper()} data (corrupt, truncated or an "
                                   f"unsupported variant)")
    return image


def _cv2_to_gray(path: Path, image: np.ndarray) -> np.ndarray:
    """cv2's BGR/BGRA/gray array -> 2-D uint8/uint16 luma."""
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(path, f"unsupported bit depth: pixel type {image.dtype} "
                                   f"(8- and 16-bit unsigned images are supported)")
    if image.ndim == 2:
        return image
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            return image[:, :, 0]
        if channels == 3:
            return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if channels == 4:
            return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ImageReadError(path, f"unsupported pixel layout: array shape {image.shape}")


# --------------------------------------------------------------------------- DICOM

@dataclasses.dataclass(frozen=True)
class _DicomHeader:
    dataset: Any               # pydicom Dataset, pixel data deferred
    transfer_syntax: Any       # pydicom UID
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    frames: int


def decodable_transfer_syntaxes() -> dict[str, str]:
    """{UID: name} of the DICOM transfer syntaxes this installation can decode."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import AllTransferSyntaxes, UID

    result = {}
    for uid in AllTransferSyntaxes:
        uid = UID(uid)
        if not uid.is_encapsulated:
            result[str(uid)] = uid.name
            continue
        try:
            if get_decoder(uid).is_available:
                result[str(uid)] = uid.name
        except NotImplementedError:
            continue
    return result


def _dicom_int(ds, keyword: str, default: int | None = None) -> int | None:
    value = ds.get(keyword, default)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _read_dicom_header(path: Path, head: bytes) -> _DicomHeader:
    """Parse the DICOM header (pixel data left on disk) and check the pixel module."""
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError
    from pydicom.pixels import get_decoder
    from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
                             ExplicitVRLittleEndian, ImplicitVRLittleEndian)

    import warnings

    preamble = _has_dicom_preamble(head)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, force=not preamble, defer_size=4096)
    except (InvalidDicomError, BytesLengthException, EOFError, ValueError, KeyError, OSError,
            struct.error, NotImplementedError, TypeError, AttributeError, OverflowError) as err:
        # BytesLengthException: an element whose length does not fit its VR (found by fuzzing)
        raise ImageReadError(path, f"cannot parse the DICOM header: {_first_line(err)}") from None

    pixel_tag = 0x7FE00010
    # pydicom drops an encapsulated element the file ends inside, with only a warning: a
    # truncated compressed DICOM would read as "no PixelData".
    cut_short = any("End of file reached" in str(w.message) for w in caught)
    if pixel_tag not in ds and cut_short:
        raise ImageReadError(path, "truncated DICOM: the file ends before its pixel data "
                                   "is complete (cut short)")
    if pixel_tag not in ds:
        if not preamble and "Rows" not in ds:
            if "SOPClassUID" in ds and "SOPInstanceUID" in ds:
                raise ImageReadError(path, "DICOM data set without preamble or file meta has no "
                                           "PixelData element (not an image)")
            raise ImageReadError(path, "not a DICOM file (no 'DICM' marker at byte 128 and no "
                                       "DICOM image elements)")
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ImageReadError(path, "unsupported DICOM: floating-point pixel data")
        raise ImageReadError(path, "DICOM file has no PixelData element (not an image)")

    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if tsyntax is None:
        # A data set without file meta: use the encoding pydicom detected while parsing.
        implicit, little = ds.original_encoding if hasattr(ds, "original_encoding") else (True, True)
        tsyntax = (ImplicitVRLittleEndian if implicit else
                   ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        ds.file_meta = meta if meta is not None else pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = tsyntax
    tsyntax = UID(str(tsyntax))
    if not tsyntax.is_transfer_syntax:   # a damaged or private UID (found by fuzzing)
        raise ImageReadError(path, f"unknown DICOM TransferSyntaxUID '{_short_text(str(tsyntax))}'")
    if tsyntax == DeflatedExplicitVRLittleEndian:
        # Deferred values of a deflated data set point into the inflated stream, not the file:
        # read it whole (its pixel data is native, so the size check below stays valid).
        try:
            ds = pydicom.dcmread(path, force=not preamble)
        except Exception as err:  # noqa: BLE001 -- a corrupt deflate stream is bad input
            raise ImageReadError(path, f"cannot inflate the deflated DICOM data set: "
                                       f"{_first_line(err)}") from None

    rows = _dicom_int(ds, "Rows")
    columns = _dicom_int(ds, "Columns")
    samples = _dicom_int(ds, "SamplesPerPixel", 1)
    bits_allocated = _dicom_int(ds, "BitsAllocated")
    bits_stored = _dicom_int(ds, "BitsStored", bits_allocated)
    representation = _dicom_int(ds, "PixelRepresentation", 0)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    frames = _dicom_int(ds, "NumberOfFrames", 1) or 1
    if "NumberOfFrames" in ds and _dicom_int(ds, "NumberOfFrames") is None:
        raise ImageReadError(path, f"corrupt DICOM: NumberOfFrames "
                                   f"{str(ds['NumberOfFrames'].value)[:20]!r} is not a number")

    missing = [name for name, value in (("Rows", rows), ("Columns", columns),
                                        ("BitsAllocated", bits_allocated)) if not value]
    if not photometric:
        missing.append("PhotometricInterpretation")
    if missing:
        raise ImageReadError(path, f"DICOM image pixel module incomplete: missing or zero "
                                   f"{', '.join(missing)}")
    supported = _DICOM_GRAY + (DICOM_PALETTE,) + _DICOM_COLOUR
    if photometric not in supported:
        raise ImageReadError(path, f"unsupported DICOM PhotometricInterpretation "
                                   f"'{photometric}' (supported: {', '.join(supported)})")
    expected_samples = 3 if photometric in _DICOM_COLOUR else 1
    if samples != expected_samples:
        raise ImageReadError(path, f"corrupt DICOM: SamplesPerPixel {samples} does not fit "
                                   f"PhotometricInterpretation {photometric}")
    if bits_allocated not in _DICOM_BITS_ALLOCATED:
        raise ImageReadError(path, f"unsupported DICOM bit depth: BitsAllocated "
                                   f"{bits_allocated} (1, 8, 16 and 32 are supported)")
    if photometric == DICOM_PALETTE:
        missing = [f"{colour}PaletteColorLookupTable{part}" for colour in ("Red", "Green", "Blue")
                   for part in ("Descriptor", "Data")
                   if f"{colour}PaletteColorLookupTable{part}" not in ds]
        if missing and "SegmentedRedPaletteColorLookupTableData" not in ds:
            raise ImageReadError(path, f"corrupt DICOM: PALETTE COLOR without "
                                       f"{', '.join(missing[:2])}")
    if not bits_stored or not 1 <= bits_stored <= bits_allocated:
        raise ImageReadError(path, f"corrupt DICOM: BitsStored {bits_stored} with BitsAllocated "
                                   f"{bits_allocated}")
    if representation not in (0, 1):
        raise ImageReadError(path, f"corrupt DICOM: PixelRepresentation {representation}")
    _check_pixels(path, columns, rows)

    if tsyntax.is_encapsulated:
        try:
            available = get_decoder(tsyntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise ImageReadError(path, f"DICOM compressed as '{tsyntax.name}' ({tsyntax}), which "
                                       f"this installation cannot decode (needs pylibjpeg or "
                                       f"GDCM); decompress it first, e.g. with "
                                       f"'gdcmconv --raw' or 'dcmdjpeg'")
    else:
        element = ds.get_item(pixel_tag, keep_deferred=True)
        value = getattr(element, "value", None)
        if value is not None:
            length = len(value)
        else:  # deferred: the declared length, capped by what the file really holds
            length = getattr(element, "length", 0)
            tell = getattr(element, "value_tell", None)
            if tell is not None and length != 0xFFFFFFFF:
                length = min(length, max(path.stat().st_size - tell, 0))
        if photometric == "YBR_FULL_422":
            frame_bits = rows * columns * 2 * bits_allocated  # 2:1 horizontal chroma subsampling
        else:
            frame_bits = rows * columns * samples * bits_allocated
        needed = (frame_bits * frames + 7) // 8  # 1-bit data is packed across frames
        if length == 0xFFFFFFFF:
            raise ImageReadError(path, "corrupt DICOM: native pixel data with undefined length")
        if length < needed:
            raise ImageReadError(path, f"truncated DICOM pixel data: {length} bytes, expected "
                                       f"{needed} ({frames} frame(s) of {rows}x{columns}x"
                                       f"{samples}, {bits_allocated}-bit)")
    return _DicomHeader(ds, tsyntax, rows, columns, samples, bits_allocated, bits_stored,
                        representation == 1, photometric, frames)


def _short_text(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


def decoder_reason(err: BaseException) -> str:
    """A decoder failure on one line: pydicom's "exceptions were raised by all available
    plugins:" is followed by one line per plugin, which carry the reasons."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return (lines[0] + " " + "; ".join(lines[1:]))[:400]
    return _first_line(err)


def _check_frame(path: Path, frame: int, frames: int) -> None:
    if not isinstance(frame, (int, np.integer)) or isinstance(frame, bool):
        raise TypeError(f"frame must be an int, not {type(frame).__name__}")
    if not 0 <= frame < frames:
        raise ImageReadError(path, f"frame {frame} out of range: the file has {frames} "
                                   f"frame(s) (0..{frames - 1})")


def _decode_dicom_frame(path: Path, header: _DicomHeader, frame: int) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        # Native data read from a file with a preamble: only this frame's bytes are read.
        from pydicom.uid import DeflatedExplicitVRLittleEndian

        from_file = (not header.transfer_syntax.is_encapsulated
                     and header.transfer_syntax != DeflatedExplicitVRLittleEndian
                     and header.dataset.preamble is not None)
        array = pixel_array(path if from_file else header.dataset, index=frame)
    except Exception as err:  # noqa: BLE001 -- library boundary: any decoder failure is bad input
        raise ImageReadError(path, f"cannot decode DICOM pixel data "
                                   f"({header.transfer_syntax.name}): {decoder_reason(err)}") from None
    expected = (header.rows, header.columns) + ((3,) if header.samples == 3 else ())
    if array.shape != expected:
        raise ImageReadError(path, f"corrupt DICOM: decoded frame has shape {array.shape}, "
                                   f"expected {expected}")
    return array


def _check_encapsulated(path: Path, header: _DicomHeader, only: int | None = None) -> None:
    """Cheap completeness check of compressed DICOM pixel data, without decoding.

    Every frame must be present as encapsulated items, and for JPEG-family syntaxes (JPEG,
    JPEG-LS, JPEG 2000, HTJ2K) each frame's codestream must end with its FF D9 end marker.
    `only`: check that frame alone (reading one frame of a loop whose last frame is cut).
    """
    from pydicom.encaps import generate_frames

    try:
        data = header.dataset.PixelData
        frames = dict(enumerate(generate_frames(data, number_of_frames=header.frames)))
    except Exception as err:  # noqa: BLE001 -- malformed item structure is bad input
        raise ImageReadError(path, f"corrupt compressed DICOM pixel data: "
                                   f"{_first_line(err)}") from None
    if only is None and len(frames) < header.frames:
        raise ImageReadError(path, f"truncated DICOM pixel data: {len(frames)} compressed "
                                   f"frame(s), NumberOfFrames says {header.frames}")
    if only is not None:
        frames = {only: frames[only]} if only in frames else {}
    if str(header.transfer_syntax).startswith("1.2.840.10008.1.2.4."):
        for index, frame in frames.items():
            # An odd-length codestream is padded to even length, with 00 or (some encoders) FF.
            tail = frame.rstrip(b"\x00")
            if not (tail.endswith(b"\xff\xd9") or tail.endswith(b"\xff\xd9\xff")):
                raise ImageReadError(path, f"truncated DICOM pixel data: compressed frame "
                                           f"{index} has no end-of-image marker")


def _dicom_to_gray(path: Path, header: _DicomHeader, array: np.ndarray) -> np.ndarray:
    """Decoded DICOM frame -> unsigned 2-D grayscale (see the module docstring)."""
    bits = header.bits_stored
    if header.photometric == DICOM_PALETTE:
        array, bits = dicom_palette_to_rgb(path, header.dataset, array)
    if array.ndim == 3:
        # pydicom and the JPEG 2000 decoders have already converted YBR_* to RGB.
        if bits > 16:  # 32-bit samples: the top 16 stored bits (one shift for the whole file)
            array = (array.astype(np.uint32) >> np.uint32(bits - 16)).astype(np.uint16)
        elif array.dtype not in (np.uint8, np.uint16):
            array = np.clip(array, 0, None).astype(np.uint16 if bits > 8 else np.uint8)
        return cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2GRAY)

    ds = header.dataset
    if header.signed:
        stored_lo, stored_hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        stored_lo, stored_hi = 0, (1 << bits) - 1
        if bits < header.bits_allocated:
            array = array & np.asarray(stored_hi, dtype=array.dtype)  # drop overlay/unused bits

    values = None
    has_modality = "ModalityLUTSequence" in ds or (
        "RescaleSlope" in ds or "RescaleIntercept" in ds)
    if has_modality:
        from pydicom.pixels import apply_modality_lut

        try:
            # 32-bit data: the two ends only (a rescale is linear; 2**32 values are too many).
            stored = (np.arange(stored_lo, stored_hi + 1) if bits <= 16
                      else np.array([stored_lo, stored_hi], np.int64))
            lut_range = apply_modality_lut(stored, ds)
            out_lo, out_hi = float(np.min(lut_range)), float(np.max(lut_range))
        except Exception as err:  # noqa: BLE001 -- malformed LUT / rescale values
            raise ImageReadError(path, f"corrupt DICOM Modality LUT/rescale: "
                                       f"{_first_line(err)}") from None
        if np.isfinite(out_lo) and np.isfinite(out_hi) and out_hi - out_lo <= 65535:
            shift = -out_lo if out_lo < 0 else 0.0
            values = np.rint(apply_modality_lut(array, ds) + shift)
            top = int(round(out_hi + shift))
    if values is None:
        if not header.signed:
            values, top = array, stored_hi
        else:
            values, top = array.astype(np.int64) - stored_lo, stored_hi - stored_lo

    if header.photometric == "MONOCHROME1":
        values = top - values.astype(np.int64 if values.dtype.kind in "ui" else values.dtype)
    if top > 65535:
        # 32-bit samples (dose grids, parametric maps): kept exactly when this frame's values
        # fit in uint16, else scaled by 65535 / this frame's maximum (a per-image factor).
        peak = float(np.max(values)) if values.size else 0.0
        if peak > 65535:
            values = np.rint(values.astype(np.float64) * (65535.0 / peak))
        top = 65535
    dtype = np.uint8 if bits <= 8 and top <= 255 else np.uint16
    if values.dtype != dtype:  # values already lie in [0, top]; clip only guards rounding
        values = np.clip(values, 0, top).astype(dtype)
    return values


def dicom_palette_to_rgb(path: Path, ds, indices: np.ndarray) -> tuple[np.ndarray, int]:
    """PALETTE COLOR indices -> (RGB array, bits per sample): the file's lookup tables applied
    (pydicom.pixels.apply_color_lut). 16-bit tables whose entries are all multiples of 256 (an
    8-bit palette stored in 16-bit words, as scanners write it) give exact 8-bit RGB."""
    from pydicom.pixels import apply_color_lut

    try:
        rgb = apply_color_lut(indices, ds)
    except Exception as err:  # noqa: BLE001 -- malformed lookup tables are bad input
        raise ImageReadError(path, f"corrupt DICOM palette lookup table: "
                                   f"{_first_line(err)}") from None
    if rgb.dtype == np.uint8:
        return rgb, 8
    if not np.any(rgb & np.uint16(0xFF)):
        return (rgb >> np.uint16(8)).astype(np.uint8), 8
    return rgb.astype(np.uint16), 16


# --------------------------------------------------------------------------- public readers

def read_grayscale(path: str | Path, frame: int = 0) -> np.ndarray:
    """Read an image file as a 2-D grayscale array (uint8, or uint16 for >8-bit sources).

    `frame` selects a frame of a multi-frame DICOM; other formats have only frame 0.
    Raises `ImageReadError` (one line naming the file) for anything unreadable.
    """
    path = Path(path)
    head = _read_head(path)
    kind = _sniff(path, head)
    if kind == "dicom":
        header = _read_dicom_header(path, head)
        _check_frame(path, frame, header.frames)
        if header.transfer_syntax.is_encapsulated:
            # libjpeg decodes a codestream cut short without an error: check for its end first.
            _check_encapsulated(path, header, only=frame)
        return _dicom_to_gray(path, header, _decode_dicom_frame(path, header, frame))
    _check_frame(path, frame, 1)
    data = _read_all(path)
    if kind == "jpeg":
        width, height, _ = _check_jpeg(path, data)
    elif kind == "png":
        width, height = _check_png(path, data)
    else:
        width, height = _declared_size(path, data, kind)
    _check_pixels(path, width, height)
    return _cv2_to_gray(path, _decode_with_cv2(path, data, kind))


def verify_image(path: str | Path) -> ImageInfo:
    """Check that `read_grayscale` can read every frame of `path`, cheaply where possible.

    JPEG: segment walk + end-of-image marker after the scan; PNG: every chunk's CRC + IEND;
    native DICOM: header, pixel module and pixel-data length; compressed DICOM: every frame's
    items present and (JPEG family) ending with FF D9, and the first frame decoded. BMP, TIFF
    and unusual JPEG processes are decoded. Raises `ImageReadError`.
    """
    path = Path(path)
    head = _read_head(path)
    kind = _sniff(path, head)
    if kind == "dicom":
        header = _read_dicom_header(path, head)
        if header.transfer_syntax.is_encapsulated:
            _check_encapsulated(path, header)
            _decode_dicom_frame(path, header, 0)
        return ImageInfo(kind, header.columns, header.rows, header.frames)
    data = _read_all(path)
    if kind == "jpeg":
        width, height, plain = _check_jpeg(path, data)
        _check_pixels(path, width, height)
        if plain:
            return ImageInfo(kind, width, height, 1)
    elif kind == "png":
        width, height = _check_png(path, data)
        _check_pixels(path, width, height)
        return ImageInfo(kind, width, height, 1)
    else:
        _check_pixels(path, *_declared_size(path, data, kind))
    gray = _cv2_to_gray(path, _decode_with_cv2(path, data, kind))
    return ImageInfo(kind, gray.shape[1], gray.shape[0], 1)


def count_frames(path: str | Path) -> int:
    """Number of frames: NumberOfFrames for DICOM (1 when absent), 1 for other images."""
    path = Path(path)
    head = _read_head(path)
    if _sniff(path, head) == "dicom":
        return _read_dicom_header(path, head).frames
    return 1


# --------------------------------------------------------------------------- DICOM writer

def write_dicom_grayscale(path: str | Path, frames: np.ndarray, *, photometric: str = "MONOCHROME2",
                          extra_tags: Mapping[str, Any] | None = None) -> Path:
    """Write an ultrasound DICOM file of one or more grayscale frames; return its path.

    `frames`: (H, W) for one frame (SOP class Ultrasound Image Storage) or (N, H, W) for N
    frames (Ultrasound Multi-frame Image Storage when N > 1), dtype uint8 or uint16
    (BitsAllocated = BitsStored = 8 or 16). `photometric`: MONOCHROME2 (bright = echo, the US
    standard) or MONOCHROME1 (inverted; not allowed by the US IOD, but useful to test readers).
    UIDs are fresh `pydicom.uid.generate_uid()` values; patient and study attributes are present
    and empty. `extra_tags` sets any DICOM keyword (e.g. {"PatientName": "Doe^Jane"}), after the
    defaults, so it can also override them (SOPInstanceUID is mirrored into the file meta).
    Written explicit VR little endian, atomically (a temporary file renamed into place).
    """
    import pydicom
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    array = np.asarray(frames)
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frames must be uint8 or uint16, not {array.dtype}")
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"frames must have shape (H, W) or (N, H, W), not {np.shape(frames)}")
    photometric = photometric.upper()
    if photometric not in _DICOM_GRAY:
        raise ValueError(f"photometric must be one of {_DICOM_GRAY}, not {photometric!r}")
    extra = dict(extra_tags or {})
    unknown = [keyword for keyword in extra if tag_for_keyword(keyword) is None]
    if unknown:
        raise ValueError(f"unknown DICOM keyword(s) in extra_tags: {', '.join(unknown)}")

    count, rows, columns = array.shape
    bits = 8 * array.dtype.itemsize
    sop_class = _US_MULTIFRAME_IMAGE_STORAGE if count > 1 else _US_IMAGE_STORAGE

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\x00" * 128)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                    "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                    "SeriesNumber", "InstanceNumber", "Manufacturer", "PatientOrientation",
                    "ContentDate", "ContentTime"):
        setattr(ds, keyword, "")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    if count > 1:
        ds.NumberOfFrames = count
        ds.FrameTime = "33.3"
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    pixel_bytes = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    if len(pixel_bytes) % 2:
        pixel_bytes += b"\x00"  # DICOM values have even length
    ds.add_new(0x7FE00010, "OB" if bits == 8 else "OW", pixel_bytes)

    with atomic_path(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)
