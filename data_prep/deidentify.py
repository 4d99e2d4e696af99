"""De-identification: blank everything outside the scan sector, strip DICOM identifiers.

Tang 2023 (section 2.2): "An automated preprocessing workflow was used to remove the
identification of the information and eliminate unintended human labels. Each ultrasonic image
was cropped and masked to remove text, electrocardiogram and respirometer information, and other
information outside the scanning sector." This module is that workflow.

Pixels (`find_scan_sector`, `blank_outside_sector`)
    1. Grey-scale bars are found first: strips whose pixels are exactly equal across >= 5
       columns (or rows) for >= 1/12 of the frame and span >= 64 grey levels along it.
    2. The scan sector: on an 8-bit copy (downsampled to <= 480 px), threshold a 3x3-blurred
       image (any non-zero pixel when the frame is lossless with an exactly black background,
       since deep parts of a sector can be 1-5 grey levels bright; > 6 for JPEG, whose ringing
       would otherwise bridge the sector and nearby text), open it with a disk of 1/32 of the
       short side (text strokes, ECG traces and bars vanish, speckle stays), keep the large
       components plus speckle-dense, thick fragments (text blobs and bars are neither), and
       take their convex hull: a "fan" (convex/sector probe), a "rectangle" (linear probe) or
       "full-frame" (a frame already cropped to the anatomy). Dark fluid inside is kept: the
       hull covers it. No sector at all -> kind "none", everything is blanked.
    3. Burned-in graphics ON the image, where a sector mask cannot reach, are cut out of the
       hull: the bars of step 1 (with the markers drawn against them) and dark label boxes
       (near-black rectangles, text closed over, that fill their bounding box and have >= 3
       straight sides), e.g. the scanner-name box of the HC18 frames.
    4. Label templates: a label box holding text is a device's fixed label; `deidentify_folder`
       learns such patches from a sample of the frames and finds them by template matching in
       every frame (HC18 362_HC and 487_HC carry the label on equally dark anatomy, where step 3
       cannot see the box).
    5. Optionally (`crop=True`, `--crop`; `crop_to_sector` for one frame in memory) the frame
       is then cropped to the bounding box of what is kept, the paper's "cropped": the
       anatomy fills more of a model's fixed-size input.
    Everything outside the final mask is set to black. Measured on ../shared/data: every HC18
    head mask 100% kept, the grey bar and the label box blanked in all 40 frames; the Pgds
    frames keep >= 99% of their non-dark pixels; about 20-25 ms of CPU per 800x540 frame
    (plus ~4 ms per learnt template).

    Limits: text written directly on the anatomy without a dark box (caliper labels, a
    body-mark inside the fan) is NOT found, nor is a bar in a JPEG frame that touches the
    sector; check such frames by eye (the report's `fraction_signal_blanked` and `n_overlays`
    help to pick which to look at).

DICOM (`deidentify_dataset`)
    Applies DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile (Table E.1-1)
    to every attribute it lists that is present, walking sequences recursively: D (replace by a
    dummy value), Z (zero-length), X (remove), U (replace the UID by a new one; the same input
    UID always maps to the same new UID within one run, so studies and series stay grouped).
    Beyond the table: every private tag, curve (50xx) and overlay (60xx) group is removed; any
    other person name (VR PN) is emptied; any other date/time (DA, DT, TM) is removed; any other
    instance UID that is not a registered DICOM UID is replaced. PatientIdentityRemoved = YES,
    DeidentificationMethod(CodeSequence), LongitudinalTemporalInformationModified = REMOVED and,
    after the pixels are blanked, BurnedInAnnotation = NO are set.

Files (`deidentify_file`, `deidentify_folder`, `python -m data_prep deidentify`)
    Outputs keep the input's name and format. PNG/JPEG/BMP/TIFF are re-encoded by cv2.imwrite,
    which writes no metadata: EXIF, PNG text chunks, JPEG comments and ICC profiles of the input
    are never copied (JPEG is re-encoded at quality 100). DICOM keeps its header minus the
    identifiers above, its pixel data written uncompressed (Explicit VR Little Endian).
    The report (`deid_report.csv` / `deid_report.json`) lists, per image, the fraction of pixels
    blanked, the sector's kind and bounding box and the KEYWORDS of the DICOM attributes removed
    or replaced -- never a value read from the input. It does list each file's relative path,
    which is the name the user gave it: FILE AND FOLDER NAMES MUST NOT CONTAIN PHI (rename files
    such as "DOE_JANE_1980.dcm" before de-identifying; the tool cannot know a name is a name).
    Folder runs are staged: the output folder appears only when every image succeeded; an
    unreadable image stops the run with an error naming it and nothing is written.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np
import pandas as pd

from . import atomic, io
from .errors import InputError

__all__ = [
    "BASIC_PROFILE_ACTIONS",
    "DEIDENTIFICATION_METHOD",
    "DeidentificationOptions",
    "DicomRun",
    "PROFILE_TABLE",
    "REPORT_COLUMNS",
    "SectorResult",
    "add_cli",
    "blank_outside_sector",
    "crop_box",
    "crop_to_sector",
    "deidentify_dataset",
    "deidentify_file",
    "deidentify_folder",
    "find_scan_sector",
    "learn_label_templates",
    "merge_label_templates",
]

# ============================================================================ pixels

SECTOR_KINDS = ("fan", "rectangle", "full-frame", "none")

# Detection runs on an 8-bit copy, downsampled so that its long side is <= this many pixels.
_DETECT_LONG_SIDE = 480
# A blurred pixel brighter than this (of 255) is "signal" when the background is not exactly
# black (lossy, noisy exports); with an exactly black background any non-zero pixel is.
_SIGNAL_LEVEL = 6
_EXACT_BLACK_SHARE = 0.02
# Components smaller than this share of the largest one are not part of the sector.
_MIN_COMPONENT_SHARE = 0.10
# Smaller pieces of anatomy (split off by dark fluid) are kept when they cover this share of
# the frame and are speckle-dense (see _sector_hull).
_MIN_FRAGMENT_SHARE = 0.003
_FRAGMENT_DENSITY = 0.9
# The largest component must cover at least this share of the frame to count as a sector.
_MIN_SECTOR_SHARE = 0.01
# A hull covering at least this share of the frame means the frame is all sector.
_FULL_FRAME_SHARE = 0.98
# A hull filling at least this share of its bounding box is a rectangle (linear probe).
_RECTANGLE_FILL = 0.95
# Label boxes: pixels this dark (of 255) form the box; glyph strokes are closed over; the box
# must fill its bounding rectangle and at least 3 of its 4 sides must be straight.
_BOX_DARK_LEVEL = 8
_BOX_GLYPH_CLOSE = 3
_BOX_MAX_SHARE = 0.05        # a label box is small: at most 5% of the frame
_BOX_MIN_SIDE = 10
_BOX_FILL = 0.85
_BOX_SIDE_COVER = 0.8
# Label templates (patches of label boxes with text) learnt in one frame, searched in others.
_TEMPLATE_MAX_PIXELS = 64 * 64
_TEMPLATE_MIN_STD = 2.0
_TEMPLATE_MIN_GLYPH_SHARE = 0.03
_TEMPLATE_MIN_CORRELATION = 0.8
_TEMPLATE_MAX_ERROR = 0.5        # mean squared error, as a share of the template's variance
_TEMPLATE_MAX_MATCHES = 4        # per template and frame
_TEMPLATE_MAX_CANDIDATES = 64     # locations whose correlation is checked, per template
# Grey-scale bars: pixels flat across >= _BAR_FLAT_WIDTH columns for >= 1/12 of the height.
_BAR_FLAT_WIDTH = 5
_BAR_MIN_LENGTH = 31
_BAR_MAX_WIDTH = 40
_BAR_MIN_GREY_RANGE = 64


@dataclasses.dataclass(frozen=True)
class SectorResult:
    """Where the image is: `mask` (bool HxW, True = keep), the sector's `kind`, its `bbox`.

    kind: "fan" (convex/sector probe), "rectangle" (linear probe), "full-frame" (the frame is
    already all image) or "none" (no sector found: everything is blanked, to be safe).
    bbox: (x0, y0, x1, y1) of the sector, end-exclusive like a numpy slice (img[y0:y1, x0:x1]).
    overlay_boxes: (x0, y0, x1, y1) of burned-in bars, label boxes and template matches found
    inside the frame and removed from `mask`.
    label_templates: 8-bit patches of the label boxes found here that hold text; pass them as
    `templates` for other frames of the same device to find the same label where it is harder
    to see (`deidentify_folder` does this).
    """

    mask: np.ndarray
    kind: str
    bbox: tuple[int, int, int, int]
    overlay_boxes: tuple[tuple[int, int, int, int], ...] = ()
    label_templates: tuple[np.ndarray, ...] = ()


def _to_uint8(gray: np.ndarray) -> np.ndarray:
    """8-bit copy for detection; black stays black (scaled by the maximum, not min-max)."""
    if gray.dtype == np.uint8:
        return gray
    values = np.asarray(gray, dtype=np.float32)
    top = float(values.max()) if values.size else 0.0
    if top <= 0:
        return np.zeros(gray.shape, np.uint8)
    return np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)


def _odd(value: float) -> int:
    return int(value) // 2 * 2 + 1


def _disk(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _components(binary: np.ndarray, connectivity: int) -> tuple[np.ndarray, list[tuple[int, int, int, int, int]]]:
    """Label connected components; return labels and (x, y, w, h, area) per label 1..n-1.

    cv2.connectedComponents + scipy's find_objects + bincount: several times faster than
    cv2.connectedComponentsWithStats on frames with many small components.
    """
    from scipy import ndimage

    count, labels = cv2.connectedComponents(binary, connectivity=connectivity)
    areas = np.bincount(labels.ravel(), minlength=count)
    stats = []
    for label, found in enumerate(ndimage.find_objects(labels), start=1):
        rows, cols = found
        stats.append((cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start,
                      int(areas[label])))
    return labels, stats


def _signal_level(gray8: np.ndarray, lossy: bool | None = None) -> int:
    """Grey level above which a (3x3-blurred) pixel is image, not background.

    A losslessly stored frame whose background is exactly black (>= 2% of pixels are 0, as
    scanners export it) counts every non-zero pixel: deep, attenuated parts of a sector can be
    only 1-5 grey levels bright (HC18 779_2HC) and must be kept. A lossy frame (JPEG) or one
    without an exactly black background uses a small level instead, so that compression ringing
    does not bridge the gap between the sector and nearby text. `lossy=None`: lossless unless
    there is no exactly black background.
    """
    if lossy:
        return _SIGNAL_LEVEL
    return 0 if np.count_nonzero(gray8 == 0) >= _EXACT_BLACK_SHARE * gray8.size else _SIGNAL_LEVEL


def _sector_hull(gray8: np.ndarray, lossy: bool | None = None) -> np.ndarray | None:
    """Convex hull (int32 points, full-resolution coordinates) of the sector, or None."""
    height, width = gray8.shape
    factor = max(1, int(np.ceil(max(height, width) / _DETECT_LONG_SIDE)))
    small = gray8 if factor == 1 else cv2.resize(
        gray8, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    h_small, w_small = small.shape
    # The opening disk (~1/32 of the short side; 18 px at 540 rows) is wider than text strokes,
    # ECG traces and the usual 8-12 px grey-scale bar, so they vanish; speckle does not.
    open_size = _odd(max(5, round(min(h_small, w_small) / 32)))
    level = _signal_level(gray8, lossy)
    signal = (cv2.blur(small, (3, 3)) > level).astype(np.uint8)
    opened = cv2.morphologyEx(signal, cv2.MORPH_OPEN, _disk(open_size))
    # No closing before labelling: it would weld text near the sector onto it.
    labels, stats = _components(opened, 8)
    if not stats:
        return None
    areas = np.array([stat[4] for stat in stats], dtype=np.float64)
    if areas.max() < _MIN_SECTOR_SHARE * h_small * w_small:
        return None
    # Share of each component's pixels that are signal before blurring: speckle fills its
    # component (>= 0.94 on the real frames), a block of text that survived the opening as a
    # blob of blurred strokes does not (<= 0.7).
    dense = np.bincount(labels.ravel(), weights=(small > level).ravel(),
                        minlength=len(stats) + 1)[1:] / areas
    big = areas >= _MIN_COMPONENT_SHARE * areas.max()
    fragment = ((areas >= _MIN_FRAGMENT_SHARE * h_small * w_small) & (dense >= _FRAGMENT_DENSITY)
                & ~big)
    if fragment.any():
        # ... and is thick: a grey-scale bar or a line of text that survived is narrow.
        distance = cv2.distanceTransform(opened, cv2.DIST_L2, 3)
        for index in np.flatnonzero(fragment):
            x, y, w, h, _ = stats[index]
            inside = labels[y:y + h, x:x + w] == index + 1
            fragment[index] = distance[y:y + h, x:x + w][inside].max() >= 0.75 * open_size
    keep = 1 + np.flatnonzero(big | fragment)
    contours, _ = cv2.findContours(np.isin(labels, keep).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    points = list(contours)
    hull = cv2.convexHull(np.concatenate(points)).reshape(-1, 2).astype(np.float64)
    # Small pixel (i, j) covers full-resolution pixels factor*i .. factor*i + factor - 1.
    # The 3x3 blur grew the signal by about one small pixel, which this rounding gives back.
    if factor > 1:
        on_right, on_bottom = hull[:, 0] >= w_small - 1, hull[:, 1] >= h_small - 1
        hull = hull * factor + (factor - 1) / 2.0
        hull[on_right, 0] = width - 1  # a sector touching the frame edge keeps its last pixels
        hull[on_bottom, 1] = height - 1
        hull[hull[:, 0] <= (factor - 1) / 2.0, 0] = 0
        hull[hull[:, 1] <= (factor - 1) / 2.0, 1] = 0
    hull[:, 0] = np.clip(hull[:, 0], 0, width - 1)
    hull[:, 1] = np.clip(hull[:, 1], 0, height - 1)
    return np.round(hull).astype(np.int32)


def _find_bars(gray8: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Grey-scale bars: strips exactly flat across, spanning >= 64 grey levels along."""
    boxes = []
    height, width = gray8.shape
    for transposed in (False, True):
        image = np.ascontiguousarray(gray8.T) if transposed else gray8
        rows, _ = image.shape
        across = np.ones((1, _BAR_FLAT_WIDTH), np.uint8)
        flat = ((cv2.dilate(image, across) == cv2.erode(image, across)) & (image > 0))
        length = _odd(max(_BAR_MIN_LENGTH, rows // 12))
        runs = cv2.morphologyEx(flat.astype(np.uint8), cv2.MORPH_OPEN,
                                np.ones((length, 1), np.uint8))
        labels, stats = _components(runs, 8)
        for label, (x, y, w, h, area) in enumerate(stats, start=1):
            if w > _BAR_MAX_WIDTH or h < 3 * w or area < 0.9 * w * h:
                continue
            values = image[y:y + h, x:x + w][labels[y:y + h, x:x + w] == label]
            if int(values.max()) - int(values.min()) < _BAR_MIN_GREY_RANGE:
                continue
            # The flat test loses (width-1)/2 columns at each side; add them back, plus half the
            # bar's width for the focus/depth markers scanners draw against it (HC18 487_HC).
            pad = _BAR_FLAT_WIDTH // 2 + 2 + (w + _BAR_FLAT_WIDTH) // 2
            x0, y0, x1, y1 = x - pad, y - 2, x + w + pad, y + h + 2
            if transposed:
                x0, y0, x1, y1 = y0, x0, y1, x1
            boxes.append((max(0, x0), max(0, y0), min(width, x1), min(height, y1)))
    return boxes


def _find_label_boxes(gray8: np.ndarray) -> list[tuple[tuple[int, int, int, int],
                                                      tuple[int, int, int, int]]]:
    """Dark label boxes: near-black rectangles (text closed over) with straight sides.

    Two passes: dark pixels including pure black (a box lying on the anatomy), and dark pixels
    excluding pure black (a box whose background is 1-8, which would otherwise merge with a
    pure-black frame background, e.g. the HC18 "Voluson" box straddling the fan edge).
    Returns (box with a 2 px margin, the box itself) pairs.
    """
    height, width = gray8.shape
    boxes: list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] = []
    close = np.ones((_BOX_GLYPH_CLOSE, _BOX_GLYPH_CLOSE), np.uint8)
    for lowest in (0, 1):
        dark = ((gray8 >= lowest) & (gray8 <= _BOX_DARK_LEVEL)).astype(np.uint8)
        dark = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, close)
        labels, stats = _components(dark, 4)
        for label, (x, y, w, h, area) in enumerate(stats, start=1):
            if (w < _BOX_MIN_SIDE or h < _BOX_MIN_SIDE or w * h > _BOX_MAX_SHARE * height * width
                    or area < _BOX_FILL * w * h / 2):
                continue
            component = (labels[y:y + h, x:x + w] == label).astype(np.uint8)
            contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            filled = np.zeros_like(component)
            cv2.drawContours(filled, contours, -1, 1, -1)
            if filled.mean() < _BOX_FILL:
                continue
            sides = (filled[0].mean(), filled[-1].mean(), filled[:, 0].mean(), filled[:, -1].mean())
            if sum(side >= _BOX_SIDE_COVER for side in sides) < 3:
                continue
            box = (max(0, x - 2), max(0, y - 2), min(width, x + w + 2), min(height, y + h + 2))
            if all(box != found for found, _ in boxes):
                boxes.append((box, (x, y, x + w, y + h)))
    return boxes


def _label_template(gray8: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """The box's pixels as a template when they hold text (not a plain dark rectangle)."""
    x0, y0, x1, y1 = box
    patch = gray8[y0:y1, x0:x1]
    if patch.size > _TEMPLATE_MAX_PIXELS or patch.std() < _TEMPLATE_MIN_STD:
        return None
    glyphs = (patch > np.median(patch) + 3).astype(np.uint8)
    if glyphs.mean() < _TEMPLATE_MIN_GLYPH_SHARE:
        return None
    if cv2.connectedComponents(glyphs, connectivity=8)[0] - 1 < 2:
        return None  # one blob (e.g. the end of a grey-scale bar) is not text
    return patch.copy()


def _match_templates(gray8: np.ndarray, templates: Iterable[np.ndarray]
                     ) -> list[tuple[int, int, int, int]]:
    """Where known label patches re-appear: correlation >= 0.8 and mean squared error at most
    half the patch's own variance (real matches on the HC18 frames: >= 0.91 and <= 0.33 of it;
    anything else: <= 0.52 and >= 0.8 of it)."""
    height, width = gray8.shape
    image = gray8.astype(np.float32)
    boxes = []
    for template in templates:
        th, tw = template.shape
        if th > height or tw > width:
            continue
        patch = template.astype(np.float32)
        centred = patch - patch.mean()
        # Squared error everywhere (one FFT-based pass); correlation only where it is small.
        error = cv2.matchTemplate(image, patch, cv2.TM_SQDIFF) / patch.size
        candidates = np.flatnonzero(error <= _TEMPLATE_MAX_ERROR * float(patch.var()))
        candidates = candidates[np.argsort(error.ravel()[candidates], kind="stable")]
        accepted: list[tuple[int, int]] = []
        for flat in candidates[:_TEMPLATE_MAX_CANDIDATES]:
            if len(accepted) >= _TEMPLATE_MAX_MATCHES:
                break
            y, x = divmod(int(flat), error.shape[1])
            if any(abs(y - ay) < th and abs(x - ax) < tw for ay, ax in accepted):
                continue
            window = image[y:y + th, x:x + tw]
            window = window - window.mean()
            denominator = float(np.sqrt((window ** 2).sum() * (centred ** 2).sum()))
            correlation = float((window * centred).sum()) / denominator if denominator else 0.0
            if correlation >= _TEMPLATE_MIN_CORRELATION:
                accepted.append((y, x))
                boxes.append((max(0, x - 2), max(0, y - 2), min(width, x + tw + 2),
                              min(height, y + th + 2)))
    return boxes


def merge_label_templates(known: list[np.ndarray], new: Iterable[np.ndarray], *,
                          limit: int = 8) -> list[np.ndarray]:
    """Add `new` patches to `known` unless one of the same size already matches (<= `limit`)."""
    for template in new:
        if len(known) >= limit:
            break
        duplicate = any(
            old.shape == template.shape and float(np.mean(
                (old.astype(np.float32) - template.astype(np.float32)) ** 2))
            <= _TEMPLATE_MAX_ERROR * float(old.var())
            for old in known)
        if not duplicate:
            known.append(template)
    return known


def find_scan_sector(gray: np.ndarray, *, lossy: bool | None = None,
                     templates: Iterable[np.ndarray] = ()) -> SectorResult:
    """Find the scan sector of a 2-D grayscale frame (uint8/uint16/float) and the overlays on it.

    Returns the keep-mask (sector minus burned-in bars and label boxes), the sector's kind and
    bounding box. `lossy`: True for JPEG-compressed pixels (ringing must not count as image),
    False for lossless ones, None to guess from the frame. `templates`: label patches learnt
    from other frames of the device (`SectorResult.label_templates`), blanked where they
    re-appear. Deterministic; about 25 ms of CPU for an 800x540 frame (plus ~10 ms a template).
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or 0 in gray.shape:
        raise ValueError(f"find_scan_sector needs a 2-D grayscale frame, got shape {gray.shape}")
    height, width = gray.shape
    gray8 = _to_uint8(gray)
    bars = _find_bars(gray8)
    if bars:  # a bar touching the sector would otherwise pull the hull out to the frame edge
        without_bars = gray8.copy()
        for x0, y0, x1, y1 in bars:
            without_bars[y0:y1, x0:x1] = 0
    else:
        without_bars = gray8
    hull = _sector_hull(without_bars, lossy)
    if hull is None:
        return SectorResult(np.zeros((height, width), bool), "none", (0, 0, 0, 0))
    sector = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(sector, hull, 1)
    x, y, w, h = cv2.boundingRect(hull)
    bbox = (x, y, x + w, y + h)
    area = float(sector.sum())
    if area >= _FULL_FRAME_SHARE * height * width:
        kind = "full-frame"
    elif area >= _RECTANGLE_FILL * w * h:
        kind = "rectangle"
    else:
        kind = "fan"
    labels = _find_label_boxes(gray8)
    learnt = tuple(t for t in (_label_template(gray8, exact) for _, exact in labels)
                   if t is not None)
    overlays = bars + [padded for padded, _ in labels]
    for box in _match_templates(gray8, templates):
        if box not in overlays:
            overlays.append(box)
    keep = sector.astype(bool)
    for x0, y0, x1, y1 in overlays:
        keep[y0:y1, x0:x1] = False
    return SectorResult(keep, kind, bbox, tuple(overlays), learnt)


def blank_outside_sector(gray: np.ndarray, mask: np.ndarray, *, fill: int | float = 0) -> np.ndarray:
    """Copy of `gray` with every pixel outside `mask` set to `fill` (0 = black).

    `gray` may be (H, W), (H, W, C), (N, H, W) or (N, H, W, C); `mask` is bool (H, W).
    """
    image = np.array(gray, copy=True)
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if image.shape[:2] == mask.shape and image.ndim in (2, 3):
        image[~mask] = fill          # (H, W) or (H, W, C)
    elif image.ndim in (3, 4) and image.shape[1:3] == mask.shape:
        image[:, ~mask] = fill       # (N, H, W) or (N, H, W, C)
    else:
        raise ValueError(f"mask shape {mask.shape} does not fit image shape {image.shape}")
    return image


def crop_box(sector: SectorResult) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) to crop a de-identified frame to: the sector's bounding box
    (`SectorResult.bbox`, the box the report's sector_* columns give); None when no sector was
    found (kind "none": the frame is all blanked, nothing to crop to)."""
    return None if sector.kind == "none" else tuple(int(v) for v in sector.bbox)


def crop_to_sector(gray: np.ndarray, *, lossy: bool | None = None,
                   templates: Iterable[np.ndarray] = ()) -> np.ndarray:
    """A frame as the models are trained on it: blanked outside the scan sector and cropped to
    the sector's bounding box (Tang 2023 s2.2, "cropped and masked"); `deidentify_folder(...,
    crop=True)` writes the same pixels. A frame with no sector is returned blanked, uncropped."""
    sector = find_scan_sector(gray, lossy=lossy, templates=templates)
    out = blank_outside_sector(gray, sector.mask)
    box = crop_box(sector)
    if box is None:
        return out
    x0, y0, x1, y1 = box
    return out[y0:y1, x0:x1]


# ============================================================================ DICOM header

DEIDENTIFICATION_METHOD = "PS3.15 E.1 Basic Profile; pixels outside scan sector blanked"

# DICOM PS3.15 (2026c) Annex E, Table E.1-1 "Application Level Confidentiality Profile
# Attributes", column "Basic Prof.", all of its rows: vendored as data (not a dependency) from
# the PyPI package dicom-anonymizer 2.1.0 (Kitware, BSD 3-clause licence beside the table), by
# scripts/vendor_ps315_table.py. Codes: D = replace with a dummy value, Z = zero-length value,
# X = remove, U = replace the UID by a new one, consistent within the run (the same input UID
# always maps to the same new UID, so studies and series stay grouped). Where the table offers
# a choice (X/Z, Z/D, X/D, X/Z/D, X/Z/U*) we take Z (or D for X/D) for the attributes the US
# Image IOD requires to be present (type 2: `_KEEP_PRESENT`) and X otherwise.
PROFILE_TABLE_PATH = Path(__file__).resolve().parent / "tables" / "ps315_table_e1_1.csv"
PROFILE_TABLE_SOURCE = ("DICOM PS3.15 Table E.1-1 (2026c), vendored from PyPI dicom-anonymizer "
                        "2.1.0 (BSD 3-clause)")
PROFILE_TABLE_ROWS = 655
_KEEP_PRESENT = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "AccessionNumber", "StudyID", "ReferringPhysicianName", "ContentDate", "ContentTime",
    "ContentCreatorName", "VerifyingObserverIdentificationCodeSequence"})
# Rows of the 2018-2024 tables that the current one dropped or never had: still removed.
_EXTRA_ACTIONS = {"EncryptedAttributesSequence": "X", "MACParametersSequence": "X",
                  "IssuerOfAccessionNumberSequence": "X", "IssuerOfPatientIDQualifiersSequence": "X",
                  "ResponsiblePersonRole": "X", "StorageMediaFileSetID": "X",
                  "TypeOfPatientID": "X"}


@dataclasses.dataclass(frozen=True)
class ProfileRow:
    """One row of Table E.1-1: `tag` 8 hex digits ('x' = any digit), the table's `code`
    (D, Z, X, U or a choice such as X/Z), and the `action` this module takes."""

    tag: str
    name: str
    code: str
    keyword: str
    action: str


def _resolve_choice(code: str, keyword: str) -> str:
    """One of D/Z/X/U for the table's code (see the comment on PROFILE_TABLE_PATH)."""
    if "/" not in code:
        return code
    options = code.replace("U*", "U").split("/")
    if keyword in _KEEP_PRESENT:
        return "Z" if "Z" in options else "D"
    return "X" if "X" in options else options[0]


def _load_profile_table(path: Path = PROFILE_TABLE_PATH) -> tuple[ProfileRow, ...]:
    import csv

    from pydicom.datadict import keyword_for_tag

    lines = [line for line in path.read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")]
    rows = []
    for record in csv.DictReader(lines):
        tag = record["tag"]
        keyword = "" if "x" in tag else keyword_for_tag(int(tag, 16))
        rows.append(ProfileRow(tag, record["name"], record["basic"], keyword,
                               _resolve_choice(record["basic"], keyword)))
    return tuple(rows)


PROFILE_TABLE: tuple[ProfileRow, ...] = _load_profile_table()
_ACTION_BY_TAG: dict[int, str] = {int(row.tag, 16): row.action for row in PROFILE_TABLE
                                  if "x" not in row.tag}
# keyword -> action of every table row pydicom names, plus `_EXTRA_ACTIONS`.
BASIC_PROFILE_ACTIONS: dict[str, str] = {row.keyword: row.action for row in PROFILE_TABLE
                                         if row.keyword}
BASIC_PROFILE_ACTIONS.update(_EXTRA_ACTIONS)

# Options of PS3.15 E.3 this module offers (`DeidentificationOptions`), with their CID 7050 code.
OPTION_CODES = {"basic": ("113100", "Basic Application Confidentiality Profile"),
                "retain_safe_private": ("113111", "Retain Safe Private Option"),
                "clean_descriptors": ("113105", "Clean Descriptors Option"),
                "retain_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates "
                                           "Option")}
# Clean Descriptors applies to the table's free-text descriptions, comments and labels.
_DESCRIPTOR_VRS = ("LO", "SH", "ST", "LT", "UT", "UC")
_DESCRIPTOR_WORDS = ("Description", "Comment", "Label", "Protocol Name")
_TEXT_VRS = ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
             "UR", "UT")


@dataclasses.dataclass(frozen=True)
class DeidentificationOptions:
    """The PS3.15 E.3 options beyond the Basic Profile (all off by default).

    retain_safe_private: (private creator, group, element offset 0x00-0xFF) triples declared
        safe (PS3.15 E.3.10: from the vendor's conformance statement); only those private
        elements are kept, with their creator element. None: every private tag is removed.
    clean_descriptors: keep the table's descriptions, comments and labels of text VR, cleaned:
        every word holding a digit, and every word found in an identifying attribute of the same
        data set (names, IDs, addresses, institutions...), is removed.
    retain_dates: keep dates and times (Retain Longitudinal Temporal Information, Full Dates).
    """

    retain_safe_private: frozenset[tuple[str, int, int]] | None = None
    clean_descriptors: bool = False
    retain_dates: bool = False

    def codes(self) -> list[tuple[str, str]]:
        chosen = ["basic"] + [name for name in ("retain_safe_private", "clean_descriptors",
                                                "retain_dates")
                              if getattr(self, name) not in (None, False)]
        return [OPTION_CODES[name] for name in chosen]


class DicomRun(dict):
    """The old -> new UID map of one run (a dict), carrying the run's DeidentificationOptions:
    pass one instance for every file of a run (`deidentify_file(uid_map=...)`)."""

    def __init__(self, options: DeidentificationOptions | None = None):
        super().__init__()
        self.options = options or DeidentificationOptions()


def read_safe_private_list(path: str | Path) -> frozenset[tuple[str, int, int]]:
    """The --retain-safe-private CSV: columns private_creator, group, element (hex: 0019 and
    the element's low byte, e.g. 10 for (0019,xx10)). InputError naming the row and column."""
    import csv

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "safe private list not found") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in ("private_creator", "group", "element") if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)} (need private_creator, "
                               "group, element)", row=None, column=missing[0])
    safe = set()
    for number, record in enumerate(reader, start=1):
        creator = (record["private_creator"] or "").strip()
        if not creator:
            raise InputError(path, "empty private creator", row=number, column="private_creator")
        values = []
        for column, top in (("group", 0xFFFF), ("element", 0xFF)):
            try:
                value = int((record[column] or "").strip(), 16)
            except ValueError:
                raise InputError(path, f"'{record[column]}' is not a hexadecimal number",
                                 row=number, column=column) from None
            if not 0 <= value <= top or (column == "group" and value % 2 == 0):
                raise InputError(path, f"'{record[column]}' is not a private {column}",
                                 row=number, column=column)
            values.append(value)
        safe.add((creator, values[0], values[1]))
    return frozenset(safe)


# Dummy values for action D, by VR.
_DUMMY_BY_VR = {"PN": "ANONYMOUS", "LO": "ANONYMOUS", "SH": "ANONYMOUS", "LT": "ANONYMOUS",
                "ST": "ANONYMOUS", "UT": "ANONYMOUS", "UC": "ANONYMOUS", "CS": "ANONYMOUS",
                "AE": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000"}
_DATE_TIME_VRS = ("DA", "DT", "TM")
# File-meta elements that can name the sending station.
_FILE_META_REMOVE = ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                     "ReceivingApplicationEntityTitle", "SourcePresentationAddress",
                     "SendingPresentationAddress", "ReceivingPresentationAddress",
                     "PrivateInformationCreatorUID", "PrivateInformation")


def _element_name(element) -> str:
    return element.keyword or f"({element.tag.group:04X},{element.tag.element:04X})"


def _is_registered_uid(value: str) -> bool:
    from pydicom.uid import UID_dictionary

    return str(value) in UID_dictionary


def _replace_uid(value: Any, uid_map: dict[str, str]) -> Any:
    from pydicom.multival import MultiValue
    from pydicom.uid import generate_uid

    def one(uid: Any) -> str:
        uid = str(uid).strip("\x00 ")
        if not uid:
            return uid
        if uid not in uid_map:
            uid_map[uid] = generate_uid()
        return uid_map[uid]

    if isinstance(value, (list, tuple, MultiValue)):
        return [one(v) for v in value]
    return one(value)


def _apply_action(dataset, element, action: str, uid_map: dict[str, str]) -> str:
    """Apply one profile action to `element` in `dataset`; return the action really done."""
    from pydicom.sequence import Sequence

    if action == "X":
        del dataset[element.tag]
        return "X"
    if element.VR == "UI" and action in ("U", "D"):
        element.value = _replace_uid(element.value, uid_map)
        return "U"
    if action == "U":
        del dataset[element.tag]
        return "X"
    if element.VR == "SQ":
        element.value = Sequence()  # D or Z of a sequence: keep it, empty
        return "Z"
    if action == "D" and element.VR in _DUMMY_BY_VR:
        element.value = _DUMMY_BY_VR[element.VR]
        return "D"
    if action == "D" and element.VR in ("US", "SS", "UL", "SL", "FL", "FD", "IS", "DS"):
        element.value = 0
        return "D"
    element.value = b"" if element.VR in ("OB", "OW", "UN") else ""  # Z, or D with no dummy
    return "Z"


_DESCRIPTOR_TAGS = frozenset(
    int(row.tag, 16) for row in PROFILE_TABLE
    if "x" not in row.tag and any(word in row.name for word in _DESCRIPTOR_WORDS))


def _words(value: Any) -> list[str]:
    import re

    return [w for w in re.split(r"[^0-9A-Za-z]+", str(value)) if w]


def _identifying_words(ds) -> set[str]:
    """Lower-case words of every text value the profile removes (names, IDs, addresses...),
    for Clean Descriptors: such a word in a description is removed with it."""
    found: set[str] = set()

    def callback(dataset, element) -> None:
        tag = int(element.tag)
        if element.VR not in _TEXT_VRS or tag in _DESCRIPTOR_TAGS:
            return
        if tag in _ACTION_BY_TAG or element.VR == "PN" or element.tag.is_private:
            found.update(w.lower() for w in _words(element.value))

    ds.walk(callback)
    return found


def _clean_descriptor(value: Any, identifying: set[str]) -> str:
    """The value's words minus any holding a digit or found in an identifying attribute."""
    kept = [w for w in _words(value)
            if not any(c.isdigit() for c in w) and w.lower() not in identifying]
    return " ".join(kept)


def _keep_private(dataset, element, safe: frozenset[tuple[str, int, int]] | None) -> bool:
    """Retain Safe Private: an element listed safe, or the creator of a block holding one."""
    if not safe:
        return False
    group, number = element.tag.group, element.tag.element
    if 0x0010 <= number <= 0x00FF:  # a private creator element
        creator = str(element.value).strip()
        return any(c == creator and g == group for c, g, _ in safe)
    creator_element = dataset.get((group, number >> 8))
    if creator_element is None or number < 0x1000:
        return False
    return (str(creator_element.value).strip(), group, number & 0xFF) in safe


def _deidentify_actions(ds, uid_map: dict[str, str]) -> dict[str, list[str]]:
    """Apply the profile to `ds` (in place) at every depth; return {action: [element names]}.

    `uid_map` may be a `DicomRun`, whose `options` (DeidentificationOptions) then apply.
    Actions: X, Z, D, U (above), C (a descriptor cleaned), K (a date kept, retain_dates),
    private (removed), private_kept (Retain Safe Private).
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    options = getattr(uid_map, "options", None) or DeidentificationOptions()
    done: dict[str, list[str]] = {"X": [], "Z": [], "D": [], "U": [], "C": [], "K": [],
                                  "private": [], "private_kept": []}
    identifying = _identifying_words(ds) if options.clean_descriptors else set()

    def private_callback(dataset, element) -> None:
        if not element.tag.is_private:
            return
        if _keep_private(dataset, element, options.retain_safe_private):
            done["private_kept"].append(_element_name(element))
            return
        done["private"].append(_element_name(element))
        del dataset[element.tag]

    ds.walk(private_callback)

    def callback(dataset, element) -> None:
        keyword = element.keyword
        group, tag = element.tag.group, int(element.tag)
        if element.tag.is_private:
            return  # only the safe ones are left (private_callback)
        if group & 0xFF00 in (0x5000, 0x6000) and group % 2 == 0:
            del dataset[element.tag]  # curves and overlays (can carry burned-in annotation)
            done["X"].append(_element_name(element))
            return
        action = _ACTION_BY_TAG.get(tag) or _EXTRA_ACTIONS.get(keyword)
        if action is None:
            if element.VR == "PN":
                action = "Z"
            elif element.VR in _DATE_TIME_VRS:
                action = "X"
            elif (element.VR == "UI" and element.value and not keyword.endswith("ClassUID")
                  and keyword not in ("TransferSyntaxUID", "CodingSchemeUID")
                  and not all(_is_registered_uid(v) for v in
                              (element.value if element.VM > 1 else [element.value]))):
                action = "U"
        if action is None:
            return
        if options.retain_dates and element.VR in _DATE_TIME_VRS:
            done["K"].append(_element_name(element))
            return
        if options.clean_descriptors and tag in _DESCRIPTOR_TAGS and element.VR in _DESCRIPTOR_VRS:
            element.value = _clean_descriptor(element.value, identifying)
            done["C"].append(_element_name(element))
            return
        done[_apply_action(dataset, element, action, uid_map)].append(_element_name(element))

    ds.walk(callback)

    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        elif "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = _replace_uid(meta.MediaStorageSOPInstanceUID, uid_map)
        for keyword in _FILE_META_REMOVE:
            if keyword in meta:
                delattr(meta, keyword)
                done["X"].append(keyword)

    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    codes = []
    for value, meaning in options.codes():
        code = Dataset()
        code.CodeValue = value
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = meaning
        codes.append(code)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    ds.LongitudinalTemporalInformationModified = "UNMODIFIED" if options.retain_dates else "REMOVED"
    return {action: sorted(set(names)) for action, names in done.items()}


def deidentify_dataset(ds, uid_map: dict[str, str] | None = None, *,
                       options: DeidentificationOptions | None = None) -> list[str]:
    """De-identify a pydicom Dataset in place (PS3.15 Basic Profile); return affected keywords.

    `uid_map` (old UID -> new UID) is read and extended: pass the same dict for every file of a
    run so that files of one study/series keep sharing their (new) UIDs. `options`: the E.3
    options (or give a `DicomRun` as `uid_map`). Private tags are named "(gggg,eeee)". Never
    returns a value from the data set.
    """
    run = uid_map if options is None and uid_map is not None else DicomRun(options)
    if uid_map is not None and run is not uid_map:
        run.update(uid_map)
    actions = _deidentify_actions(ds, run)
    if uid_map is not None and run is not uid_map:
        uid_map.update(run)
    return sorted({name for key, names in actions.items() if key not in ("K", "private_kept")
                   for name in names})


# ============================================================================ files

REPORT_COLUMNS = ("image_path", "format", "width", "height", "frames", "sector_kind",
                  "sector_x0", "sector_y0", "sector_x1", "sector_y1", "n_overlays",
                  "fraction_blanked", "fraction_signal_blanked", "dicom_removed",
                  "dicom_emptied", "dicom_dummy", "dicom_uids_replaced",
                  "dicom_private_removed", "dicom_cleaned", "dicom_dates_kept",
                  "dicom_private_kept", "cropped")

_RASTER_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp",
                   ".tif": "tiff", ".tiff": "tiff"}
_JPEG_QUALITY = 100
# At most this many frames (evenly spaced) of a cine loop form the detection image.
_MAX_DETECTION_FRAMES = 16
# JPEG Baseline, JPEG Extended, JPEG-LS near-lossless, JPEG 2000, HTJ2K (lossy variants).
_LOSSY_TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                                      "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
                                      "1.2.840.10008.1.2.4.203"})
# A folder run learns label templates from at most this many evenly spaced images.
_TEMPLATE_LEARN_IMAGES = 64
REPORT_CSV = "deid_report.csv"
REPORT_JSON = "deid_report.json"


def _image_format(path: Path) -> str:
    if io.is_dicom(path):
        return "dicom"
    fmt = _RASTER_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise io.ImageReadError(path, f"unsupported image suffix '{path.suffix}' (supported: "
                                      f"{', '.join(io.IMAGE_SUFFIXES)} or DICOM)")
    return fmt


def _signal_fraction_blanked(gray8: np.ndarray, keep: np.ndarray) -> float:
    signal = gray8 > _SIGNAL_LEVEL
    total = int(signal.sum())
    return 0.0 if total == 0 else float((signal & ~keep).sum()) / total


def _report_row(name: str, fmt: str, shape: tuple[int, int], frames: int, sector: SectorResult,
                gray8: np.ndarray, actions: dict[str, list[str]] | None,
                cropped: bool = False) -> dict[str, Any]:
    actions = actions or {}
    x0, y0, x1, y1 = sector.bbox
    return {
        "image_path": name,
        "format": fmt,
        "width": int(shape[1]),
        "height": int(shape[0]),
        "frames": int(frames),
        "sector_kind": sector.kind,
        "sector_x0": int(x0), "sector_y0": int(y0), "sector_x1": int(x1), "sector_y1": int(y1),
        "n_overlays": len(sector.overlay_boxes),
        "fraction_blanked": round(1.0 - float(sector.mask.mean()), 6),
        "fraction_signal_blanked": round(_signal_fraction_blanked(gray8, sector.mask), 6),
        "dicom_removed": ";".join(actions.get("X", [])),
        "dicom_emptied": ";".join(actions.get("Z", [])),
        "dicom_dummy": ";".join(actions.get("D", [])),
        "dicom_uids_replaced": ";".join(actions.get("U", [])),
        "dicom_private_removed": len(actions.get("private", [])),
        "dicom_cleaned": ";".join(actions.get("C", [])),
        "dicom_dates_kept": ";".join(actions.get("K", [])),
        "dicom_private_kept": len(actions.get("private_kept", [])),
        "cropped": bool(cropped),
    }


@dataclasses.dataclass
class _Loaded:
    """One input image, decoded: what is written back and the grayscale detection image."""

    fmt: str
    pixels: np.ndarray          # raster: cv2 array as stored; DICOM: (N, H, W[, 3]) frames
    gray: np.ndarray            # 2-D detection image (bright = echo)
    lossy: bool
    dataset: Any = None         # DICOM only


def _load_raster(src: Path, fmt: str) -> _Loaded:
    io.verify_image(src)  # structural checks with a one-line ImageReadError
    raw = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)  # keeps channels and bit depth
    if raw is None:
        raise io.ImageReadError(src, f"cannot decode {fmt.upper()} data")
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[:, :, 0]
    if raw.ndim == 2:
        gray = raw
    elif raw.ndim == 3 and raw.shape[2] in (3, 4):
        gray = cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY if raw.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    else:
        raise io.ImageReadError(src, f"unsupported pixel layout: array shape {raw.shape}")
    return _Loaded(fmt, raw, gray, fmt == "jpeg")


def _dicom_detection_gray(frames: np.ndarray, photometric: str, samples: int) -> np.ndarray:
    """Mean of up to 16 evenly spaced frames, as bright-is-echo grayscale (float32)."""
    index = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), _MAX_DETECTION_FRAMES))
                      .round().astype(int))
    picked = frames[index].astype(np.float32)
    if samples == 3:
        picked = picked @ np.array([0.299, 0.587, 0.114], np.float32)
    gray = picked.mean(axis=0)
    gray -= gray.min()
    if photometric == "MONOCHROME1":
        gray = gray.max() - gray
    return gray


def _load_dicom(src: Path) -> _Loaded:
    import pydicom

    io.verify_image(src)  # header, pixel module and decoder checks as a one-line ImageReadError
    try:
        ds = pydicom.dcmread(src, force=True)
        if ds.file_meta.get("TransferSyntaxUID") is None:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        lossy = (str(ds.get("LossyImageCompression", "")).strip() == "01"
                 or str(ds.file_meta.TransferSyntaxUID) in _LOSSY_TRANSFER_SYNTAXES)
        if ds.file_meta.TransferSyntaxUID.is_encapsulated:
            ds.decompress(generate_instance_uid=False)  # YBR -> RGB, native little endian
        pixels = ds.pixel_array
    except Exception as err:  # noqa: BLE001 -- library boundary: any decoder failure is bad input
        text = str(err).strip()
        reason = text.splitlines()[0][:300] if text else type(err).__name__
        raise io.ImageReadError(src, f"cannot decode DICOM pixel data: {reason}") from None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frames = pixels.reshape((n_frames,) + pixels.shape[-(3 if samples == 3 else 2):])
    gray = _dicom_detection_gray(frames, photometric, samples)
    return _Loaded("dicom", frames, gray, lossy, ds)


def _load(src: Path) -> _Loaded:
    fmt = _image_format(src)
    return _load_dicom(src) if fmt == "dicom" else _load_raster(src, fmt)


def _write_raster(loaded: _Loaded, sector: SectorResult, dst: Path,
                  box: tuple[int, int, int, int] | None = None) -> None:
    out = blank_outside_sector(loaded.pixels, sector.mask)
    if box is not None:
        out = out[box[1]:box[3], box[0]:box[2]]
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if loaded.fmt == "jpeg" else []
    with atomic.atomic_path(dst) as tmp:
        if not cv2.imwrite(str(tmp), out, params):  # cv2 writes pixels only, no metadata
            raise InputError(dst, f"cannot write {loaded.fmt.upper()} output")


def _write_dicom(loaded: _Loaded, sector: SectorResult, src: Path, dst: Path,
                 uid_map: dict[str, str],
                 box: tuple[int, int, int, int] | None = None) -> dict[str, list[str]]:
    ds, frames = loaded.dataset, loaded.pixels
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits_stored = int(ds.get("BitsStored", 8 * frames.dtype.itemsize))
    if photometric == "MONOCHROME1":  # black is the highest stored value
        fill = (1 << (bits_stored - 1)) - 1 if frames.dtype.kind == "i" else (1 << bits_stored) - 1
    else:
        fill = -(1 << (bits_stored - 1)) if frames.dtype.kind == "i" else 0
    blanked = frames.copy()
    blanked[:, ~sector.mask] = fill  # (N, H, W[, C]): explicit, whatever N is
    if box is not None:
        blanked = np.ascontiguousarray(blanked[:, box[1]:box[3], box[0]:box[2]])
    if photometric.startswith("YBR"):
        photometric = "RGB"  # pydicom decoded the colour to RGB
    n_frames = len(frames)
    keep_frames = "NumberOfFrames" in ds
    try:
        ds.set_pixel_data(blanked if n_frames > 1 else blanked[0], photometric, bits_stored,
                          generate_instance_uid=False)
    except NotImplementedError as err:
        raise io.ImageReadError(src, f"cannot rewrite DICOM pixel data: {err}") from None
    if keep_frames and "NumberOfFrames" not in ds:
        ds.NumberOfFrames = n_frames
    actions = _deidentify_actions(ds, uid_map)
    ds.BurnedInAnnotation = "NO"
    ds.preamble = b"\x00" * 128  # vendors may park data in the preamble
    with atomic.atomic_path(dst) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return actions


def deidentify_file(src: str | Path, dst: str | Path, *,
                    uid_map: dict[str, str] | None = None,
                    templates: Iterable[np.ndarray] = (), crop: bool = False) -> dict[str, Any]:
    """De-identify one image file into `dst` (same format); return its report row.

    `crop`: also crop the output to the sector's bounding box (`crop_box`; the row's sector_*
    columns give the box in the input's pixels, `cropped` says whether it was applied).

    `uid_map`: shared old -> new UID map (see `deidentify_dataset`); `templates`: label patches
    learnt from other frames (see `find_scan_sector`). Raises `ImageReadError` (an InputError
    naming `src`) when `src` cannot be read; `dst` is written atomically, so it is either
    complete or absent. The row's `image_path` is the input's file name (see the module
    docstring: names must not carry PHI).
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.resolve() == dst.resolve():
        raise InputError(dst, "refusing to overwrite the input image; write to another folder")
    loaded = _load(src)
    sector = find_scan_sector(loaded.gray, lossy=loaded.lossy, templates=templates)
    actions = None
    box = crop_box(sector) if crop else None
    if loaded.fmt == "dicom":
        actions = _write_dicom(loaded, sector, src, dst, {} if uid_map is None else uid_map, box)
    else:
        _write_raster(loaded, sector, dst, box)
    frames = len(loaded.pixels) if loaded.fmt == "dicom" else 1
    return _report_row(src.name, loaded.fmt, loaded.gray.shape, frames, sector,
                       _to_uint8(loaded.gray), actions, cropped=box is not None)


def learn_label_templates(paths: Iterable[str | Path], *, limit: int = 8) -> list[np.ndarray]:
    """Label patches (text boxes) found in `paths`, de-duplicated, at most `limit`.

    Burned-in labels of one device repeat from frame to frame; a label found clearly in one
    frame (a dark box on bright anatomy) is then found by template matching in frames where it
    sits on equally dark anatomy (HC18 362_HC and 487_HC).
    """
    templates: list[np.ndarray] = []
    for path in paths:
        loaded = _load(Path(path))
        sector = find_scan_sector(loaded.gray, lossy=loaded.lossy)
        merge_label_templates(templates, sector.label_templates, limit=limit)
        if len(templates) >= limit:
            break
    return templates


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _list_folder_images(images_dir: Path) -> list[Path]:
    """Image files under `images_dir` (by suffix, or DICOM by content), sorted, hidden skipped."""
    found = []
    for path in sorted(images_dir.rglob("*")):
        rel = path.relative_to(images_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() in io.IMAGE_SUFFIXES or io.is_dicom(path):
            found.append(rel)
    return found


def _list_manifest_images(manifest: Path) -> tuple[list[Path], list[Path]]:
    """(images, masks) the manifest lists, relative to its folder; validated by load_manifest.

    Masks (`mask_path`, `phi_mask_path`: phantom truth masks) are copied, not de-identified.
    Every path must stay inside the manifest's folder, so the copy under --out stays valid.
    """
    from .manifest import load_manifest

    frame = load_manifest(manifest)
    root = manifest.parent.resolve()
    listed: dict[str, list[Path]] = {"image_path": [], "mask_path": [], "phi_mask_path": []}
    for column, paths in listed.items():
        if column not in frame.columns:
            continue
        for row, value in enumerate(frame[column], start=1):
            if not value:
                continue
            rel = Path(value.replace("\\", "/"))
            if rel.is_absolute() or not _is_within((root / rel).resolve(), root):
                raise InputError(manifest, f"'{value}' must be a relative path inside the "
                                           f"manifest's folder", row=row, column=column)
            if rel not in paths:
                paths.append(rel)
    images = listed["image_path"]
    masks = [rel for rel in listed["mask_path"] + listed["phi_mask_path"] if rel not in images]
    return images, list(dict.fromkeys(masks))


# The manifest columns replaced by pseudonyms, with the pseudonym's prefix.
PSEUDONYM_COLUMNS = {"case_id": "case", "center": "center"}
KEY_SUFFIX = "_pseudonym_key.csv"
KEY_COLUMNS = ("column", "original", "pseudonym")
UNKNOWN_COLUMN_POLICIES = ("drop", "refuse", "keep")


def default_key_path(out_dir: str | Path) -> Path:
    """`<out_dir>_pseudonym_key.csv`, beside the output folder."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}{KEY_SUFFIX}"


def _read_key(path: Path) -> dict[tuple[str, str], str]:
    """(column, original) -> pseudonym of an existing key file ({} when there is none)."""
    import csv

    if not path.exists():
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            records = [[cell.strip() for cell in record] for record in csv.reader(handle)
                       if any(cell.strip() for cell in record)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(path, f"not a readable UTF-8 CSV pseudonym key: {err}") from None
    header, records = (records[0], records[1:]) if records else ([], [])
    short = next((n for n, r in enumerate(records, start=1) if len(r) != len(header)), None)
    if short is not None:
        raise InputError(path, f"{len(records[short - 1])} fields, the header has {len(header)}",
                         row=short)
    missing = [c for c in KEY_COLUMNS if c not in header]
    if missing:
        raise InputError(path, f"not a pseudonym key: no column '{missing[0]}' (need "
                               f"{', '.join(KEY_COLUMNS)})", column=missing[0])
    index = {c: header.index(c) for c in KEY_COLUMNS}
    key: dict[tuple[str, str], str] = {}
    taken: set[tuple[str, str]] = set()
    for number, record in enumerate(records, start=1):
        column, original, pseudonym = (record[index[c]] for c in KEY_COLUMNS)
        if column not in PSEUDONYM_COLUMNS:
            raise InputError(path, f"'{column}' is not a pseudonymised column "
                                   f"({', '.join(PSEUDONYM_COLUMNS)})", row=number,
                             column="column")
        if not pseudonym or (column, pseudonym) in taken:
            raise InputError(path, "empty or repeated pseudonym", row=number, column="pseudonym")
        if (column, original) in key:
            raise InputError(path, "original listed twice", row=number, column="original")
        key[(column, original)] = pseudonym
        taken.add((column, pseudonym))
    return key


def _new_pseudonym(prefix: str, taken: set[str]) -> str:
    """A random pseudonym (it tells nothing of the original, nor of the row order)."""
    import secrets

    while True:
        candidate = f"{prefix}-{secrets.token_hex(4)}"
        if candidate not in taken:
            return candidate


def _deidentified_manifest(manifest: Path, key_path: Path | None, unknown_columns: str
                           ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(the manifest to write, the key to write, what was done) for `deidentify_folder`.

    Values are copied as the input's text (no number reformatting). `key_path` None: no
    pseudonyms. Raises InputError naming the column for a refused one.
    """
    from .manifest import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, _read_csv_text

    if unknown_columns not in UNKNOWN_COLUMN_POLICIES:
        raise InputError(None, f"unknown-columns policy must be one of "
                               f"{', '.join(UNKNOWN_COLUMN_POLICIES)}")
    header, records = _read_csv_text(manifest)
    contract = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    unknown = [column for column in header if column not in contract]
    if unknown and unknown_columns == "refuse":
        raise InputError(manifest, f"column '{unknown[0]}' is not in the data contract "
                                   f"({', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}); remove "
                                   "it or use --unknown-columns drop", column=unknown[0])
    kept = [c for c in header if c in contract or unknown_columns == "keep"]
    frame = pd.DataFrame([[record[header.index(c)] for c in kept] for record in records],
                         columns=kept, dtype=str)
    key = {} if key_path is None else _read_key(key_path)
    before = len(key)
    done = []
    if key_path is not None:
        for column, prefix in PSEUDONYM_COLUMNS.items():
            if column not in frame.columns:
                continue
            taken = {p for (c, _), p in key.items() if c == column}
            values = []
            for original in frame[column]:
                if original and (column, original) not in key:
                    key[(column, original)] = _new_pseudonym(prefix, taken)
                    taken.add(key[(column, original)])
                values.append(key[(column, original)] if original else "")
            frame[column] = values
            done.append(column)
    key_frame = pd.DataFrame(sorted((c, o, p) for (c, o), p in key.items()),
                             columns=list(KEY_COLUMNS))
    summary = {"columns_kept": kept,
               "columns_dropped": [c for c in header if c not in kept],
               "columns_pseudonymised": done,
               "key_file": None if key_path is None else key_path.name,
               "pseudonyms_reused": before if key_path is not None else 0,
               "pseudonyms_new": len(key) - before,
               "note": "the key (original -> pseudonym) lies beside the output folder, never "
                       "inside it; keep it apart from the data"}
    return frame, key_frame, summary


def deidentify_folder(images_dir: str | Path | None, out_dir: str | Path,
                      manifest: str | Path | None = None, *, force: bool = False,
                      crop: bool = False, progress_every: int = 50,
                      progress: Callable[[str], None] | None = None,
                      options: DeidentificationOptions | None = None,
                      pseudonymise: bool = True, key_file: str | Path | None = None,
                      unknown_columns: str = "drop") -> pd.DataFrame:
    """De-identify every image of `images_dir` (or of `manifest`) into `out_dir`.

    Images keep their relative paths and formats. Without a manifest, every file under
    `images_dir` with an image suffix (or DICOM content) is taken. With a manifest, the images
    it lists (relative to the manifest's folder) are taken and the manifest is copied to
    `out_dir/<manifest name>`, so it stays valid for the de-identified copies. Writes
    `deid_report.csv` and `deid_report.json`; returns the report as a DataFrame.
    `crop`: crop every image to its scan sector's bounding box (`crop_to_sector`); a manifest's
    truth masks (`mask_path`, `phi_mask_path`) are cropped with their image's box, so they
    stay aligned pixel for pixel (InputError when a mask's size is not its image's).

    The manifest written under `out_dir` (see `_deidentified_manifest`): `case_id` and `center`
    replaced by pseudonyms (`pseudonymise`; the key original -> pseudonym in `key_file`,
    default `<out_dir>_pseudonym_key.csv` BESIDE the output folder, never inside it, reused and
    extended by a rerun), and columns the data contract does not know dropped
    (`unknown_columns="drop"`), refused ("refuse": InputError naming the column) or, for
    synthetic phantoms only, kept ("keep"). `options`: the PS3.15 E.3 options for DICOM.

    All-or-nothing: output is built in a staging folder and moved onto `out_dir` only when every
    image succeeded. Refuses (InputError) an `out_dir` inside the input folder (or containing
    it), and an existing non-empty `out_dir` unless `force` (which replaces it whole).
    """
    out_dir = Path(out_dir)
    manifest_path = None if manifest is None else Path(manifest)
    if manifest_path is not None:
        source_root = manifest_path.parent.resolve()
        rel_paths, mask_paths = _list_manifest_images(manifest_path)
    else:
        if images_dir is None:
            raise InputError(None, "give an images folder or a manifest")
        source_root = Path(images_dir).resolve()
        if not source_root.is_dir():
            raise InputError(images_dir, "images folder not found")
        rel_paths, mask_paths = _list_folder_images(source_root), []
    roots = {source_root} | ({Path(images_dir).resolve()} if images_dir is not None else set())
    target = out_dir.resolve()
    for root in roots:
        if _is_within(target, root) or _is_within(root, target):
            raise InputError(out_dir, f"output folder must lie outside the input folder "
                                      f"'{root}' (and not contain it)")
    if not rel_paths:
        raise InputError(manifest_path or images_dir, "no images found (suffixes "
                                                      f"{', '.join(io.IMAGE_SUFFIXES)} or DICOM)")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise InputError(out_dir, "output folder exists and is not empty; use --force to "
                                  "replace it or choose another --out")
    if manifest_path is not None:
        key_path = Path(key_file) if key_file is not None else default_key_path(out_dir)
        if _is_within(key_path.resolve(), target):
            raise InputError(key_path, "the pseudonym key must lie outside the output folder "
                                       "(it links pseudonyms to the original IDs)")
        out_manifest, key, manifest_summary = _deidentified_manifest(
            manifest_path, key_path if pseudonymise else None, unknown_columns)
    say = progress or (lambda message: print(message, file=sys.stderr, flush=True))

    # Pass 1: learn the device's label patches from a sample of frames (see find_scan_sector).
    sample = np.unique(np.linspace(0, len(rel_paths) - 1,
                                   min(len(rel_paths), _TEMPLATE_LEARN_IMAGES)).round().astype(int))
    templates = learn_label_templates(source_root / rel_paths[index] for index in sample)
    uid_map = DicomRun(options)
    rows = []
    started = time.perf_counter()
    with atomic.staged_dir(out_dir, overwrite=True) as stage:
        for number, rel in enumerate(rel_paths, start=1):
            row = deidentify_file(source_root / rel, stage / rel, uid_map=uid_map,
                                  templates=templates, crop=crop)
            row["image_path"] = rel.as_posix()
            rows.append(row)
            if progress_every and (number % progress_every == 0 or number == len(rel_paths)):
                say(f"deidentify: {number}/{len(rel_paths)} images "
                    f"({time.perf_counter() - started:.1f} s)")
        report = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
        atomic.write_csv(stage / REPORT_CSV, report)
        atomic.write_json(stage / REPORT_JSON, _report_document(
            rows, uid_map.options, manifest_summary if manifest_path is not None else None))
        if manifest_path is not None:
            atomic.write_csv(stage / manifest_path.name, out_manifest)
            if pseudonymise:  # beside the output, before the output appears
                atomic.write_csv(key_path, key)
            boxes = _mask_crop_boxes(manifest_path, rows) if crop else {}
            for rel in mask_paths:  # truth masks of phantoms: no PHI, copied (and cropped)
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                if rel.as_posix() in boxes:
                    _write_cropped_mask(source_root / rel, stage / rel, *boxes[rel.as_posix()])
                else:
                    shutil.copyfile(source_root / rel, stage / rel)
    return report


def _mask_crop_boxes(manifest: Path, rows: list[dict[str, Any]]
                     ) -> dict[str, tuple[tuple[int, int, int, int], tuple[int, int], int, str]]:
    """mask path -> (its image's crop box, the image's (height, width), manifest row, column)."""
    from .manifest import load_manifest

    by_image = {row["image_path"]: row for row in rows}
    boxes: dict[str, tuple[tuple[int, int, int, int], tuple[int, int], int, str]] = {}
    frame = load_manifest(manifest)
    for column in ("mask_path", "phi_mask_path"):
        if column not in frame.columns:
            continue
        for number, (image, mask) in enumerate(zip(frame["image_path"], frame[column]), start=1):
            row = by_image.get(Path(image.replace("\\", "/")).as_posix())
            if not mask or row is None or not row["cropped"]:
                continue
            key = Path(mask.replace("\\", "/")).as_posix()
            box = (row["sector_x0"], row["sector_y0"], row["sector_x1"], row["sector_y1"])
            entry = (box, (row["height"], row["width"]), number, column)
            if key in boxes and boxes[key][0] != box:
                raise InputError(manifest, f"mask '{mask}' belongs to images with different "
                                 "scan sectors, so it cannot be cropped with both; give each "
                                 "image its own mask", row=number, column=column)
            boxes[key] = entry
    return boxes


def _write_cropped_mask(src: Path, dst: Path, box: tuple[int, int, int, int],
                        image_hw: tuple[int, int], row: int, column: str) -> None:
    mask = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise io.ImageReadError(src, "cannot read the mask")
    if mask.shape[:2] != tuple(image_hw):
        raise InputError(src, f"mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                         f"{image_hw[1]}x{image_hw[0]} (W x H); a mask must match its image "
                         f"(manifest row {row}, column '{column}')")
    x0, y0, x1, y1 = box
    with atomic.atomic_path(dst) as tmp:
        if not cv2.imwrite(str(tmp), mask[y0:y1, x0:x1]):
            raise InputError(dst, "cannot write the cropped mask")


def _report_document(rows: list[dict[str, Any]], options: DeidentificationOptions | None = None,
                     manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON report: method, options, manifest handling, versions and per-image rows; no
    input path, no PHI."""
    from .provenance import git_commit, library_versions

    options = options or DeidentificationOptions()
    return {
        "method": DEIDENTIFICATION_METHOD,
        "dicom_profile": "DICOM PS3.15 Annex E, Table E.1-1, Basic Application Level "
                         "Confidentiality Profile (actions D/Z/X/U) at every nesting depth; "
                         "curves and overlays removed; private tags removed unless Retain Safe "
                         "Private keeps a listed one",
        "dicom_table": {"source": PROFILE_TABLE_SOURCE, "attributes": len(PROFILE_TABLE)},
        "dicom_options": {
            "codes": [code for code, _ in options.codes()],
            "retain_safe_private": (None if options.retain_safe_private is None
                                    else len(options.retain_safe_private)),
            "clean_descriptors": options.clean_descriptors,
            "retain_dates": options.retain_dates},
        "manifest": manifest,
        "pixel_method": "blanked outside the scan sector (convex hull of the speckle region) and "
                        "inside detected grey-scale bars and dark label boxes",
        "note": "image_path is the input's own file name: file names must not contain PHI",
        "n_images": len(rows),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "images": rows,
    }


# ============================================================================ CLI


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deidentify", help="blank outside the scan sector, strip DICOM identifiers",
        description="De-identify ultrasound images (Tang 2023, section 2.2): blank text, bars, "
                    "ECG traces and everything outside the scan sector; remove DICOM "
                    "identifiers per PS3.15 Annex E (Basic Profile). Writes the images under "
                    "--out with their relative paths and formats, plus deid_report.csv/.json. "
                    "File names are copied as they are: they must not contain PHI.")
    parser.add_argument("--images", default=None,
                        help="input folder (every JPEG/PNG/BMP/TIFF/DICOM under it); optional "
                             "with --manifest, whose folder is then the input folder")
    parser.add_argument("--out", required=True,
                        help="output folder (outside the input folder; created)")
    parser.add_argument("--manifest", default=None,
                        help="manifest CSV: process only its images (image_path relative to "
                             "it) and write a copy of it into --out")
    parser.add_argument("--force", action="store_true",
                        help="replace --out if it exists and is not empty")
    parser.add_argument("--crop", action="store_true",
                        help="also crop each image (and its manifest masks) to the scan sector's "
                             "bounding box, as Tang 2023 s2.2 ('cropped and masked')")
    parser.add_argument("--progress-every", type=int, default=50,
                        help="print progress to stderr every N images (default 50; 0 = never)")
    parser.add_argument("--key", default=None,
                        help="pseudonym key CSV (column, original, pseudonym) for the manifest's "
                             "case_id and center; default OUT_pseudonym_key.csv beside --out "
                             "(never inside it); an existing key is reused and extended, so a "
                             "rerun keeps the same pseudonyms")
    parser.add_argument("--unknown-columns", choices=("drop", "refuse"), default="drop",
                        help="manifest columns outside the data contract: drop them (default; "
                             "the report names them) or refuse the manifest (exit 2)")
    options = parser.add_argument_group("PS3.15 E.3 options (DICOM)")
    options.add_argument("--retain-safe-private", metavar="SAFE.csv", default=None,
                         help="Retain Safe Private Option: keep only the private elements this "
                              "CSV lists (private_creator, group, element: hex, e.g. "
                              "'ACME 1.0,0019,10'), from the vendor's conformance statement; "
                              "without it every private tag is removed")
    options.add_argument("--clean-descriptors", action="store_true",
                         help="Clean Descriptors Option: keep descriptions, comments and labels, "
                              "less every word with a digit or found in an identifying attribute")
    options.add_argument("--retain-dates", action="store_true",
                         help="Retain Longitudinal Temporal Information (Full Dates) Option: keep "
                              "dates and times")
    io.add_max_pixels_argument(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    io.apply_max_pixels(args)
    if args.images is None and args.manifest is None:
        raise InputError(None, "give --images IN_DIR, --manifest MANIFEST, or both")
    options = DeidentificationOptions(
        retain_safe_private=(None if args.retain_safe_private is None
                             else read_safe_private_list(args.retain_safe_private)),
        clean_descriptors=args.clean_descriptors, retain_dates=args.retain_dates)
    report = deidentify_folder(args.images, args.out, args.manifest, force=args.force,
                               crop=args.crop, progress_every=args.progress_every,
                               options=options, key_file=args.key,
                               unknown_columns=args.unknown_columns)
    if args.manifest is not None:
        summary = json.loads((Path(args.out) / REPORT_JSON).read_text(encoding="utf-8"))["manifest"]
        print(f"manifest: pseudonymised {', '.join(summary['columns_pseudonymised']) or 'nothing'} "
              f"({summary['pseudonyms_new']} new, {summary['pseudonyms_reused']} from the key "
              f"{summary['key_file']}, beside {args.out}); dropped columns: "
              f"{', '.join(summary['columns_dropped']) or 'none'}", file=sys.stderr)
    kinds = report["sector_kind"].value_counts().to_dict()
    print(f"deidentified {len(report)} images into {args.out} (sectors: "
          f"{', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}; "
          f"median blanked {report['fraction_blanked'].median():.1%}); report "
          f"{os.path.join(args.out, REPORT_CSV)}", file=sys.stderr)
    return 0
