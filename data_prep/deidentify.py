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
       straight sides), e.g. the scanner-name box of the HC18 frames; and text strokes the
       convex hull takes in (`_find_text_strokes`): a line of text touching the sector, such
       as a "DOE JANE PID ..." banner at the top of a fan, lies in the hull's notch above the
       fan or pulls the hull over itself. Bright one-coloured components inside the hull that
       do not survive a full-resolution opening of the signal (bright exactly flat 3x3 patches
       taken out first) are cut out by their boxes, also where they reach into the fan; a frame
       where one touches the sector is reported "burned-in text may remain" (report column
       `pixel_warning`; a DICOM keeps BurnedInAnnotation YES), since glyphs drawn on over the
       anatomy cannot always be told from it. On ../shared/data: 1 of 48 frames so reported
       (HC18 143_2HC, a bright echo line at the fan's edge).
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
    after the pixels are blanked, BurnedInAnnotation = NO are set (YES when text strokes were
    found reaching into the sector: the report's pixel_warning then says "burned-in text may
    remain").

Files (`deidentify_file`, `deidentify_folder`, `python -m data_prep deidentify`)
    Outputs keep the input's name and format. PNG/JPEG/BMP/TIFF are re-encoded by cv2.imwrite,
    which writes no metadata: EXIF, PNG text chunks, JPEG comments and ICC profiles of the input
    are never copied (JPEG is re-encoded at quality 100). DICOM keeps its header minus the
    identifiers above, its pixel data written uncompressed (Explicit VR Little Endian), whatever
    it came in: JPEG / JPEG-LS / JPEG 2000 / RLE decoded by the pinned pylibjpeg and pyjpegls
    plugins, YBR_* written as RGB, PALETTE COLOR through its lookup tables as RGB (8-bit when
    the table's entries are multiples of 256), big-endian and deflated data as little-endian,
    1-bit frames packed, 32-bit samples as 32-bit; the Image Pixel module is rewritten to match
    (`_set_native_pixel_data`). Refused, one line naming the file: no pixel data, pixel data cut
    short, an incomplete pixel module, a codestream no decoder accepts.
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
# Text strokes outside the sector: signal that an opening with this disk (full resolution)
# removes, in components of at least this many pixels (smaller ones are edge jaggies).
_STROKE_OPEN = 7
_STROKE_MIN_PIXELS = 10
# Burned-in graphics are drawn in flat colours: bright pixels (>= this level) whose 3x3
# neighbourhood is exactly one value are graphics, not speckle; a stroke component must have
# at least this share of its pixels within _STROKE_PEAK_RANGE grey levels of its brightest
# value, itself >= _FLAT_LEVEL (the core of an antialiased glyph: 0.35 for a 1 px "7").
_FLAT_LEVEL = 128
_STROKE_PEAK_RANGE = 16
_STROKE_PEAK_SHARE = 0.25
_STROKE_MODE_SHARE = 0.25    # or this share at one value >= _FLAT_LEVEL (a banner's fill)
TEXT_MAY_REMAIN = "burned-in text may remain"


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
    text_may_remain: text strokes found outside the sector reach into it (a banner touching
    the top of a fan): their boxes are blanked, but glyphs drawn over the anatomy cannot always be
    told from it, so the frame is reported as "burned-in text may remain" (and a DICOM keeps
    BurnedInAnnotation YES).
    """

    mask: np.ndarray
    kind: str
    bbox: tuple[int, int, int, int]
    overlay_boxes: tuple[tuple[int, int, int, int], ...] = ()
    label_templates: tuple[np.ndarray, ...] = ()
    text_may_remain: bool = False


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


def _find_text_strokes(gray8: np.ndarray, hull: np.ndarray, level: int
                       ) -> tuple[list[tuple[int, int, int, int]], bool]:
    """Text strokes inside the sector's hull but outside the sector itself.

    The hull is convex: a line of text touching the fan (a "DOE JANE PID ..." banner at its
    top) lies in the hull's concave notch, or pulls the hull over itself. At full resolution,
    the sector proper is the signal, less bright exactly flat 3x3 patches (glyph cores, banner
    fills: speckle is never flat), that survives an opening with a 7 px disk, holes filled
    (dark fluid and saturated echoes inside stay in); strokes do not survive. A component of
    what is left inside the hull, of >= 10 pixels with >= 25% of them within 16 grey levels of
    its brightest value or >= 25% at one value, that value >= 128 (text and banners are drawn in one bright
    colour, antialiased at most; speckle varies), is a stroke. Returns the strokes' boxes (2 px
    margin) and whether any touches the sector proper (its glyphs may go on over the anatomy).
    """
    from scipy import ndimage

    signal = (gray8 > level).astype(np.uint8)
    square = np.ones((3, 3), np.uint8)
    flat = (cv2.dilate(gray8, square) == cv2.erode(gray8, square)) & (gray8 >= _FLAT_LEVEL)
    proper = cv2.morphologyEx(signal & ~flat, cv2.MORPH_OPEN, _disk(_STROKE_OPEN))
    proper = ndimage.binary_fill_holes(proper)
    strokes = (signal > 0) & hull & ~proper
    if not strokes.any():
        return [], False
    height, width = gray8.shape
    near = cv2.dilate(proper.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    labels, stats = _components(strokes.astype(np.uint8), 8)
    boxes, touching = [], False
    for label, (x, y, w, h, area) in enumerate(stats, start=1):
        if area < _STROKE_MIN_PIXELS:
            continue
        counts = np.bincount(gray8[y:y + h, x:x + w][labels[y:y + h, x:x + w] == label])
        peak, mode = len(counts) - 1, int(counts.argmax())
        one_colour = mode >= _FLAT_LEVEL and counts[mode] >= _STROKE_MODE_SHARE * area
        near_peak = counts[max(0, peak - _STROKE_PEAK_RANGE):].sum()
        if not one_colour and (peak < _FLAT_LEVEL or near_peak < _STROKE_PEAK_SHARE * area):
            continue
        boxes.append((max(0, x - 2), max(0, y - 2), min(width, x + w + 2), min(height, y + h + 2)))
        touching |= bool(near[y:y + h, x:x + w][labels[y:y + h, x:x + w] == label].any())
    return boxes, touching


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
    strokes, touching = _find_text_strokes(without_bars, sector.astype(bool),
                                           _signal_level(gray8, lossy))
    overlays = bars + [padded for padded, _ in labels] + strokes
    for box in _match_templates(gray8, templates):
        if box not in overlays:
            overlays.append(box)
    keep = sector.astype(bool)
    for x0, y0, x1, y1 in overlays:
        keep[y0:y1, x0:x1] = False
    return SectorResult(keep, kind, bbox, tuple(overlays), learnt, touching)


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

# DICOM PS3.15 (2024) Annex E, Table E.1-1 "Application Level Confidentiality Profile
# Attributes", column "Basic Prof.": keyword -> action. D = replace with a dummy value,
# Z = replace with a zero-length value, X = remove, U = replace the UID with a new one,
# consistent within the run. Where the table offers a choice (X/Z, Z/D, X/Z/D, X/D, X/Z/U*) we
# take Z for attributes the US Image IOD requires to be present (type 2) and X otherwise.
BASIC_PROFILE_ACTIONS: dict[str, str] = {
    # --- patient
    "PatientName": "Z",
    "PatientID": "Z",
    "IssuerOfPatientID": "X",
    "IssuerOfPatientIDQualifiersSequence": "X",
    "TypeOfPatientID": "X",
    "PatientBirthDate": "Z",
    "PatientBirthTime": "X",
    "PatientSex": "Z",
    "PatientAge": "X",
    "PatientSize": "X",
    "PatientWeight": "X",
    "PatientSexNeutered": "X",
    "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X",
    "PatientBirthName": "X",
    "PatientMotherBirthName": "X",
    "PatientAddress": "X",
    "PatientTelephoneNumbers": "X",
    "PatientTelecomInformation": "X",
    "PatientReligiousPreference": "X",
    "CountryOfResidence": "X",
    "RegionOfResidence": "X",
    "MilitaryRank": "X",
    "BranchOfService": "X",
    "MedicalRecordLocator": "X",
    "EthnicGroup": "X",
    "Occupation": "X",
    "AdditionalPatientHistory": "X",
    "PatientComments": "X",
    "MedicalAlerts": "X",
    "Allergies": "X",
    "PregnancyStatus": "X",
    "SmokingStatus": "X",
    "LastMenstrualDate": "X",
    "PatientState": "X",
    "SpecialNeeds": "X",
    "ResponsiblePerson": "X",
    "ResponsiblePersonRole": "X",
    "ResponsibleOrganization": "X",
    "PatientInsurancePlanCodeSequence": "X",
    "PatientPrimaryLanguageCodeSequence": "X",
    "ReferencedPatientSequence": "X",
    "ReferencedPatientPhotoSequence": "X",
    "PatientInstitutionResidence": "X",
    "CurrentPatientLocation": "X",
    "AdmissionID": "X",
    "IssuerOfAdmissionIDSequence": "X",
    "AdmittingDiagnosesDescription": "X",
    "AdmittingDiagnosesCodeSequence": "X",
    "AdmittingDate": "X",
    "AdmittingTime": "X",
    "DischargeDate": "X",
    "DischargeTime": "X",
    "VisitComments": "X",
    "ServiceEpisodeID": "X",
    "ServiceEpisodeDescription": "X",
    "IssuerOfServiceEpisodeIDSequence": "X",
    # --- study / request
    "StudyDate": "Z",
    "StudyTime": "Z",
    "AccessionNumber": "Z",
    "IssuerOfAccessionNumberSequence": "X",
    "StudyID": "Z",
    "StudyDescription": "X",
    "StudyComments": "X",
    "ReasonForStudy": "X",
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "ConsultingPhysicianName": "X",
    "ConsultingPhysicianIdentificationSequence": "X",
    "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "RequestingPhysician": "X",
    "RequestingService": "X",
    "ReferencedStudySequence": "X",
    "RequestAttributesSequence": "X",
    "RequestedProcedureDescription": "X",
    "RequestedProcedureID": "X",
    "RequestedProcedureComments": "X",
    "RequestedProcedureLocation": "X",
    "ReasonForTheRequestedProcedure": "X",
    "ImagingServiceRequestComments": "X",
    "FillerOrderNumberImagingServiceRequest": "X",
    "PlacerOrderNumberImagingServiceRequest": "X",
    "OrderEnteredBy": "X",
    "OrderEntererLocation": "X",
    "OrderCallbackPhoneNumber": "X",
    "ScheduledPerformingPhysicianName": "X",
    "ScheduledProcedureStepDescription": "X",
    "ScheduledProcedureStepID": "X",
    "ScheduledStationName": "X",
    "ScheduledStudyLocation": "X",
    # --- series / equipment / acquisition
    "SeriesDate": "X",
    "SeriesTime": "X",
    "AcquisitionDate": "X",
    "AcquisitionTime": "X",
    "AcquisitionDateTime": "X",
    "ContentDate": "Z",
    "ContentTime": "Z",
    "InstanceCreationDate": "X",
    "InstanceCreationTime": "X",
    "OverlayDate": "X",
    "OverlayTime": "X",
    "CurveDate": "X",
    "CurveTime": "X",
    "TimezoneOffsetFromUTC": "X",
    "SeriesDescription": "X",
    "ProtocolName": "X",
    "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "OperatorsName": "X",
    "OperatorIdentificationSequence": "X",
    "InstitutionName": "X",
    "InstitutionAddress": "X",
    "InstitutionalDepartmentName": "X",
    "InstitutionalDepartmentTypeCodeSequence": "X",
    "InstitutionCodeSequence": "X",
    "StationName": "X",
    "DeviceSerialNumber": "X",
    "DeviceDescription": "X",
    "UniqueDeviceIdentifier": "X",
    "DetectorID": "X",
    "GantryID": "X",
    "PerformedStationName": "X",
    "PerformedStationAETitle": "X",
    "PerformedLocation": "X",
    "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X",
    "PerformedProcedureStepEndDate": "X",
    "PerformedProcedureStepEndTime": "X",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X",
    "ReferencedPerformedProcedureStepSequence": "X",
    "AcquisitionComments": "X",
    "AcquisitionDeviceProcessingDescription": "X",
    "DerivationDescription": "X",
    "ImageComments": "X",
    "FrameComments": "X",
    "ImagePresentationComments": "X",
    "IconImageSequence": "X",
    "GraphicAnnotationSequence": "X",
    "TextString": "X",
    "TextComments": "X",
    "ContentSequence": "X",
    "SourceImageSequence": "X",
    "ReferencedImageSequence": "X",
    "StorageMediaFileSetID": "X",
    "DataSetTrailingPadding": "X",
    "DigitalSignaturesSequence": "X",
    "MACParametersSequence": "X",
    "EncryptedAttributesSequence": "X",
    "OriginalAttributesSequence": "X",
    "ModifiedAttributesSequence": "X",
    # --- observers / persons (structured reports, annotations)
    "ContentCreatorName": "Z",
    "ContentCreatorIdentificationCodeSequence": "X",
    "VerifyingObserverName": "D",
    "VerifyingObserverIdentificationCodeSequence": "Z",
    "VerifyingOrganization": "X",
    "PersonName": "D",
    "PersonIdentificationCodeSequence": "D",
    "PersonAddress": "X",
    "PersonTelephoneNumbers": "X",
    # --- unique identifiers
    "StudyInstanceUID": "U",
    "SeriesInstanceUID": "U",
    "SOPInstanceUID": "U",
    "FrameOfReferenceUID": "U",
    "SynchronizationFrameOfReferenceUID": "U",
    "ReferencedFrameOfReferenceUID": "U",
    "RelatedFrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U",
    "InstanceCreatorUID": "U",
    "ConcatenationUID": "U",
    "DimensionOrganizationUID": "U",
    "IrradiationEventUID": "U",
    "StorageMediaFileSetUID": "U",
    "DeviceUID": "U",
    "DoseReferenceUID": "U",
    "FiducialUID": "U",
    "TargetUID": "U",
    "TransactionUID": "U",
    "TemplateExtensionCreatorUID": "U",
    "TemplateExtensionOrganizationUID": "U",
    "UID": "U",
}

# Dummy values for action D, by VR.
_DUMMY_BY_VR = {"PN": "ANONYMOUS", "LO": "ANONYMOUS", "SH": "ANONYMOUS", "LT": "ANONYMOUS",
                "ST": "ANONYMOUS", "UT": "ANONYMOUS", "CS": "ANONYMOUS", "DA": "19000101",
                "TM": "000000", "DT": "19000101000000"}
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
    if action == "U":
        if element.VR == "UI":
            element.value = _replace_uid(element.value, uid_map)
            return "U"
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
    element.value = ""  # Z, or D with no sensible dummy
    return "Z"


def _deidentify_actions(ds, uid_map: dict[str, str]) -> dict[str, list[str]]:
    """Apply the profile to `ds` (in place); return {action: [element names]} of what changed."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    done: dict[str, list[str]] = {"X": [], "Z": [], "D": [], "U": [], "private": []}

    def private_callback(dataset, element) -> None:
        if element.tag.is_private:
            done["private"].append(_element_name(element))

    ds.walk(private_callback)
    ds.remove_private_tags()

    def callback(dataset, element) -> None:
        keyword = element.keyword
        group = element.tag.group
        if group & 0xFF00 in (0x5000, 0x6000) and group % 2 == 0:
            del dataset[element.tag]  # curves and overlays (can carry burned-in annotation)
            done["X"].append(_element_name(element))
            return
        action = BASIC_PROFILE_ACTIONS.get(keyword)
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
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    return {action: sorted(set(names)) for action, names in done.items()}


def deidentify_dataset(ds, uid_map: dict[str, str] | None = None) -> list[str]:
    """De-identify a pydicom Dataset in place (PS3.15 Basic Profile); return affected keywords.

    `uid_map` (old UID -> new UID) is read and extended: pass the same dict for every file of a
    run so that files of one study/series keep sharing their (new) UIDs. Private tags are named
    "(gggg,eeee)". Never returns a value from the data set.
    """
    actions = _deidentify_actions(ds, {} if uid_map is None else uid_map)
    return sorted({name for names in actions.values() for name in names})


# ============================================================================ files

REPORT_COLUMNS = ("image_path", "format", "width", "height", "frames", "sector_kind",
                  "sector_x0", "sector_y0", "sector_x1", "sector_y1", "n_overlays",
                  "fraction_blanked", "fraction_signal_blanked", "dicom_removed",
                  "dicom_emptied", "dicom_dummy", "dicom_uids_replaced",
                  "dicom_private_removed", "cropped", "pixel_warning")

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
        "cropped": bool(cropped),
        "pixel_warning": TEXT_MAY_REMAIN if sector.text_may_remain else "",
    }


@dataclasses.dataclass
class _Loaded:
    """One input image, decoded: what is written back and the grayscale detection image."""

    fmt: str
    pixels: np.ndarray          # raster: cv2 array as stored; DICOM: (N, H, W[, 3]) frames
    gray: np.ndarray            # 2-D detection image (bright = echo)
    lossy: bool
    dataset: Any = None         # DICOM only
    pixel_format: "_PixelFormat | None" = None  # DICOM only: how `pixels` is written back


@dataclasses.dataclass(frozen=True)
class _PixelFormat:
    """How decoded DICOM frames are stored when written back (native, Explicit VR LE)."""

    photometric: str            # MONOCHROME1/2 or RGB (palettes and YBR_* decoded to RGB)
    bits_allocated: int         # 1, 8, 16 or 32
    bits_stored: int
    signed: bool
    source_big_endian: bool     # the input was Explicit VR Big Endian


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
    """Decode every frame: JPEG / JPEG-LS / JPEG 2000 / RLE with the pylibjpeg and pyjpegls
    plugins, YBR_* to RGB (the decoders and pydicom.pixels.convert_color_space), PALETTE COLOR
    through its lookup tables to RGB, big-endian and deflated data to native arrays."""
    import pydicom

    io.verify_image(src)  # header, pixel module and decoder checks as a one-line ImageReadError
    try:
        ds = pydicom.dcmread(src, force=True)
        if ds.file_meta.get("TransferSyntaxUID") is None:
            implicit, little = getattr(ds, "original_encoding", (True, True))
            ds.file_meta.TransferSyntaxUID = (
                pydicom.uid.ImplicitVRLittleEndian if implicit is not False else
                pydicom.uid.ExplicitVRLittleEndian if little is not False else
                pydicom.uid.ExplicitVRBigEndian)
        tsyntax = ds.file_meta.TransferSyntaxUID
        lossy = (str(ds.get("LossyImageCompression", "")).strip() == "01"
                 or str(tsyntax) in _LOSSY_TRANSFER_SYNTAXES)
        pixels = ds.pixel_array  # RGB for every YBR_* interpretation (pydicom's as_rgb)
    except Exception as err:  # noqa: BLE001 -- library boundary: any decoder failure is bad input
        raise io.ImageReadError(src, f"cannot decode DICOM pixel data: "
                                     f"{io.decoder_reason(err)}") from None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits_allocated = int(ds.BitsAllocated)
    bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    frames = pixels.reshape((n_frames,) + pixels.shape[-(3 if samples == 3 else 2):])
    if photometric == io.DICOM_PALETTE:
        frames, bits_stored = io.dicom_palette_to_rgb(src, ds, frames)
        bits_allocated, samples = 8 * frames.dtype.itemsize, 3
    if samples == 3:
        photometric = "RGB"
    fmt = _PixelFormat(photometric, bits_allocated, bits_stored,
                       frames.dtype.kind == "i", not tsyntax.is_little_endian)
    gray = _dicom_detection_gray(frames, photometric, samples)
    return _Loaded("dicom", frames, gray, lossy, ds, fmt)


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
    import pydicom

    ds, frames, fmt = loaded.dataset, loaded.pixels, loaded.pixel_format
    bits_stored = fmt.bits_stored
    if fmt.photometric == "MONOCHROME1":  # black is the highest stored value
        fill = (1 << (bits_stored - 1)) - 1 if fmt.signed else (1 << bits_stored) - 1
    else:
        fill = -(1 << (bits_stored - 1)) if fmt.signed else 0
    blanked = frames.copy()
    blanked[:, ~sector.mask] = fill  # (N, H, W[, C]): explicit, whatever N is
    if box is not None:
        blanked = np.ascontiguousarray(blanked[:, box[1]:box[3], box[0]:box[2]])
    _set_native_pixel_data(ds, blanked, fmt)
    actions = _deidentify_actions(ds, uid_map)
    # NO only when no text was found reaching into the sector (see SectorResult).
    ds.BurnedInAnnotation = "YES" if sector.text_may_remain else "NO"
    ds.preamble = b"\x00" * 128  # vendors may park data in the preamble
    with atomic.atomic_path(dst) as tmp:
        # dcmwrite, not save_as: save_as refuses to write a big-endian input little-endian.
        # Every element was decoded from the input's encoding above, so none is copied raw.
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return actions


# Pixel-module elements that describe a palette or an encoding no longer there once the frames
# are written back as native RGB / grey levels.
_STALE_PIXEL_ELEMENTS = (
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "AlphaPaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "AlphaPaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData", "SegmentedAlphaPaletteColorLookupTableData",
    "PaletteColorLookupTableUID", "ExtendedOffsetTable", "ExtendedOffsetTableLengths")
# Raw-byte VRs whose words a big-endian file stores swapped (word size in bytes).
_SWAPPED_VR_WORDS = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _set_native_pixel_data(ds, frames: np.ndarray, fmt: _PixelFormat) -> None:
    """Store (N, H, W[, 3]) frames as native Explicit VR Little Endian pixel data and make the
    Image Pixel module agree: 1-bit frames packed (PS3.5 8.1.1), 8-32 bit little-endian
    words, RGB with PlanarConfiguration 0; palette tables and offset tables dropped. A
    big-endian input's other word-valued raw elements (LUT data) are byte-swapped."""
    from pydicom.pixels import pack_bits
    from pydicom.uid import ExplicitVRLittleEndian

    n_frames, rows, columns = frames.shape[:3]
    samples = frames.shape[3] if frames.ndim == 4 else 1
    if fmt.bits_allocated == 1:
        data = pack_bits(frames.astype(np.uint8).ravel() & 1, pad=True)
    else:
        kind = "i" if fmt.signed else "u"
        data = frames.astype(f"<{kind}{fmt.bits_allocated // 8}", copy=False).tobytes()
        data += b"\x00" * (len(data) % 2)
    if fmt.source_big_endian:
        for element in ds.iterall():
            size = _SWAPPED_VR_WORDS.get(element.VR)
            if size and element.tag != 0x7FE00010 and isinstance(element.value, bytes):
                words = np.frombuffer(element.value, f">u{size}", len(element.value) // size)
                element.value = words.astype(f"<u{size}").tobytes()
    for keyword in _STALE_PIXEL_ELEMENTS:
        if keyword in ds:
            delattr(ds, keyword)
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = fmt.photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored = fmt.bits_allocated, fmt.bits_stored
    ds.HighBit = fmt.bits_stored - 1
    ds.PixelRepresentation = int(fmt.signed)
    if n_frames > 1 or "NumberOfFrames" in ds:
        ds.NumberOfFrames = n_frames
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if fmt.bits_allocated <= 8 else "OW"
    ds["PixelData"].is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


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


def deidentify_folder(images_dir: str | Path | None, out_dir: str | Path,
                      manifest: str | Path | None = None, *, force: bool = False,
                      crop: bool = False, progress_every: int = 50,
                      progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """De-identify every image of `images_dir` (or of `manifest`) into `out_dir`.

    Images keep their relative paths and formats. Without a manifest, every file under
    `images_dir` with an image suffix (or DICOM content) is taken. With a manifest, the images
    it lists (relative to the manifest's folder) are taken and the manifest is copied to
    `out_dir/<manifest name>`, so it stays valid for the de-identified copies. Writes
    `deid_report.csv` and `deid_report.json`; returns the report as a DataFrame.
    `crop`: crop every image to its scan sector's bounding box (`crop_to_sector`); a manifest's
    truth masks (`mask_path`, `phi_mask_path`) are cropped with their image's box, so they
    stay aligned pixel for pixel (InputError when a mask's size is not its image's).

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
    say = progress or (lambda message: print(message, file=sys.stderr, flush=True))

    # Pass 1: learn the device's label patches from a sample of frames (see find_scan_sector).
    sample = np.unique(np.linspace(0, len(rel_paths) - 1,
                                   min(len(rel_paths), _TEMPLATE_LEARN_IMAGES)).round().astype(int))
    templates = learn_label_templates(source_root / rel_paths[index] for index in sample)
    uid_map: dict[str, str] = {}
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
        flagged = [row["image_path"] for row in rows if row["pixel_warning"]]
        if flagged:
            say(f"deidentify: {len(flagged)} image(s) {TEXT_MAY_REMAIN} (text reaches into the "
                f"sector; pixel_warning in {REPORT_CSV}, BurnedInAnnotation YES), first: "
                f"{flagged[0]}")
        report = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
        atomic.write_csv(stage / REPORT_CSV, report)
        atomic.write_json(stage / REPORT_JSON, _report_document(rows))
        if manifest_path is not None:
            shutil.copyfile(manifest_path, stage / manifest_path.name)
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


def _report_document(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON report: method, versions and per-image rows; no input path, no PHI."""
    from .provenance import git_commit, library_versions

    return {
        "method": DEIDENTIFICATION_METHOD,
        "dicom_profile": "DICOM PS3.15 Annex E, Table E.1-1, Basic Application Level "
                         "Confidentiality Profile (actions D/Z/X/U); private tags, curves and "
                         "overlays removed",
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
    io.add_max_pixels_argument(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    io.apply_max_pixels(args)
    if args.images is None and args.manifest is None:
        raise InputError(None, "give --images IN_DIR, --manifest MANIFEST, or both")
    report = deidentify_folder(args.images, args.out, args.manifest, force=args.force,
                               crop=args.crop, progress_every=args.progress_every)
    kinds = report["sector_kind"].value_counts().to_dict()
    print(f"deidentified {len(report)} images into {args.out} (sectors: "
          f"{', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}; "
          f"median blanked {report['fraction_blanked'].median():.1%}); report "
          f"{os.path.join(args.out, REPORT_CSV)}", file=sys.stderr)
    return 0
