"""Face photos: MTCNN detection, five-point alignment to a template, eye bars for figures.

Hong 2021 (gs_vgg16) detects and aligns each child's face with MTCNN before VGG-16 sees it at
224x224; Shen 2024 (ps_face) feeds IResNet-100 with ArcFace-style 112x112 crops. This module is
that step, with a report that says, for every photo, what was found.

Detection (`detect_faces`, `assess_faces`, `detect_face`)
    MTCNN (Zhang et al. 2016; PyPI `mtcnn` 1.0.0, its packaged PNet/RNet/ONet weights) on CPU,
    one detector per process (built on first use: TensorFlow and mtcnn are imported only then,
    so `import data_prep` stays fast). The weights are always loaded from the package's own files
    by absolute path: mtcnn's loader would otherwise first try `pnet.lz4` etc. in the CURRENT
    folder, and those files are pickles (joblib), so a stray file there could replace the
    detector or run code. Inference on CPU with fixed weights is deterministic on one machine
    (another CPU may pick other oneDNN kernels and differ in the last decimals); candidates are
    sorted by confidence, then size, then position, so ties cannot reorder the report.
    Photos whose long side exceeds DETECT_LONG_SIDE (1280 px) are detected on a downscaled copy
    (INTER_AREA) and the boxes and points scaled back; MTCNN's pyramid starts at faces of 20 px
    of that copy, so smaller faces are not seen at all.

    Each photo gets exactly one status, with a human-readable reason, and is never dropped or
    silently reduced to its largest face:
      ok               one face: confidence >= MIN_CONFIDENCE (0.95, `--min-confidence`) and a
                       box whose shorter side is >= the minimum face size (MIN_FACE_PX = 48 px,
                       `--min-face`);
      several_faces    two or more such faces (a parent's face beside the child's, two photos
                       pasted together): which one is the patient is not guessed;
      face_too_small   faces found, but none reaches the minimum size. 48 px is the input size
                       of ONet, MTCNN's last stage, which regresses the five points: a smaller
                       face is upsampled before its points are found, and a 224 crop of it is
                       mostly interpolation;
      no_face          no candidate with confidence >= MIN_CONFIDENCE;
      landmarks_given  the manifest's `landmarks` cell was used, no detection was run
                       (`--landmarks prefer`, the default);
      landmarks_fallback  detection found no usable face (the reason says why) and the
                       manifest's landmarks were used instead (`--landmarks fallback`).
    Candidates below MIN_CONFIDENCE, and faces below the minimum size beside one that reaches
    it, do not change the status but are counted in the reason (`n_candidates`). Why 0.95 and
    not MTCNN's own 0.8 (or 0.90): the astronaut photo upscaled to 1280-2048 px shows a second
    "face" on the spacesuit at confidence 0.896-0.904, which would make it several_faces; the
    real faces of the tests score >= 0.99, and 97 of the 100 upscaled LFW faces >= 0.95.

Alignment (`similarity_from_points`, `align_face`, `TEMPLATES`)
    The five points are, in this order (the manifest's `landmarks` order, MTCNN's and
    insightface's): left eye, right eye, nose tip, left mouth corner, right mouth corner, where
    LEFT MEANS THE IMAGE'S LEFT (the child's right eye is the `left_eye`). A similarity
    transform (rotation, uniform scale, translation: no shear, so a face keeps its proportions)
    is fitted by least squares (Umeyama 1991, `skimage.transform.SimilarityTransform.
    from_estimate`) from the points to insightface's ArcFace template `arcface_dst` at 112x112,
    or the same template times 2 at 224x224 (the VGG input of Hong 2021), and the photo is
    warped with `cv2.warpAffine` (bilinear, black outside the photo), as insightface's
    `norm_crop` does. The aligned manifest carries the five points moved by the same transform.

Figures (`eye_bar`): a black bar over both eyes, as Hong 2021's Figure 1 shows faces.

CLI: `python -m data_prep faces --manifest M.csv --out DIR --size 224|112 [--min-face PX]
[--force]` writes `DIR/faces/NNNNNN.png` (aligned, de-identified crops: pixels only, see
`data_prep.deidentify_photo`, named by manifest row, never by the input's name),
`DIR/detections.csv` (one row per manifest row: row, status, reason, n_faces, n_candidates,
box, confidence, landmarks in the upright photo, aligned_path), `DIR/manifest.csv` (the aligned
crops that have one, data-contract columns, landmarks in the aligned frame) and
`DIR/faces_report.json` (method, template, thresholds, counts, versions). Staged: nothing
half-written, nothing replaced without --force. Exit 0 when every photo has its face, 1 when
some have none (a finding: the report says which, their crops are not written), 2 for bad
input (one line naming the file, row and column). Measured on this project's CPU: about
0.15-0.2 s per 512x512 photo once the detector is built (about 4 s).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import pandas as pd

from . import atomic, io
from .deidentify_photo import (check_output_folder, contract_manifest, pseudonymous_name,
                               read_manifest_photo, write_png)
from .errors import InputError

__all__ = [
    "ALIGNED_STATUSES",
    "ARCFACE_TEMPLATE_112",
    "DETECTION_COLUMNS",
    "LANDMARK_NAMES",
    "MIN_CONFIDENCE",
    "MIN_FACE_PX",
    "STATUSES",
    "TEMPLATES",
    "DetectionReport",
    "Face",
    "add_cli",
    "align_face",
    "aligned_points",
    "assess_faces",
    "detect_face",
    "detect_faces",
    "eye_bar",
    "faces_from_manifest",
    "landmarks_report",
    "similarity_from_points",
]

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# insightface's arcface_dst (python-package/insightface/utils/face_align.py): where the five
# points of a 112x112 ArcFace crop lie, (x, y) per point, in LANDMARK_NAMES order.
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
# Output size (pixels, square) -> template. 224 is the same face layout scaled by 2.
TEMPLATES: dict[int, np.ndarray] = {112: ARCFACE_TEMPLATE_112, 224: ARCFACE_TEMPLATE_112 * 2.0}

STATUSES = ("ok", "landmarks_given", "landmarks_fallback", "no_face", "several_faces",
            "face_too_small")
ALIGNED_STATUSES = ("ok", "landmarks_given", "landmarks_fallback")
# How the manifest's `landmarks` column is used: prefer = instead of detection where given;
# fallback = detect, and use them only where detection finds no usable face (the phantom:
# its drawn landmarks stand in where MTCNN fails, and the report counts how often);
# ignore = always detect.
LANDMARK_MODES = ("prefer", "fallback", "ignore")
MASK_FOLDER = "masks"
MIN_FACE_PX = 48          # shorter side of the box; ONet's input size (see module docstring)
MIN_CONFIDENCE = 0.95     # a face counts (for ok and for several_faces) from this confidence
DETECT_LONG_SIDE = 1280   # larger photos are detected on a copy downscaled to this long side
# mtcnn 1.0.0's own settings, passed explicitly so that an upgrade cannot change them silently.
_MTCNN_SETTINGS = dict(min_face_size=20, scale_factor=0.709, threshold_pnet=0.6,
                       threshold_rnet=0.7, threshold_onet=0.8)
_WEIGHT_FILES = ("pnet.lz4", "rnet.lz4", "onet.lz4")

DETECTION_COLUMNS = ("row", "status", "reason", "n_faces", "n_candidates", "box_x0", "box_y0",
                     "box_x1", "box_y1", "confidence", "landmarks", "aligned_path")
FACE_FOLDER = "faces"
DETECTIONS_CSV = "detections.csv"
REPORT_JSON = "faces_report.json"


# ============================================================================ detection

@dataclasses.dataclass(frozen=True)
class Face:
    """One MTCNN detection in photo pixels: box (x0, y0, x1, y1), confidence, 5x2 points."""

    box: tuple[float, float, float, float]
    confidence: float
    points: np.ndarray     # (5, 2) x, y in LANDMARK_NAMES order

    @property
    def size(self) -> float:
        """The shorter side of the box, in pixels: what the minimum face size is compared to."""
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])

    def describe(self) -> str:
        x0, y0, x1, y1 = self.box
        return f"{x1 - x0:.0f}x{y1 - y0:.0f} px at ({x0:.0f}, {y0:.0f}), confidence {self.confidence:.3f}"


@dataclasses.dataclass(frozen=True)
class DetectionReport:
    """What was found in one photo. `face` is the face the status is about (the one aligned for
    ok; the most confident for several_faces; the largest for face_too_small; None for no_face
    and landmarks_given); `points` are the five points used or reported (None for no_face)."""

    status: str
    reason: str
    face: Face | None
    points: np.ndarray | None
    n_faces: int = 0         # faces with confidence >= min_confidence and size >= min_face
    n_candidates: int = 0    # every MTCNN detection

    @property
    def aligned(self) -> bool:
        return self.status in ALIGNED_STATUSES


@functools.lru_cache(maxsize=1)
def _detector():
    """The process's one MTCNN, its weights read from the installed package by absolute path."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # mtcnn's 'no face' path logs warnings
    import importlib.resources

    from mtcnn import MTCNN
    from mtcnn.stages import StageONet, StagePNet, StageRNet

    weights = importlib.resources.files("mtcnn.assets.weights")
    paths = [os.path.abspath(str(weights / name)) for name in _WEIGHT_FILES]
    for path in paths:
        if not os.path.isfile(path):
            raise RuntimeError(f"the mtcnn package has no {path}; reinstall mtcnn==1.0.0")
    stages = [stage(weights=path) for stage, path in zip((StagePNet, StageRNet, StageONet), paths)]
    return MTCNN(stages=stages, device="CPU:0")


def _as_rgb8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 photo, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an (H, W) or (H, W, 3) RGB photo, got shape {image.shape}")


def detect_faces(image: np.ndarray) -> list[Face]:
    """Every MTCNN detection in an RGB (or grey) uint8 photo, most confident first."""
    rgb = _as_rgb8(image)
    height, width = rgb.shape[:2]
    scale = min(1.0, DETECT_LONG_SIDE / max(height, width))
    small = rgb if scale == 1.0 else cv2.resize(
        rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
        interpolation=cv2.INTER_AREA)
    if min(small.shape[:2]) < 12:   # below PNet's 12x12 window nothing can be found
        return []
    found = _detector().detect_faces(np.ascontiguousarray(small), box_format="xyxy",
                                     output_type="numpy", **_MTCNN_SETTINGS)
    faces = []
    for row in np.asarray(found, dtype=np.float64).reshape(-1, 16):
        # mtcnn's numpy rows: image id, x0, y0, x1, y1, confidence, five x then five y.
        points = np.stack([row[6:11], row[11:16]], axis=1) / scale
        faces.append(Face(tuple(float(v) / scale for v in row[1:5]), float(row[5]), points))
    faces.sort(key=lambda f: (-round(f.confidence, 6), -f.size, f.box[0], f.box[1]))
    return faces


def assess_faces(faces: Sequence[Face], *, min_face: float = MIN_FACE_PX,
                 min_confidence: float = MIN_CONFIDENCE) -> DetectionReport:
    """The status of a photo from its detections (the rules of the module docstring)."""
    confident = [f for f in faces if f.confidence >= min_confidence]
    large = [f for f in confident if f.size >= min_face]
    others = len(faces) - len(large)
    extra = (f"; {others} other candidate{'s' if others != 1 else ''} ignored (confidence < "
             f"{min_confidence:.2f} or smaller than {min_face:g} px)") if others else ""
    if not confident:
        best = f" (best candidate: confidence {faces[0].confidence:.3f})" if faces else ""
        return DetectionReport("no_face", f"no face with confidence >= {min_confidence:.2f} "
                               f"found{best}", None, None, 0, len(faces))
    if len(large) >= 2:
        listed = "; ".join(f.describe() for f in large)
        return DetectionReport("several_faces", f"{len(large)} faces of at least {min_face:g} "
                               f"px with confidence >= {min_confidence:.2f}: {listed}; which one "
                               f"to use is not guessed", large[0], large[0].points, len(large),
                               len(faces))
    if not large:
        biggest = max(confident, key=lambda f: f.size)
        return DetectionReport("face_too_small", f"largest face {biggest.size:.0f} px "
                               f"(shorter box side) is below the minimum of {min_face:g} px "
                               f"(--min-face): {biggest.describe()}", biggest, biggest.points,
                               0, len(faces))
    face = large[0]
    return DetectionReport("ok", f"one face, {face.describe()}{extra}", face, face.points, 1,
                           len(faces))


def detect_face(image: np.ndarray, *, min_face: float = MIN_FACE_PX,
                min_confidence: float = MIN_CONFIDENCE) -> DetectionReport:
    """Detect and assess: the report of one photo."""
    return assess_faces(detect_faces(image), min_face=min_face, min_confidence=min_confidence)


def _check_points(points: Any) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.size != 10:
        raise ValueError(f"expected 5 points (10 numbers), got {array.size} numbers")
    array = array.reshape(5, 2)
    if not np.all(np.isfinite(array)):
        raise ValueError("points must be finite numbers")
    return array


def landmarks_report(landmarks: Sequence[float], shape: tuple[int, ...]) -> DetectionReport:
    """The report of a photo whose five points the manifest gives (x1 y1 ... x5 y5, upright
    photo pixels). ValueError when they lie outside the photo or cannot be a face (both eyes
    on one spot), which the CLI reports against the manifest's row and column."""
    points = _check_points(landmarks)
    height, width = shape[:2]
    outside = [LANDMARK_NAMES[i] for i, (x, y) in enumerate(points)
               if not (0 <= x <= width and 0 <= y <= height)]
    if outside:
        raise ValueError(f"{', '.join(outside)} outside the {width}x{height} photo (points are "
                         f"x y pairs in pixels of the upright photo)")
    eye_distance = float(np.hypot(*(points[1] - points[0])))
    if eye_distance < 2.0:
        raise ValueError(f"the eyes are {eye_distance:.1f} px apart: not five face points")
    return DetectionReport("landmarks_given", f"landmarks from the manifest (eye distance "
                           f"{eye_distance:.0f} px); no detection run", None, points)


# ============================================================================ alignment

def similarity_from_points(source: Any, target: Any):
    """Least-squares similarity transform (skimage.transform.SimilarityTransform) that maps the
    five `source` points onto `target`. ValueError when the points are degenerate."""
    from skimage.transform import SimilarityTransform

    source = np.asarray(source, dtype=np.float64).reshape(-1, 2)
    target = np.asarray(target, dtype=np.float64).reshape(-1, 2)
    transform = SimilarityTransform.from_estimate(source, target)
    if not transform:
        raise ValueError(f"no similarity transform fits these points: {transform}")
    return transform


def _template(size: int) -> np.ndarray:
    if size not in TEMPLATES:
        raise ValueError(f"aligned size must be one of {sorted(TEMPLATES)}, got {size}")
    return TEMPLATES[size]


def align_face(image: np.ndarray, landmarks: Any, size: int = 112) -> np.ndarray:
    """The size x size crop of `image` whose five points (5x2, or 10 numbers x1 y1 ... x5 y5)
    are moved onto the ArcFace template; same dtype and channels as `image`."""
    transform = similarity_from_points(_check_points(landmarks), _template(size))
    return cv2.warpAffine(np.asarray(image), transform.params[:2].astype(np.float64),
                          (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def aligned_points(landmarks: Any, size: int = 112) -> np.ndarray:
    """Where the five points land in the aligned crop of `align_face` (5x2)."""
    points = _check_points(landmarks)
    return similarity_from_points(points, _template(size))(points)


# ============================================================================ figures

def eye_bar(image: np.ndarray, landmarks: Any, *, reach: float = 0.55,
            thickness: float = 0.45) -> np.ndarray:
    """A copy of `image` with a black bar over both eyes, along the line through them.

    The bar runs `reach` eye-distances beyond each eye and is `thickness` eye-distances tall,
    which covers eyes, lids and inner canthi at any head roll (Hong 2021, Figure 1)."""
    points = _check_points(landmarks)
    left, right = points[0], points[1]
    along = right - left
    distance = float(np.hypot(*along))
    if distance < 1e-6:
        raise ValueError("the two eye points coincide: no eye line to cover")
    along /= distance
    across = np.array([-along[1], along[0]])
    start, end = left - along * reach * distance, right + along * reach * distance
    half = across * thickness * distance / 2
    corners = np.array([start - half, end - half, end + half, start + half])
    covered = np.array(image, copy=True)
    black = (0,) * (covered.shape[2] if covered.ndim == 3 else 1)
    cv2.fillConvexPoly(covered, np.round(corners * 16).astype(np.int32), black,
                       lineType=cv2.LINE_AA, shift=4)
    return covered


# ============================================================================ manifest -> crops

def _number(value: float) -> str:
    return f"{value:.2f}"


def detection_row(number: int, report: DetectionReport, aligned_path: str) -> dict[str, Any]:
    box = report.face.box if report.face is not None else (None,) * 4
    return {
        "row": number, "status": report.status, "reason": report.reason,
        "n_faces": report.n_faces, "n_candidates": report.n_candidates,
        **{name: ("" if v is None else _number(v)) for name, v in
           zip(("box_x0", "box_y0", "box_x1", "box_y1"), box)},
        "confidence": "" if report.face is None else f"{report.face.confidence:.4f}",
        "landmarks": "" if report.points is None else " ".join(
            _number(v) for v in report.points.reshape(-1)),
        "aligned_path": aligned_path,
    }


def _warp_mask(manifest: Path, number: int, cell: str, points: np.ndarray, size: int,
               shape: tuple[int, ...]) -> np.ndarray:
    """A truth mask (`mask_path` cell, relative to the manifest) brought into the aligned crop
    by the photo's transform (nearest neighbour: it stays a mask)."""
    path = manifest.parent / str(cell).replace("\\", "/")
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise InputError(manifest, f"cannot read the mask '{cell}'", row=number, column="mask_path")
    if mask.shape != tuple(shape[:2]):
        raise InputError(manifest, f"mask '{cell}' is {mask.shape[1]}x{mask.shape[0]}, its photo "
                         f"{shape[1]}x{shape[0]}", row=number, column="mask_path")
    transform = similarity_from_points(points, _template(size))
    return cv2.warpAffine(mask, transform.params[:2].astype(np.float64), (size, size),
                          flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def faces_from_manifest(manifest: str | Path, out: str | Path, *, size: int = 224,
                        min_face: float = MIN_FACE_PX, min_confidence: float = MIN_CONFIDENCE,
                        landmarks: str = "prefer", force: bool = False, progress_every: int = 20,
                        progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Detect, align and de-identify every photo of a manifest into `out` (see the module
    docstring). `landmarks`: how the manifest's landmarks are used (LANDMARK_MODES). Truth
    masks (`mask_path`, the phantom's) are warped with their photo into `masks/` and kept in
    the aligned manifest. Returns detections.csv as a DataFrame, one row per manifest row."""
    from .manifest import load_manifest, write_manifest
    from .provenance import git_commit, library_versions

    manifest, out = Path(manifest), Path(out)
    _template(size)
    if not min_face > 0:
        raise InputError(None, f"--min-face {min_face:g}: must be a positive number of pixels")
    if not 0 < min_confidence <= 1:
        raise InputError(None, f"--min-confidence {min_confidence:g}: must be in (0, 1]")
    if landmarks not in LANDMARK_MODES:
        raise InputError(None, f"--landmarks must be one of {', '.join(LANDMARK_MODES)}, "
                         f"got {landmarks!r}")
    check_output_folder(out, manifest, force)
    frame = load_manifest(manifest)
    kept, dropped = contract_manifest(frame)
    columns_out = kept if "landmarks" in kept else [*kept, "landmarks"]  # aligned points, always
    with_masks = "mask_path" in frame.columns
    if with_masks:   # truth masks are not PHI: warped with their photo, not dropped
        dropped = [c for c in dropped if c != "mask_path"]
        columns_out = [*columns_out, "mask_path"]
    say = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    given = frame["landmarks"] if "landmarks" in frame.columns else [None] * len(frame)
    rows, aligned_rows = [], []
    started = time.perf_counter()
    with atomic.staged_dir(out, overwrite=True) as stage:
        for index, (source, given_points) in enumerate(zip(frame["abs_path"], given)):
            number = index + 1
            photo = read_manifest_photo(manifest, number, source)
            given_report = None
            if given_points is not None and landmarks != "ignore":
                try:
                    given_report = landmarks_report(given_points, photo.pixels.shape)
                except ValueError as err:
                    raise InputError(manifest, str(err), row=number, column="landmarks") from None
            if given_report is not None and landmarks == "prefer":
                report = given_report
            else:
                report = detect_face(photo.pixels, min_face=min_face,
                                     min_confidence=min_confidence)
                if not report.aligned and given_report is not None:
                    report = dataclasses.replace(
                        given_report, status="landmarks_fallback",
                        reason=f"{report.reason}; the manifest's landmarks used instead",
                        n_candidates=report.n_candidates)
            name = ""
            if report.aligned:
                name = pseudonymous_name(number, FACE_FOLDER)
                write_png(stage / name, align_face(photo.pixels, report.points, size))
                record = frame.loc[index, kept].to_dict()
                record["image_path"] = name
                record["landmarks"] = tuple(round(float(v), 2) for v in
                                            aligned_points(report.points, size).reshape(-1))
                cell = frame.loc[index, "mask_path"] if with_masks else ""
                if with_masks and isinstance(cell, str) and cell.strip():
                    mask_name = pseudonymous_name(number, MASK_FOLDER)
                    warped = _warp_mask(manifest, number, cell.strip(), report.points, size,
                                        photo.pixels.shape)
                    with atomic.atomic_path(stage / mask_name, suffix=".png") as tmp:
                        cv2.imwrite(str(tmp), warped)
                    record["mask_path"] = mask_name
                elif with_masks:
                    record["mask_path"] = ""
                aligned_rows.append(record)
            rows.append(detection_row(number, report, name))
            if progress_every and (number % progress_every == 0 or number == len(frame)):
                say(f"faces: {number}/{len(frame)} photos ({time.perf_counter() - started:.1f} s)")
        detections = pd.DataFrame(rows, columns=list(DETECTION_COLUMNS))
        atomic.write_csv(stage / DETECTIONS_CSV, detections)
        counts = {status: int((detections["status"] == status).sum()) for status in STATUSES}
        atomic.write_json(stage / REPORT_JSON, {
            "method": "MTCNN (mtcnn 1.0.0, packaged weights) face detection; least-squares "
                      "similarity transform of the five points onto insightface's ArcFace "
                      "template; bilinear warp; pixels only, written as PNG (see "
                      "data_prep.deidentify_photo)",
            "size": size, "template": TEMPLATES[size].round(4).tolist(),
            "landmark_order": list(LANDMARK_NAMES),
            "landmark_convention": "left/right as seen in the image (the child's right eye is "
                                   "left_eye)",
            "min_face_px": min_face, "min_confidence": min_confidence,
            "landmarks_mode": landmarks,
            "mtcnn_settings": _MTCNN_SETTINGS, "detect_long_side": DETECT_LONG_SIDE,
            "counts": counts, "n_photos": len(detections), "n_aligned": len(aligned_rows),
            "columns_kept": kept, "columns_dropped": dropped,
            "versions": library_versions(), "git_commit": git_commit(),
            "note": "row is the data row of the input manifest (header excluded); no input path "
                    "or metadata value is written anywhere under this folder"})
        if aligned_rows:
            write_manifest(pd.DataFrame(aligned_rows, columns=columns_out), stage / "manifest.csv")
    return detections


# ============================================================================ CLI

def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "faces", help="detect, align and de-identify face photos (MTCNN, ArcFace template)",
        description="Detect each photo's face with MTCNN (or use the manifest's landmarks), "
                    "align it to the ArcFace five-point template at --size, and write the "
                    "crops as metadata-free PNGs named by manifest row, with detections.csv "
                    "(one row per photo: status, reason, box, confidence, landmarks) and a "
                    "manifest of the crops. Exit 0: every photo aligned; 1: some photos have no "
                    "usable face (no_face, several_faces, face_too_small: see detections.csv); "
                    "2: bad input.")
    parser.add_argument("--manifest", required=True, help="manifest CSV listing the photos")
    parser.add_argument("--out", required=True, help="output folder (outside the manifest's)")
    parser.add_argument("--size", type=int, choices=sorted(TEMPLATES), default=224,
                        help="side of the aligned crop: 224 (VGG-16, Hong 2021) or 112 "
                             "(ArcFace/IResNet, Shen 2024); default 224")
    parser.add_argument("--min-face", type=float, default=MIN_FACE_PX, metavar="PX",
                        help=f"minimum face size, the shorter side of the detected box in "
                             f"pixels (default {MIN_FACE_PX}); smaller faces are reported as "
                             f"face_too_small")
    parser.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE, metavar="P",
                        help=f"MTCNN confidence from which a detection counts as a face, for ok "
                             f"and for several_faces (default {MIN_CONFIDENCE})")
    parser.add_argument("--landmarks", choices=LANDMARK_MODES, default="prefer",
                        help="the manifest's landmarks column: prefer (use it instead of "
                             "detection where given; default), fallback (detect, use it only "
                             "where no usable face is found: status landmarks_fallback), or "
                             "ignore (always detect)")
    parser.add_argument("--force", action="store_true",
                        help="replace --out if it exists and is not empty")
    parser.add_argument("--progress-every", type=int, default=20,
                        help="print progress to stderr every N photos (default 20; 0 = never)")
    io.add_max_pixels_argument(parser)
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    io.apply_max_pixels(args)
    detections = faces_from_manifest(args.manifest, args.out, size=args.size,
                                     min_face=args.min_face,
                                     min_confidence=args.min_confidence,
                                     landmarks=args.landmarks, force=args.force,
                                     progress_every=args.progress_every)
    counts = detections["status"].value_counts()
    failed = detections[~detections["status"].isin(ALIGNED_STATUSES)]
    summary = ", ".join(f"{status} {counts[status]}" for status in STATUSES if status in counts)
    print(f"faces: {len(detections) - len(failed)}/{len(detections)} photos aligned at "
          f"{args.size}x{args.size} into {args.out} ({summary}); report "
          f"{os.path.join(args.out, DETECTIONS_CSV)}", file=sys.stderr)
    if len(failed):
        rows = ", ".join(str(r) for r in failed["row"].head(20))
        more = "" if len(failed) <= 20 else f" and {len(failed) - 20} more"
        print(f"faces: no usable face in manifest rows {rows}{more} (see the reason column)",
              file=sys.stderr)
        return 1
    return 0
