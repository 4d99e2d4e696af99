"""Screen a folder of fetal-profile frames with a trained model: probability, call, heat-map.

    python -m reproduce.pgds.predict --images DIR --weights W.keras [--out DIR]
        [--threshold T | --threshold-rule max_f1|youden] [--architecture NAME]
        [--gradcam-layer NAME] [--method gradcam|gradcam++|layercam] [--force]

Every image under DIR (recursively; suffixes of data_prep.io.IMAGE_SUFFIXES, or DICOM by
content; hidden files skipped) is read with data_prep.io, blanked outside its scan sector and
cropped to it (data_prep.deidentify.crop_to_sector: the pixels `deidentify --crop` writes,
which the models are trained on; `--no-sector-crop` for frames already prepared so) and turned
into model input by the training pipeline's own resize (reproduce.input_pipeline.resize_minmax:
bilinear resize to the model's input size, per-image min-max), so prediction sees what training
saw. Output in --out:

- `predictions.csv`: image (path relative to DIR), probability (P(genetic disease)), call
  (genetic_disease when probability >= threshold, else normal), threshold, error (empty when
  the frame was processed), threshold_source, overlay;
- `overlays/<image>.png`: the (cropped) frame and its heat-map for the genetic-disease class
  (tf-keras-vis, reproduce.gradcam) side by side with a colour bar.

The threshold: --threshold, else the one recorded beside the weights (`threshold.json` that
reproduce.pgds.pipeline writes into the run folder of `selected.keras`; chosen on the
training split by --threshold-rule), else 0.5; the CSV says which. The Grad-CAM layer:
--gradcam-layer, else the one reproduce.pgds.figure4 reads for the architecture and profile
recorded in the run folder's `run.json` (`pipeline.gradcam_layer`), else the registry's last
conv block, else the model's last 4-D convolution-like layer. The method (--method): the
profile's likewise (`pipeline.heatmap_method`: LayerCAM on ci/default, Grad-CAM on paper),
else Grad-CAM.

Weights: a whole model (`.keras`, as training saves it) or weights only (`.weights.h5`,
built as --architecture with the options of the run.json beside it, else the registry's
defaults at the study's input size). Weights that do not load, or do not fit the
architecture or a 2-class image classifier, give a one-line error and exit code 2. A frame
that cannot be read gets a one-line error on stderr and a row with its error in
predictions.csv; the others are still processed. Exit 0 when every frame succeeded, 1 when
some failed, 2 for bad weights or arguments. The output folder is built aside and moved into
place at the end (an existing --out is replaced only when it holds an earlier prediction).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_prep.errors import InputError, report_bad_input  # noqa: E402
from reproduce import gradcam  # noqa: E402

CSV_COLUMNS = ("image", "probability", "call", "threshold", "error", "threshold_source", "overlay")
DEFAULT_THRESHOLD = 0.5
EXIT_SOME_FAILED = 1
# Layers whose 4-D output is a feature map Grad-CAM can weight (pooling, dropout, padding and
# reshaping layers are skipped when the layer is chosen automatically).
_NOT_CONV_LIKE = ("Pooling", "Dropout", "ZeroPadding", "Cropping", "Reshape", "Flatten",
                  "InputLayer", "Rescaling", "Resizing", "UpSampling")


@dataclass
class LoadedModel:
    model: Any
    architecture: str | None     # registry name, when known
    run_config: dict | None      # the run.json config beside the weights, when present
    input_shape: tuple[int, int, int]


# ----------------------------------------------------------------------------- weights


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def run_config_beside(weights: Path) -> dict | None:
    """The training config in run.json next to the weights (reproduce.train's run folder)."""
    path = weights.parent / "run.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8")).get("config")
    except (OSError, ValueError, AttributeError):
        return None
    return config if isinstance(config, dict) and config.get("architecture") else None


def _registry_options(architecture: str, run_config: dict | None) -> dict:
    from models import registry

    options = dict(registry.default_options(architecture))
    if run_config:
        for key in ("l2", "width"):
            if run_config.get(key) is not None:
                options[key] = run_config[key]
        options.update(run_config.get("model_options") or {})
    return options


def _registry_input_shape(architecture: str, run_config: dict | None) -> tuple[int, int, int]:
    from models import registry

    height, width, channels = registry.study_input_shape(architecture, "pgds")
    if run_config and run_config.get("size_wh"):
        width, height = (int(v) for v in run_config["size_wh"])
        channels = int(run_config.get("channels") or channels)
    return int(height), int(width), int(channels)


def _build_registry_model(architecture: str, run_config: dict | None, weights: Path,
                          input_shape: tuple[int, int, int] | None = None):
    from models import registry

    if architecture not in registry.MODEL_NAMES:
        raise InputError(None, f"--architecture must be one of {', '.join(registry.MODEL_NAMES)}, "
                         f"got {architecture!r}")
    shape = input_shape or _registry_input_shape(architecture, run_config)
    try:
        return registry.build(architecture, shape, 2, **_registry_options(architecture, run_config))
    except ValueError as err:
        raise InputError(weights, f"cannot build {architecture}: {_first_line(err)}") from None


def load_weights(weights: str | Path, architecture: str | None = None) -> LoadedModel:
    """Load a .keras model (or build --architecture and load .weights.h5 into it) and check it
    is a 2-class image classifier that fits the architecture. InputError otherwise."""
    from reproduce.pgds.pipeline import load_keras_model

    weights = Path(weights)
    if not weights.is_file():
        raise InputError(weights, "weights file not found")
    run_config = run_config_beside(weights)
    recorded = run_config.get("architecture") if run_config else None
    if architecture and recorded and architecture != recorded:
        raise InputError(weights, f"these weights were trained as '{recorded}' (run.json beside "
                         f"them), not '{architecture}'")
    name = weights.name.lower()
    if name.endswith(".keras"):
        try:
            model = load_keras_model(weights)
        except Exception as err:  # noqa: BLE001 -- any failure to load is the user's file
            raise InputError(weights, f"cannot be loaded as a Keras model: {_first_line(err)}") from None
        arch = architecture or recorded
        if architecture and not recorded:
            _check_fits(model, architecture, weights)
    elif name.endswith(".h5"):
        arch = architecture or recorded or "pgds_resnet"
        model = _build_registry_model(arch, run_config, weights)
        where = (f"{'options of run.json' if run_config else 'registry defaults'}, input "
                 f"{tuple(model.input_shape[1:])}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Keras warns per skipped layer, then raises
                model.load_weights(str(weights))
        except Exception as err:  # noqa: BLE001
            raise InputError(weights, f"the weights do not fit architecture '{arch}' ({where}): "
                             f"{_first_line(err)}") from None
        stored = _h5_shapes(weights)
        expected = sorted(tuple(w.shape) for w in model.weights)
        if stored is not None and stored != expected:
            raise InputError(weights, f"the weights do not fit architecture '{arch}' ({where}): "
                             f"the file holds {len(stored)} arrays, the model {len(expected)}")
    else:
        raise InputError(weights, "weights must be a .keras model (as training saves it) or a "
                         ".weights.h5 file")
    shape = _check_classifier(model, weights)
    return LoadedModel(model, arch, run_config, shape)


def _h5_shapes(path: Path) -> list[tuple[int, ...]] | None:
    """Sorted shapes of every array in a .weights.h5 file (None when h5py cannot read it)."""
    try:
        import h5py

        shapes: list[tuple[int, ...]] = []
        with h5py.File(path, "r") as handle:
            handle.visititems(lambda name, item: shapes.append(tuple(item.shape))
                              if isinstance(item, h5py.Dataset) else None)
        return sorted(shapes)
    except Exception:  # noqa: BLE001 -- the Keras load above already succeeded
        return None


def _check_classifier(model, weights: Path) -> tuple[int, int, int]:
    inputs, outputs = list(model.inputs), list(model.outputs)
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise InputError(weights, f"the model takes {[tuple(i.shape) for i in inputs]}, not one "
                         "(batch, height, width, channels) image input")
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or int(outputs[0].shape[-1]) != 2:
        raise InputError(weights, f"the model outputs {[tuple(o.shape) for o in outputs]}, not "
                         "(batch, 2) probabilities of normal / genetic disease")
    height, width, channels = (inputs[0].shape[1], inputs[0].shape[2], inputs[0].shape[3])
    if None in (height, width, channels):
        raise InputError(weights, "the model's input size is not fixed; cannot preprocess for it")
    return int(height), int(width), int(channels)


def _check_fits(model, architecture: str, weights: Path) -> None:
    """A .keras model with no run.json, named --architecture: its weights must have the shapes
    of that registry architecture (registry defaults at the model's own input size)."""
    shape = tuple(int(v) for v in model.inputs[0].shape[1:])
    reference = _build_registry_model(architecture, None, weights, input_shape=shape)
    mine = [tuple(w.shape) for w in model.weights]
    theirs = [tuple(w.shape) for w in reference.weights]
    if mine != theirs:
        raise InputError(weights, f"the model does not fit architecture '{architecture}' "
                         f"(registry defaults): {len(mine)} weight tensors vs {len(theirs)}, "
                         "or different shapes")


# ----------------------------------------------------------------------------- choices


def gradcam_layer_for(loaded: LoadedModel, requested: str | None) -> tuple[str, str]:
    """(layer, how it was chosen): --gradcam-layer, else figure4's for the run's profile,
    else the registry's, else automatic."""
    from models import registry
    from reproduce.pgds import pipeline

    names = [layer.name for layer in loaded.model.layers]
    if requested:
        try:
            missing = [name for name in gradcam.layer_names(requested) if name not in names]
        except ValueError as err:
            raise InputError(None, f"--gradcam-layer: {err}") from None
        if missing:
            raise InputError(None, f"--gradcam-layer '{missing[0]}' is not a layer of the model "
                             f"(last layers: {', '.join(names[-6:])})")
        return requested, "--gradcam-layer"
    if loaded.architecture in registry.MODEL_NAMES:
        profile = (loaded.run_config or {}).get("profile")
        if profile and loaded.architecture in pipeline.ARCHITECTURES:
            layer = pipeline.gradcam_layer(profile, loaded.architecture)
            if all(name in names for name in gradcam.layer_names(layer)):
                return layer, f"figure4's for {loaded.architecture} on the {profile} profile"
        layer = registry.gradcam_layer(loaded.architecture,
                                       **_registry_options(loaded.architecture, loaded.run_config))
        if layer in names:
            return layer, f"registry ({loaded.architecture})"
    return last_conv_like_layer(loaded.model), "last 4-D convolution-like layer"


def heatmap_method_for(loaded: LoadedModel, requested: str | None) -> str:
    """--method, else figure4's for the profile in the run folder's run.json, else gradcam."""
    from reproduce.pgds import pipeline

    if requested:
        return requested
    profile = (loaded.run_config or {}).get("profile")
    return pipeline.heatmap_method(profile) if profile in pipeline.HEATMAP_SETTINGS else "gradcam"


def last_conv_like_layer(model) -> str:
    for layer in reversed(model.layers):
        kind = type(layer).__name__
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4 and not any(tag in kind for tag in _NOT_CONV_LIKE):
            return layer.name
    raise InputError(None, "the model has no layer with a (batch, h, w, channels) output for "
                     "Grad-CAM; name one with --gradcam-layer")


def threshold_for(weights: Path, explicit: float | None, rule: str) -> tuple[float, str]:
    """(threshold, where it came from)."""
    from reproduce.pgds.pipeline import THRESHOLD_FILE

    if explicit is not None:
        return float(explicit), "--threshold"
    path = weights.parent / THRESHOLD_FILE
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            value = float(record.get("thresholds", {}).get(rule, record["threshold"]))
            return value, f"{path} ({rule} on the training split)"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return DEFAULT_THRESHOLD, "default 0.5 (no threshold.json beside the weights)"


def list_frames(images_dir: Path) -> list[Path]:
    """Image files under images_dir (relative paths, sorted; hidden skipped)."""
    from data_prep import io

    found = []
    for path in sorted(images_dir.rglob("*")):
        rel = path.relative_to(images_dir)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() in io.IMAGE_SUFFIXES or io.is_dicom(path):
            found.append(rel)
    return found


# ----------------------------------------------------------------------------- prediction


def model_input(gray: np.ndarray, shape: tuple[int, int, int], sector_crop: bool = True) -> np.ndarray:
    """One frame's model input: (sector-cropped) grey levels -> the training pipeline's resize
    and min-max at `shape` (H, W, C)."""
    import tensorflow as tf

    from data_prep.deidentify import crop_to_sector
    from reproduce.input_pipeline import resize_minmax

    if sector_crop:
        gray = crop_to_sector(gray)
    height, width, channels = (int(v) for v in shape)
    levels = tf.constant(np.asarray(gray, dtype=np.float32))
    return resize_minmax(levels, (width, height), channels).numpy()


def predict_folder(images_dir: Path, loaded: LoadedModel, out_dir: Path, threshold: float,
                   threshold_source: str, layer: str, layer_source: str, method: str,
                   sector_crop: bool = True) -> pd.DataFrame:
    """Probabilities, calls and overlays of every frame under images_dir, into out_dir."""
    from data_prep.deidentify import crop_to_sector
    from data_prep.io import read_grayscale
    from data_prep.preprocess import min_max

    frames = list_frames(images_dir)
    if not frames:
        raise InputError(images_dir, "no image files found (suffixes .jpg .jpeg .png .dcm .bmp "
                         ".tif .tiff, or DICOM)")
    print(f"predict: {len(frames)} frame(s) under {images_dir}; threshold {threshold:g} "
          f"({threshold_source}); {gradcam.METHOD_TITLES[method]} at layer {layer} "
          f"({layer_source}); "
          f"{'cropped to the scan sector' if sector_crop else 'frames used as they are'}",
          file=sys.stderr, flush=True)
    rows: list[dict] = []
    grays: dict[int, np.ndarray] = {}
    for index, rel in enumerate(frames):
        row = {"image": rel.as_posix(), "probability": math.nan, "call": "", "threshold": threshold,
               "error": "", "threshold_source": threshold_source, "overlay": ""}
        try:
            grays[index] = read_grayscale(images_dir / rel)
        except InputError as err:
            row["error"] = err.one_line()
        rows.append(row)
    good = []
    for index in sorted(grays):
        try:
            if sector_crop:
                grays[index] = crop_to_sector(grays[index])
            good.append((index, model_input(grays[index], loaded.input_shape, sector_crop=False)))
        except (ValueError, InputError) as err:
            rows[index]["error"] = f"{images_dir / frames[index]}: cannot be prepared: {_first_line(err)}"
    if good:
        batch = np.stack([item for _, item in good]).astype(np.float32)
        probabilities = np.asarray(loaded.model.predict(batch, batch_size=32, verbose=0),
                                   dtype=np.float64)[:, 1]
        heats = gradcam.heatmaps(loaded.model, batch, 1, layer=layer, method=method)
        for (index, _), probability, heat in zip(good, probabilities, heats):
            call = "genetic_disease" if probability >= threshold else "normal"
            overlay_rel = Path("overlays") / (frames[index].as_posix() + ".png")
            title = (f"{frames[index].as_posix()}\nP(genetic disease) = {probability:.3g} -> "
                     f"{call} (threshold {threshold:.3g}); {gradcam.METHOD_TITLES[method]} of "
                     "the disease class")
            gradcam.save_overlay_figure(min_max(grays[index]), heat, out_dir / overlay_rel,
                                        title=title, method=method)
            rows[index].update(probability=float(probability), call=call,
                               overlay=overlay_rel.as_posix())
            print(f"predict: {frames[index].as_posix()}: P = {probability:.3g} -> {call}",
                  file=sys.stderr, flush=True)
    for row in rows:
        if row["error"]:
            print(f"error: {row['error']}", file=sys.stderr, flush=True)
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def _check_out_dir(out_dir: Path, images_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "predictions.csv").is_file():
        raise InputError(out_dir, "output folder exists, is not empty and holds no earlier "
                         "predictions.csv; choose another --out")
    out_resolved, images_resolved = out_dir.resolve(), images_dir.resolve()
    if out_resolved == images_resolved or images_resolved in out_resolved.parents:
        raise InputError(out_dir, "output folder must lie outside --images (its overlays would "
                         "be read as frames next time)")


def run(args: argparse.Namespace) -> int:
    from data_prep import atomic

    images_dir = Path(args.images)
    if not images_dir.is_dir():
        raise InputError(images_dir, "images folder not found")
    out_dir = Path(args.out) if args.out else Path("runs") / "predict" / images_dir.resolve().name
    _check_out_dir(out_dir, images_dir)
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise InputError(None, f"--threshold must be a finite number, got {args.threshold}")
    started = time.perf_counter()
    loaded = load_weights(args.weights, args.architecture)
    layer, layer_source = gradcam_layer_for(loaded, args.gradcam_layer)
    threshold, source = threshold_for(Path(args.weights), args.threshold, args.threshold_rule)
    with atomic.staged_dir(out_dir, overwrite=True) as stage:
        table = predict_folder(images_dir, loaded, stage, threshold, source, layer, layer_source,
                               heatmap_method_for(loaded, args.method),
                               sector_crop=not args.no_sector_crop)
        atomic.write_csv(stage / "predictions.csv", table)
    failed = table[table["error"] != ""]
    done = len(table) - len(failed)
    print(f"predict: {done} of {len(table)} frame(s) processed, {len(failed)} failed "
          f"[{time.perf_counter() - started:.1f} s] -> {out_dir / 'predictions.csv'}",
          file=sys.stderr, flush=True)
    if len(failed):
        print(f"{len(failed)} failed: {', '.join(failed['image'])}", file=sys.stderr, flush=True)
        return EXIT_SOME_FAILED
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce.pgds.predict",
        description="Probability, call and Grad-CAM overlay for every frame under a folder.")
    parser.add_argument("--images", required=True, type=Path,
                        help="folder of frames (searched recursively: JPEG, PNG, DICOM, BMP, TIFF)")
    parser.add_argument("--weights", required=True, type=Path,
                        help="trained model: runs/pgds/<profile>/<arch>/fold0/selected.keras, or "
                             "a .weights.h5 file with --architecture")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder for predictions.csv and overlays/ (default: "
                             "runs/predict/<images folder name>)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="call genetic disease when P >= this (default: the threshold.json "
                             "beside the weights, else 0.5)")
    parser.add_argument("--threshold-rule", choices=("max_f1", "youden"), default="max_f1",
                        help="which recorded training-split threshold to use (default max_f1, "
                             "the paper's)")
    parser.add_argument("--architecture", default=None,
                        choices=("pgds_resnet", "resnet18", "resnet34", "vgg16", "vgg19"),
                        help="registry architecture of the weights (default: from run.json "
                             "beside them; pgds_resnet for a .weights.h5 file without one)")
    parser.add_argument("--gradcam-layer", default=None,
                        help="layer for the heat-map, or several joined by '+' (averaged) "
                             "(default: the one(s) figure4 reads for the "
                             "architecture and profile in run.json, else the registry's, else "
                             "the last 4-D convolution-like layer)")
    parser.add_argument("--method", choices=gradcam.METHODS, default=None,
                        help="heat-map method (tf-keras-vis): gradcam (the paper's), gradcam++ "
                             "or layercam; default: figure4's for the profile recorded in the "
                             "run folder's run.json, else gradcam")
    parser.add_argument("--no-sector-crop", action="store_true",
                        help="use the frames as they are: they are already blanked outside the "
                             "scan sector and cropped to it (python -m data_prep deidentify "
                             "--crop); by default predict does this itself, as training saw")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    return report_bad_input(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
