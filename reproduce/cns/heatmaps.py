"""Qi 2025 heat-maps: Grad-CAM of the true class on every anomalous test image, scored against
the phantom's truth masks, and a figure of examples per class.

    python -m reproduce.cns.heatmaps [common flags] [--tasks 4class,5class]

For each task (`--tasks`, default both) writes, in the results folder:

- `gradcam_localisation_<task>.csv`: every anomalous TEST image (pooled out-of-fold) with a
  non-empty truth mask at the model input: image_path, case_id, fold, label, plane,
  predicted_label, correct, pointing_game_hit, energy_inside, mask_area_share, tolerance_px,
  chance_hit, layer, method, cam_score (what was differentiated). The map is the TRUE class's, from the image's own fold's model
  (the model that never saw the image in training).
- `gradcam_localisation_<task>.md`: per class and overall, the pointing-game hit rate on the
  CORRECTLY classified anomalous images (the acceptance figure: >= 0.8 on the default profile)
  with the mean chance level beside it (`gradcam.pointing_chance`), the hit rate on all, and
  the mean energy share inside the mask beside the mask's area share (what a uniform map
  scores).
- `heatmaps_<task>.png`: per class two correctly classified test images (seeded random
  choice; any test image of the class when fewer are correct), each as the frame at the model
  input and the map over it, truth mask outlined, caption with P(class) and hit / miss.

Geometry: the CNS models are evaluated under the "imagenet" transform
(`reproduce.input_pipeline.resize_center_crop`: the shorter side resized to
round(min(W, H) * EVAL_RESIZE_RATIO), aspect kept, then the centre H x W crop), so a truth
mask is brought to the model input with the same resize (nearest neighbour, half-pixel
centres) and the same crop (`mask_to_input`): map and mask line up pixel for pixel.

Method, layer and score are the profile's (`pipeline.HEATMAP_SETTINGS`, `study.gradcam_layer`):
Qi 2025 reads Grad-CAM of the logit at the last conv of the last block (the paper profile); the
ci/default profiles, whose inputs are small, read LayerCAM of log P(true class) at the outputs
of the two stages before the last, averaged (pipeline.HEATMAP_SETTINGS says why).
Heat-maps are always those of the validation-selected models (`study.load_model`), whose
predictions also decide `correct`; under `--select-on test_fold` the .md says so.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_prep.errors import InputError  # noqa: E402
from reproduce import gradcam, study  # noqa: E402
from reproduce.cns import pipeline  # noqa: E402

TABLE_PREFIX = "gradcam_localisation"
FIGURE_PREFIX = "heatmaps"
COLUMNS = ("image_path", "case_id", "fold", "label", "plane", "predicted_label", "correct",
           "pointing_game_hit", "energy_inside", "mask_area_share", "tolerance_px", "chance_hit",
           "layer", "method", "cam_score")
#: Test images shown per class in the figure.
PER_CLASS = 2
#: The acceptance bound on the hit rate over correctly classified anomalous images (default).
ACCEPTANCE_HIT_RATE = 0.8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce.cns.heatmaps",
        description="Qi 2025 Grad-CAM heat-maps: localisation against the truth masks "
                    "(gradcam_localisation_<task>.csv/.md) and example figures "
                    "(heatmaps_<task>.png).")
    pipeline.add_common_args(parser)
    parser.add_argument("--tasks", default=",".join(pipeline.TASK_NAMES),
                        help=f"comma-separated tasks (default: {','.join(pipeline.TASK_NAMES)})")
    return parser


# ----------------------------------------------------------------------------- geometry


def center_crop_geometry(frame_hw: Sequence[int], input_hw: Sequence[int]) -> tuple[int, int, int, int]:
    """(resized H, resized W, top, left) of `input_pipeline.resize_center_crop` for a frame of
    `frame_hw` and a model input of `input_hw`, with its float32 arithmetic and rounding."""
    from reproduce.input_pipeline import EVAL_RESIZE_RATIO

    frame_h, frame_w = np.float32(frame_hw[0]), np.float32(frame_hw[1])
    height, width = int(input_hw[0]), int(input_hw[1])
    target_short = np.round(np.float32(min(width, height) * EVAL_RESIZE_RATIO))
    scale = np.float32(target_short / min(frame_h, frame_w))
    new_h = max(int(np.round(np.float32(frame_h * scale))), height)
    new_w = max(int(np.round(np.float32(frame_w * scale))), width)
    return new_h, new_w, (new_h - height) // 2, (new_w - width) // 2


def mask_to_input(mask: np.ndarray, input_hw: Sequence[int], transform: str = "imagenet",
                  frame_hw: Sequence[int] | None = None) -> np.ndarray:
    """A truth mask of a frame -> bool (H, W) at the model input, with the geometry of the
    evaluation transform: "imagenet" = the resize of `resize_center_crop` by nearest neighbour
    (half-pixel centres, cv2.INTER_NEAREST_EXACT) then its centre crop; "minmax" = the whole
    frame resized. `frame_hw`: the frame's size when the mask was drawn at another one (the
    mask is first brought to the frame)."""
    import cv2

    from reproduce.pgds.figure4 import resize_mask

    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if frame_hw is not None and tuple(int(v) for v in frame_hw) != mask.shape:
        mask = resize_mask(mask, frame_hw)
    height, width = int(input_hw[0]), int(input_hw[1])
    if transform == "minmax":
        return resize_mask(mask, (height, width))
    if transform != "imagenet":
        raise ValueError(f"transform must be 'imagenet' or 'minmax', got {transform!r}")
    new_h, new_w, top, left = center_crop_geometry(mask.shape, (height, width))
    binary = (mask > 0).astype(np.uint8)
    if binary.shape != (new_h, new_w):
        binary = cv2.resize(binary, (new_w, new_h), interpolation=cv2.INTER_NEAREST_EXACT)
    return binary[top:top + height, left:left + width] > 0


def display_gray(inputs: np.ndarray, transform: str) -> np.ndarray:
    """(N, H, W, C) model inputs -> (N, H, W) grey in [0, 1]: the frame as the model saw it
    (the ImageNet normalisation of channel 0 undone; minmax inputs are already in [0, 1])."""
    from reproduce.input_pipeline import IMAGENET_MEAN, IMAGENET_STD

    inputs = np.asarray(inputs, dtype=np.float32)
    first = inputs[..., 0]
    if transform == "imagenet":
        if inputs.shape[-1] == 3:
            mean, std = IMAGENET_MEAN[0], IMAGENET_STD[0]
        else:
            mean, std = float(np.mean(IMAGENET_MEAN)), float(np.mean(IMAGENET_STD))
        first = first * std + mean
    return np.clip(first, 0.0, 1.0)


# ----------------------------------------------------------------------------- tables


def localisation_frame(rows: pd.DataFrame, heats, masks, *, class_names: Sequence[str],
                       layer: str, method: str, tolerance_px: float,
                       cam_score: str = "logit") -> pd.DataFrame:
    """One row per scored image (COLUMNS). `rows`: image_path, case_id, fold, label, plane,
    y_true and p_<class> (the prediction decides predicted_label and correct); `heats` and
    `masks`: the true class's maps and the masks at the model input, in the rows' order."""
    rows = rows.reset_index(drop=True)
    proba = rows[[f"p_{name}" for name in class_names]].to_numpy(dtype=float)
    predicted = proba.argmax(axis=1) if len(rows) else np.zeros(0, dtype=int)
    scores = gradcam.localisation_table(list(heats), list(masks),
                                        image_ids=list(rows["image_path"].astype(str)),
                                        tolerance_px=tolerance_px)
    table = pd.DataFrame({
        "image_path": rows["image_path"].astype(str).to_numpy(),
        "case_id": rows["case_id"].astype(str).to_numpy(),
        "fold": rows["fold"].to_numpy(dtype=int),
        "label": rows["label"].astype(str).to_numpy(),
        "plane": rows["plane"].astype(str).to_numpy() if "plane" in rows.columns else "",
        "predicted_label": np.asarray(class_names, dtype=object)[predicted],
        "correct": predicted == rows["y_true"].to_numpy(dtype=int),
        "pointing_game_hit": scores["hit"].to_numpy(dtype=bool),
        "energy_inside": scores["energy_inside"].to_numpy(dtype=float),
        "mask_area_share": scores["mask_area_share"].to_numpy(dtype=float),
        "tolerance_px": scores["tolerance_px"].to_numpy(dtype=float),
        "chance_hit": scores["chance_hit"].to_numpy(dtype=float),
    })
    table["layer"] = layer
    table["method"] = method
    table["cam_score"] = cam_score
    return table[list(COLUMNS)]


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else float("nan")


def localisation_summary(table: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """Per group (all anomalous, then each class present, in class order): images, correctly
    classified, hit rate on the correct ones (k/n = rate, Wilson CI with continuity
    correction) and their mean chance level, hit rate on all, mean energy inside (correct,
    all), mean mask-area share and energy / area."""
    from reproduce.pgds.figure4 import rate_text

    groups = [("all anomalous", table)]
    present = set(table["label"].astype(str))
    order = [c for c in class_names if c in present] + sorted(present - set(class_names))
    groups += [(name, table[table["label"] == name]) for name in order]
    rows = []
    for name, part in groups:
        correct = part[part["correct"].astype(bool)]
        area = _mean(part["mask_area_share"])
        rows.append({
            "group": name, "images": len(part), "correct": len(correct),
            "hit_rate_correct": rate_text(correct["pointing_game_hit"].astype(bool)),
            "hits_correct": int(correct["pointing_game_hit"].astype(bool).sum()),
            "chance_correct": _mean(correct["chance_hit"]),
            "hit_rate_all": rate_text(part["pointing_game_hit"].astype(bool)),
            "energy_inside_correct": _mean(correct["energy_inside"]),
            "energy_inside_all": _mean(part["energy_inside"]),
            "mask_area_share": area,
            "energy_over_area": (_mean(part["energy_inside"]) / area
                                 if len(part) and area > 0 else float("nan")),
        })
    return pd.DataFrame(rows)


def hit_rate_correct(table: pd.DataFrame) -> tuple[int, int]:
    """(hits, correctly classified anomalous images): the acceptance quantity."""
    correct = table[table["correct"].astype(bool)]
    return int(correct["pointing_game_hit"].astype(bool).sum()), int(len(correct))


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def setting_text(profile: str, method: str, layer: str, grids, cam_score: str = "logit") -> str:
    """What the profile reads, beside what Qi 2025 reads."""
    from reproduce.pgds.figure4 import grid_text

    return (f"Qi 2025 shows Grad-CAM at the last convolution of the last residual block; the "
            f"{profile} profile reads {gradcam.describe(method, cam_score)} at `{layer}` "
            f"({grid_text(grids)} feature map"
            + (", the maps of the layers averaged" if "+" in layer else "") + ")"
            + ("" if profile == "paper" else
               ": at this small input the last block's map is a few cells wide and Grad-CAM of "
               "the logit there lights the skull ring every class shares, so finer stages are "
               "read and the class is contrasted with the others (log P)") + ".")


def localisation_markdown(table: pd.DataFrame, ctx, *, layer: str, method: str, grids,
                          input_hw: Sequence[int], skipped: int, cam_score: str = "logit") -> str:
    """The .md beside gradcam_localisation_<task>.csv."""
    height, width = int(input_hw[0]), int(input_hw[1])
    task = ctx.spec.task
    title = gradcam.describe(method, cam_score)
    tolerance = gradcam.pointing_tolerance_px(input_hw)
    lines = [f"# {title} localisation against truth masks, {pipeline.TASK_TITLES.get(task, task)} "
             f"({task}) -- {study.results_label(ctx)}", ""]
    lines.append(f"Model: ResNet-34 of each image's own fold; method: {method}; layer: `{layer}`; "
                 f"class explained: the image's TRUE class. "
                 + setting_text(ctx.profile, method, layer, grids, cam_score))
    lines.append("")
    lines.append(f"Images: every anomalous TEST image (pooled out-of-fold) with a non-empty "
                 f"truth mask at the model input ({len(table)})"
                 + (f"; {skipped} anomalous test image(s) whose anomaly does not show in the "
                    "frame (no or an empty mask, or a mask outside the centre crop) are left out"
                    if skipped else "") + ". `correct`: the image-level call (argmax) is the "
                 "true class.")
    lines.append(f"Masks are brought to the model input ({width}x{height}, W x H) with the "
                 "evaluation transform's geometry: the resize of the shorter side to "
                 "round(min(W, H) x 256/224) (nearest neighbour, half-pixel centres), then the "
                 "centre crop (reproduce.input_pipeline.resize_center_crop).")
    lines.append(f"Pointing game (Zhang et al. 2016): a hit when the map's maximum lies in the "
                 f"mask or within {tolerance:.1f} px of it (15 px at 224-px input, scaled by "
                 "min(H, W)/224); chance_correct: the mean share of pixels within that distance "
                 "of the mask (the hit rate of a maximum dropped at random). Energy inside: the "
                 "share of the map's sum inside the mask; a uniform map scores the mask's area "
                 "share, so energy_over_area > 1 means the map concentrates on the anomaly. "
                 "Hit-rate CIs: Wilson with continuity correction.")
    if getattr(ctx, "select_on", "validation") == "test_fold":
        lines.append("Model selection here: the maps and calls are those of the "
                     "validation-selected models (the saved ones), not of the test-fold epochs "
                     "the other tables read under --select-on test_fold.")
    lines.append("")
    summary = localisation_summary(table, ctx.spec.class_names)
    shown = summary.drop(columns=["hits_correct"]).copy()
    for column in ("chance_correct", "energy_inside_correct", "energy_inside_all",
                   "mask_area_share", "energy_over_area"):
        shown[column] = shown[column].map(_fmt)
    lines.append(study.markdown_table(shown.astype(str)))
    lines.append("")
    hits, correct = hit_rate_correct(table)
    if correct:
        rate = hits / correct
        chance = _mean(table.loc[table["correct"].astype(bool), "chance_hit"])
        verdict = "met" if rate >= ACCEPTANCE_HIT_RATE else "NOT met"
        lines.append(f"Acceptance (default profile): pointing-game hit rate on correctly "
                     f"classified anomalous images >= {ACCEPTANCE_HIT_RATE}: {hits}/{correct} = "
                     f"{rate:.2f} (chance {chance:.2f}) -- {verdict} on the {ctx.profile} "
                     f"profile at layer `{layer}`.")
    else:
        lines.append("Acceptance: no correctly classified anomalous image with a mask, so no "
                     "hit rate.")
    lines.append("")
    lines.append("Qi 2025 reports no localisation score: its heat-maps are read by eye.")
    lines.append("")
    lines += pipeline.common_notes(ctx)
    return "\n".join(lines) + "\n"


def choose_examples(test: pd.DataFrame, class_names: Sequence[str], seed: int,
                    per_class: int = PER_CLASS) -> pd.DataFrame:
    """Per class (in class order) `per_class` test rows: correctly classified ones first (and
    among them, anomalous images with a mask first), drawn at random with `seed`."""
    rng = np.random.default_rng([int(seed), 34])
    proba = test[[f"p_{name}" for name in class_names]].to_numpy(dtype=float)
    correct = proba.argmax(axis=1) == test["y_true"].to_numpy(dtype=int)
    test = test.assign(_correct=correct, _has_mask=test["_has_mask"] if "_has_mask" in test
                       else False)
    chosen = []
    for index, name in enumerate(class_names):
        part = test[test["y_true"] == index]
        if part.empty:
            continue
        part = part.iloc[rng.permutation(len(part))]
        rank = (~part["_correct"]).astype(int) * 2 + (~part["_has_mask"].astype(bool)).astype(int)
        chosen.append(part.assign(_rank=rank.to_numpy()).sort_values("_rank", kind="stable")
                      .head(per_class))
    if not chosen:
        return test.head(0)
    return pd.concat(chosen).drop(columns=["_rank", "_correct", "_has_mask"])


# ----------------------------------------------------------------------------- with the pipeline


def _read_mask(path: str) -> np.ndarray:
    from data_prep.io import read_grayscale

    return read_grayscale(path)


def _frame_hw(path: str) -> tuple[int, int]:
    from data_prep.io import read_grayscale

    return tuple(int(v) for v in read_grayscale(path).shape[:2])


def _input_mask(row, input_hw, transform) -> np.ndarray | None:
    """The row's truth mask at the model input, None when there is none or it is empty."""
    path = str(row.mask_path or "")
    if not path or row.label == "normal":
        return None
    mask = _read_mask(path)
    if not np.asarray(mask).any():
        return None
    frame_hw = _frame_hw(row.abs_path)
    moved = mask_to_input(mask, input_hw, transform, frame_hw=frame_hw)
    return moved if moved.any() else None


def _fold_heatmaps(ctx, rows: pd.DataFrame, layer: str, method: str, cam_score: str) -> np.ndarray:
    """The true class's maps of `rows`, each from its own fold's model, in the rows' order."""
    from reproduce.pgds.figure4 import heatmaps_or_input_error

    input_hw = study.model_input_shape(ctx, pipeline.ARCH)[:2]
    heats = np.zeros((len(rows), *input_hw), dtype=np.float32)
    positions = np.arange(len(rows))
    for fold in sorted(rows["fold"].unique()):
        where = positions[rows["fold"].to_numpy() == fold]
        part = rows.iloc[where]
        model = study.load_model(ctx, pipeline.ARCH, int(fold))
        inputs = study.model_inputs(ctx, pipeline.ARCH, list(part["abs_path"]))
        heats[where] = heatmaps_or_input_error(model, inputs, part["y_true"].to_numpy(dtype=int),
                                               layer, method, cam_score)
    return heats


def make_outputs(ctx):
    """(figure, localisation table, markdown) of one task's context."""
    from reproduce.pgds import plots
    from reproduce.pgds.figure4 import check_layer, grid_text

    arch = pipeline.ARCH
    class_names = tuple(ctx.spec.class_names)
    method = study.heatmap_method(ctx, ctx.profile)
    cam_score = study.heatmap_score(ctx, ctx.profile)
    title = gradcam.describe(method, cam_score)
    layer = study.gradcam_layer(ctx, ctx.profile, arch)
    input_hw = study.model_input_shape(ctx, arch)[:2]
    transform = study.model_transform(ctx, arch)
    tolerance = gradcam.pointing_tolerance_px(input_hw)
    frame = study.predictions(ctx, arch)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    grids = check_layer(study.load_model(ctx, arch, int(test["fold"].iloc[0]) if len(test) else 0),
                         layer)

    masks: dict[int, np.ndarray] = {}
    anomalous = test[test["label"].isin(pipeline.ANOMALIES)]
    for index, row in zip(anomalous.index, anomalous.itertuples()):
        mask = _input_mask(row, input_hw, transform)
        if mask is not None:
            masks[index] = mask
    scored = test.loc[sorted(masks)].reset_index(drop=True)
    pipeline.say(f"{ctx.spec.task}: {title} at {layer} "
                 f"({grid_text(grids)} map) of {len(scored)} anomalous test images with a "
                 f"truth mask ({len(anomalous) - len(scored)} without)")
    heats = _fold_heatmaps(ctx, scored, layer, method, cam_score)
    table = localisation_frame(scored, heats, [masks[i] for i in sorted(masks)],
                               class_names=class_names, layer=layer, method=method,
                               tolerance_px=tolerance, cam_score=cam_score)
    markdown = localisation_markdown(table, ctx, layer=layer, method=method, grids=grids,
                                     input_hw=input_hw, skipped=len(anomalous) - len(scored),
                                     cam_score=cam_score)

    examples_rows = choose_examples(test.assign(_has_mask=test.index.isin(list(masks))),
                                    class_names, ctx.seed)
    example_heats = _fold_heatmaps(ctx, examples_rows.reset_index(drop=True), layer, method,
                                   cam_score)
    grays = display_gray(study.model_inputs(ctx, arch, list(examples_rows["abs_path"])), transform)
    hit_of = dict(zip(table["image_path"], table["pointing_game_hit"]))
    examples = []
    for i, (index, row) in enumerate(examples_rows.iterrows()):
        name = class_names[int(row["y_true"])]
        predicted = class_names[int(np.argmax([row[f"p_{c}"] for c in class_names]))]
        caption = f"{Path(row['image_path']).stem} {row['plane']}  P={row[f'p_{name}']:.2f}"
        if row["image_path"] in hit_of:
            caption += ", hit" if hit_of[row["image_path"]] else ", miss"
        if predicted != name:
            caption += f"\ncalled {predicted}"
        examples.append(plots.HeatmapExample(
            group=name, image=grays[i], heat=example_heats[i], caption=caption,
            mask=masks.get(index),
            heat_title=f"map of {name}" + (" (all 0)" if not example_heats[i].any() else "")))
    hits, correct = hit_rate_correct(table)
    title = (f"{title} heat-maps of ResNet-34, "
             f"{pipeline.TASK_TITLES[ctx.spec.task]} ({ctx.spec.task}), layer '{layer}' "
             f"({grid_text(grids)} map) -- {study.results_label(ctx)}\n"
             f"test images at the model input ({input_hw[1]}x{input_hw[0]}, W x H), each from "
             f"its own fold's model; A: frame with P(true class) (and the call when wrong); B: "
             f"map of the true class; white dashes: truth mask; pointing game on correctly "
             f"classified anomalous images {hits}/{correct}")
    figure = plots.figure4(examples, title=title, method_title=gradcam.describe(method, cam_score))
    return figure, table, markdown


def _tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise InputError(None, "--tasks names no task")
    for task in tasks:
        if task not in pipeline.TASK_NAMES:
            raise InputError(None, f"--tasks: task must be one of "
                             f"{', '.join(pipeline.TASK_NAMES)}, got {task!r}")
    return tasks


def run(args: argparse.Namespace) -> int:
    tasks = _tasks(args.tasks)
    study.check_results_dir(pipeline.context_from_args(args, tasks[0]))
    for task in tasks:
        ctx = pipeline.context_from_args(args, task)
        started = time.perf_counter()
        figure, table, markdown = make_outputs(ctx)
        study.write_table(ctx, f"{TABLE_PREFIX}_{task}", table, markdown)
        path = study.write_figure(ctx, f"{FIGURE_PREFIX}_{task}", figure)
        hits, correct = hit_rate_correct(table)
        pipeline.say(f"{task}: pointing game on correctly classified anomalous images "
                     f"{hits}/{correct}" + (f" = {hits / correct:.2f}" if correct else "")
                     + f"; {path.name} in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return study.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
