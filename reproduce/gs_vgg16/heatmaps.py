"""Hong 2021 Figure 3: Grad-CAM of the syndrome class on the syndromic test faces, scored
against the phantom's truth masks, and a figure of examples per syndrome.

    python -m reproduce gs_vgg16 heatmaps [common flags] [--no-eye-bar]

Writes, in the results folder:
- `gradcam_localisation.csv`: every syndromic TEST face (pooled out-of-fold) with a non-empty
  truth mask (the regions the syndrome changed, warped with the face by the alignment):
  image_path, case_id, fold, label (the syndrome), predicted_label, correct, pointing_game_hit,
  energy_inside, mask_area_share, tolerance_px, chance_hit, layer, method, cam_score. The map
  is the syndrome class's, from the face's own fold's model.
- `gradcam_localisation.md`: per syndrome and overall, the pointing-game hit rate on the
  CORRECTLY called syndromic faces (true positives: the acceptance figure, >= 0.8 on the
  default profile) with its chance level, and the energy share inside the mask beside the
  mask's area share. Hong 2021 judged 217 of its 228 maps by eye as matching the dysmorphic
  features; no score.
- `figure3.png`: per syndrome (the most frequent ones) two test faces at the model input and
  the map over each, the truth mask outlined; an eye bar covers the eyes unless --no-eye-bar.

Geometry: faces are aligned crops and the "face" transform resizes them whole, so a mask is
resized with its face (nearest neighbour) and map and mask line up pixel for pixel.
The localisation arithmetic is the CNS study's (reproduce.cns.heatmaps), grouped by syndrome.
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

from reproduce import gradcam, study  # noqa: E402
from reproduce.cns import heatmaps as cns_heatmaps  # noqa: E402
from reproduce.gs_vgg16 import pipeline  # noqa: E402

TABLE = "gradcam_localisation"
FIGURE = "figure3"
ACCEPTANCE_HIT_RATE = 0.8
SYNDROMES_SHOWN = 6
PER_SYNDROME = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce gs_vgg16 heatmaps",
        description="Hong 2021 Figure 3: Grad-CAM per syndrome and its localisation against "
                    "the truth masks (gradcam_localisation.csv/.md, figure3.png).")
    pipeline.add_common_args(parser)
    return parser


def _heatmaps(ctx, rows: pd.DataFrame, layer: str, method: str, cam_score: str) -> np.ndarray:
    """The syndrome class's maps of `rows`, each from its own fold's model, in the rows' order."""
    from reproduce.pgds.figure4 import heatmaps_or_input_error

    input_hw = study.model_input_shape(ctx, pipeline.ARCH)[:2]
    heats = np.zeros((len(rows), *input_hw), dtype=np.float32)
    positions = np.arange(len(rows))
    for fold in sorted(rows["fold"].unique()):
        where = positions[rows["fold"].to_numpy() == fold]
        part = rows.iloc[where]
        model = study.load_model(ctx, pipeline.ARCH, int(fold))
        inputs = study.model_inputs(ctx, pipeline.ARCH, list(part["abs_path"]))
        heats[where] = heatmaps_or_input_error(model, inputs, np.ones(len(part), dtype=int),
                                               layer, method, cam_score)
    return heats


def _eye_bar(gray: np.ndarray, aligned_size: int) -> np.ndarray:
    """The eyes of an aligned face at the model input covered (the template's eye points
    scaled to the input: alignment put them there)."""
    from data_prep.faces import TEMPLATES, eye_bar

    height, width = gray.shape[:2]
    points = TEMPLATES[aligned_size] * np.array([width / aligned_size, height / aligned_size])
    return eye_bar(gray.astype(np.float32), points)


def make_outputs(ctx: pipeline.StudyContext):
    """(figure, localisation table, markdown)."""
    from reproduce.pgds import plots
    from reproduce.pgds.figure4 import check_layer, grid_text

    arch = pipeline.ARCH
    method = study.heatmap_method(ctx, ctx.profile)
    cam_score = study.heatmap_score(ctx, ctx.profile)
    title = gradcam.describe(method, cam_score)
    layer = study.gradcam_layer(ctx, ctx.profile, arch)
    input_hw = study.model_input_shape(ctx, arch)[:2]
    tolerance = gradcam.pointing_tolerance_px(input_hw)
    test = study.test_rows(ctx, arch)
    grids = check_layer(study.load_model(ctx, arch, int(test["fold"].iloc[0])), layer)
    syndromic = test[test["y_true"] == 1]
    masks: dict[int, np.ndarray] = {}
    for index, row in zip(syndromic.index, syndromic.itertuples()):
        if not row.mask_path:
            continue
        mask = cns_heatmaps.mask_to_input(cns_heatmaps._read_mask(row.mask_path), input_hw,
                                          "minmax")
        if mask.any():
            masks[index] = mask
    scored = test.loc[sorted(masks)].reset_index(drop=True)
    pipeline.say(f"{title} at {layer} ({grid_text(grids)} map) of {len(scored)} syndromic test "
                 f"faces with a truth mask ({len(syndromic) - len(scored)} without)")
    heats = _heatmaps(ctx, scored, layer, method, cam_score)
    table = cns_heatmaps.localisation_frame(scored, heats, [masks[i] for i in sorted(masks)],
                                            class_names=pipeline.CLASS_NAMES, layer=layer,
                                            method=method, tolerance_px=tolerance,
                                            cam_score=cam_score)
    table["label"] = scored["subtype"].astype(str).to_numpy()   # grouped by syndrome
    markdown = localisation_markdown(ctx, table, layer, method, cam_score, grids, input_hw,
                                     len(syndromic) - len(scored))

    # Figure: the most frequent syndromes of the scored faces, true positives first.
    counts = table["label"].value_counts()
    shown = list(counts.index[:SYNDROMES_SHOWN])
    rng = np.random.default_rng([ctx.seed, 3])
    picks = []
    for name in shown:
        part = table[table["label"] == name]
        order = rng.permutation(len(part))
        part = part.iloc[order].sort_values("correct", ascending=False, kind="stable")
        picks += list(part.index[:PER_SYNDROME])
    rows = scored.loc[picks].reset_index(drop=True)
    example_heats = heats[picks]
    aligned = pipeline.ALIGNED_SIZE[ctx.profile] if ctx.is_phantom else None
    grays = cns_heatmaps.display_gray(study.model_inputs(ctx, arch, list(rows["abs_path"])),
                                      study.model_transform(ctx, arch))
    examples = []
    for i, row in rows.iterrows():
        gray = grays[i]
        if ctx.eye_bar and aligned:
            gray = _eye_bar(gray, aligned)
        hit = bool(table.loc[picks[i], "pointing_game_hit"])
        # The row label names the syndrome and the figure title says what P < 0.5 means:
        # anything longer runs into panel B's title.
        caption = f"P(syndrome)={row['score']:.2f}, {'hit' if hit else 'miss'}"
        examples.append(plots.HeatmapExample(group=str(row["subtype"]), image=gray,
                                             heat=example_heats[i], caption=caption,
                                             mask=masks[sorted(masks)[picks[i]]],
                                             heat_title="map of syndrome"))
    hits, correct = cns_heatmaps.hit_rate_correct(table)
    figure_title = (f"Figure 3 (Hong 2021): {title} of the face VGG-16, layer '{layer}' "
                    f"({grid_text(grids)} map) -- {study.results_label(ctx)}\n"
                    f"syndromic test faces at the model input ({input_hw[1]}x{input_hw[0]}), "
                    f"each from its own fold's model"
                    + ("; eyes covered" if ctx.eye_bar and aligned else "")
                    + f"; white dashes: truth mask; pointing game on true positives "
                      f"{hits}/{correct}; P(syndrome) < 0.5: called healthy (a false "
                      f"negative)")
    figure = plots.figure4(examples, title=figure_title, method_title=title)
    return figure, table, markdown


def localisation_markdown(ctx, table: pd.DataFrame, layer: str, method: str, cam_score: str,
                          grids, input_hw, skipped: int) -> str:
    from reproduce.pgds.figure4 import grid_text

    tolerance = gradcam.pointing_tolerance_px(input_hw)
    summary = cns_heatmaps.localisation_summary(table, [])
    summary["group"] = summary["group"].replace({"all anomalous": "all syndromic"})
    shown = summary.drop(columns=["hits_correct"]).copy()
    for column in ("chance_correct", "energy_inside_correct", "energy_inside_all",
                   "mask_area_share", "energy_over_area"):
        shown[column] = shown[column].map(cns_heatmaps._fmt)
    hits, correct = cns_heatmaps.hit_rate_correct(table)
    chance = float(table.loc[table["correct"].astype(bool), "chance_hit"].mean()) if correct \
        else float("nan")
    verdict = ("met" if correct and hits / correct >= ACCEPTANCE_HIT_RATE else "NOT met")
    lines = [f"# {gradcam.describe(method, cam_score)} localisation against the truth masks "
             f"-- {study.results_label(ctx)}", "",
             f"Model: the face VGG-16 of each face's own fold; method {method}, layer `{layer}` "
             f"({grid_text(grids)} map); class explained: syndrome. Hong 2021 shows Grad-CAM "
             "at the last convolution (conv5_3); "
             + ("this profile reads the same." if ctx.profile == "paper" else
                f"at the {ctx.profile} profile's {input_hw[1]}-px input that map is a few "
                "cells wide, so finer blocks are read, averaged, contrasting the class (log P)."),
             "",
             f"Faces: every syndromic TEST face (pooled out-of-fold) with a non-empty truth mask "
             f"({len(table)})" + (f"; {skipped} without a mask left out" if skipped else "")
             + ". `correct`: called syndrome (a true positive).",
             f"Pointing game: a hit when the map's maximum lies in the mask or within "
             f"{tolerance:.1f} px of it (15 px at 224-px input, scaled); chance_correct: the "
             "hit rate of a maximum dropped at random. Energy inside: the map's share inside "
             "the mask (a uniform map scores the mask's area share).", "",
             study.markdown_table(shown.astype(str)), "",
             (f"Acceptance (default profile): pointing game on true positives >= "
              f"{ACCEPTANCE_HIT_RATE}: {hits}/{correct} = {hits / correct:.2f} (chance "
              f"{chance:.2f}) -- {verdict} on the {ctx.profile} profile." if correct else
              "Acceptance: no true positive with a mask, so no hit rate."), "",
             "Hong 2021 judged 217 of its 228 syndromic maps by eye to match the dysmorphic "
             "features (0.95); it gives no score.", "",
             *pipeline.common_notes(ctx)]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    ctx = pipeline.context_from_args(args)
    study.check_results_dir(ctx)
    started = time.perf_counter()
    figure, table, markdown = make_outputs(ctx)
    study.write_table(ctx, TABLE, table, markdown)
    path = study.write_figure(ctx, FIGURE, figure)
    hits, correct = cns_heatmaps.hit_rate_correct(table)
    pipeline.say(f"pointing game on true positives {hits}/{correct}"
                 + (f" = {hits / correct:.2f}" if correct else "")
                 + f"; {Path(path).name} in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return study.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
