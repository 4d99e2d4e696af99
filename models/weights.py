"""Load weights a user names into a model of the zoo, with clear errors when they do not fit.

No model hub is reachable, so ImageNet, VGG-Face or face-recognition weights come from a file:

* `.keras` (a whole saved model): matched to the target **by layer name**;
* legacy Keras `.h5` / `.hdf5` (Keras 2 `save_weights`/`save`, e.g. keras-vggface files):
  matched **by layer name**; a dense kernel (n, units) loads into a conv kernel (kh, kw, c,
  units) with kh*kw*c = n (a fully connected layer rewritten as a convolution);
* `.weights.h5` (Keras 3 `save_weights`): Keras stores these by position in the graph, not by
  name, so the file must come from the same architecture; it is matched layer by layer the
  way Keras writes it, and anything that does not line up is an error.

Every layer of the model that has weights must be found in the file with the same shapes.
Otherwise `WeightsMismatchError` (a ValueError) names the file and the first layer that does
not fit, before anything is assigned (no half-loaded model). Layers named in `optional_layers`
(a classifier whose class count differs, VGG-Face's absent BN layers), or every layer when
`skip_mismatch=True`, keep their initial weights instead; the returned `LoadReport` lists them.
A missing file raises `WeightsFileError` (a FileNotFoundError) naming the path.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import keras
import numpy as np

import models.margins  # noqa: F401  (registers the custom layers so `.keras` files load)

BY_NAME_SUFFIXES = (".keras", ".h5", ".hdf5")
STRUCTURAL_SUFFIX = ".weights.h5"


class WeightsFileError(FileNotFoundError):
    """The weights file the user named does not exist or is not a file."""


class WeightsMismatchError(ValueError):
    """The weights file cannot be read into this model; the message names the first bad layer."""


@dataclass
class LoadReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # layer -> why it kept its initial weights
    reshaped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.path}: loaded {len(self.loaded)} layers"
        if self.reshaped:
            text += f" ({len(self.reshaped)} dense kernels reshaped to conv: {', '.join(self.reshaped)})"
        if self.skipped:
            shown = "; ".join(f"{k}: {v}" for k, v in list(self.skipped.items())[:6])
            more = f"; and {len(self.skipped) - 6} more" if len(self.skipped) > 6 else ""
            text += f"; kept initial weights of {len(self.skipped)} layers ({shown}{more})"
        return text


def require_file(path: str | Path) -> Path:
    """The path as a Path, or WeightsFileError naming it when it is not an existing file."""
    file = Path(path)
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise WeightsFileError(f"weights file {file} {what}")
    return file


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_weights_content(path: str | Path) -> Path:
    """The file is what its suffix promises, judged by its bytes: a `.keras` file is a zip
    archive holding config.json, an `.h5`/`.hdf5` file has the HDF5 signature. Else
    WeightsMismatchError saying what the bytes are (Keras itself reports any file it cannot
    open as "File not found", even one that exists)."""
    import zipfile

    from data_prep.io import describe_bytes

    file = require_file(path)
    name = file.name.lower()
    with open(file, "rb") as handle:
        head = handle.read(132)
    if name.endswith(".keras"):
        try:
            with zipfile.ZipFile(file) as archive:
                if "config.json" in archive.namelist():
                    return file
                what = "a zip archive without config.json"
        except (zipfile.BadZipFile, OSError):
            what = describe_bytes(head)
            if what == "a zip archive":
                what = "a damaged zip archive (truncated?)"
        raise WeightsMismatchError(f"{file}: is not a Keras .keras model: its bytes are {what} "
                                   "(a .keras model is a zip archive holding config.json)")
    if name.endswith((".h5", ".hdf5")) and not head.startswith(_HDF5_SIGNATURE):
        raise WeightsMismatchError(f"{file}: is not an HDF5 weights file: its bytes are "
                                   f"{describe_bytes(head)}")
    return file


def _decode(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers that own weights, nested models flattened, in graph order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_weighted_layers(layer))
        elif layer.weights:
            found.append(layer)
    return found


def _read_keras_file(file: Path) -> dict[str, list[np.ndarray]]:
    check_weights_content(file)
    try:
        saved = keras.saving.load_model(file, compile=False)
    except Exception as error:  # noqa: BLE001 - any failure to read means "not a usable file"
        raise WeightsMismatchError(f"{file}: cannot be read as a Keras model ({type(error).__name__}: "
                                   f"{error})") from error
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in _weighted_layers(saved)}


def _read_legacy_h5(file: Path) -> dict[str, list[np.ndarray]]:
    check_weights_content(file)
    try:
        with h5py.File(file, "r") as handle:
            group = handle
            if "layer_names" not in group.attrs and "model_weights" in group:
                group = group["model_weights"]
            if "layer_names" not in group.attrs:
                raise WeightsMismatchError(
                    f"{file}: is not a legacy Keras weights file (no 'layer_names'); Keras 3 "
                    f"weights must be named *.weights.h5")
            arrays = {}
            for layer_name in (_decode(n) for n in group.attrs["layer_names"]):
                layer_group = group[layer_name]
                names = [_decode(n) for n in layer_group.attrs.get("weight_names", [])]
                if names:
                    arrays[layer_name] = [np.asarray(layer_group[n]) for n in names]
            return arrays
    except OSError as error:
        raise WeightsMismatchError(f"{file}: cannot be read as HDF5 ({error})") from error


def _snake_case(name: str) -> str:
    """keras' to_snake_case, which names the groups of a `.weights.h5` file."""
    from keras.src.utils.naming import to_snake_case
    return to_snake_case(name)


def _structural_keys(model: keras.Model, prefix: str = "layers") -> dict[str, str]:
    """layer name -> the group Keras 3 writes its variables to in a `.weights.h5` file."""
    keys: dict[str, str] = {}
    used: dict[str, int] = {}
    for layer in model.layers:
        base = _snake_case(layer.__class__.__name__)
        if base in used:
            used[base] += 1
            base = f"{base}_{used[base]}"
        else:
            used[base] = 0
        if isinstance(layer, keras.Model):
            keys.update(_structural_keys(layer, f"{prefix}/{base}/layers"))
        elif layer.weights:
            keys[layer.name] = f"{prefix}/{base}/vars"
    return keys


def _read_structural_h5(file: Path, model: keras.Model) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """Arrays keyed by the model's layer names, and the file's weight groups no layer maps to."""
    check_weights_content(file)
    keys = _structural_keys(model)
    try:
        with h5py.File(file, "r") as handle:
            present: list[str] = []

            def visit(name, obj):
                if isinstance(obj, h5py.Group) and name.endswith("vars") and len(obj):
                    present.append(name)

            handle.visititems(visit)
            if not present and "layer_names" in handle.attrs:
                raise WeightsMismatchError(f"{file}: is a legacy Keras weights file; name it *.h5")
            arrays = {}
            for layer_name, key in keys.items():
                if key in handle:
                    group = handle[key]
                    arrays[layer_name] = [np.asarray(group[str(i)]) for i in range(len(group))]
            extra = sorted(set(present) - set(keys.values()))
            return arrays, extra
    except OSError as error:
        raise WeightsMismatchError(f"{file}: cannot be read as HDF5 ({error})") from error


def _fit(layer: keras.layers.Layer, arrays: list[np.ndarray]) -> tuple[list[np.ndarray] | None, bool]:
    """Arrays shaped for the layer (and whether a dense kernel was reshaped), or None if no fit."""
    targets = [tuple(int(d) for d in w.shape) for w in layer.weights]
    if len(targets) != len(arrays):
        return None, False
    fitted, reshaped = [], False
    for target, array in zip(targets, arrays):
        if tuple(array.shape) == target:
            fitted.append(array)
        elif (len(target) == 4 and array.ndim == 2 and array.size == int(np.prod(target))
              and array.shape[-1] == target[-1]):
            fitted.append(array.reshape(target))  # dense (kh*kw*c, units) as conv (kh, kw, c, units)
            reshaped = True
        else:
            return None, False
    return fitted, reshaped


def _shapes(items: Iterable) -> str:
    return "[" + ", ".join(str(tuple(int(d) for d in x.shape)) for x in items) + "]"


def load_weights_file(model: keras.Model, path: str | Path, *, skip_mismatch: bool = False,
                      optional_layers: Iterable[str] | Callable[[str], bool] = (),
                      verbose: bool = True) -> LoadReport:
    """Load `path` into `model` (see the module docstring for formats and matching).

    Args:
        model: the target model (built).
        path: a `.keras`, `.weights.h5` or legacy `.h5`/`.hdf5` file.
        skip_mismatch: keep the initial weights of any layer that is missing from the file or
            whose shapes differ, instead of raising.
        optional_layers: layer names (or a predicate on the name) that may be missing or differ
            without an error, e.g. the classifier when the class count changes.
        verbose: print the summary to stderr when some layers kept their initial weights.

    Raises:
        WeightsFileError: the file does not exist.
        WeightsMismatchError: unsupported suffix, unreadable file, a layer that does not fit
            (named in the message), or nothing in the file matched.
    """
    file = require_file(path)
    is_optional = optional_layers if callable(optional_layers) else set(optional_layers).__contains__
    name = file.name.lower()
    extra: list[str] = []
    if name.endswith(STRUCTURAL_SUFFIX):
        arrays, extra = _read_structural_h5(file, model)
    elif name.endswith(".keras"):
        arrays = _read_keras_file(file)
    elif name.endswith((".h5", ".hdf5")):
        arrays = _read_legacy_h5(file)
    else:
        raise WeightsMismatchError(f"{file}: unsupported weights file type; use .keras, .weights.h5 "
                                   f"or a legacy .h5 (iresnet100 also takes an insightface state-dict .npz)")
    if extra and not skip_mismatch:
        raise WeightsMismatchError(
            f"{file}: holds weights for {len(extra)} layers this model does not have (first: "
            f"'{extra[0]}'); a .weights.h5 file must come from the same architecture")

    report = LoadReport(path=str(file))
    updates: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    for layer in _weighted_layers(model):
        tolerated = skip_mismatch or is_optional(layer.name)
        if layer.name not in arrays:
            if not tolerated:
                known = ", ".join(list(arrays)[:5]) or "none"
                raise WeightsMismatchError(
                    f"{file}: has no weights for layer '{layer.name}' (file layers: {known}"
                    f"{', ...' if len(arrays) > 5 else ''}); was it saved from another architecture?")
            report.skipped[layer.name] = "not in the file"
            continue
        fitted, reshaped = _fit(layer, arrays[layer.name])
        if fitted is None:
            if not tolerated:
                raise WeightsMismatchError(
                    f"{file}: layer '{layer.name}' does not fit: the model has shapes "
                    f"{_shapes(layer.weights)}, the file {_shapes(arrays[layer.name])} "
                    f"(skip_mismatch=True keeps that layer's initial weights)")
            report.skipped[layer.name] = (f"shapes {_shapes(arrays[layer.name])} in the file, "
                                          f"{_shapes(layer.weights)} in the model")
            continue
        updates.append((layer, fitted))
        if reshaped:
            report.reshaped.append(layer.name)
    if not updates:
        raise WeightsMismatchError(f"{file}: no layer of model '{model.name}' matched the file")
    for layer, fitted in updates:
        layer.set_weights(fitted)
        report.loaded.append(layer.name)
    if verbose and report.skipped:
        print(report.summary(), file=sys.stderr)
    return report
