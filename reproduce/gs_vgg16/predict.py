"""Screen a folder of children's face photos with a trained face VGG-16 (Hong 2021).

    python -m reproduce gs_vgg16 predict --images DIR --weights W.keras [--out DIR]
        [--min-face PX] [--min-confidence C] [--profile ci|default|paper] [--no-eye-bar]
        [--force]

Every photo under DIR (recursively, JPEG/PNG/BMP/TIFF; hidden files skipped) goes through what
the training data went through: MTCNN detection and five-point alignment onto the ArcFace
template (data_prep.faces, the same thresholds; the template size is the one the model was
trained on: `pipeline.ALIGNED_SIZE` of the profile in the `run.json` beside the weights), pixels
only (no metadata reaches the crop), then the training pipeline's own evaluation preprocessing
(`study.inputs_for_shape` with the input shape, classes and transform recorded in run.json).
Output in --out (default runs/gs_vgg16_predict/<images folder name>), built aside and moved
into place at the end:

- `detections.csv`: one row per photo: photo (path relative to DIR), row, status, reason,
  n_faces, n_candidates, box, confidence, landmarks (in the upright photo), aligned_path. A
  photo with no face, several faces or a face too small keeps its row with the reason; it is
  never dropped and never replaced by its largest face. A file that is no readable photo
  (truncated, another format under a photo's name, a decompression bomb) gets status
  `unreadable` with the reason, and the other photos go on.
- `predictions.csv`: one row per photo: photo, status, p_healthy, p_syndrome, call
  (syndrome when p_syndrome >= 0.5, the softmax's class, as in Table 2), aligned_path,
  overlay_path; p_* and call are empty where no face was aligned.
- `faces/NNNNNN.png`: the aligned crops, `overlays/NNNNNN.png`: the face at the model input
  and the heat-map of the SYNDROME class over it (the map Figure 3 shows; method and layer(s)
  of the profile, `pipeline.HEATMAP_SETTINGS`), the eyes under a black bar unless
  --no-eye-bar. Files are named by the photo's number (its row in detections.csv), never by
  the photo's name: only the two CSVs hold the names, so faces/ and overlays/ can be shared
  without them.
- `predict_report.json`: model input, template size, detection thresholds, heat-map setting,
  counts per status, versions (the weights by file name only).

Exit 0 when every photo had its face aligned and scored; 1 (a finding) when some had none or
could not be read (the
rest are scored; detections.csv says which and why); 2 for bad input (one line `error: ...`
naming the file): weights missing, not a .keras model or not a classifier of the recorded
classes, a folder with no photo, an --out inside --images, or an existing
non-empty --out without --force (which replaces it).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_prep.errors import EXIT_DONE, EXIT_FINDING, InputError  # noqa: E402
from reproduce import gradcam, study  # noqa: E402
from reproduce.cns import predict as frame_predict  # noqa: E402
from reproduce.gs_vgg16 import pipeline  # noqa: E402

UNREADABLE = "unreadable"   # a status beside data_prep.faces.STATUSES: the file is no photo
FACE_DIR = "faces"
OVERLAY_DIR = "overlays"
PREDICTION_COLUMNS = ("photo", "status", "p_healthy", "p_syndrome", "call", "aligned_path",
                      "overlay_path")
SAVED_AS = "runs/gs_vgg16/<profile>/vgg16_face/fold<k>/selected.keras"


def _class_names(n_classes: int) -> tuple[str, ...]:
    if n_classes == len(pipeline.CLASS_NAMES):
        return tuple(pipeline.CLASS_NAMES)
    raise InputError(None, f"the model has {n_classes} outputs and no run.json names its classes "
                     f"(Hong 2021's model has 2: {', '.join(pipeline.CLASS_NAMES)})")


def load_model(weights: Path) -> frame_predict.LoadedModel:
    """The trained face VGG-16 and its run.json; InputError unless it scores the two classes."""
    loaded = frame_predict.load_weights(weights, default_class_names=_class_names,
                                        default_transform="face", saved_as=SAVED_AS)
    if len(loaded.class_names) != 2 or pipeline.POSITIVE_LABEL not in loaded.class_names:
        raise InputError(weights, f"the model's classes are {', '.join(loaded.class_names)}; "
                         f"screening needs two, '{pipeline.POSITIVE_LABEL}' one of them")
    return loaded


def aligned_size(loaded: frame_predict.LoadedModel) -> int:
    """The template size the model's training crops were aligned at: the recorded profile's
    (pipeline.ALIGNED_SIZE), else the smallest template at least the model's input."""
    from data_prep.faces import TEMPLATES

    profile = (loaded.run_config or {}).get("profile")
    if profile in pipeline.ALIGNED_SIZE:
        return int(pipeline.ALIGNED_SIZE[profile])
    side = max(loaded.input_shape[:2])
    fitting = [size for size in sorted(TEMPLATES) if size >= side]
    return int(fitting[0] if fitting else max(TEMPLATES))


def _numbered(number: int, folder: str) -> str:
    from data_prep.deidentify_photo import pseudonymous_name

    return pseudonymous_name(number, folder)


def detect_and_align(images_dir: Path, photos: Sequence[Path], stage: Path, size: int, *,
                     min_face: float, min_confidence: float) -> pd.DataFrame:
    """detections.csv: every photo detected (data_prep.faces) and, where one face was found,
    its aligned crop written to stage/faces/NNNNNN.png (pixels only)."""
    from data_prep.deidentify_photo import read_photo, write_png
    from data_prep.faces import DetectionReport, align_face, detect_face, detection_row
    from data_prep.io import ImageReadError

    rows = []
    started = time.perf_counter()
    for number, rel in enumerate(photos, start=1):
        name = ""
        try:
            photo = read_photo(images_dir / rel)
        except ImageReadError as err:   # listed with its reason; the other photos go on
            rows.append({"photo": rel.as_posix(), **detection_row(
                number, DetectionReport(UNREADABLE, err.message, None, None), name)})
            continue
        report = detect_face(photo.pixels, min_face=min_face, min_confidence=min_confidence)
        if report.aligned:
            name = _numbered(number, FACE_DIR)
            write_png(stage / name, align_face(photo.pixels, report.points, size))
        rows.append({"photo": rel.as_posix(), **detection_row(number, report, name)})
        if number % 20 == 0 or number == len(photos):
            print(f"predict: detected {number}/{len(photos)} photos "
                  f"({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def _eye_barred(gray: np.ndarray, size: int) -> np.ndarray:
    from reproduce.gs_vgg16.heatmaps import _eye_bar

    return _eye_bar(gray, size)


def score_faces(stage: Path, detections: pd.DataFrame, loaded: frame_predict.LoadedModel,
                profile: str | None, size: int, eye_bar: bool) -> tuple[pd.DataFrame, dict]:
    """predictions.csv rows and the heat-map setting; overlays written to stage/overlays/."""
    from reproduce.cns.heatmaps import display_gray

    method, layer, score, source = frame_predict.heatmap_setting(
        loaded, profile, settings=pipeline.HEATMAP_SETTINGS, default_arch=pipeline.ARCH)
    aligned = detections[detections["aligned_path"] != ""]
    positive = loaded.class_names.index(pipeline.POSITIVE_LABEL)
    healthy = 1 - positive   # two classes (load_model checks the positive one is among them)
    table = pd.DataFrame({"photo": detections["photo"], "status": detections["status"],
                          "p_healthy": np.nan, "p_syndrome": np.nan, "call": "",
                          "aligned_path": detections["aligned_path"], "overlay_path": ""})
    if len(aligned):
        inputs, proba = frame_predict.predict_frames(stage, [Path(p) for p in aligned["aligned_path"]],
                                                     loaded)
        heats = gradcam.heatmaps(loaded.model, inputs, np.full(len(aligned), positive), layer=layer,
                                 method=method, score=score)
        grays = display_gray(inputs, loaded.transform)
        for i, (index, row) in enumerate(aligned.iterrows()):
            p_syndrome = float(proba[i, positive])
            call = pipeline.POSITIVE_LABEL if p_syndrome >= 0.5 else pipeline.CLASS_NAMES[0]
            overlay = _numbered(int(row["row"]), OVERLAY_DIR)
            gray = _eye_barred(grays[i], size) if eye_bar else grays[i]
            title = (f"photo {int(row['row'])}: P(syndrome) = {p_syndrome:.3f}, called {call}\n"
                     f"{gradcam.describe(method, score)} of syndrome at {layer.replace('+', ' + ')}"
                     + ("; eyes covered" if eye_bar else ""))
            gradcam.save_overlay_figure(gray, heats[i], stage / overlay, title=title, method=method)
            table.loc[index, ["p_healthy", "p_syndrome"]] = [float(proba[i, healthy]), p_syndrome]
            table.loc[index, ["call", "overlay_path"]] = [call, overlay]
    return table, {"method": method, "layer": layer, "score": score, "source": source,
                   "class": pipeline.POSITIVE_LABEL}


def run(args: argparse.Namespace) -> int:
    from data_prep import atomic
    from data_prep.faces import MIN_CONFIDENCE, STATUSES
    from data_prep.provenance import git_commit, library_versions

    images_dir = Path(args.images)
    if not images_dir.is_dir():
        raise InputError(images_dir, "images folder not found")
    if not args.min_face > 0:
        raise InputError(None, f"--min-face {args.min_face:g}: must be a positive number of pixels")
    if not 0 < args.min_confidence <= 1:
        raise InputError(None, f"--min-confidence {args.min_confidence:g}: must be in (0, 1]")
    out_dir = Path(args.out) if args.out else (Path("runs") / "gs_vgg16_predict"
                                               / images_dir.resolve().name)
    frame_predict.check_out_dir(out_dir, images_dir, args.force)
    started = time.perf_counter()
    loaded = load_model(Path(args.weights))
    photos = frame_predict.list_frames(images_dir)
    if not photos:
        raise InputError(images_dir, "no photos found (suffixes .jpg .jpeg .png .bmp .tif .tiff)")
    size = aligned_size(loaded)
    height, width, channels = loaded.input_shape
    print(f"predict: {len(photos)} photo(s) under {images_dir}; faces aligned at {size}x{size}, "
          f"model input {width}x{height}x{channels} ({loaded.transform})", file=sys.stderr,
          flush=True)
    with atomic.staged_dir(out_dir, overwrite=True) as stage:
        detections = detect_and_align(images_dir, photos, stage, size, min_face=args.min_face,
                                      min_confidence=args.min_confidence)
        table, heatmap = score_faces(stage, detections, loaded, args.profile, size, args.eye_bar)
        atomic.write_csv(stage / "detections.csv", detections)
        atomic.write_csv(stage / "predictions.csv", table[list(PREDICTION_COLUMNS)])
        counts = {s: int((detections["status"] == s).sum()) for s in (*STATUSES, UNREADABLE)}
        atomic.write_json(stage / "predict_report.json", {
            "model": {"weights_file": Path(args.weights).name, "input_hwc": list(loaded.input_shape),
                      "transform": loaded.transform, "class_names": list(loaded.class_names),
                      "profile": (loaded.run_config or {}).get("profile")},
            "alignment": {"template_size": size, "min_face_px": args.min_face,
                          "min_confidence": args.min_confidence,
                          "default_min_confidence": MIN_CONFIDENCE},
            "heatmap": heatmap, "eye_bar": bool(args.eye_bar),
            "call_rule": "syndrome when p_syndrome >= 0.5 (the softmax's class)",
            "counts": counts, "n_photos": len(detections),
            "n_scored": int((table["call"] != "").sum()),
            "versions": library_versions(), "git_commit": git_commit()})
    scored = int((table["call"] != "").sum())
    flagged = int((table["call"] == pipeline.POSITIVE_LABEL).sum())
    missing = len(table) - scored
    print(f"predict: {scored}/{len(table)} photo(s) scored, {flagged} called syndrome"
          + (f"; {missing} without a usable face (see detections.csv)" if missing else "")
          + f" [{time.perf_counter() - started:.1f} s] -> {out_dir}", file=sys.stderr, flush=True)
    return EXIT_FINDING if missing else EXIT_DONE


def build_parser() -> argparse.ArgumentParser:
    from data_prep.faces import MIN_CONFIDENCE, MIN_FACE_PX

    parser = argparse.ArgumentParser(
        prog="python -m reproduce gs_vgg16 predict",
        description="Detect, align and screen every face photo under a folder with a trained "
                    "Hong 2021 face VGG-16: probability, call and heat-map per photo, with the "
                    "detection report.")
    parser.add_argument("--images", required=True, type=Path,
                        help="folder of face photos, one child per photo (searched "
                             "recursively: JPEG, PNG, BMP, TIFF)")
    parser.add_argument("--weights", required=True, type=Path,
                        help=f"trained model: {SAVED_AS} (its run.json beside it gives input, "
                             "classes, transform and profile)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: runs/gs_vgg16_predict/<images folder name>)")
    parser.add_argument("--min-face", type=float, default=MIN_FACE_PX,
                        help=f"smallest face, shorter box side in pixels (default {MIN_FACE_PX})")
    parser.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE,
                        help=f"MTCNN confidence a face needs (default {MIN_CONFIDENCE})")
    parser.add_argument("--profile", choices=study.PROFILE_NAMES, default=None,
                        help="whose heat-map method and layers to use (default: the profile in "
                             "run.json, else paper: Grad-CAM at conv5_3)")
    parser.add_argument("--no-eye-bar", dest="eye_bar", action="store_false",
                        help="overlays cover the eyes with a black bar by default (as Hong "
                             "2021's Figure 1); this turns it off")
    parser.add_argument("--force", action="store_true", help="replace an existing non-empty --out")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return study.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
