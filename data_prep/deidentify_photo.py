"""De-identification of face photos: the pixels stay, everything else goes.

A child's face is identifying in itself, so a face photo cannot be made anonymous by its pixels
the way an ultrasound frame is (`data_prep.deidentify` blanks outside the scan sector). What CAN
go is everything a photo carries beside its face: this module keeps the pixels and nothing else.

What is removed (`read_photo` decodes the pixels; `write_png` writes them and nothing more):
    EXIF (capture dates, GPS position, camera and lens serial numbers, owner and artist names,
    maker notes), the thumbnail EXIF embeds (IFD1) and JFIF/JFXX thumbnails, XMP, IPTC
    (Photoshop APP13), ICC colour profiles, JPEG COM comments, every other APPn segment, and
    PNG text (tEXt, zTXt, iTXt), eXIf, tIME, iCCP and every other ancillary chunk. The output PNG
    has exactly three chunk types: IHDR, IDAT, IEND (tests/test_deidentify_photo.py checks it).

What is done to the pixels:
    The EXIF orientation (tag 274, values 2-8: flips and quarter turns, as a camera records a
    rotated shot) is applied first (`PIL.ImageOps.exif_transpose`), so that the output is upright
    although it no longer carries the tag. Then the pixels are converted to 8-bit RGB (grey
    photos repeated over three channels, alpha dropped, 16-bit samples scaled by 1/257) and
    written as lossless PNG by OpenCV: the same pixels give the same bytes on every CPU. An ICC
    profile is dropped, not applied: the pixels are kept as stored (for the sRGB-like profiles of
    cameras and phones the difference is small; a photo in a wide-gamut profile looks duller).

Names: the output files are named by the manifest row (`photos/000001.png` for data row 1),
never by the input's file name, which often holds a child's name or a date. The manifest
written beside them keeps only the data-contract columns (`image_path` now pointing at the
pseudonymous file, `case_id`, `label`, `subtype`, `gestational_week`, `center`, `age_months`,
`sex`, `landmarks`); any other column is dropped and named in the report. No output file holds
an input path or any metadata value: the report lists, per row, the KINDS of metadata found and
removed (`exif`, `xmp`, `icc_profile`, chunk types ...), never their content. `case_id`,
`age_months` and `sex` are copied as given: they must already be pseudonyms and coarse values.

Landmarks in the manifest are read in the upright frame (after the EXIF orientation), the frame
a viewer shows and an annotation tool uses; they are copied unchanged.

CLI: `python -m data_prep deidentify-photo --manifest M.csv --out DIR [--force]` writes
`DIR/photos/NNNNNN.png`, `DIR/manifest.csv` and `DIR/photo_deid_report.csv` / `.json`, staged
(`data_prep.atomic.staged_dir`): the folder appears only complete. Bad input: exit 2 and one
line naming the file, row and column; nothing is written. `python -m data_prep faces` (module
`data_prep.faces`) writes aligned face crops the same way.
"""
from __future__ import annotations

import argparse
import io as _bytes_io
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pandas as pd

from . import atomic, io
from .errors import InputError

__all__ = [
    "CONTRACT_COLUMNS",
    "PHOTO_FORMATS",
    "Photo",
    "add_cli",
    "check_output_folder",
    "contract_manifest",
    "deidentify_photo",
    "deidentify_photos",
    "metadata_kinds",
    "pseudonymous_name",
    "read_photo",
    "write_png",
]

# The columns of the data contract (DESIGN.md) a de-identified manifest keeps. mask_path and
# phi_mask_path are dropped: they name files of the input folder (phantom truth masks).
CONTRACT_COLUMNS = ("image_path", "case_id", "label", "subtype", "gestational_week", "center",
                    "age_months", "sex", "landmarks")
# Photo formats read (from the file's bytes, data_prep.io.image_format). DICOM holds no face
# photos in this project's studies and has its own de-identification (data_prep.deidentify).
PHOTO_FORMATS = ("jpeg", "png", "bmp", "tiff")
PHOTO_FOLDER = "photos"
REPORT_CSV = "photo_deid_report.csv"
REPORT_JSON = "photo_deid_report.json"
# PNG chunks that describe pixels; every other chunk is metadata and is not carried over.
_PNG_PIXEL_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METHOD = ("pixels decoded, EXIF orientation applied, converted to 8-bit RGB and re-encoded as "
          "PNG (IHDR, IDAT, IEND only); EXIF, embedded thumbnails, XMP, IPTC, ICC profiles, "
          "JPEG comments and APPn segments, PNG text and all other ancillary chunks removed; "
          "file names replaced by row numbers")


class Photo:
    """An upright 8-bit RGB photo and what was removed from its file."""

    def __init__(self, pixels: np.ndarray, orientation: int, metadata: tuple[str, ...],
                 source_format: str):
        self.pixels = pixels              # (H, W, 3) uint8 RGB, EXIF orientation applied
        self.orientation = orientation    # the EXIF orientation applied (1 = none)
        self.metadata = metadata          # kinds of metadata found in the file (never values)
        self.source_format = source_format


def _jpeg_segment_kind(marker: str, data: bytes) -> str:
    if marker == "COM":
        return "jpeg_comment"
    if marker == "APP0":
        return "jfxx_thumbnail" if data.startswith(b"JFXX") else "jfif"
    if marker == "APP1":
        if data.startswith(b"Exif\x00"):
            return "exif"
        if data.startswith(b"http://ns.adobe.com/xap/1.0/") or data.startswith(b"http://ns.adobe.com/xmp/"):
            return "xmp"
    if marker == "APP2" and data.startswith(b"ICC_PROFILE"):
        return "icc_profile"
    if marker == "APP13":
        return "iptc_photoshop"
    if marker == "APP14" and data.startswith(b"Adobe"):
        return "adobe"
    return marker.lower()


def _png_chunk_types(data: bytes) -> list[str]:
    """The ancillary (metadata) chunk types of a PNG, in file order, e.g. ['tEXt', 'eXIf']."""
    found, pos = [], len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind not in _PNG_PIXEL_CHUNKS:
            found.append(kind.decode("latin-1"))
        if kind == b"IEND":
            break
        pos += 12 + length
    return found


def metadata_kinds(image, data: bytes, kind: str) -> tuple[str, ...]:
    """Sorted kinds of metadata a decoded Pillow image's file holds: 'exif', 'exif_thumbnail',
    'xmp', 'icc_profile', 'jpeg_comment', 'iptc_photoshop', PNG chunk types, ... (no values)."""
    kinds: set[str] = set()
    if kind == "jpeg":
        kinds.update(_jpeg_segment_kind(marker, segment) for marker, segment in
                     getattr(image, "applist", []))
        kinds.discard("jfif")   # the JFIF header (version, pixel density) holds nothing personal
    elif kind == "png":
        kinds.update(f"png_{chunk}" for chunk in _png_chunk_types(data))
    else:   # TIFF tags and BMP headers: what Pillow parsed beside the pixels
        kinds.update(key for key in image.info if key not in ("compression", "dpi", "resolution"))
    exif = image.getexif()
    if len(exif):
        kinds.add("exif")
        from PIL import ExifTags

        if len(exif.get_ifd(ExifTags.IFD.IFD1)):
            kinds.add("exif_thumbnail")
    if image.info.get("icc_profile"):
        kinds.add("icc_profile")
    return tuple(sorted(kinds))


def _to_rgb8(path: Path, image) -> np.ndarray:
    """A Pillow image (any mode) as (H, W, 3) uint8 RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        samples = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode != "I" or samples.max() > 255 else 255.0
        gray = np.clip(np.round(samples * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise io.ImageReadError(path, "floating-point TIFF: not a photo (8- or 16-bit expected)")
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb)


def read_photo(path: str | Path) -> Photo:
    """Decode a JPEG/PNG/BMP/TIFF photo upright (EXIF orientation applied) as 8-bit RGB.

    The structural checks and the pixel limit of `data_prep.io.verify_image` run first, so a
    truncated file or a decompression bomb is refused before it is decoded. Raises
    `ImageReadError` (one line naming the file) for anything unreadable.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    kind = io.image_format(path)
    if kind not in PHOTO_FORMATS:
        raise io.ImageReadError(path, f"is a {kind.upper()} file, not a photo (expected "
                                      f"{', '.join(k.upper() for k in PHOTO_FORMATS)})")
    io.verify_image(path)
    data = path.read_bytes()
    try:
        with Image.open(_bytes_io.BytesIO(data)) as image:
            image.load()
            metadata = metadata_kinds(image, data, kind)
            orientation = int(image.getexif().get(0x0112, 1) or 1)
            upright = ImageOps.exif_transpose(image)
            pixels = _to_rgb8(path, upright)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise io.ImageReadError(path, f"cannot decode the {kind.upper()} photo: {message}") from None
    return Photo(pixels, orientation if 1 <= orientation <= 8 else 1, metadata, kind)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write (H, W, 3) uint8 RGB as a PNG holding the pixels only (atomic). OpenCV's encoder
    writes IHDR, IDAT and IEND and no metadata chunk."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"write_png wants (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
    with atomic.atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise InputError(path, "cannot write the PNG")
    return Path(path)


def deidentify_photo(src: str | Path, dst: str | Path) -> Photo:
    """Write `src`'s pixels, upright, as a metadata-free PNG at `dst`; returns what was read."""
    photo = read_photo(src)
    write_png(dst, photo.pixels)
    return photo


def pseudonymous_name(row: int, folder: str) -> str:
    """'photos/000001.png' for data row 1: the output name tells nothing but the row."""
    return f"{folder}/{row:06d}.png"


def check_output_folder(out: Path, manifest: Path, force: bool) -> None:
    """Refuse, before any work, an --out that is a file, lies inside the input folder (or holds
    it), or exists and is not empty without --force."""
    atomic.check_folder_target(out, "--out")
    root, target = manifest.resolve().parent, out.resolve()
    if target == root or root in target.parents or target in root.parents:
        raise InputError(out, f"output folder must lie outside the manifest's folder '{root}' "
                              f"(and not contain it)")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(out, "output folder exists and is not empty; use --force to replace it "
                              "or choose another --out")


def contract_manifest(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(data-contract columns kept, other columns dropped) of a loaded manifest."""
    columns = [str(c) for c in frame.columns if c != "abs_path"]
    kept = [c for c in CONTRACT_COLUMNS if c in columns]
    return kept, [c for c in columns if c not in kept]


def read_manifest_photo(manifest: Path, row: int, path: str) -> Photo:
    """read_photo, with a failure reported against the manifest's row and column."""
    try:
        return read_photo(path)
    except io.ImageReadError as err:
        raise InputError(manifest, f"not a readable photo: {err.one_line()}", row=row,
                         column="image_path") from None


def deidentify_photos(manifest: str | Path, out: str | Path, *, force: bool = False,
                      progress_every: int = 50,
                      progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """De-identify every photo a manifest lists into `out` (see the module docstring).
    Returns the report (one row per manifest row)."""
    from .manifest import load_manifest, write_manifest
    from .provenance import git_commit, library_versions

    manifest, out = Path(manifest), Path(out)
    check_output_folder(out, manifest, force)
    frame = load_manifest(manifest)
    kept, dropped = contract_manifest(frame)
    say = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    out_frame = frame[kept].copy()
    with atomic.staged_dir(out, overwrite=True) as stage:
        for index, source in enumerate(frame["abs_path"]):
            number = index + 1
            photo = read_manifest_photo(manifest, number, source)
            name = pseudonymous_name(number, PHOTO_FOLDER)
            write_png(stage / name, photo.pixels)
            out_frame.loc[index, "image_path"] = name
            rows.append({"row": number, "image_path": name, "source_format": photo.source_format,
                         "width": photo.pixels.shape[1], "height": photo.pixels.shape[0],
                         "orientation_applied": photo.orientation,
                         "metadata_removed": " ".join(photo.metadata)})
            if progress_every and (number % progress_every == 0 or number == len(frame)):
                say(f"deidentify-photo: {number}/{len(frame)} photos "
                    f"({time.perf_counter() - started:.1f} s)")
        report = pd.DataFrame(rows)
        atomic.write_csv(stage / REPORT_CSV, report)
        atomic.write_json(stage / REPORT_JSON, {
            "method": METHOD, "n_photos": len(rows), "columns_kept": kept,
            "columns_dropped": dropped, "versions": library_versions(),
            "git_commit": git_commit(),
            "note": "row is the data row of the input manifest (header excluded); no input path "
                    "or metadata value is written anywhere under this folder"})
        write_manifest(out_frame, stage / "manifest.csv")
    return report


# ============================================================================ CLI

def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "deidentify-photo", help="strip every metadata of face photos, keep the pixels",
        description="De-identify face photos: apply the EXIF orientation, keep the pixels and "
                    "write them as PNG with no metadata (EXIF, GPS, serial numbers, XMP, IPTC, "
                    "ICC, thumbnails, comments, PNG text all removed), named by manifest row. "
                    "Writes DIR/photos/, DIR/manifest.csv and DIR/photo_deid_report.csv/.json.")
    parser.add_argument("--manifest", required=True, help="manifest CSV listing the photos")
    parser.add_argument("--out", required=True, help="output folder (outside the manifest's)")
    parser.add_argument("--force", action="store_true",
                        help="replace --out if it exists and is not empty")
    parser.add_argument("--progress-every", type=int, default=50,
                        help="print progress to stderr every N photos (default 50; 0 = never)")
    io.add_max_pixels_argument(parser)
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    io.apply_max_pixels(args)
    report = deidentify_photos(args.manifest, args.out, force=args.force,
                               progress_every=args.progress_every)
    with_metadata = int((report["metadata_removed"] != "").sum())
    rotated = int((report["orientation_applied"] != 1).sum())
    print(f"de-identified {len(report)} photos into {args.out} ({with_metadata} carried "
          f"metadata, now removed; {rotated} turned upright); report "
          f"{os.path.join(args.out, REPORT_CSV)}", file=sys.stderr)
    return 0
