"""The Pgds study (Tang 2023) on the shared study pipeline: its spec and what only it needs.

Everything study-independent -- context and common flags, prepare (phantom -> de-identified
copy cropped to the scan sector -> case-level split -> leakage audit), train-or-reuse keyed by
config and manifest hash, predictions, operating thresholds, results writers and the results
folder guard -- lives in `reproduce/study.py` and is re-exported here for the Pgds targets.
This module adds the Pgds spec (classes, architectures, the case-level hold-out stratified by
subtype, heat-map settings, bootstrap replicates) and the reader study of Table 3.

Work folder: runs/pgds/<profile>/... (see reproduce/study.py). Preprocessing for prediction
is the training pipeline itself (`reproduce.input_pipeline.eval_dataset`): grayscale,
bilinear resize, per-image min-max.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from data_prep.errors import InputError
from reproduce import study
from reproduce.study import (  # noqa: F401  (re-exported for the Pgds targets)
    THRESHOLD_FILE, THRESHOLD_RULES, check_results_dir, ci_text, data_dir, load_keras_model,
    load_model, manifest_path, markdown_table, model_input_shape, model_inputs, model_path,
    operating_threshold, predictions, prepared_data, results_label, run_cli, run_dir,
    selection_record, splits_path, test_rows, threshold_text, thresholds_on_train, train_config,
    write_figure, write_table)

STUDY = "pgds"
ARCHITECTURES = ("pgds_resnet", "resnet34", "vgg16", "vgg19")
DISPLAY_NAMES = {"pgds_resnet": "Pgds-ResNet", "resnet34": "ResNet-34", "vgg16": "VGG-16",
                 "vgg19": "VGG-19"}
SUBTYPES = ("T13", "T18", "T21", "rare")      # Table 2 row order after "all"
CLASS_NAMES = ("normal", "genetic_disease")  # class index 1 = genetic disease (positive)
POSITIVE_LABEL = CLASS_NAMES[1]
PROFILE_NAMES = study.PROFILE_NAMES
READER_LEVELS = ("junior", "attending", "senior")
READER_STUDY_IMAGES = 100                     # Tang 2023 s2.6
# Bootstrap replicates of AUROC / F1 CIs per profile (the paper: 1000).
N_BOOT = {"ci": 200, "default": 1000, "paper": 1000}
TEST_SIZE, VAL_SIZE = 0.2, 0.1
PREDICTION_COLUMNS = ("image_path", "abs_path", "case_id", "label", "subtype", "split", "y_true",
                      "score", "gestational_week", "mask_path")
# Heat-map per profile: (method, stages before the last conv block whose output is read).
# The paper: Grad-CAM of the last conv layer, a 13x14 map at its 400x440 input. At the
# third-size inputs of ci and default that map is 4x5 or smaller, coarser than the facial
# structures, so they read the outputs of stages 1 and 2 (3 and 2 stages before the last:
# 32x35 and 16x18 at 128x140), averaged. There Grad-CAM's map-wide channel weights spread
# the evidence of one subtype onto every face (a jaw detector lights the jaw of a T21
# frame), so ci/default use LayerCAM, whose weights are per position (reproduce.gradcam;
# chosen on validation images, README "Departures").
HEATMAP_SETTINGS = {"ci": ("layercam", (3, 2)), "default": ("layercam", (3, 2)),
                    "paper": ("gradcam", (0,))}


def case_level_holdout(ctx: "StudyContext", manifest: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Tang 2023 s2.2: one case-level split, stratified by subtype (test 0.2, val 0.1 of each
    subtype's cases)."""
    from data_prep.splits import case_level_split

    stratify = "subtype" if "subtype" in manifest.columns else "label"
    splits = case_level_split(manifest, test_size=TEST_SIZE, val_size=VAL_SIZE,
                              stratify=stratify, seed=ctx.seed)
    return splits, {"stratify": stratify, "test_size": TEST_SIZE, "val_size": VAL_SIZE}


def _results_config(ctx: "StudyContext") -> dict:
    return study.results_config(ctx, {"threshold_rule": ctx.threshold_rule})


SPEC = study.StudySpec(
    key=STUDY, architectures=ARCHITECTURES, display_names=DISPLAY_NAMES, class_names=CLASS_NAMES,
    positive_label=POSITIVE_LABEL, splitter=case_level_holdout, n_boot=N_BOOT,
    heatmaps=HEATMAP_SETTINGS, prediction_columns=PREDICTION_COLUMNS, phantom=STUDY,
    crop_to_sector=True, split_key=lambda ctx: {"method": "holdout", "stratify": "subtype",
                                                "test_size": TEST_SIZE, "val_size": VAL_SIZE},
    results_dir="results/pgds", extra={"results_config": _results_config})


@dataclass(frozen=True)
class StudyContext(study.StudyContext):
    """A context of the Pgds study (study.StudyContext with the Pgds spec)."""

    spec: study.StudySpec = SPEC
    results_dir: Path = Path(SPEC.results_dir)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The flags every Pgds target takes."""
    study.add_common_args(
        parser, SPEC, paper="Tang 2023",
        manifest_help="your manifest CSV (image_path, case_id, label normal/genetic_disease, "
                      "optional subtype T21/T18/T13/rare/normal); default: the synthetic "
                      "phantom of the profile",
        readers_help="reader-study CSV (case_id or image_path, reader, reader_level, call 0/1 "
                     "or normal/genetic_disease); default: simulated readers on the phantom")
    parser.add_argument("--threshold-rule", choices=THRESHOLD_RULES, default="max_f1",
                        help="operating threshold chosen on the training split: max_f1 (the "
                             "paper's best F1, default) or youden (the authors' test script)")


def context_from_args(args: argparse.Namespace) -> StudyContext:
    return StudyContext(**study.context_fields(args), threshold_rule=args.threshold_rule)


def say(message: str) -> None:
    study.say(STUDY, message)


def results_config(ctx: StudyContext) -> dict:
    return _results_config(ctx)


def gradcam_layer(profile: str, arch: str) -> str:
    return study.gradcam_layer(SPEC, profile, arch)


def heatmap_method(profile: str) -> str:
    return study.heatmap_method(SPEC, profile)


def _prediction_frame(manifest: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    return study.prediction_frame(SPEC, manifest, splits)


def _run_matches(ctx: StudyContext, arch: str) -> tuple[bool, str]:
    return study.run_matches(ctx, arch)


def inputs_for_shape(image_paths: Sequence[str | Path], input_shape_hwc: Sequence[int],
                     batch_size: int = 32) -> np.ndarray:
    return study.inputs_for_shape(image_paths, input_shape_hwc, len(CLASS_NAMES), batch_size)


def predict_scores(model, image_paths: Sequence[str | Path], input_shape_hwc: Sequence[int],
                   batch_size: int = 32) -> np.ndarray:
    """P(genetic_disease) of each image: the model's class-1 softmax output."""
    return study.predict_probabilities(model, image_paths, input_shape_hwc, len(CLASS_NAMES),
                                       batch_size)[:, 1]


# ----------------------------------------------------------------------------- readers


def reader_study_images(ctx: StudyContext) -> pd.DataFrame:
    """The reader-study images: READER_STUDY_IMAGES (100) randomly drawn test images (seeded),
    or every test image when there are fewer. Columns image_path, case_id, label, subtype,
    y_true (manifest order)."""
    from reproduce.pgds import readers

    manifest, splits = prepared_data(ctx)
    frame = _prediction_frame(manifest, splits)
    test = frame[frame["split"] == "test"]
    return readers.draw_reader_images(test, READER_STUDY_IMAGES, ctx.seed)


def reader_calls(ctx: StudyContext) -> pd.DataFrame:
    """Columns image_path, case_id, reader, reader_level, call (0/1), simulated (bool).

    From ctx.readers (validated; InputError naming file, row, column), or simulated by
    reproduce.pgds.readers on the reader-study images (phantom only)."""
    from reproduce.pgds import readers

    manifest, splits = prepared_data(ctx)
    frame = _prediction_frame(manifest, splits)
    if ctx.readers is not None:
        return readers.load_reader_csv(ctx.readers, frame)
    if not ctx.is_phantom:
        raise InputError(ctx.manifest, "Table 3 needs reader calls on your images: give "
                         "--readers R (columns case_id or image_path, reader, reader_level, call); "
                         "readers are simulated only on the phantom")
    return readers.simulate_readers(reader_study_images(ctx), ctx.seed)


# ----------------------------------------------------------------------------- notes


def common_notes(ctx: StudyContext) -> list[str]:
    """Lines every table's markdown ends with: data label, CI methods, bootstrap replicates."""
    from reproduce import stats

    fewer = " (fewer than the paper's 1000: ci profile)" if ctx.n_boot < 1000 else ""
    return [
        f"- Data: {results_label(ctx)}.",
        f"- Proportion CIs (sensitivity, specificity, accuracy): {stats.PGDS_PROPORTION_CI} = "
        "Wilson score interval with continuity correction (R's prop.test), which regenerates "
        "Tang 2023 Table 2's CIs (the paper calls them Wald/bootstrap).",
        f"- AUROC and F1 CIs: stratified bootstrap percentile intervals, {ctx.n_boot} replicates "
        f"(seed {ctx.seed}){fewer}.",
    ]
