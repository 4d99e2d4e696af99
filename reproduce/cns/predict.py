"""Classify a folder of fetal CNS ultrasound frames with a trained ResNet-34 (Qi 2025).

    python -m reproduce.cns.predict --images DIR --weights W.keras [--out DIR]
        [--manifest M] [--profile ci|default|paper] [--force]

Every image under DIR (recursively; data_prep.io's suffixes or DICOM; hidden files skipped,
`reproduce.pgds.predict.list_frames`) becomes model input by the training pipeline's own
evaluation preprocessing (`study.inputs_for_shape` with the input shape, class names and
transform recorded in the `run.json` beside the weights: `config.size_wh`, `config.channels`,
`class_names`, `config.transform`). Frames are used as they are: give the de-identified frames
cropped to the scan sector (`python -m data_prep deidentify --crop`), which is what the models
were trained on. Output in --out (default runs/cns_predict/<images folder name>):

- `predictions.csv`: frame (path relative to DIR), p_<class> for every class, call (the argmax
  class);
- `overlays/<frame>.png`: the frame at the model input and the heat-map of the called class
  (reproduce.gradcam; the method and layer(s) of the profile, `pipeline.HEATMAP_SETTINGS`:
  --profile, else the profile recorded in run.json, else paper = Grad-CAM at the last conv of
  the last block, as Qi 2025);
- with `--manifest M` (columns image_path, relative to DIR, and case_id): `patients.csv`, one
  row per case: case_id, frames, p_<class> = the mean softmax over its frames, call (argmax),
  the authors' patient-level rule.

Errors (one line `error: ...` on stderr, exit 2): weights missing, not a .keras model, or not a
classifier of the recorded classes and input; an empty folder; a frame that cannot be read; a
manifest that does not cover the frames; an --out inside --images, or an existing non-empty
--out without --force (which replaces it). The output folder is built aside and moved into place
at the end.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_prep.errors import InputError  # noqa: E402
from reproduce import gradcam, study  # noqa: E402
from reproduce.cns import pipeline  # noqa: E402
from reproduce.pgds.predict import _first_line, last_conv_like_layer, list_frames, run_config_beside  # noqa: E402

DEFAULT_TRANSFORM = "imagenet"   # the CNS models' (Qi 2025's code: torchvision's recipe)
OVERLAY_DIR = "overlays"


@dataclass
class LoadedModel:
    model: Any
    run_config: dict | None          # run.json's config beside the weights, when present
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (H, W, C)
    transform: str


# ----------------------------------------------------------------------------- weights


def _run_record(weights: Path) -> dict:
    try:
        record = json.loads((weights.parent / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _default_class_names(n_classes: int) -> tuple[str, ...]:
    if n_classes == len(pipeline.LABELS):
        return tuple(pipeline.LABELS)
    if n_classes == len(pipeline.ANOMALIES):
        return tuple(pipeline.ANOMALIES)
    raise InputError(None, f"the model has {n_classes} outputs and no run.json names its "
                     "classes (the CNS tasks have 4 or 5)")


def load_weights(weights: str | Path, *,
                 default_class_names: Callable[[int], tuple[str, ...]] | None = None,
                 default_transform: str = DEFAULT_TRANSFORM,
                 saved_as: str = "runs/cns/<profile>/<task>/resnet34/fold<k>/selected.keras"
                 ) -> LoadedModel:
    """A .keras model and what run.json beside it records (input shape, classes, transform);
    InputError when the file is missing, not a Keras model, or not an image classifier of
    the recorded classes and input size. The keywords let another study's predict reuse it:
    its class names when run.json names none, its transform, where its training saves models."""
    weights = Path(weights)
    default_class_names = default_class_names or _default_class_names
    if not weights.is_file():
        raise InputError(weights, "weights file not found")
    if not weights.name.lower().endswith(".keras"):
        raise InputError(weights, f"weights must be a .keras model (as training saves it: "
                         f"{saved_as})")
    try:
        model = study.load_keras_model(weights)
    except Exception as err:  # noqa: BLE001 -- any failure to load is the user's file
        raise InputError(weights, f"cannot be loaded as a Keras model: {_first_line(err)}") from None
    inputs, outputs = list(model.inputs), list(model.outputs)
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or None in tuple(inputs[0].shape[1:]):
        raise InputError(weights, f"the model takes {[tuple(i.shape) for i in inputs]}, not one "
                         "fixed-size (batch, height, width, channels) image input")
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise InputError(weights, f"the model outputs {[tuple(o.shape) for o in outputs]}, not "
                         "(batch, classes) probabilities")
    model_shape = tuple(int(v) for v in inputs[0].shape[1:])
    n_classes = int(outputs[0].shape[-1])
    config = run_config_beside(weights)
    record = _run_record(weights)
    names = record.get("class_names") or (config or {}).get("labels")
    class_names = tuple(str(n) for n in names) if names else default_class_names(n_classes)
    if len(class_names) != n_classes:
        raise InputError(weights, f"run.json beside the weights names {len(class_names)} classes "
                         f"({', '.join(class_names)}), the model outputs {n_classes}")
    shape = model_shape
    if config and config.get("size_wh"):
        width, height = (int(v) for v in config["size_wh"])
        shape = (height, width, int(config.get("channels") or model_shape[2]))
        if shape != model_shape:
            raise InputError(weights, f"run.json beside the weights records input {shape} "
                             f"(H, W, C), the model takes {model_shape}")
    transform = str((config or {}).get("transform") or default_transform)
    from reproduce.input_pipeline import TRANSFORMS

    if transform not in TRANSFORMS:
        raise InputError(weights.parent / "run.json", f"unknown transform {transform!r}")
    return LoadedModel(model, config, class_names, shape, transform)


def heatmap_setting(loaded: LoadedModel, profile: str | None, *,
                    settings: dict | None = None, default_arch: str = pipeline.ARCH
                    ) -> tuple[str, str, str, str]:
    """(method, layer(s) joined by '+', score, where they came from): the profile's setting
    (`settings`, default the CNS study's pipeline.HEATMAP_SETTINGS) for the architecture and
    options of run.json; a model with no such layers gets Grad-CAM at its last 4-D
    convolution-like layer."""
    from models import registry

    settings = settings or pipeline.HEATMAP_SETTINGS
    config = loaded.run_config or {}
    chosen = profile or config.get("profile") or "paper"
    source = f"the {chosen} profile's" + ("" if profile or config.get("profile")
                                           else " (no profile in run.json)")
    method, stages, *rest = settings.get(chosen, settings["paper"])
    score = rest[0] if rest else "logit"
    names = {layer.name for layer in loaded.model.layers}
    arch = config.get("architecture") or default_arch
    if arch in registry.MODEL_NAMES:
        options = dict(config.get("model_options") or {})
        try:
            layer = "+".join(registry.gradcam_layer(arch, stages_before_last=k, **options)
                             for k in stages)
        except (ValueError, TypeError):
            layer = ""
        if layer and all(name in names for name in gradcam.layer_names(layer)):
            return method, layer, score, source
    return "gradcam", last_conv_like_layer(loaded.model), "logit", "last 4-D convolution-like layer"


# ----------------------------------------------------------------------------- inputs


def check_out_dir(out_dir: Path, images_dir: Path, force: bool) -> None:
    """Refuse an --out inside --images, a file, or an existing non-empty folder (unless force).

    (reproduce.pgds.predict._check_out_dir does not fit: it replaces any folder holding a
    predictions.csv without asking, and refuses other non-empty folders even when forced.)"""
    out_resolved, images_resolved = out_dir.resolve(), images_dir.resolve()
    if out_resolved == images_resolved or images_resolved in out_resolved.parents:
        raise InputError(out_dir, "output folder must lie outside --images (its overlays would "
                         "be read as frames next time)")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise InputError(out_dir, "output folder exists and is not empty; choose another --out "
                         "or give --force to replace it")


def read_frames(images_dir: Path) -> list[Path]:
    """The frames under images_dir (relative), each checked readable (data_prep.io)."""
    from data_prep.io import read_grayscale

    frames = list_frames(images_dir)
    if not frames:
        raise InputError(images_dir, "no image files found (suffixes .jpg .jpeg .png .dcm .bmp "
                         ".tif .tiff, or DICOM)")
    for rel in frames:
        read_grayscale(images_dir / rel)  # ImageReadError (an InputError) names the file
    return frames


def frame_cases(manifest: Path, images_dir: Path, frames: Sequence[Path]) -> list[str]:
    """case_id of every frame from a manifest (image_path relative to --images, case_id)."""
    if not manifest.is_file():
        raise InputError(manifest, "manifest not found")
    try:
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(manifest, f"cannot be read as CSV: {_first_line(err)}") from None
    for column in ("image_path", "case_id"):
        if column not in table.columns:
            raise InputError(manifest, f"needs columns image_path and case_id; has "
                             f"{', '.join(table.columns)}", column=column)
    case_of: dict[str, str] = {}
    root = images_dir.resolve()
    for row, (path, case) in enumerate(zip(table["image_path"], table["case_id"]), start=2):
        if not path or not case.strip():
            raise InputError(manifest, "empty image_path or case_id", row=row)
        key = (root / path).resolve().as_posix()
        if key in case_of and case_of[key] != case:
            raise InputError(manifest, f"{path} is listed with two case_ids", row=row)
        case_of[key] = case.strip()
    cases = []
    for rel in frames:
        key = (root / rel).resolve().as_posix()
        if key not in case_of:
            raise InputError(manifest, f"frame {rel.as_posix()} is not in the manifest "
                             "(image_path relative to --images)", column="image_path")
        cases.append(case_of[key])
    return cases


# ----------------------------------------------------------------------------- prediction


def predict_frames(images_dir: Path, frames: Sequence[Path], loaded: LoadedModel
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(model inputs (N, H, W, C), softmax (N, K)) of the frames."""
    paths = [str(images_dir / rel) for rel in frames]
    try:
        inputs = study.inputs_for_shape(paths, loaded.input_shape, len(loaded.class_names),
                                        transform=loaded.transform)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 -- a frame TF cannot decode
        raise InputError(images_dir, f"a frame cannot be prepared: {_first_line(err)}") from None
    proba = np.asarray(loaded.model.predict(inputs, batch_size=32, verbose=0), dtype=np.float64)
    return inputs, proba


def prediction_table(frames: Sequence[Path], proba: np.ndarray,
                     class_names: Sequence[str]) -> pd.DataFrame:
    table = pd.DataFrame({"frame": [rel.as_posix() for rel in frames]})
    for index, name in enumerate(class_names):
        table[f"p_{name}"] = proba[:, index]
    table["call"] = np.asarray(class_names, dtype=object)[proba.argmax(axis=1)]
    return table


def patient_table(cases: Sequence[str], proba: np.ndarray,
                  class_names: Sequence[str]) -> pd.DataFrame:
    """One row per case (first-seen order): case_id, frames, mean softmax p_<class>, call."""
    from reproduce import stats

    ids, mean = stats.aggregate_by_case(np.asarray(cases, dtype=str), proba, "mean")
    counts = pd.Series(list(cases)).value_counts()
    table = pd.DataFrame({"case_id": ids, "frames": [int(counts[c]) for c in ids]})
    for index, name in enumerate(class_names):
        table[f"p_{name}"] = mean[:, index]
    table["call"] = np.asarray(class_names, dtype=object)[mean.argmax(axis=1)]
    return table


def write_overlays(stage: Path, frames: Sequence[Path], inputs: np.ndarray, proba: np.ndarray,
                   loaded: LoadedModel, method: str, layer: str, score: str = "logit") -> None:
    from reproduce.cns.heatmaps import display_gray

    calls = proba.argmax(axis=1)
    heats = gradcam.heatmaps(loaded.model, inputs, calls, layer=layer, method=method, score=score)
    grays = display_gray(inputs, loaded.transform)
    for rel, gray, heat, row, call in zip(frames, grays, heats, proba, calls):
        name = loaded.class_names[int(call)]
        title = (f"{rel.as_posix()}: {name} (P = {row[call]:.3g})\n"
                 f"{gradcam.describe(method, score)} of {name} at {layer.replace('+', ' + ')}")
        gradcam.save_overlay_figure(gray, heat, stage / OVERLAY_DIR / f"{rel.as_posix()}.png",
                                    title=title, method=method)


def run(args: argparse.Namespace) -> int:
    from data_prep import atomic

    images_dir = Path(args.images)
    if not images_dir.is_dir():
        raise InputError(images_dir, "images folder not found")
    out_dir = Path(args.out) if args.out else Path("runs") / "cns_predict" / images_dir.resolve().name
    check_out_dir(out_dir, images_dir, args.force)
    started = time.perf_counter()
    loaded = load_weights(args.weights)
    frames = read_frames(images_dir)
    cases = frame_cases(Path(args.manifest), images_dir, frames) if args.manifest else None
    method, layer, score, source = heatmap_setting(loaded, args.profile)
    height, width, channels = loaded.input_shape
    print(f"predict: {len(frames)} frame(s) under {images_dir}; {width}x{height}x{channels} "
          f"input, transform {loaded.transform}, classes {', '.join(loaded.class_names)}; "
          f"{gradcam.describe(method, score)} at {layer} ({source})", file=sys.stderr, flush=True)
    inputs, proba = predict_frames(images_dir, frames, loaded)
    table = prediction_table(frames, proba, loaded.class_names)
    with atomic.staged_dir(out_dir, overwrite=True) as stage:
        write_overlays(stage, frames, inputs, proba, loaded, method, layer, score)
        atomic.write_csv(stage / "predictions.csv", table)
        if cases is not None:
            atomic.write_csv(stage / "patients.csv", patient_table(cases, proba, loaded.class_names))
    print(f"predict: {len(frames)} frame(s)" + (f", {len(set(cases))} case(s)" if cases else "")
          + f" [{time.perf_counter() - started:.1f} s] -> {out_dir}", file=sys.stderr, flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce.cns.predict",
        description="Class probabilities, call and heat-map overlay for every frame under a "
                    "folder (Qi 2025 ResNet-34); patient-level calls with --manifest.")
    parser.add_argument("--images", required=True, type=Path,
                        help="folder of de-identified, sector-cropped frames (searched "
                             "recursively: JPEG, PNG, DICOM, BMP, TIFF)")
    parser.add_argument("--weights", required=True, type=Path,
                        help="trained model: runs/cns/<profile>/<task>/resnet34/fold<k>/"
                             "selected.keras (its run.json beside it gives input, classes and "
                             "transform)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder for predictions.csv, patients.csv and overlays/ "
                             "(default: runs/cns_predict/<images folder name>)")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="CSV with image_path (relative to --images) and case_id: also "
                             "write patients.csv (mean softmax over each case's frames)")
    parser.add_argument("--profile", choices=study.PROFILE_NAMES, default=None,
                        help="whose heat-map method and layers to use (default: the profile in "
                             "run.json, else paper: Grad-CAM at the last conv of the last block)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing non-empty --out")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return study.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
