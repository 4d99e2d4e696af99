"""Tang 2023 Figure 3: ROC curves, confusion matrices, and Pgds-ResNet versus the readers.

    python -m reproduce.pgds.figure3 --profile default [--manifest M] [--readers R]

Writes `<results>/figure3.png` with four panels, as the paper's Figure 3:
(a) the ROC curves of Pgds-ResNet, ResNet-34, VGG-16 and VGG-19 on the test split, AUROC with
its stratified-bootstrap 95% CI (1000 replicates; 200 in the ci profile) in the legend, each
model's operating point (its threshold chosen on the TRAINING split, best F1 or Youden's J)
and the dotted chance line; (b) Pgds-ResNet's confusion matrix at that threshold;
(c) Pgds-ResNet's ROC on the reader-study images with its 95% bootstrap CI band (pROC
``ci.se``, 200 replicates, as Hong 2021) and each reader's (1 - specificity, sensitivity),
filled inside the band and hollow outside (`stats.outside_band`); (d) each reader's confusion
matrix and the model's on the same images. The title carries `pipeline.results_label` and
"simulated readers" when the reader calls are simulated (the phantom). Trained models and
predictions are reused from the runs folder (trained there on first use).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import pandas as pd

from data_prep.errors import InputError
from reproduce.pgds import pipeline, plots

FIGURE_NAME = "figure3"
MODEL = "pgds_resnet"
#: Bootstrap replicates of the ROC CI band in panel (c): pROC's / Hong 2021's 200.
BAND_REPLICATES = 200


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce.pgds.figure3",
        description="Tang 2023 Figure 3: ROC curves of the four architectures, Pgds-ResNet's "
                    "confusion matrix, and Pgds-ResNet versus the readers.")
    pipeline.add_common_args(parser)
    return parser


def roc_inputs(ctx: pipeline.StudyContext) -> tuple[pd.DataFrame, dict[str, float]]:
    """(model, y_true, score, image_path) of every architecture's TEST images, and each
    architecture's operating threshold, keyed by display name."""
    frames, thresholds = [], {}
    for arch in pipeline.ARCHITECTURES:
        name = pipeline.DISPLAY_NAMES[arch]
        frame = pipeline.predictions(ctx, arch)
        test = frame[frame["split"] == "test"]
        frames.append(pd.DataFrame({"model": name, "image_path": test["image_path"].to_numpy(),
                                    "y_true": test["y_true"].to_numpy(),
                                    "score": test["score"].to_numpy()}))
        thresholds[name] = pipeline.operating_threshold(ctx, arch)
    return pd.concat(frames, ignore_index=True), thresholds


def reader_table(calls: pd.DataFrame, model_predictions: pd.DataFrame) -> pd.DataFrame:
    """Reader calls joined to the model's prediction of the same image: one row per
    (image, reader) with image_path, case_id, reader, reader_level, call, y_true, score.

    Every reader image must be among the model's predictions (ValueError otherwise)."""
    scores = model_predictions[["image_path", "y_true", "score"]].drop_duplicates("image_path")
    joined = calls.merge(scores, on="image_path", how="left", validate="many_to_one")
    missing = joined["score"].isna()
    if missing.any():
        raise ValueError(f"{int(missing.sum())} reader call(s) on images the model did not "
                         f"score, e.g. {joined.loc[missing, 'image_path'].iloc[0]!r}")
    joined["y_true"] = joined["y_true"].astype(int)
    joined["call"] = joined["call"].astype(int)
    return joined


def readers_note(calls: pd.DataFrame, n_test: int) -> str:
    """'simulated readers' and/or 'every test image' (when fewer than the paper's 100)."""
    parts = []
    if "simulated" in calls.columns and calls["simulated"].astype(bool).any():
        parts.append("simulated readers")
    n_images = calls["image_path"].nunique()
    if n_images < pipeline.READER_STUDY_IMAGES and n_images >= n_test:
        parts.append(f"every test image (the paper: {pipeline.READER_STUDY_IMAGES})")
    return "; ".join(parts)


def make_figure(ctx: pipeline.StudyContext):
    """The Figure 3 of the context (models trained on first use)."""
    scores, thresholds = roc_inputs(ctx)
    model_name = pipeline.DISPLAY_NAMES[MODEL]
    table, note = None, ""
    if ctx.readers is not None or ctx.is_phantom:
        calls = pipeline.reader_calls(ctx)
        studied = pipeline.predictions(ctx, MODEL)
        try:
            table = reader_table(calls, studied)
        except ValueError as err:
            raise InputError(ctx.readers, str(err)) from None
        note = readers_note(calls, int((studied["split"] == "test").sum()))
    rule = {"max_f1": "best F1", "youden": "Youden's J"}[ctx.threshold_rule]
    title = (f"Figure 3  Evaluation of {model_name} (Tang 2023) -- {pipeline.results_label(ctx)}"
             + ("; simulated readers" if "simulated readers" in note else "")
             + f"\noperating thresholds: {rule} on the training split; AUROC CI: "
               f"{ctx.n_boot} stratified bootstrap replicates")
    return plots.figure3(scores, thresholds, table, model=model_name, title=title,
                         n_boot=ctx.n_boot, band_boot=BAND_REPLICATES, seed=ctx.seed,
                         readers_note=note,
                         no_readers_message="no reader study: give --readers R\n(reader "
                                            "calls are simulated only on the phantom)")


def run(args: argparse.Namespace) -> int:
    ctx = pipeline.context_from_args(args)
    pipeline.check_results_dir(ctx)
    started = time.perf_counter()
    figure = make_figure(ctx)
    path = pipeline.write_figure(ctx, FIGURE_NAME, figure)
    pipeline.say(f"{FIGURE_NAME}: {path} ({path.stat().st_size / 1024:.0f} kB) in "
                 f"{time.perf_counter() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return pipeline.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
