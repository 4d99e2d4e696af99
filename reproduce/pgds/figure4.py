"""Tang 2023 Figure 4 (Grad-CAM overlays) and the heat-maps' localisation scores.

    python -m reproduce.pgds.figure4 --profile default [--method gradcam|gradcam++|layercam]
                                     [--layer NAME] [--list-layers]

Writes, in the results folder:

- `figure4.png`: for each subtype (T13, T18, T21, rare) two test images and one normal test
  image for contrast, each as (A) the frame the network saw (the whole frame resized to the
  model input, no crop) and (B) its heat-map (tf-keras-vis, `reproduce.gradcam`) over
  it, with one colour bar. Images are drawn at random (seeded) among the true positives
  (true negatives for normal) when there are any. Diseased frames show the genetic-disease
  class's map (the map that is scored), normal frames the normal class's. On the phantom the
  truth mask of the abnormal region is outlined (white dashes) on the heat-map.
- `gradcam_localisation.csv` + `.md`: every diseased TEST image with a non-empty truth mask
  (the phantom's `mask_path`): image_path, subtype, score, called_positive (score >=
  threshold), true_positive, pointing_game_hit, energy_inside, mask_area_share, tolerance_px,
  chance_hit (the hit probability of a randomly placed maximum),
  layer, method; the genetic-disease class's map is scored. The `.md` summarises the hit rate
  on true positives (the issue's acceptance: >= 0.8 on the default profile) and on all
  diseased images, and the mean energy share inside the mask beside the mask's area share
  (what a uniform map would score), by subtype. A user manifest without `mask_path` gets the
  CSV without the scoring columns, and the `.md` says so.

Masks are resized to the model input by nearest neighbour with half-pixel centres
(`cv2.INTER_NEAREST_EXACT`), the geometry of the bilinear resize that makes the model input
(the whole de-identified frame, already cropped to the scan sector with its masks, resized),
so map and mask line up pixel for pixel. Method and layer are the profile's
(`pipeline.HEATMAP_SETTINGS`) unless `--method` / `--layer` name others (`--list-layers`
prints the candidates): on the paper profile Grad-CAM of the last conv block's output, as the
paper; on ci/default, whose inputs are a third of the paper's, LayerCAM of the outputs of
stages 1 and 2, averaged (32x35 + 16x18 at 128x140; the last block's would be 4x5, coarser
than the facial structures it is scored against), with per-position weights (Grad-CAM's
map-wide channel weights put the evidence of one subtype on every face; README,
"Departures"). Method and layers are written in the figure's title and in every CSV row
(DESIGN.md, "Scoring heat-maps").
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
from reproduce import gradcam  # noqa: E402
from reproduce.pgds import pipeline, plots  # noqa: E402

FIGURE_NAME = "figure4"
TABLE_NAME = "gradcam_localisation"
DEFAULT_ARCH = "pgds_resnet"
POSITIVE_INDEX = pipeline.CLASS_NAMES.index(pipeline.POSITIVE_LABEL)
#: Test images shown per diseased subtype, and normal images shown for contrast.
PER_SUBTYPE, NORMAL_EXAMPLES = 2, 1
BASE_COLUMNS = ("image_path", "subtype", "score", "called_positive", "true_positive")
SCORE_COLUMNS = ("pointing_game_hit", "energy_inside", "mask_area_share", "tolerance_px",
                 "chance_hit")
TAIL_COLUMNS = ("layer", "method")
#: The issue's acceptance bound on the hit rate over true positives (default profile).
ACCEPTANCE_HIT_RATE = 0.8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce.pgds.figure4",
        description="Tang 2023 Figure 4: Grad-CAM overlays per subtype, and the heat-maps' "
                    "localisation scores against the phantom's truth masks "
                    "(gradcam_localisation.csv/.md).")
    pipeline.add_common_args(parser)
    parser.add_argument("--method", choices=gradcam.METHODS, default=None,
                        help="heat-map method: gradcam (the paper's), gradcam++ or layercam "
                             "(default: the profile's: gradcam on paper, layercam on ci and "
                             "default; pipeline.HEATMAP_SETTINGS)")
    parser.add_argument("--layer", default=None,
                        help="layer whose activations are weighted, or several joined by '+' "
                             "(maps averaged) (default: the last conv block's output on the "
                             "paper profile, the outputs of stages 1+2 on ci and default; see "
                             "--list-layers)")
    parser.add_argument("--arch", choices=pipeline.ARCHITECTURES, default=DEFAULT_ARCH,
                        help="which trained architecture to explain (default: pgds_resnet)")
    parser.add_argument("--list-layers", action="store_true",
                        help="print the model's layers with a (H, W, C) feature map and exit")
    return parser


# ----------------------------------------------------------------------------- pure helpers


def resize_mask(mask: np.ndarray, input_hw: Sequence[int]) -> np.ndarray:
    """A truth mask (any size) -> bool (H, W) at the model input: nearest neighbour with
    half-pixel centres, the geometry of the bilinear resize of the whole frame."""
    import cv2

    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    height, width = int(input_hw[0]), int(input_hw[1])
    binary = (mask > 0).astype(np.uint8)
    if binary.shape != (height, width):
        binary = cv2.resize(binary, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return binary > 0


def feature_layers(model) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every layer with a (batch, H, W, C) output: Grad-CAM candidates."""
    layers = []
    for layer in model.layers:
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            layers.append((layer.name, shape[1:]))
    return layers


def localisation_frame(rows: pd.DataFrame, heats: np.ndarray | None,
                       masks: Sequence[np.ndarray] | None, *, threshold: float, layer: str,
                       method: str) -> pd.DataFrame:
    """One row per diseased image: BASE_COLUMNS (+ SCORE_COLUMNS when heats and masks are
    given) + TAIL_COLUMNS. `rows`: image_path, subtype, score, y_true (all 1)."""
    called = rows["score"].to_numpy(dtype=float) >= threshold
    table = pd.DataFrame({
        "image_path": rows["image_path"].astype(str).to_numpy(),
        "subtype": rows["subtype"].astype(str).to_numpy(),
        "score": rows["score"].to_numpy(dtype=float),
        "called_positive": called,
        "true_positive": called & (rows["y_true"].to_numpy() == 1),
    })
    if heats is not None and masks is not None:
        scores = gradcam.localisation_table(heats, masks, image_ids=list(table["image_path"]))
        table["pointing_game_hit"] = scores["hit"].to_numpy(dtype=bool)
        table["energy_inside"] = scores["energy_inside"].to_numpy()
        table["mask_area_share"] = scores["mask_area_share"].to_numpy()
        table["tolerance_px"] = scores["tolerance_px"].to_numpy()
        table["chance_hit"] = scores["chance_hit"].to_numpy()
    table["layer"] = layer
    table["method"] = method
    return table


def rate_text(hits: pd.Series) -> str:
    summary = gradcam.localisation_summary(pd.DataFrame({"hit": hits.to_numpy(dtype=bool),
                                                         "energy_inside": 0.0,
                                                         "mask_area_share": 0.0}))
    if summary["n"] == 0:
        return "n/a (0 images)"
    return (f"{summary['hits']}/{summary['n']} = {summary['hit_rate']:.2f} "
            f"({summary['hit_rate_lo']:.2f}\u2013{summary['hit_rate_hi']:.2f})")


def localisation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per group (all diseased, then each subtype present): images, true positives, hit rate
    on true positives and on all images (k/n = rate, Wilson CI with continuity correction),
    mean energy share inside the mask (true positives, all) and mean mask-area share."""
    groups = [("all diseased", table)]
    order = [s for s in pipeline.SUBTYPES if s in set(table["subtype"])]
    order += sorted(set(table["subtype"]) - set(order))
    groups += [(subtype, table[table["subtype"] == subtype]) for subtype in order]
    rows = []
    for name, part in groups:
        positives = part[part["true_positive"]]
        row = {"group": name, "images": len(part), "true_positives": len(positives)}
        if "pointing_game_hit" in part.columns:
            row.update({
                "hit_rate_true_positives": rate_text(positives["pointing_game_hit"]),
                "chance_true_positives": _mean(positives["chance_hit"]),
                "hit_rate_all": rate_text(part["pointing_game_hit"]),
                "energy_inside_true_positives": _mean(positives["energy_inside"]),
                "energy_inside_all": _mean(part["energy_inside"]),
                "mask_area_share": _mean(part["mask_area_share"]),
                "energy_over_area": (_mean(part["energy_inside"]) / _mean(part["mask_area_share"])
                                     if len(part) else float("nan")),
            })
        rows.append(row)
    return pd.DataFrame(rows)


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else float("nan")


def hit_rate_true_positives(table: pd.DataFrame) -> tuple[int, int]:
    """(hits, true positives): the issue's acceptance quantity."""
    positives = table[table["true_positive"]]
    return int(positives["pointing_game_hit"].sum()), int(len(positives))


def grid_text(grid_hw) -> str:
    """'16x18' for one (h, w) feature map, '32x35 + 16x18' for several (fused layers)."""
    grids = grid_hw if grid_hw and isinstance(grid_hw[0], (tuple, list)) else [grid_hw]
    return " + ".join(f"{int(h)}x{int(w)}" for h, w in grids)


def localisation_markdown(table: pd.DataFrame, *, label: str, model_name: str, layer: str,
                          grid_hw, input_hw: Sequence[int], method: str,
                          threshold: float, rule: str, skipped: int, has_masks: bool) -> str:
    """The .md beside gradcam_localisation.csv: setting, summary table, acceptance line."""
    height, width = int(input_hw[0]), int(input_hw[1])
    lines = [f"# {gradcam.METHOD_TITLES.get(method, method)} localisation against truth masks -- {label}",
             ""]
    lines.append(f"Model: {model_name}; method: {method}; layer: `{layer}` "
                 f"({grid_text(grid_hw)} feature map at {height}x{width} input, "
                 f"H x W); class scored: genetic disease. Operating threshold {threshold:.4g} "
                 f"({rule} on the training split); called_positive = score >= threshold.")
    lines.append("")
    if not has_masks:
        lines.append("**No truth masks**: the manifest has no `mask_path` column (or no mask "
                     "for any diseased test image), so the CSV lists the diseased test images "
                     "and their calls WITHOUT the scoring columns (pointing_game_hit, "
                     "energy_inside, mask_area_share). Truth masks come with the phantom; add "
                     "a `mask_path` column to score your own heat-maps.")
        summary = localisation_summary(table)
        lines += ["", pipeline.markdown_table(summary.astype(str))]
        return "\n".join(lines) + "\n"
    tolerance = (float(table["tolerance_px"].iloc[0]) if len(table)
                 else gradcam.pointing_tolerance_px(input_hw))
    lines.append(f"Images: every diseased TEST image with a non-empty truth mask ({len(table)})"
                 + (f"; {skipped} diseased test image(s) without a mask (or whose mask vanished "
                    "at the model's input size) are left out" if skipped else "") + ".")
    lines.append(f"Masks are resized to the model input ({width}x{height}, W x H) by nearest "
                 "neighbour with half-pixel centres (cv2.INTER_NEAREST_EXACT): the geometry of "
                 "the bilinear resize of the whole frame (no crop) that makes the model input.")
    lines.append(f"Pointing game (Zhang et al. 2016): a hit when the map's maximum lies in the "
                 f"mask or within {tolerance:.1f} px of it (15 px at 224-px input, scaled by "
                 f"min(H, W)/224). Energy inside: the share of the map's sum inside the mask; "
                 "a uniform map scores the mask's area share, so energy_over_area > 1 means "
                 "the map concentrates on the abnormal region. chance_true_positives: the "
                 "mean share of pixels within the tolerance of the mask, i.e. the hit rate of "
                 "a maximum dropped at random (gradcam.pointing_chance). Hit-rate CIs: Wilson "
                 "with continuity correction.")
    lines.append("")
    summary = localisation_summary(table)
    shown = summary.copy()
    for column in ("chance_true_positives", "energy_inside_true_positives", "energy_inside_all",
                   "mask_area_share", "energy_over_area"):
        shown[column] = shown[column].map(lambda v: "n/a" if not np.isfinite(v) else f"{v:.3f}")
    lines.append(pipeline.markdown_table(shown.astype(str)))
    lines.append("")
    hits, positives = hit_rate_true_positives(table)
    if positives:
        rate = hits / positives
        verdict = "met" if rate >= ACCEPTANCE_HIT_RATE else "NOT met"
        lines.append(f"Acceptance (issue, default profile): pointing-game hit rate on true "
                     f"positives >= {ACCEPTANCE_HIT_RATE}: {hits}/{positives} = {rate:.2f} -- "
                     f"{verdict} at layer `{layer}`.")
    else:
        lines.append("Acceptance (issue): no true positives, so no hit rate on true positives.")
    lines.append("")
    lines.append("Tang 2023 reports no localisation score: its Figure 4 is read by eye.")
    return "\n".join(lines) + "\n"


def choose_examples(test: pd.DataFrame, threshold: float, seed: int) -> pd.DataFrame:
    """Test rows to show: per subtype PER_SUBTYPE (true positives first), and NORMAL_EXAMPLES
    normal images (true negatives first); drawn at random with `seed`, in group order."""
    rng = np.random.default_rng([int(seed), 4])
    called = test["score"].to_numpy(dtype=float) >= threshold
    test = test.assign(called=called)
    diseased = [s for s in pipeline.SUBTYPES if s in set(test["subtype"])]
    diseased += sorted(set(test.loc[test["y_true"] == 1, "subtype"]) - set(diseased))
    chosen = []
    for group in diseased + ["normal"]:
        wanted = 0 if group == "normal" else 1
        part = test[(test["subtype"] == group) & (test["y_true"] == wanted)]
        if part.empty:
            continue
        correct = part["called"] == (group != "normal")
        count = NORMAL_EXAMPLES if group == "normal" else PER_SUBTYPE
        preferred = part[correct].iloc[rng.permutation(int(correct.sum()))]
        others = part[~correct].iloc[rng.permutation(int((~correct).sum()))]
        chosen.append(pd.concat([preferred, others]).head(count))
    return pd.concat(chosen) if chosen else test.head(0)


def _outcome(y_true: int, called: bool) -> str:
    names = {(1, True): "TP", (1, False): "FN", (0, True): "FP", (0, False): "TN"}
    return names[(int(y_true), bool(called))]


# ----------------------------------------------------------------------------- with the pipeline


def _read_mask(path: str) -> np.ndarray:
    from data_prep.io import read_grayscale

    return read_grayscale(path)


def heatmaps_or_input_error(model, inputs: np.ndarray, classes, layer: str, method: str,
                            score: str = "logit") -> np.ndarray:
    try:
        return gradcam.heatmaps(model, inputs, classes, layer=layer, method=method, score=score)
    except ValueError as err:
        raise InputError(None, f"Grad-CAM at layer {layer!r}: {err}") from None


def check_layer(model, layer: str) -> list[tuple[int, int]]:
    """Each named layer's feature-map (h, w) (several: joined by '+' or ','); InputError
    naming the candidates when one is unusable."""
    layers = dict(feature_layers(model))
    try:
        names = gradcam.layer_names(layer)
    except ValueError as err:
        raise InputError(None, f"--layer: {err}") from None
    for name in names:
        if name not in layers:
            raise InputError(None, f"--layer {name!r} is not a layer of {model.name!r} with a "
                             f"(H, W, C) output; choose from: {', '.join(layers)}")
    return [(int(layers[name][0]), int(layers[name][1])) for name in names]


def make_outputs(ctx: pipeline.StudyContext, arch: str = DEFAULT_ARCH, layer: str | None = None,
                 method: str | None = None):
    """(figure, localisation table, markdown) for the context (models trained on first use)."""
    method = method or pipeline.heatmap_method(ctx.profile)
    model_name = pipeline.DISPLAY_NAMES[arch]
    frame = pipeline.predictions(ctx, arch)
    threshold = pipeline.operating_threshold(ctx, arch)
    model = pipeline.load_model(ctx, arch)
    layer = layer or pipeline.gradcam_layer(ctx.profile, arch)
    grid_hw = check_layer(model, layer)
    input_hw = pipeline.model_input_shape(ctx, arch)[:2]
    rule = {"max_f1": "best F1", "youden": "Youden's J"}[ctx.threshold_rule]

    test = frame[frame["split"] == "test"].reset_index(drop=True)
    diseased = test[test["y_true"] == 1]
    with_mask = diseased[diseased["mask_path"].astype(str) != ""]
    masks: list[np.ndarray] = []
    keep: list[int] = []
    for index, path in zip(with_mask.index, with_mask["mask_path"]):
        mask = resize_mask(_read_mask(path), input_hw)
        if mask.any():
            masks.append(mask)
            keep.append(index)
    scored = test.loc[keep]
    has_masks = bool(keep)
    pipeline.say(f"heat-maps ({method}, layer {layer}, {grid_text(grid_hw)} map): "
                 f"{len(scored)} diseased test images with truth masks")
    heats = None
    if has_masks:
        inputs = pipeline.model_inputs(ctx, arch, list(scored["abs_path"]))
        heats = heatmaps_or_input_error(model, inputs, POSITIVE_INDEX, layer, method)
        table = localisation_frame(scored, heats, masks, threshold=threshold, layer=layer,
                                   method=method)
    else:
        table = localisation_frame(diseased, None, None, threshold=threshold, layer=layer,
                                   method=method)
    markdown = localisation_markdown(
        table, label=pipeline.results_label(ctx), model_name=model_name, layer=layer,
        grid_hw=grid_hw, input_hw=input_hw, method=method, threshold=threshold, rule=rule,
        skipped=len(diseased) - len(scored), has_masks=has_masks)

    examples_rows = choose_examples(test, threshold, ctx.seed)
    inputs = pipeline.model_inputs(ctx, arch, list(examples_rows["abs_path"]))
    called = examples_rows["score"].to_numpy(dtype=float) >= threshold
    # Diseased images: the genetic-disease map (the one scored above); normal images: the
    # normal class's map, for contrast.
    classes = np.where(examples_rows["y_true"].to_numpy() == 1, POSITIVE_INDEX, 1 - POSITIVE_INDEX)
    example_heats = heatmaps_or_input_error(model, inputs, classes, layer, method)
    hit_of = dict(zip(table["image_path"], table.get("pointing_game_hit", pd.Series(dtype=bool))))
    examples = []
    for i, row in enumerate(examples_rows.itertuples()):
        outcome = _outcome(row.y_true, called[i])
        caption = f"{Path(row.image_path).stem}  p={row.score:.2f} {outcome}"
        if row.image_path in hit_of:
            caption += ", hit" if hit_of[row.image_path] else ", miss"
        mask = (resize_mask(_read_mask(row.mask_path), input_hw) if row.mask_path else None)
        examples.append(plots.HeatmapExample(
            group=row.subtype, image=inputs[i, :, :, 0], heat=example_heats[i],
            caption=caption, mask=mask,
            heat_title=("map of genetic disease" if row.y_true == 1 else "map of normal")
            + (" (all 0)" if not example_heats[i].any() else "")))
    title = (f"Figure 4  {gradcam.METHOD_TITLES[method]} heat-maps of "
             f"{model_name}, layer '{layer}' ({grid_text(grid_hw)} map) -- "
             f"{pipeline.results_label(ctx)}\n"
             f"test images at the model input ({input_hw[1]}x{input_hw[0]}, W x H); A: frame "
             f"with the model's P(genetic disease) and call at threshold {threshold:.3g}; B: "
             f"{gradcam.METHOD_TITLES[method]} of the genetic-disease class (of the normal "
             "class on normal frames)")
    if has_masks:
        hits, positives = hit_rate_true_positives(table)
        title += (f"; white dashes: truth mask; pointing game on true positives "
                  f"{hits}/{positives}")
    figure = plots.figure4(examples, title=title, method_title=gradcam.METHOD_TITLES[method])
    return figure, table, markdown


def _list_layers(ctx: pipeline.StudyContext, arch: str) -> int:
    model = pipeline.load_model(ctx, arch)
    default = pipeline.gradcam_layer(ctx.profile, arch)
    for name, shape in feature_layers(model):
        mark = "  <- default" if name == default else ""
        print(f"{name:32s} {'x'.join(str(v) for v in shape)}{mark}")
    return 0


def run(args: argparse.Namespace) -> int:
    ctx = pipeline.context_from_args(args)
    if args.list_layers:
        return _list_layers(ctx, args.arch)
    pipeline.check_results_dir(ctx)
    started = time.perf_counter()
    figure, table, markdown = make_outputs(ctx, args.arch, args.layer, args.method)
    pipeline.write_table(ctx, TABLE_NAME, table, markdown)
    path = pipeline.write_figure(ctx, FIGURE_NAME, figure)
    if "pointing_game_hit" in table.columns:
        hits, positives = hit_rate_true_positives(table)
        pipeline.say(f"pointing game on true positives: {hits}/{positives}"
                     + (f" = {hits / positives:.2f}" if positives else ""))
    pipeline.say(f"{FIGURE_NAME}: {path} ({path.stat().st_size / 1024:.0f} kB) in "
                 f"{time.perf_counter() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return pipeline.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
