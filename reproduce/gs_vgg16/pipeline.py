"""Hong 2021 (genetic syndromes from children's faces, VGG-16) on the shared study pipeline.

The spec: two classes (`healthy`, `syndrome`: the positive class), one architecture
(`vgg16_face`: VGG-Face's VGG-16 with the fully connected layers as convolutions, BN and 50 %
dropout), five-fold cross-validation split on the child with train:validation:test 3:1:1 and
both classes spread equally over the folds (stratified group 5-fold; each fold's validation
quarter comes from its training children, so selection never reads the test fold), faces
detected and aligned by MTCNN before training (reproduce/study.py, `images="face"`).

Work folder: runs/gs_vgg16/<profile>/{data,vgg16_face,predictions}/ (see reproduce/study.py).
A user's manifest must list aligned face crops (`python -m data_prep faces` makes them).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reproduce import study

STUDY = "gs_vgg16"
ARCH = "vgg16_face"
CLASS_NAMES = ("healthy", "syndrome")   # index 1 = syndrome (positive)
POSITIVE_LABEL = CLASS_NAMES[1]
K_FOLDS = 5
# 3:1:1 -> a quarter of each fold's training children validate.
VAL_SIZE = 0.25
N_BOOT = {"ci": 50, "default": 200, "paper": 200}   # Hong: pROC with 200 bootstrap iterations
# Aligned crop side per profile (data_prep.faces templates): 224 = Hong's VGG input.
ALIGNED_SIZE = {"ci": 112, "default": 112, "paper": 224}
# Heat-maps: the paper's Grad-CAM at the last conv (conv5_3) at 224; at the default 96 input
# conv5_3 is 6x6, so ci/default read LayerCAM of log P(class) at conv4_3 and conv3_3 (12x12,
# 24x24), averaged, as the CNS study does at its small input.
HEATMAP_SETTINGS = {"ci": ("layercam", (2, 1), "log_prob"),
                    "default": ("layercam", (2, 1), "log_prob"),
                    "paper": ("gradcam", (0,), "logit")}
PREDICTION_COLUMNS = ("image_path", "abs_path", "case_id", "label", "subtype", "split", "fold",
                      "y_true", "score", "p_healthy", "p_syndrome", "age_months", "sex",
                      "mask_path")
CV_TEXT = ("five-fold cross-validation split on the child (stratified group 5-fold: both "
           "classes equal in every fold), train:validation:test 3:1:1")


def five_fold_splits(ctx: "StudyContext", manifest: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Hong 2021: five folds, 3:1:1, classes equal in every subset, on the child."""
    return study.cross_validation_splits(manifest, "kfold", k=K_FOLDS, val_size=VAL_SIZE,
                                         stratify="label", seed=ctx.seed)


def _split_key(ctx: "StudyContext") -> dict:
    return {"cv": "kfold", "k": K_FOLDS, "val_size": VAL_SIZE, "stratify": "label"}


def _train_overrides(ctx: "StudyContext") -> dict[str, Any]:
    return {} if ctx.init_weights is None else {"init_weights": str(ctx.init_weights)}


def _results_config(ctx: "StudyContext") -> dict:
    from data_prep.provenance import portable_path

    config = study.results_config(ctx, {"init_weights": portable_path(ctx.init_weights),
                                        "aligned_size": ALIGNED_SIZE[ctx.profile]})
    config["training"] = study.train_config(ctx, ARCH).to_dict()
    return config


SPEC = study.StudySpec(
    key=STUDY, architectures=(ARCH,), display_names={ARCH: "VGG-16"}, class_names=CLASS_NAMES,
    positive_label=POSITIVE_LABEL, splitter=five_fold_splits, n_boot=N_BOOT,
    heatmaps=HEATMAP_SETTINGS, prediction_columns=PREDICTION_COLUMNS, phantom=STUDY,
    crop_to_sector=False, split_key=_split_key, results_dir="results/gs_vgg16",
    extra={"results_config": _results_config, "train_overrides": _train_overrides},
    images="face", aligned_size=ALIGNED_SIZE)


@dataclass(frozen=True)
class StudyContext(study.StudyContext):
    """A context of the Hong 2021 study."""

    spec: study.StudySpec = SPEC
    results_dir: Path = Path(SPEC.results_dir)
    init_weights: Path | None = None
    eye_bar: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_weights is not None:
            object.__setattr__(self, "init_weights", Path(self.init_weights))


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The flags every gs_vgg16 target takes."""
    study.add_common_args(
        parser, SPEC, paper="Hong 2021 (its silences read as stated in the README)",
        manifest_help="your manifest CSV of ALIGNED face crops (image_path, case_id, label "
                      "healthy/syndrome, optional subtype = syndrome, age_months, sex, "
                      "mask_path; `python -m data_prep faces` writes one); default: the "
                      "synthetic face phantom",
        readers_help="reader CSV (case_id, reader, call 0/1); default: five paediatricians "
                     "simulated at Hong 2021's Table 2 rates")
    parser.add_argument("--init-weights", type=Path, default=None,
                        help="initialise VGG-16 from a VGG-Face weights file (.keras/.h5, "
                             "matched by layer name, fc8 re-initialised); default: random "
                             "initialisation (no weights can be downloaded)")
    parser.add_argument("--no-eye-bar", dest="eye_bar", action="store_false",
                        help="figures that show faces cover the eyes with a black bar by default "
                             "(as Hong 2021's Figure 1); this turns it off")


def context_from_args(args: argparse.Namespace) -> StudyContext:
    return StudyContext(**study.context_fields(args), init_weights=args.init_weights,
                        eye_bar=args.eye_bar)


def common_argv(args: argparse.Namespace) -> list[str]:
    """The shared flags, to pass on to another target unchanged."""
    argv = ["--profile", args.profile, "--runs", str(args.runs), "--results", str(args.results),
            "--seed", str(args.seed)]
    for flag, value in (("--manifest", args.manifest), ("--readers", args.readers),
                        ("--init-weights", args.init_weights)):
        if value is not None:
            argv += [flag, str(value)]
    if not args.eye_bar:
        argv.append("--no-eye-bar")
    if args.force:
        argv.append("--force")
    return argv


def say(message: str) -> None:
    study.say(STUDY, message)


# ----------------------------------------------------------------------------- per fold


OPTIMIZER_NAMES = {"rmsprop": "RMSProp", "adam": "Adam", "adamw": "AdamW"}
METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc")
METRIC_TITLES = {"accuracy": "Accuracy", "sensitivity": "Sensitivity (Recall)",
                 "specificity": "Specificity", "precision": "Precision", "f1": "F1-score",
                 "auc": "AUC"}


def call_rates(y_true: np.ndarray, calls: np.ndarray) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision and F1 of 0/1 calls (scikit-learn)."""
    from sklearn import metrics

    y_true, calls = np.asarray(y_true, int), np.asarray(calls, int)
    tn, fp, fn, tp = metrics.confusion_matrix(y_true, calls, labels=[0, 1]).ravel()
    return {"accuracy": float(metrics.accuracy_score(y_true, calls)),
            "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
            "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
            "precision": float(metrics.precision_score(y_true, calls, zero_division=0)),
            "f1": float(metrics.f1_score(y_true, calls, zero_division=0))}


def fold_metrics(test: pd.DataFrame) -> pd.DataFrame:
    """One row per test fold: Table 2's metrics of the softmax call (p_syndrome >= 0.5, the
    class the softmax picks) and the AUC of p_syndrome."""
    from sklearn import metrics

    rows = []
    for fold, part in test.groupby("fold", sort=True):
        y_true = part["y_true"].to_numpy(int)
        score = part["score"].to_numpy(float)
        row = {"fold": int(fold), "n": len(part), **call_rates(y_true, (score >= 0.5).astype(int))}
        row["auc"] = float(metrics.roc_auc_score(y_true, score)) if len(set(y_true)) == 2 \
            else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def common_notes(ctx: StudyContext) -> list[str]:
    """Lines every gs_vgg16 table's markdown ends with."""
    config = study.train_config(ctx, ARCH)
    weights = (f"initialised from {ctx.init_weights.name}" if ctx.init_weights is not None else
               "random initialisation (Hong 2021 fine-tunes VGG-Face; none can be downloaded "
               "here: give --init-weights)")
    return [
        f"- Data: {study.results_label(ctx)}.",
        f"- Folds: {CV_TEXT}; one photo per child; figures per test fold, mean ± SD over the "
        "five.",
        f"- VGG-16 (face) at {config.size_wh[0]}x{config.size_wh[1]}x{config.channels}, width "
        f"{config.width or 64} (64 = the paper's), {weights}; {config.max_epochs} epochs of "
        f"{OPTIMIZER_NAMES[config.optimizer]} {config.learning_rate:g} at batch "
        f"{config.batch_size}"
        + ("" if config.optimizer == "rmsprop" else " (Hong 2021: RMSProp; see README)")
        + ", the epoch with the "
        "smallest validation loss; random rotation, crop and flip; faces read as grey levels "
        "tiled to three channels (Hong: colour).",
        "- Call: the softmax's class (p(syndrome) >= 0.5).",
    ]
