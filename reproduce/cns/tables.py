"""Qi 2025's results for both tasks: accuracy, per-class metrics, confusion, subgroups, ROC/PR
figures, and what test-fold selection adds.

    python -m reproduce.cns.tables --profile default [--cv kfold|lopo|loco] [--select-on ...]
                                   [--only accuracy,per_class,confusion,subgroups,figures,selection]

Writes into the results folder (every .md ends with the data label, folds, selection rule):
- `accuracy.csv/.md`: per task, image-level accuracy, patient-level accuracy by mean softmax
  (the authors') and by majority vote, micro and macro one-vs-rest AUROC (patient level), each
  with its 95 % CI, the mean +- SD over folds, and the paper's value beside it.
- `per_class_<task>.csv/.md`: precision, recall, F1 and AUROC per class (patient level) with
  CIs, and the support.
- `confusion.csv/.md/.png`: patient-level confusion matrices of both tasks.
- `subgroups.csv/.md`: patient-level accuracy (Wilson CI) and macro AUROC by gestational
  period (<20, 20-28, >28 weeks) and by centre.
- `figure2.png` .. `figure5.png`: per-class ROC, micro-average ROC, macro-average ROC and PR
  curves (Qi 2025 Figures 2-5), a panel per task.
- `selection.csv/.md`: honest selection beside the authors' test-fold selection on the same
  folds and training runs, and the difference (what test-fold selection inflates).
CIs: Wilson score intervals for accuracies; stratified (per class) bootstrap percentile
intervals over patients for AUROCs, precision, recall and F1.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from data_prep.errors import InputError
from reproduce import stats, study
from reproduce.cns import pipeline
from reproduce.paper_values import QI2025

OUTPUTS = ("accuracy", "per_class", "confusion", "subgroups", "figures", "selection")
# Paper values beside ours (Qi 2025 abstract; the level of the 5-class figures is not stated).
PAPER = {("4class", "patient_accuracy_mean"): QI2025["patient_accuracy"],
         ("4class", "macro_auroc"): QI2025["patient_auroc"],
         ("5class", "patient_accuracy_mean"): QI2025["five_class_accuracy"],
         ("5class", "micro_auroc"): QI2025["five_class_micro_auc"],
         ("5class", "macro_auroc"): QI2025["five_class_macro_auc"]}
METRIC_TITLES = {"image_accuracy": "image-level accuracy",
                 "patient_accuracy_mean": "patient-level accuracy (mean softmax)",
                 "patient_accuracy_majority": "patient-level accuracy (majority vote)",
                 "micro_auroc": "micro-average AUROC (patients)",
                 "macro_auroc": "macro-average AUROC (patients)"}


# ----------------------------------------------------------------------------- pure metrics


def _auc_pair(codes: np.ndarray, proba: np.ndarray, k: int) -> tuple[float, float]:
    """(micro, macro) one-vs-rest AUROC."""
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import label_binarize

    onehot = label_binarize(codes, classes=list(range(k)))
    return (float(roc_auc_score(onehot, proba, average="micro")),
            float(roc_auc_score(codes, proba, multi_class="ovr", average="macro",
                                labels=list(range(k)))))


def bootstrap_metrics(codes: np.ndarray, proba: np.ndarray, k: int, n_boot: int,
                      seed: int) -> dict[str, np.ndarray]:
    """Replicates (class-stratified bootstrap over rows) of micro/macro AUROC and of each
    class's AUROC, precision, recall and F1 (all replicates at once, see
    :func:`reproduce.stats.bootstrap_multiclass`)."""
    indices = stats.class_stratified_bootstrap_indices(codes, n_boot, seed)
    return stats.bootstrap_multiclass(codes, proba[:, :k], indices)


def _interval(replicates: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(replicates, 2.5)), float(np.percentile(replicates, 97.5))


def accuracy_rows(task: str, test: pd.DataFrame, class_names: tuple[str, ...], n_boot: int,
                  seed: int) -> list[dict]:
    """The accuracy table's rows of one task from its pooled out-of-fold test rows."""
    k = len(class_names)
    patients = pipeline.patient_level(test, class_names, "mean")
    majority = pipeline.patient_level(test, class_names, "majority")
    image_correct = pipeline.probabilities(test, class_names).argmax(axis=1) == test["y_true"].to_numpy()
    values = {"image_accuracy": image_correct,
              "patient_accuracy_mean": patients["predicted"].to_numpy() == patients["y_true"].to_numpy(),
              "patient_accuracy_majority": majority["predicted"].to_numpy() == majority["y_true"].to_numpy()}
    rows = []
    for metric, correct in values.items():
        p, lo, hi = stats.proportion_ci(int(correct.sum()), int(correct.size), "wilson")
        rows.append(dict(task=task, metric=metric, value=p, ci_lo=lo, ci_hi=hi,
                         n=int(correct.size), ci="Wilson"))
    codes = patients["y_true"].to_numpy()
    proba = patients[[f"p_{c}" for c in class_names]].to_numpy()
    micro, macro = _auc_pair(codes, proba, k)
    replicates = bootstrap_metrics(codes, proba, k, n_boot, seed)
    for metric, value in (("micro_auroc", micro), ("macro_auroc", macro)):
        lo, hi = _interval(replicates[metric])
        rows.append(dict(task=task, metric=metric, value=value, ci_lo=lo, ci_hi=hi,
                         n=int(codes.size), ci=f"bootstrap ({n_boot})"))
    # mean +- SD over folds (patient accuracy, macro AUROC where every class is in the fold)
    fold_values: dict[str, list[float]] = {r["metric"]: [] for r in rows}
    for _, part in test.groupby("fold"):
        sub = accuracy_point_values(part, class_names)
        for metric, value in sub.items():
            if np.isfinite(value):
                fold_values[metric].append(value)
    for row in rows:
        values_f = fold_values[row["metric"]]
        row["fold_mean"] = float(np.mean(values_f)) if values_f else np.nan
        row["fold_sd"] = float(np.std(values_f, ddof=1)) if len(values_f) > 1 else np.nan
        row["folds"] = len(values_f)
        row["paper"] = PAPER.get((task, row["metric"]), np.nan)
    return rows


def accuracy_point_values(test: pd.DataFrame, class_names: tuple[str, ...]) -> dict[str, float]:
    """Point values of the accuracy metrics (NaN AUROCs where a class is absent)."""
    k = len(class_names)
    patients = pipeline.patient_level(test, class_names, "mean")
    majority = pipeline.patient_level(test, class_names, "majority")
    codes = patients["y_true"].to_numpy()
    out = {"image_accuracy": float(np.mean(pipeline.probabilities(test, class_names).argmax(axis=1)
                                           == test["y_true"].to_numpy())),
           "patient_accuracy_mean": float(np.mean(patients["predicted"].to_numpy() == codes)),
           "patient_accuracy_majority": float(np.mean(majority["predicted"].to_numpy()
                                                      == majority["y_true"].to_numpy()))}
    if len(np.unique(codes)) == k:
        out["micro_auroc"], out["macro_auroc"] = _auc_pair(
            codes, patients[[f"p_{c}" for c in class_names]].to_numpy(), k)
    else:
        out["micro_auroc"] = out["macro_auroc"] = np.nan
    return out


def per_class_rows(task: str, test: pd.DataFrame, class_names: tuple[str, ...], n_boot: int,
                   seed: int) -> list[dict]:
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    k = len(class_names)
    patients = pipeline.patient_level(test, class_names, "mean")
    codes = patients["y_true"].to_numpy()
    proba = patients[[f"p_{c}" for c in class_names]].to_numpy()
    precision, recall, f1, support = precision_recall_fscore_support(
        codes, proba.argmax(axis=1), labels=list(range(k)), zero_division=0)
    replicates = bootstrap_metrics(codes, proba, k, n_boot, seed)
    rows = []
    for c, name in enumerate(class_names):
        row = {"task": task, "class": name, "patients": int(support[c])}
        for metric, value in (("precision", precision[c]), ("recall", recall[c]),
                              ("f1", f1[c]), ("auroc", roc_auc_score(codes == c, proba[:, c]))):
            lo, hi = _interval(replicates[f"{metric}_{c}"])
            row.update({metric: float(value), f"{metric}_lo": lo, f"{metric}_hi": hi})
        rows.append(row)
    return rows


def confusion_frame(task: str, test: pd.DataFrame, class_names: tuple[str, ...]) -> pd.DataFrame:
    from sklearn.metrics import confusion_matrix

    patients = pipeline.patient_level(test, class_names, "mean")
    matrix = confusion_matrix(patients["y_true"], patients["predicted"], labels=list(range(len(class_names))))
    frame = pd.DataFrame(matrix, columns=[f"called {c}" for c in class_names])
    frame.insert(0, "truth", list(class_names))
    frame.insert(0, "task", task)
    return frame


def period_masks(weeks: pd.Series) -> list[tuple[str, pd.Series]]:
    """(period name, rows in it): <20, 20-28 (both ends included), >28 weeks."""
    weeks = pd.to_numeric(weeks, errors="coerce")
    return [("<20 weeks", (weeks < 20).fillna(False)),
            ("20-28 weeks", ((weeks >= 20) & (weeks <= 28)).fillna(False)),
            (">28 weeks", (weeks > 28).fillna(False))]


def subgroup_rows(task: str, test: pd.DataFrame, class_names: tuple[str, ...]) -> list[dict]:
    patients = pipeline.patient_level(test, class_names, "mean")
    rows = []
    groups: list[tuple[str, str, pd.Series]] = []
    weeks = pd.to_numeric(patients.get("gestational_week"), errors="coerce")
    for name, inside in period_masks(weeks):
        groups.append(("gestational period", name, inside))
    if "center" in patients.columns:
        for centre in sorted(patients["center"].dropna().astype(str).unique()):
            if centre:
                groups.append(("centre", centre, patients["center"].astype(str) == centre))
    k = len(class_names)
    for kind, name, inside in groups:
        part = patients[inside.to_numpy()]
        if not len(part):
            continue
        correct = part["predicted"].to_numpy() == part["y_true"].to_numpy()
        p, lo, hi = stats.proportion_ci(int(correct.sum()), int(correct.size), "wilson")
        codes = part["y_true"].to_numpy()
        macro = (_auc_pair(codes, part[[f"p_{c}" for c in class_names]].to_numpy(), k)[1]
                 if len(np.unique(codes)) == k else np.nan)
        rows.append({"task": task, "subgroup": kind, "group": name, "patients": int(len(part)),
                     "accuracy": p, "accuracy_lo": lo, "accuracy_hi": hi, "macro_auroc": macro})
    return rows


# ----------------------------------------------------------------------------- markdown


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _ci(value: float, lo: float, hi: float) -> str:
    return study.ci_text(value, lo, hi, digits=3)


def notes(ctx: pipeline.StudyContext) -> str:
    return "\n".join(pipeline.common_notes(ctx))


def accuracy_markdown(ctx, frame: pd.DataFrame) -> str:
    shown = pd.DataFrame({
        "task": frame["task"].map(pipeline.TASK_TITLES),
        "metric": frame["metric"].map(METRIC_TITLES),
        "reproduced (95 % CI)": [_ci(v, lo, hi) for v, lo, hi in
                                 zip(frame["value"], frame["ci_lo"], frame["ci_hi"])],
        "mean ± SD over folds": [f"{_fmt(m)} ± {_fmt(s)}" if np.isfinite(s) else _fmt(m)
                                 for m, s in zip(frame["fold_mean"], frame["fold_sd"])],
        "n": frame["n"].astype(str),
        "Qi 2025": [_fmt(v) if np.isfinite(v) else "—" for v in frame["paper"]]})
    return (f"# Qi 2025 accuracy and AUROC, reproduced\n\n{study.markdown_table(shown)}\n\n"
            "- Patient level: the mean softmax over a patient's images (the authors'); majority "
            "vote as the variant. The paper's 4-class AUROC (0.993) is given beside the macro "
            "AUROC; the level of its 5-class figures is not stated.\n" + notes(ctx))


def per_class_markdown(ctx, frame: pd.DataFrame, task: str) -> str:
    shown = pd.DataFrame({
        "class": frame["class"], "patients": frame["patients"].astype(str),
        **{metric: [_ci(v, lo, hi) for v, lo, hi in zip(frame[metric], frame[f"{metric}_lo"],
                                                         frame[f"{metric}_hi"])]
           for metric in ("precision", "recall", "f1", "auroc")}})
    return (f"# Per-class results, {pipeline.TASK_TITLES[task]} (patient level)\n\n"
            f"{study.markdown_table(shown)}\n\n- AUROC one-vs-rest; Qi 2025 publishes no "
            "per-class values in its abstract (its Figures 2 and 5 show the curves).\n" + notes(ctx))


def confusion_markdown(ctx, frames: list[pd.DataFrame]) -> str:
    parts = [f"## {pipeline.TASK_TITLES[f['task'].iloc[0]]}\n\n"
             f"{study.markdown_table(f.drop(columns=['task']))}" for f in frames]
    return ("# Patient-level confusion matrices (rows: truth)\n\n" + "\n\n".join(parts) + "\n\n"
            + notes(ctx))


def subgroups_markdown(ctx, frame: pd.DataFrame) -> str:
    shown = pd.DataFrame({
        "task": frame["task"].map(pipeline.TASK_TITLES), "subgroup": frame["subgroup"],
        "group": frame["group"], "patients": frame["patients"].astype(str),
        "accuracy (95 % CI)": [_ci(v, lo, hi) for v, lo, hi in
                               zip(frame["accuracy"], frame["accuracy_lo"], frame["accuracy_hi"])],
        "macro AUROC": [_fmt(v) for v in frame["macro_auroc"]]})
    return ("# Patient-level accuracy by gestational period and by centre\n\n"
            f"{study.markdown_table(shown)}\n\n- Qi 2025: \"applicable to the entire gestational "
            "period\" (no subgroup numbers in the abstract). Macro AUROC only where every class "
            "is in the subgroup.\n" + notes(ctx))


# ----------------------------------------------------------------------------- figures


def _curve_figure(reports: dict, kind: str, title: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(5.2 * len(reports), 4.8), squeeze=False)
    for ax, (task, report) in zip(axes[0], reports.items()):
        if kind == "roc_per_class":
            for name in report.class_names:
                curve = report.roc_curves[name]
                ax.plot(curve["fpr"], curve["tpr"],
                        label=f"{name} (AUC {report.auc_per_class[name]:.3f})")
        elif kind == "roc_micro":
            ax.plot(report.roc_micro["fpr"], report.roc_micro["tpr"], color="C3",
                    label=f"micro-average (AUC {report.auc_micro:.3f})")
        elif kind == "roc_macro":
            ax.plot(report.roc_macro["fpr"], report.roc_macro["tpr"], color="C2",
                    label=f"macro-average (AUC {report.auc_macro:.3f})")
        else:
            for name in report.class_names:
                curve = report.pr_curves[name]
                ax.step(curve["recall"], curve["precision"], where="post", label=name)
        if kind.startswith("roc"):
            ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
            ax.set_xlabel("1 - specificity")
            ax.set_ylabel("sensitivity")
        else:
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(pipeline.TASK_TITLES[task], fontsize=10)
        ax.legend(fontsize=8, loc="lower right" if kind.startswith("roc") else "lower left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def confusion_figure(frames: list[pd.DataFrame], label: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(frames), figsize=(5.0 * len(frames), 4.6), squeeze=False)
    for ax, frame in zip(axes[0], frames):
        names = frame["truth"].tolist()
        matrix = frame[[f"called {c}" for c in names]].to_numpy()
        ax.imshow(matrix, cmap="Blues")
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                        color="white" if matrix[i, j] > matrix.max() / 2 else "black")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("called")
        ax.set_ylabel("truth")
        ax.set_title(pipeline.TASK_TITLES[frame["task"].iloc[0]], fontsize=10)
    fig.suptitle(f"Patient-level confusion matrices -- {label}", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- selection


def selection_rows(ctx: pipeline.StudyContext) -> tuple[list[dict], pd.DataFrame]:
    """Honest and test-fold selection of the same runs, per task: the metrics and the epochs."""
    import dataclasses

    rows, epochs = [], []
    for task in pipeline.TASK_NAMES:
        base = pipeline.task_context(ctx, task)
        values = {}
        for rule in pipeline.SELECT_ON:
            test, per_fold = pipeline.selected_test_rows(dataclasses.replace(base, select_on=rule))
            values[rule] = accuracy_point_values(test, base.spec.class_names)
        per_fold.insert(0, "task", task)
        epochs.append(per_fold)
        for metric in METRIC_TITLES:
            honest, peeked = values["validation"][metric], values["test_fold"][metric]
            rows.append({"task": task, "metric": metric, "honest_selection": honest,
                         "test_fold_selection": peeked, "inflation": peeked - honest})
    return rows, pd.concat(epochs, ignore_index=True)


def selection_markdown(ctx, frame: pd.DataFrame, epochs: pd.DataFrame) -> str:
    shown = pd.DataFrame({
        "task": frame["task"].map(pipeline.TASK_TITLES), "metric": frame["metric"].map(METRIC_TITLES),
        "honest (validation patients)": [_fmt(v) for v in frame["honest_selection"]],
        "test-fold selection (authors')": [_fmt(v) for v in frame["test_fold_selection"]],
        "inflation": [f"{v:+.3f}" if np.isfinite(v) else "n/a" for v in frame["inflation"]]})
    epoch_table = pd.DataFrame({
        "task": epochs["task"].map(pipeline.TASK_TITLES), "fold": epochs["fold"].astype(str),
        "honest epoch": epochs["honest_epoch"].astype(str),
        "test-fold epoch": epochs["test_fold_epoch"].astype(str),
        "epochs trained": epochs["epochs_trained"].astype(str),
        "test accuracy at honest epoch": [_fmt(v) for v in epochs["test_accuracy_honest_epoch"]],
        "at test-fold epoch": [_fmt(v) for v in epochs["test_accuracy_test_fold_epoch"]]})
    return ("# What test-fold selection adds\n\nThe same training runs and folds, read twice: "
            "the epoch chosen on the training patients' validation split (honest, our default) "
            "and the epoch with the best accuracy on the held-out test fold (the authors' "
            "protocol, which reads the test labels). The difference is optimism bought by "
            "looking at the test set; no paper we reproduce measures it.\n\n"
            f"{study.markdown_table(shown)}\n\n## Epochs chosen per fold\n\n"
            f"{study.markdown_table(epoch_table)}\n\n- Both read the same early-stopped runs "
            "(patience on the validation split); the authors' early stopping also watched the "
            "test fold.\n" + notes(ctx))


# ----------------------------------------------------------------------------- targets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce cns tables",
                                     description="Qi 2025 accuracy, per-class, confusion, "
                                                 "subgroup tables, Figures 2-5 and the "
                                                 "test-fold-selection comparison.")
    pipeline.add_common_args(parser)
    parser.add_argument("--only", default=",".join(OUTPUTS),
                        help=f"comma-separated subset of {', '.join(OUTPUTS)}")
    return parser


def task_tests(ctx: pipeline.StudyContext) -> dict[str, pd.DataFrame]:
    return {task: pipeline.selected_test_rows(pipeline.task_context(ctx, task))[0]
            for task in pipeline.TASK_NAMES}


def write_outputs(ctx: pipeline.StudyContext, only: Sequence[str],
                  on_output: Callable[[str], None] | None = None) -> None:
    unknown = [name for name in only if name not in OUTPUTS]
    if unknown:
        raise InputError(None, f"--only: unknown output '{unknown[0]}' (choose from {', '.join(OUTPUTS)})")
    study.check_results_dir(ctx)
    tests = task_tests(ctx)
    names = {task: pipeline.TASKS[task].class_names for task in tests}
    label = study.results_label(ctx)
    for output in only:
        if on_output:
            on_output(output)
        if output == "accuracy":
            frame = pd.DataFrame([row for task, test in tests.items()
                                  for row in accuracy_rows(task, test, names[task], ctx.n_boot, ctx.seed)])
            study.write_table(ctx, "accuracy", frame, accuracy_markdown(ctx, frame))
        elif output == "per_class":
            for task, test in tests.items():
                frame = pd.DataFrame(per_class_rows(task, test, names[task], ctx.n_boot, ctx.seed))
                study.write_table(ctx, f"per_class_{task}", frame, per_class_markdown(ctx, frame, task))
        elif output == "confusion":
            frames = [confusion_frame(task, test, names[task]) for task, test in tests.items()]
            study.write_table(ctx, "confusion", pd.concat(frames, ignore_index=True),
                              confusion_markdown(ctx, frames))
            study.write_figure(ctx, "confusion", confusion_figure(frames, label))
        elif output == "subgroups":
            frame = pd.DataFrame([row for task, test in tests.items()
                                  for row in subgroup_rows(task, test, names[task])])
            study.write_table(ctx, "subgroups", frame, subgroups_markdown(ctx, frame))
        elif output == "figures":
            reports = {}
            for task, test in tests.items():
                patients = pipeline.patient_level(test, names[task], "mean")
                reports[task] = stats.multiclass_report(
                    patients["y_true"].to_numpy(),
                    patients[[f"p_{c}" for c in names[task]]].to_numpy(), names[task])
            suffix = f"\npatient level (mean softmax), pooled out-of-fold -- {label}"
            for number, kind, title in ((2, "roc_per_class", "Figure 2  ROC curves per class"),
                                        (3, "roc_micro", "Figure 3  micro-average ROC"),
                                        (4, "roc_macro", "Figure 4  macro-average ROC"),
                                        (5, "pr", "Figure 5  precision-recall curves")):
                study.write_figure(ctx, f"figure{number}", _curve_figure(reports, kind, title + suffix))
        elif output == "selection":
            rows, epochs = selection_rows(ctx)
            frame = pd.DataFrame(rows)
            study.write_table(ctx, "selection", frame, selection_markdown(ctx, frame, epochs))
            import matplotlib.pyplot as plt

            plt.close("all")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    ctx = pipeline.context_from_args(args)
    write_outputs(ctx, [name.strip() for name in args.only.split(",") if name.strip()])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return study.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
