"""The CNS study (Qi 2025) on the shared study pipeline: its spec, its two tasks, its flags.

Two tasks share one data set, one fold grid and one leakage audit (reproduce/study.py):
- `4class`: the four anomalies (anencephaly, encephalocele, holoprosencephaly, rachischisis),
  the paper's main task (its patient-level accuracy 0.945, AUROC 0.993);
- `5class`: the same with the normal patients (its accuracy 0.9825, micro / macro AUROC 0.97 /
  0.95).
The 4-class task trains on the anomalous patients of the same folds, so both tasks see the same
patients in their test folds.

Cross-validation (`--cv`): `kfold` = stratified group 5-fold over patients (the default, on
every output), `lopo` = leave one patient out (the paper), `loco` = leave one centre out. No
fold ever splits a patient; each fold's validation patients come from its training patients.

Model selection (`--select-on`): `validation` (default, honest) picks the epoch by accuracy on
the training patients' validation split; `test_fold` is the authors' protocol (the epoch with
the best accuracy on the held-out test patients) and reads the test labels. Both come from
the SAME training runs: every run also predicts its test fold after each epoch (label-free,
runs/.../monitor.csv), so the test-fold selection is the epoch whose test accuracy is highest,
and the difference between the two is what test-fold selection adds, nothing else.

Work folder: runs/cns/<profile>/{data,4class,5class,predictions}/ (see reproduce/study.py).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_prep.errors import InputError
from reproduce import study

STUDY = "cns"
ARCH = "resnet34"
LABELS = ("normal", "anencephaly", "encephalocele", "holoprosencephaly", "rachischisis")
ANOMALIES = LABELS[1:]
DISPLAY = {"normal": "normal", "anencephaly": "anencephaly", "encephalocele": "encephalocele",
           "holoprosencephaly": "holoprosencephaly", "rachischisis": "rachischisis"}
TASK_NAMES = ("4class", "5class")
TASK_TITLES = {"4class": "4 anomalies", "5class": "4 anomalies + normal"}
CV_CHOICES = ("kfold", "lopo", "loco")
SELECT_ON = ("validation", "test_fold")
# Folds of --cv kfold per profile: ci has 3 (30 patients, a test budget), default and paper 5.
K_FOLDS = {"ci": 3, "default": 5, "paper": 5}
VAL_SIZE = 0.1
N_BOOT = {"ci": 100, "default": 1000, "paper": 1000}
# Heat-maps: the paper profile is the authors' (Grad-CAM of the logit at the last conv of the
# last block). At the default 96x96 input that map is 3x3 and Grad-CAM of the logit lights the
# skull ring every class shares, so ci/default read LayerCAM of log P(true class) at the
# outputs of the two stages before the last (12x12 and 6x6), averaged. Measured on the
# default phantom's 5 folds (same models): 5-class pointing 0.58 -> 0.73, encephalocele
# 0.06 -> 0.38 (README, "CNS heat-maps").
HEATMAP_SETTINGS = {"ci": ("layercam", (2, 1), "log_prob"),
                    "default": ("layercam", (2, 1), "log_prob"),
                    "paper": ("gradcam", (0,), "logit")}
CV_TEXT = {"kfold": "grouped {k}-fold cross-validation (stratified group k-fold over patients)",
           "lopo": "leave-one-patient-out cross-validation (the paper's)",
           "loco": "leave-one-centre-out cross-validation"}
SELECT_TEXT = {"validation": "epoch chosen on the training patients' validation split (honest)",
               "test_fold": "epoch chosen on the held-out test fold's accuracy (the authors' "
                            "protocol: reads the test labels, inflates the figures)"}


def _columns(class_names: tuple[str, ...]) -> tuple[str, ...]:
    return ("image_path", "abs_path", "case_id", "label", "subtype", "split", "fold", "y_true",
            "score", *(f"p_{name}" for name in class_names), "gestational_week", "center",
            "plane", "mask_path")


def cv_splits(ctx: "StudyContext", manifest: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The folds of `--cv` over the whole manifest (both tasks use them)."""
    return study.cross_validation_splits(manifest, ctx.cv, k=K_FOLDS[ctx.profile], val_size=VAL_SIZE,
                                         stratify="label", seed=ctx.seed)


def _split_key(ctx: "StudyContext") -> dict:
    return {"cv": ctx.cv, "k": K_FOLDS[ctx.profile], "val_size": VAL_SIZE, "stratify": "label"}


def _train_overrides(ctx: "StudyContext") -> dict[str, Any]:
    return {} if ctx.init_weights is None else {"init_weights": str(ctx.init_weights)}


def _results_config(ctx: "StudyContext") -> dict:
    from data_prep.provenance import portable_path

    config = study.results_config(ctx, {"cv": ctx.cv, "select_on": ctx.select_on,
                                        "init_weights": portable_path(ctx.init_weights)})
    config["training"] = {task: study.train_config(task_context(ctx, task), ARCH).to_dict()
                          for task in TASK_NAMES}
    return config


def _spec(task: str, class_names: tuple[str, ...]) -> study.StudySpec:
    return study.StudySpec(
        key=STUDY, architectures=(ARCH,), display_names={ARCH: "ResNet-34"},
        class_names=class_names, positive_label=None, splitter=cv_splits, n_boot=N_BOOT,
        heatmaps=HEATMAP_SETTINGS, prediction_columns=_columns(class_names), phantom=STUDY,
        crop_to_sector=True, split_key=_split_key, results_dir="results/cns",
        extra={"results_config": _results_config, "train_overrides": _train_overrides},
        task=task, data_labels=LABELS, monitor_test_fold=True)


TASKS: dict[str, study.StudySpec] = {"4class": _spec("4class", ANOMALIES),
                                     "5class": _spec("5class", LABELS)}
SPEC = TASKS["5class"]


@dataclass(frozen=True)
class StudyContext(study.StudyContext):
    """A context of the CNS study: its spec is one task's (default 5class)."""

    spec: study.StudySpec = SPEC
    results_dir: Path = Path(SPEC.results_dir)
    cv: str = "kfold"
    select_on: str = "validation"
    init_weights: Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cv not in CV_CHOICES:
            raise InputError(None, f"--cv must be one of {', '.join(CV_CHOICES)}, got {self.cv!r}")
        if self.select_on not in SELECT_ON:
            raise InputError(None, f"--select-on must be one of {', '.join(SELECT_ON)}, "
                             f"got {self.select_on!r}")
        if self.init_weights is not None:
            object.__setattr__(self, "init_weights", Path(self.init_weights))

    @property
    def task(self) -> str:
        return self.spec.task


def task_context(ctx: StudyContext, task: str) -> StudyContext:
    """The same invocation for another task."""
    if task not in TASKS:
        raise InputError(None, f"task must be one of {', '.join(TASK_NAMES)}, got {task!r}")
    return dataclasses.replace(ctx, spec=TASKS[task])


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The flags every CNS target takes."""
    study.add_common_args(
        parser, SPEC, paper="Qi 2025 (the authors' code where the paper is silent)",
        manifest_help="your manifest CSV (image_path, case_id, label normal/anencephaly/"
                      "encephalocele/holoprosencephaly/rachischisis, optional plane, "
                      "gestational_week, center, mask_path); default: the synthetic phantom",
        readers_help="reader-study CSV (case_id, reader, with_ai 0/1, call, seconds); default: "
                     "simulated readers on the phantom")
    parser.add_argument("--cv", choices=CV_CHOICES, default="kfold",
                        help="kfold: stratified group 5-fold over patients (default); lopo: leave "
                             "one patient out (the paper's; one training run per patient); loco: "
                             "leave one centre out")
    parser.add_argument("--select-on", choices=SELECT_ON, default="validation",
                        help="validation (default, honest): the epoch with the best accuracy on "
                             "the training patients' validation split; test_fold: the authors' "
                             "protocol, the epoch with the best accuracy on the held-out test "
                             "fold (reads the test labels; inflates every figure)")
    parser.add_argument("--init-weights", type=Path, default=None,
                        help="initialise ResNet-34 from this weights file (e.g. ImageNet ResNet-34 "
                             "converted to .keras/.h5; matched by layer name, new final layer); "
                             "default: random initialisation (no weights can be downloaded)")


def context_from_args(args: argparse.Namespace, task: str = "5class") -> StudyContext:
    return StudyContext(**study.context_fields(args), spec=TASKS[task], cv=args.cv,
                        select_on=args.select_on, init_weights=args.init_weights)


def common_argv(args: argparse.Namespace) -> list[str]:
    """The shared flags, to pass on to another target unchanged."""
    argv = ["--profile", args.profile, "--runs", str(args.runs), "--results", str(args.results),
            "--seed", str(args.seed), "--cv", args.cv, "--select-on", args.select_on]
    for flag, value in (("--manifest", args.manifest), ("--readers", args.readers),
                        ("--init-weights", args.init_weights)):
        if value is not None:
            argv += [flag, str(value)]
    if args.force:
        argv.append("--force")
    return argv


def say(message: str) -> None:
    study.say(STUDY, message)


# ----------------------------------------------------------------------------- predictions


def fold_test_paths(ctx: StudyContext) -> dict[int, list[str]]:
    """{fold: the task's test image paths in the order its training run monitored them}."""
    from data_prep.splits import iter_folds

    _, splits = study.prepared_data(ctx)
    return {fold.fold: fold.test["image_path"].astype(str).tolist() for fold in iter_folds(splits)}


def test_accuracy_by_epoch(monitor: pd.DataFrame, y_true: np.ndarray) -> pd.Series:
    """Image-level accuracy of the monitored test images per epoch (index: epoch)."""
    columns = [c for c in monitor.columns if c.startswith("p_")]
    out = {}
    for epoch, rows in monitor.groupby("epoch", sort=True):
        rows = rows.sort_values("index")
        if len(rows) != len(y_true):
            raise ValueError(f"monitor of epoch {epoch} holds {len(rows)} images, the test fold "
                             f"{len(y_true)}")
        out[int(epoch)] = float(np.mean(rows[columns].to_numpy().argmax(axis=1) == y_true))
    return pd.Series(out, name="test_accuracy", dtype=float)


def test_fold_epoch(accuracy: pd.Series) -> int:
    """The authors' rule: the first epoch with the highest test accuracy."""
    best = accuracy.max()
    return int(accuracy.index[np.flatnonzero(accuracy.to_numpy() == best)[0]])


def selected_test_rows(ctx: StudyContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pooled out-of-fold test rows of the task under ctx.select_on, per-fold selection).

    validation: the selected models' predictions (study.predictions); test_fold: for each fold
    the monitored test predictions of the epoch with the best test accuracy. The per-fold frame
    has fold, honest_epoch, test_fold_epoch, epochs_trained, and the test accuracy at each.
    """
    from reproduce.train import read_monitor

    frame = study.predictions(ctx, ARCH)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    class_columns = [f"p_{name}" for name in ctx.spec.class_names]
    order = fold_test_paths(ctx)
    selection_rows, replaced = [], []
    for fold in sorted(test["fold"].unique()):
        rows = test[test["fold"] == fold]
        by_path = rows.set_index("image_path")
        paths = order[int(fold)]
        y_true = by_path.loc[paths, "y_true"].to_numpy()
        monitor = read_monitor(study.run_dir(ctx, ARCH, int(fold)))
        if monitor is None:
            raise InputError(study.run_dir(ctx, ARCH, int(fold)), "the run has no monitor.csv "
                             "(trained without the test-fold monitor); retrain with --force")
        accuracy = test_accuracy_by_epoch(monitor, y_true)
        honest = int(study.selection_record(ctx, ARCH, int(fold))["epoch"])
        peeked = test_fold_epoch(accuracy)
        selection_rows.append({"fold": int(fold), "honest_epoch": honest,
                               "test_fold_epoch": peeked, "epochs_trained": int(accuracy.index.max()),
                               "test_accuracy_honest_epoch": float(accuracy.get(honest, np.nan)),
                               "test_accuracy_test_fold_epoch": float(accuracy[peeked])})
        if ctx.select_on == "test_fold":
            chosen = monitor[monitor["epoch"] == peeked].sort_values("index")
            probabilities = chosen[[c for c in chosen.columns if c.startswith("p_")]].to_numpy()
            part = by_path.loc[paths].reset_index()
            part[class_columns] = probabilities
            part["score"] = probabilities.max(axis=1)
            replaced.append(part)
    if ctx.select_on == "test_fold":
        test = pd.concat(replaced, ignore_index=True)[list(frame.columns)]
    return test, pd.DataFrame(selection_rows)


def probabilities(frame: pd.DataFrame, class_names: tuple[str, ...]) -> np.ndarray:
    """(n, K) class probabilities of prediction rows, renormalised to sum to 1 (the CSV keeps
    about 17 significant digits, so rows sum to 1 within 1e-15)."""
    values = frame[[f"p_{name}" for name in class_names]].to_numpy(dtype=np.float64)
    return values / values.sum(axis=1, keepdims=True)


def patient_level(frame: pd.DataFrame, class_names: tuple[str, ...],
                  how: str = "mean") -> pd.DataFrame:
    """One row per patient: case_id, y_true, p_<class> and predicted (class index).

    how "mean": the mean softmax over the patient's images (the authors'); "majority": the
    most frequent image-level call (ties: the class with the higher mean probability)."""
    from reproduce import stats

    proba = probabilities(frame, class_names)
    cases, mean = stats.aggregate_by_case(frame["case_id"].astype(str).to_numpy(), proba, "mean")
    _, labels = stats.case_labels(frame["case_id"].astype(str).to_numpy(),
                                  frame["y_true"].to_numpy())
    out = pd.DataFrame({"case_id": cases, "y_true": labels.astype(int)})
    for index, name in enumerate(class_names):
        out[f"p_{name}"] = mean[:, index]
    if how == "mean":
        out["predicted"] = mean.argmax(axis=1)
    elif how == "majority":
        calls = proba.argmax(axis=1)
        position = {case: i for i, case in enumerate(cases)}
        votes = np.zeros_like(mean)
        np.add.at(votes, (np.array([position[c] for c in frame["case_id"].astype(str)]), calls), 1)
        # lexicographic: most votes, then the higher mean probability
        out["predicted"] = np.argmax(votes * 10.0 + mean, axis=1)
    else:
        raise ValueError(f"how must be 'mean' or 'majority', got {how!r}")
    for column in ("center", "gestational_week"):
        if column in frame.columns:
            first = frame.groupby(frame["case_id"].astype(str), sort=False)[column].first()
            out[column] = out["case_id"].map(first).to_numpy()
    return out


def cv_text(ctx: StudyContext) -> str:
    """'grouped 5-fold cross-validation (...)' etc.: said on every output."""
    return CV_TEXT[ctx.cv].format(k=K_FOLDS[ctx.profile])


def common_notes(ctx: StudyContext) -> list[str]:
    """Lines every CNS table's markdown ends with."""
    fewer = " (fewer than 1000: ci profile)" if ctx.n_boot < 1000 else ""
    config = study.train_config(ctx, ARCH)
    weights = (f"initialised from {ctx.init_weights.name}" if ctx.init_weights is not None else
               "random initialisation (the paper fine-tunes ImageNet weights; none can be "
               "downloaded here: give --init-weights)")
    return [
        f"- Data: {study.results_label(ctx)}.",
        f"- Folds: {cv_text(ctx)}; pooled out-of-fold test predictions.",
        f"- Model selection: {SELECT_TEXT[ctx.select_on]}.",
        f"- ResNet-34 at {config.size_wh[0]}x{config.size_wh[1]}x{config.channels}, width "
        f"{config.width or 64}"
        + (f", {'/'.join(str(b) for b in config.model_options['blocks'])} blocks per stage "
           f"(narrowed for the {ctx.profile} profile; ResNet-34 has 3/4/6/3)"
           if config.model_options.get("blocks") else "")
        + f", {weights}; {config.max_epochs} epochs of AdamW "
        f"{config.learning_rate:g} (weight decay {config.weight_decay:g}), warm-up + cosine, "
        f"class-weighted cross-entropy.",
        f"- CIs: stratified bootstrap percentile intervals over patients or images, "
        f"{ctx.n_boot} replicates (seed {ctx.seed}){fewer}.",
    ]
