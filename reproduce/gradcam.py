"""Grad-CAM heat-maps (tf-keras-vis), overlays like the paper's Figure 4, and their scores.

Tang 2023 (section 2.5, Figure 4) overlays a Grad-CAM map from the last convolution on each
fetal profile and reads where the network looks (nasal bone, jaw, forehead). This module:

- `heatmaps(model, images, class_index, layer=..., method="gradcam"|"gradcam++"|"layercam")`
  runs tf-keras-vis's `Gradcam` / `GradcamPlusPlus` / `Layercam` on a clone of the model
  whose softmax is made linear (`ReplaceToLinear`: gradients of the class logit, not of the
  saturating softmax), at the named layer exactly (no search for another conv layer), and
  returns one map per image, upsampled to the input size (`upsample_to_input`) and min-max
  normalised to [0, 1] per image. A map that is zero everywhere (no positive evidence) stays
  all zero.
  What is differentiated (`score`): "logit" (the class logit z_c, Selvaraju et al.'s choice,
  the default) or "log_prob" (log softmax_c = z_c - logsumexp(z), from the same logits, so it
  never saturates). The logit's gradient is the evidence FOR class c alone; the
  log-probability's is (1 - p_c) times the evidence for c AGAINST the others (sum over k of
  p_k times the contrast z_c - z_k), so a feature every class shares (the skull ring of every
  head plane) cancels and what is peculiar to the class (an encephalocele's sac) remains.
  With two classes, log_prob is Grad-CAM of z_1 - z_0 up to a positive factor per image.
  Grad-CAM weights each channel by its gradient averaged over the whole map, so a channel
  that is evidence for the class somewhere (a jaw detector, for the T18 images of a
  "genetic disease" class) lights up wherever it fires, also on a T21 frame whose jaw is
  normal. LayerCAM (Jiang et al. 2021, IEEE TIP 30:5875) weights each position by its own
  positive gradient instead, which keeps the evidence where it is and stays sharp at earlier,
  finer layers.
  Upsampling is ours, not tf-keras-vis's: tf-keras-vis expands the map with scipy's `zoom`,
  which pins the first and last cells to the image corners, so on a 4x5 map of a 128x140
  input every interior cell is drawn up to 18 px (half a cell) away from the input window it
  was computed from, outward. `upsample_to_input` puts each cell's value at the centre of its
  stride window, (i + 0.5) * s - 0.5 for the network stride s (a power of two with
  ceil(input / s) == map size, as 'same'-padded stride-2 stages give), bilinear in between
  and mirrored about the outermost centres (so a border cell's peak stays at its centre
  instead of spreading to the image edge, where the pointing game's first-maximum rule would
  find it); between the outermost centres this is exactly cv2.resize INTER_LINEAR when
  input / map is an integer.
  The paper's colour bar shows raw values (-10 to 15); ours are normalised, so only the
  pattern, not the scale, is comparable.
- `overlay` and `save_overlay_figure`: the map in the jet colour map over the grey frame, and a
  two-panel figure (A original, B heat-map with a colour bar) written atomically.
- Scores against a truth mask of the abnormal region (the phantom generator provides one):
  `pointing_game_hit` (Zhang et al. 2016: the map's maximum lies on the mask or within a
  tolerance), `energy_inside` (share of the map's sum inside the mask), and
  `localisation_table` / `localisation_summary` over many images. The tolerance is 15 px at
  224-pixel input (Zhang et al.), scaled by min(H, W) / 224 (`pointing_tolerance_px`), so it
  is about 8.6 px at 128x140 input and 26.8 px at the paper's 400x440.

A Grad-CAM map from the last convolution of ResNet-18 is coarse (a 4x5 grid at 128x140
input); the mask-area share (`mask_area_share`, what a uniform map would score) is reported
beside the energy share so a reader can tell a real concentration from chance.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from scipy import ndimage

METHODS = ("gradcam", "gradcam++", "layercam")
#: What the maps differentiate (module docstring): the class logit or its log-probability.
SCORES = ("logit", "log_prob")
#: Display names, for titles and captions.
METHOD_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "layercam": "LayerCAM"}
# Zhang et al. 2016 (top-down neural attention, pointing game): 15 px at 224-pixel input.
POINTING_TOLERANCE_AT_224 = 15.0


# --------------------------------------------------------------------------------------------
# Heat-maps
# --------------------------------------------------------------------------------------------
def _class_indices(class_index: int | Sequence[int], n: int) -> np.ndarray:
    indices = np.asarray(class_index, dtype=int).reshape(-1)
    if indices.size == 1:
        return np.full(n, int(indices[0]), dtype=int)
    if indices.size != n:
        raise ValueError(f"class_index has {indices.size} entries for {n} images")
    return indices


def describe(method: str, score: str = "logit") -> str:
    """'Grad-CAM' (of the logit, the usual reading) or e.g. 'LayerCAM of log P(class)'."""
    title = METHOD_TITLES.get(method, method)
    return title if score == "logit" else f"{title} of log P(class)"


def layer_names(layer: str | Sequence[str]) -> tuple[str, ...]:
    """One layer name, or several (a sequence, or one string joined by ',' or '+')."""
    if isinstance(layer, str):
        names = tuple(part.strip() for part in layer.replace("+", ",").split(","))
    else:
        names = tuple(str(part).strip() for part in layer)
    if not names or not all(names):
        raise ValueError(f"layer must name at least one layer, got {layer!r}")
    return names


def heatmaps(model, images: np.ndarray, class_index: int | Sequence[int] = 1, *,
             layer: str | Sequence[str], method: str = "gradcam", score: str = "logit",
             batch_size: int = 16, progress: bool = False) -> np.ndarray:
    """Grad-CAM (Grad-CAM++, LayerCAM) maps of `class_index` at `layer`, (N, H, W), in [0, 1].

    `images` is (N, H, W, C) float32 as the model takes it. `class_index` is one class for
    all images or one per image. `layer` names the layer whose activations are weighted (the
    registry's `gradcam_layer(name)`; any layer with a (N, h, w, c) output is accepted), or
    several layers (`layer_names`): each one's map is upsampled and brought to [0, 1], and
    the maps are averaged (LayerCAM's multi-layer fusion: coarse layers say which structure,
    fine ones where exactly). `score` is "logit" or "log_prob" (module docstring; log_prob
    needs a softmax output layer). The caller's model is not modified (tf-keras-vis works on a
    clone).
    """
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if score == "log_prob" and _output_activation(model) != "softmax":
        raise ValueError(f"score 'log_prob' needs a softmax output layer; model {model.name!r} "
                         f"ends in {_output_activation(model)!r}")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    layers = layer_names(layer)
    names = [lay.name for lay in model.layers]
    grids = {}
    for name in layers:
        if name not in names:
            raise ValueError(f"model {model.name!r} has no layer {name!r}; layers: {names}")
        out_shape = model.get_layer(name).output.shape
        if len(out_shape) != 4:
            raise ValueError(f"layer {name!r} outputs shape {tuple(out_shape)}; Grad-CAM needs "
                             "a (batch, height, width, channels) feature map")
        grids[name] = tuple(int(v) for v in out_shape[1:3])
    n = len(images)
    indices = _class_indices(class_index, n)
    n_classes = int(model.outputs[0].shape[-1])
    if indices.min(initial=0) < 0 or indices.max(initial=0) >= n_classes:
        raise ValueError(f"class_index must lie in [0, {n_classes}), got {sorted(set(indices))}")

    visualiser_type = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus,
                       "layercam": Layercam}[method]
    visualiser = visualiser_type(model, model_modifier=ReplaceToLinear(), clone=True)
    maps = np.zeros(images.shape[:3], dtype=np.float64)
    for name in layers:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            # The raw (h, w) map; expanding and normalising are done here (module docstring).
            batch_indices = indices[start:stop].tolist()
            target = (CategoricalScore(batch_indices) if score == "logit"
                      else _log_probability_score(batch_indices))
            cams = visualiser(target, images[start:stop],
                              penultimate_layer=name, seek_penultimate_conv_layer=False,
                              expand_cam=False, normalize_cam=False)
            cams = np.asarray(cams, dtype=np.float64).reshape(stop - start, *grids[name])
            for offset, cam in enumerate(cams):
                maps[start + offset] += _unit_range(upsample_to_input(cam, images.shape[1:3]))
            if progress:
                print(f"{METHOD_TITLES[method]} ({name}): {stop}/{n}", file=sys.stderr,
                      flush=True)
    if len(layers) == 1:
        return maps.astype(np.float32)
    return np.stack([_unit_range(heat) for heat in maps]) if n else maps.astype(np.float32)


def _output_activation(model) -> str:
    """The name of the model's final activation ('softmax', 'linear', ...; '' if none)."""
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") if activation is not None else ""


def _log_probability_score(indices: list[int]):
    """tf-keras-vis score: log softmax_c of the logits it hands over (the softmax made linear)."""
    import tensorflow as tf
    from tf_keras_vis.utils.scores import CategoricalScore

    pick = CategoricalScore(indices)

    def log_probability(output):
        output = tf.cast(output, tf.float32)
        return pick(output) - tf.reduce_logsumexp(output, axis=-1)

    return log_probability


def _unit_range(heat: np.ndarray) -> np.ndarray:
    """Per-map min-max to [0, 1]; a flat map (no positive evidence anywhere) becomes zeros."""
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64), nan=0.0)
    low, high = float(heat.min()), float(heat.max())
    if high <= low:
        return np.zeros(heat.shape, dtype=np.float32)
    return ((heat - low) / (high - low)).astype(np.float32)


def feature_stride(input_size: int, map_size: int) -> float:
    """Input pixels per feature cell along one axis: the power of two s with
    ceil(input_size / s) == map_size (a stack of 'same'-padded stride-2 stages: ResNet, VGG),
    else input_size / map_size."""
    if input_size < 1 or map_size < 1:
        raise ValueError(f"sizes must be positive, got input {input_size}, map {map_size}")
    for power in range(11):
        if -(-input_size // 2 ** power) == map_size:
            return float(2 ** power)
    return input_size / map_size


def upsample_to_input(cam: np.ndarray, input_hw: Sequence[int]) -> np.ndarray:
    """A (h, w) feature-level map -> (H, W): each cell's value at the centre of the input
    window it strides over ((i + 0.5) * s - 0.5, s = `feature_stride`), bilinear between
    centres, mirrored about the outermost ones (scipy map_coordinates, order 1, 'mirror')."""
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim != 2:
        raise ValueError(f"cam must be (h, w), got shape {cam.shape}")
    height, width = (int(v) for v in input_hw)
    stride_y = feature_stride(height, cam.shape[0])
    stride_x = feature_stride(width, cam.shape[1])
    rows = (np.arange(height) + 0.5) / stride_y - 0.5
    cols = (np.arange(width) + 0.5) / stride_x - 0.5
    grid = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(cam, grid, order=1, mode="mirror")


# --------------------------------------------------------------------------------------------
# Overlays and figures
# --------------------------------------------------------------------------------------------
def _gray_unit(gray: np.ndarray) -> np.ndarray:
    gray = np.asarray(gray)
    if gray.ndim == 3 and gray.shape[-1] == 1:
        gray = gray[..., 0]
    if gray.ndim != 2:
        raise ValueError(f"gray must be (H, W) or (H, W, 1), got shape {gray.shape}")
    if gray.dtype == np.uint8:
        return gray.astype(np.float32) / 255.0
    gray = gray.astype(np.float32)
    if not np.isfinite(gray).all() or gray.min() < 0.0 or gray.max() > 1.0:
        raise ValueError("a float gray image must lie in [0, 1]; pass uint8 for 0-255 values")
    return gray


def _heat_like(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat must be (H, W), got shape {heat.shape}")
    if heat.shape != shape:  # a map made at the model's input size, shown on the original frame
        heat = cv2.resize(heat, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0)


def overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4,
            cmap: str = "jet") -> np.ndarray:
    """The heat-map in `cmap` blended over the grey frame: uint8 RGB (H, W, 3).

    `gray` is (H, W) in [0, 1] or uint8; `heat` is (H, W) in [0, 1], resized (bilinear) to
    the frame when it was made at another size. Each pixel is (1 - alpha) grey + alpha colour.
    """
    import matplotlib

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    base = _gray_unit(gray)
    colour = matplotlib.colormaps[cmap](_heat_like(heat, base.shape))[..., :3]
    blended = (1.0 - alpha) * base[..., None] + alpha * colour
    return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)


def save_overlay_figure(gray: np.ndarray, heat: np.ndarray, out_png: str | Path,
                        title: str | None = None, colorbar: bool = True,
                        alpha: float = 0.4, cmap: str = "jet",
                        method: str = "gradcam") -> Path:
    """Figure 4 style: (A) the original frame, (B) the heat-map over it, with a colour bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from data_prep.atomic import atomic_path

    base = _gray_unit(gray)
    heat = _heat_like(heat, base.shape)
    figure = Figure(figsize=(8.0, 3.8), dpi=120)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    left.imshow(base, cmap="gray", vmin=0.0, vmax=1.0)
    left.set_title("A  original")
    right.imshow(base, cmap="gray", vmin=0.0, vmax=1.0)
    shown = right.imshow(heat, cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha)
    right.set_title(f"B  {METHOD_TITLES.get(method, method)} heat-map")
    for axis in (left, right):
        axis.set_axis_off()
    if colorbar:
        bar = figure.colorbar(shown, ax=right, fraction=0.046, pad=0.04)
        bar.solids.set_alpha(1.0)
        bar.set_label("importance (normalised per image)")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, format="png")
    return out_png


# --------------------------------------------------------------------------------------------
# Scores against truth masks
# --------------------------------------------------------------------------------------------
def _check_pair(heat: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heat = np.asarray(heat, dtype=np.float64)
    mask = np.asarray(mask) > 0
    if heat.ndim != 2 or heat.shape != mask.shape:
        raise ValueError(f"heat {heat.shape} and mask {mask.shape} must be 2-D of one shape")
    if not np.isfinite(heat).all():
        raise ValueError("heat-map has NaN or infinite values")
    if not mask.any():
        raise ValueError("mask is empty: nothing to point at")
    return heat, mask


def pointing_tolerance_px(input_hw: Sequence[int]) -> float:
    """15 px at 224-pixel input (Zhang et al. 2016) scaled by min(H, W) / 224."""
    height, width = int(input_hw[0]), int(input_hw[1])
    if height < 1 or width < 1:
        raise ValueError(f"input size must be positive, got {input_hw}")
    return POINTING_TOLERANCE_AT_224 * min(height, width) / 224.0


def pointing_game_hit(heat: np.ndarray, mask: np.ndarray, tolerance_px: float) -> bool:
    """True when the map's maximum lies on the mask or within `tolerance_px` of it.

    The distance is the Euclidean distance transform of the mask's complement. Ties: the first
    maximal pixel in row-major order (numpy.argmax) is scored, which favours no position
    near the mask. A flat map (max == min, e.g. all zero) points nowhere and is a miss.
    """
    heat, mask = _check_pair(heat, mask)
    if heat.max() == heat.min():
        return False
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    distance_to_mask = ndimage.distance_transform_edt(~mask)
    return bool(distance_to_mask[row, col] <= tolerance_px)


def pointing_chance(mask: np.ndarray, tolerance_px: float) -> float:
    """The pointing game's chance level for this mask: the share of pixels that lie on the mask
    or within `tolerance_px` of it, i.e. the hit probability of a maximum dropped uniformly at
    random on the image (a large mask is easy to hit; this says how easy)."""
    mask = np.asarray(mask) > 0
    if mask.ndim != 2 or not mask.any():
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {mask.shape}")
    return float(np.mean(ndimage.distance_transform_edt(~mask) <= tolerance_px))


def energy_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total (non-negative) energy inside the mask; 0.0 for an all-zero map."""
    heat, mask = _check_pair(heat, mask)
    if heat.min() < 0.0:
        raise ValueError("heat-map has negative values; the energy share needs a map >= 0")
    total = float(heat.sum())
    return 0.0 if total == 0.0 else float(heat[mask].sum() / total)


def localisation_table(heats: Sequence[np.ndarray] | np.ndarray,
                       masks: Sequence[np.ndarray] | np.ndarray, *,
                       image_ids: Sequence[str] | None = None,
                       tolerance_px: float | None = None) -> pd.DataFrame:
    """One row per image: image, hit, energy_inside, mask_area_share, tolerance_px,
    chance_hit (`pointing_chance`).

    `tolerance_px` defaults to `pointing_tolerance_px` of each map's size. The summary
    (`localisation_summary`) is also stored in `table.attrs["summary"]`.
    """
    if len(heats) != len(masks):
        raise ValueError(f"{len(heats)} heat-maps but {len(masks)} masks")
    if image_ids is not None and len(image_ids) != len(heats):
        raise ValueError(f"{len(image_ids)} image ids for {len(heats)} heat-maps")
    rows = []
    for i, (heat, mask) in enumerate(zip(heats, masks)):
        image = str(image_ids[i]) if image_ids is not None else str(i)
        tolerance = (pointing_tolerance_px(np.shape(heat)) if tolerance_px is None
                     else float(tolerance_px))
        try:
            hit = pointing_game_hit(heat, mask, tolerance)
            share = energy_inside(heat, mask)
            chance = pointing_chance(mask, tolerance)
        except ValueError as err:
            raise ValueError(f"image {image}: {err}") from None
        rows.append({"image": image, "hit": hit, "energy_inside": share,
                     "mask_area_share": float(np.mean(np.asarray(mask) > 0)),
                     "tolerance_px": tolerance, "chance_hit": chance})
    table = pd.DataFrame(rows, columns=["image", "hit", "energy_inside", "mask_area_share",
                                        "tolerance_px", "chance_hit"])
    table.attrs["summary"] = localisation_summary(table)
    return table


def localisation_summary(table: pd.DataFrame) -> dict[str, float]:
    """Hit rate (with a Wilson CI, continuity corrected), mean energy share, mean area share."""
    from scipy.stats import binomtest

    n = int(len(table))
    if n == 0:
        return {"n": 0, "hits": 0, "hit_rate": float("nan"), "hit_rate_lo": float("nan"),
                "hit_rate_hi": float("nan"), "mean_energy_inside": float("nan"),
                "mean_mask_area_share": float("nan")}
    hits = int(table["hit"].sum())
    ci = binomtest(hits, n).proportion_ci(method="wilsoncc")
    return {"n": n, "hits": hits, "hit_rate": hits / n, "hit_rate_lo": float(ci.low),
            "hit_rate_hi": float(ci.high),
            "mean_energy_inside": float(table["energy_inside"].mean()),
            "mean_mask_area_share": float(table["mask_area_share"].mean())}
