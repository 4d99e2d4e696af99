"""Qi 2025 reader study: radiologists without and with the DL system's call, per patient.

    python -m reproduce.cns.readers --profile ci|default|paper [--manifest M] [--readers R]
        [--runs runs] [--results results/cns] [--cv kfold|lopo|loco]
        [--select-on validation|test_fold] [--seed 0]

Qi 2025 (abstract only) says the retrospective reader study showed that combining the DL
system's prediction with the radiologist's judgment improved diagnostic accuracy and
efficiency and reduced misdiagnosis; it publishes no reader numbers. The reader study here is
on the 5-class task (a radiologist must also tell normal from abnormal), at the patient level:
the model's call for a patient is the argmax of the mean softmax over its test images
(pooled out-of-fold test predictions, `pipeline.selected_test_rows`).

Reader calls come from `--readers R` (user data) or, on the phantom only, from SIMULATED
readers (every output then says "simulated"; see `simulate_readers` and the constants below,
which are assumptions, not the paper's).

Reader CSV (`--readers R`): columns case_id, reader, with_ai (0/1), call (a class name:
normal, anencephaly, encephalocele, holoprosencephaly, rachischisis), seconds (reading time,
> 0); optional reader_level (e.g. junior / senior). Every cell is checked; a problem raises
InputError naming the file, the 1-based data row and the column. Each reader must read each
of their cases once without and once with AI (paired design).

Writes results/cns/reader_study.csv and .md (per reader, per level and over all readers:
patient-level accuracy without and with AI with Wilson 95% CIs, McNemar's test of the paired
correctness, mean reading seconds without / with and the Wilcoxon signed-rank p, and the model
alone on the same cases) and reader_study.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from data_prep.errors import InputError
from reproduce import study
from reproduce.cns import pipeline

NAME = "reader_study"
TASK = "5class"
PAPER_TEXT = "not published (abstract: accuracy and efficiency improved)"
CI_METHOD = "wilson"
CALL_COLUMNS = ("case_id", "reader", "reader_level", "with_ai", "call", "seconds", "simulated")
REQUIRED_COLUMNS = ("case_id", "reader", "with_ai", "call", "seconds")
LEVEL_ORDER = ("junior", "attending", "senior")
MODEL_ROW = "ResNet-34 alone"
ALL_ROW = "all readers"

# ----------------------------------------------------------------------------- simulation
# ASSUMPTIONS, not data: Qi 2025 publishes no reader numbers (abstract only). These constants
# only drive SIMULATED readers on the phantom, to show the reader-study machinery works; they
# say nothing about real radiologists.

#: Simulated readers: (name, level), 2 junior and 2 senior.
SIMULATED_READERS: tuple[tuple[str, str], ...] = (
    ("simulated junior 1", "junior"), ("simulated junior 2", "junior"),
    ("simulated senior 1", "senior"), ("simulated senior 2", "senior"))
#: P(own call correct) per level and true class, without AI (assumed). A wrong call is drawn
#: uniformly among the other classes.
ACCURACY_WITHOUT_AI: dict[str, dict[str, float]] = {
    "junior": {"normal": 0.80, "anencephaly": 0.90, "encephalocele": 0.75,
               "holoprosencephaly": 0.60, "rachischisis": 0.65},
    "senior": {"normal": 0.92, "anencephaly": 0.97, "encephalocele": 0.88,
               "holoprosencephaly": 0.80, "rachischisis": 0.85},
}
#: P(adopt the model's call) per level, when the reader's own call is wrong, the model's call
#: differs from it and the model is confident (assumed).
ADOPT_PROBABILITY: dict[str, float] = {"junior": 0.80, "senior": 0.60}
#: The model is "confident" when its patient-level top probability is at least this (assumed).
CONFIDENT_PROBABILITY = 0.60
#: Reading time without AI: lognormal, (median seconds, sigma of log seconds) per level (assumed).
SECONDS_WITHOUT_AI: dict[str, tuple[float, float]] = {"junior": (90.0, 0.40), "senior": (60.0, 0.35)}
#: With AI the median reading time is multiplied by this per level (same sigma; assumed).
SPEEDUP_WITH_AI: dict[str, float] = {"junior": 0.75, "senior": 0.85}


def _rng(seed: int, reader_index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 2025, 7, int(reader_index)])


def simulate_readers(patients: pd.DataFrame, class_names: Sequence[str], seed: int,
                     readers: Sequence[tuple[str, str]] = SIMULATED_READERS) -> pd.DataFrame:
    """Simulated reads of every patient by every reader, once without and once with AI.

    `patients`: pipeline.patient_level rows (case_id, y_true = index into class_names,
    p_<class>, predicted). Rules (constants above, all assumptions):
    - without AI: the reader's call is correct with probability ACCURACY_WITHOUT_AI[level]
      [true class]; otherwise a class drawn uniformly among the other classes;
    - with AI (the model's patient-level call shown): the reader keeps a correct own call
      (the same own impression as without AI); a wrong own call is replaced by the model's
      call with probability ADOPT_PROBABILITY[level] when the model's call differs from it
      and the model's top probability is >= CONFIDENT_PROBABILITY;
    - seconds: lognormal, median SECONDS_WITHOUT_AI[level][0] (x SPEEDUP_WITH_AI[level] with
      AI), sigma SECONDS_WITHOUT_AI[level][1], drawn independently for each read.
    Seeded per reader (numpy default_rng([seed, 2025, 7, reader index])): the same seed gives
    the same calls. Returns CALL_COLUMNS with simulated=True (without-AI rows first).
    """
    class_names = tuple(class_names)
    k = len(class_names)
    if k < 2:
        raise ValueError("the reader study needs at least two classes")
    cases = patients["case_id"].astype(str).to_numpy()
    y_true = patients["y_true"].to_numpy().astype(int)
    model_call = patients["predicted"].to_numpy().astype(int)
    proba = patients[[f"p_{name}" for name in class_names]].to_numpy(dtype=float)
    confident = proba.max(axis=1) >= CONFIDENT_PROBABILITY
    n = len(patients)
    frames = []
    for index, (reader, level) in enumerate(readers):
        rng = _rng(seed, index)
        u_correct, u_confusion, u_adopt = rng.random(n), rng.random(n), rng.random(n)
        z_without, z_with = rng.standard_normal(n), rng.standard_normal(n)
        p_correct = np.array([ACCURACY_WITHOUT_AI[level][class_names[t]] for t in y_true])
        # a wrong call: one of the k-1 other classes, uniformly
        offset = 1 + np.minimum((u_confusion * (k - 1)).astype(int), k - 2)
        own = np.where(u_correct < p_correct, y_true, (y_true + offset) % k)
        adopt = (own != y_true) & (model_call != own) & confident & (u_adopt < ADOPT_PROBABILITY[level])
        with_ai = np.where(adopt, model_call, own)
        median, sigma = SECONDS_WITHOUT_AI[level]
        seconds = {0: median * np.exp(sigma * z_without),
                   1: median * SPEEDUP_WITH_AI[level] * np.exp(sigma * z_with)}
        for flag, calls in ((0, own), (1, with_ai)):
            frames.append(pd.DataFrame({
                "case_id": cases, "reader": reader, "reader_level": level, "with_ai": flag,
                "call": [class_names[c] for c in calls], "seconds": seconds[flag],
                "simulated": True}))
    out = pd.concat(frames, ignore_index=True)[list(CALL_COLUMNS)]
    return out.sort_values(["with_ai"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- user CSV


def load_reader_csv(path: str | Path, cases: Sequence[str], class_names: Sequence[str]) -> pd.DataFrame:
    """Read and validate a user reader CSV against the study's test patients `cases`.

    Returns CALL_COLUMNS (simulated=False; reader_level "" when the CSV has no such column).
    """
    from reproduce.study import read_user_csv

    path = Path(path)
    frame = read_user_csv(path, "reader CSV")
    for column in REQUIRED_COLUMNS:
        if column not in frame.columns:
            raise InputError(path, f"missing required column (header has: "
                             f"{', '.join(frame.columns)}; needs case_id, reader, with_ai, "
                             "call, seconds, optional reader_level)", column=column)
    if frame.empty:
        raise InputError(path, "no reader calls: a header but no rows")
    frame = frame.apply(lambda column: column.astype(str).str.strip())
    has_level = "reader_level" in frame.columns
    known_cases = {str(c) for c in cases}
    classes = {name.lower(): name for name in class_names}
    level_of: dict[str, tuple[str, int]] = {}
    seen: dict[tuple[str, str, int], int] = {}
    rows = []
    for number, record in enumerate(frame.to_dict("records"), start=1):
        for column in REQUIRED_COLUMNS + (("reader_level",) if has_level else ()):
            if not record[column]:
                raise InputError(path, "empty value", row=number, column=column)
        case, reader = record["case_id"], record["reader"]
        if case not in known_cases:
            raise InputError(path, f"case '{case}' is not one of the study's {len(known_cases)} "
                             "test patients", row=number, column="case_id")
        if record["with_ai"] not in ("0", "1"):
            raise InputError(path, f"with_ai '{record['with_ai']}' must be 0 (without AI) or 1 "
                             "(with AI)", row=number, column="with_ai")
        with_ai = int(record["with_ai"])
        call = classes.get(record["call"].lower())
        if call is None:
            raise InputError(path, f"call '{record['call']}' is not a class; use one of "
                             f"{', '.join(class_names)}", row=number, column="call")
        try:
            seconds = float(record["seconds"])
        except ValueError:
            seconds = np.nan
        if not (np.isfinite(seconds) and seconds > 0):
            raise InputError(path, f"seconds '{record['seconds']}' must be a positive number "
                             "(reading time)", row=number, column="seconds")
        level = record["reader_level"].lower() if has_level else ""
        if reader in level_of and level_of[reader][0] != level:
            raise InputError(path, f"reader '{reader}' has reader_level '{level_of[reader][0]}' "
                             f"in row {level_of[reader][1]} and '{level}' here", row=number,
                             column="reader_level")
        level_of.setdefault(reader, (level, number))
        key = (reader, case, with_ai)
        if key in seen:
            raise InputError(path, f"reader '{reader}' read case '{case}' "
                             f"{'with' if with_ai else 'without'} AI twice (first in row "
                             f"{seen[key]})", row=number, column="case_id")
        seen[key] = number
        rows.append({"case_id": case, "reader": reader, "reader_level": level,
                     "with_ai": with_ai, "call": call, "seconds": seconds, "simulated": False})
    for (reader, case, with_ai), number in seen.items():
        if (reader, case, 1 - with_ai) not in seen:
            raise InputError(path, f"reader '{reader}' read case '{case}' only "
                             f"{'with' if with_ai else 'without'} AI; each reader must read each "
                             "case both without and with AI (paired design)", row=number,
                             column="with_ai")
    return pd.DataFrame(rows, columns=list(CALL_COLUMNS))


def reader_calls(ctx: pipeline.StudyContext, patients: pd.DataFrame) -> pd.DataFrame:
    """The user's reader CSV, or simulated readers on the phantom; user data without a CSV is
    refused (readers are simulated only on the phantom)."""
    check_reader_source(ctx)
    if ctx.readers is not None:
        return load_reader_csv(ctx.readers, patients["case_id"].astype(str).tolist(),
                               ctx.spec.class_names)
    return simulate_readers(patients, ctx.spec.class_names, ctx.seed)


def check_reader_source(ctx: pipeline.StudyContext) -> None:
    if ctx.readers is None and not ctx.is_phantom:
        raise InputError(ctx.manifest, "the reader study needs --readers R (case_id, reader, "
                         "with_ai, call, seconds) on user data; readers are simulated only on "
                         "the phantom")


# ----------------------------------------------------------------------------- table


def _p(value) -> float:
    return float(value) if value is not None and np.isfinite(value) else np.nan


def _accuracy(correct: np.ndarray) -> tuple[float, float, float]:
    if correct.size == 0:
        return (np.nan, np.nan, np.nan)
    from reproduce import stats

    return stats.proportion_ci(int(correct.sum()), int(correct.size), method=CI_METHOD)


def _wilcoxon(without: np.ndarray, with_ai: np.ndarray) -> float:
    from scipy import stats as sps

    difference = without - with_ai
    if difference.size == 0 or np.all(difference == 0):
        return np.nan
    return float(sps.wilcoxon(without, with_ai).pvalue)


def _pairs(calls: pd.DataFrame, truth: pd.Series, model: pd.Series) -> pd.DataFrame:
    """One row per (reader, case): truth, model, call and seconds without and with AI."""
    without = calls.loc[calls["with_ai"] == 0, ["reader", "case_id", "reader_level", "call", "seconds"]]
    with_ai = calls.loc[calls["with_ai"] == 1, ["reader", "case_id", "call", "seconds"]]
    pairs = without.merge(with_ai, on=["reader", "case_id"], how="inner", suffixes=("", "_ai"),
                          sort=False)
    pairs["y_true"] = pairs["case_id"].map(truth).to_numpy()
    pairs["model"] = pairs["case_id"].map(model).to_numpy()
    return pairs


def _summary_row(label: str, level: str, kind: str, pairs: pd.DataFrame, simulated: bool) -> dict:
    from reproduce import stats

    truth = pairs["y_true"].to_numpy()
    without_correct = pairs["call_index"].to_numpy() == truth
    with_correct = pairs["call_index_ai"].to_numpy() == truth
    first = ~pairs["case_id"].duplicated().to_numpy()  # the model: once per distinct case
    model_correct = pairs["model"].to_numpy()[first] == truth[first]
    acc0, acc1, accm = _accuracy(without_correct), _accuracy(with_correct), _accuracy(model_correct)
    mcnemar = stats._mcnemar(without_correct, with_correct, stats.MCNEMAR_EXACT_BELOW)
    seconds0, seconds1 = pairs["seconds"].to_numpy(float), pairs["seconds_ai"].to_numpy(float)
    return {
        "row": label, "reader_level": level, "kind": kind, "simulated": int(simulated),
        "n_readers": int(pairs["reader"].nunique()), "n_cases": int(pairs["case_id"].nunique()),
        "n_reads": int(len(pairs)),
        "accuracy_without_ai": acc0[0], "accuracy_without_ai_lo": acc0[1],
        "accuracy_without_ai_hi": acc0[2],
        "accuracy_with_ai": acc1[0], "accuracy_with_ai_lo": acc1[1], "accuracy_with_ai_hi": acc1[2],
        "accuracy_change": acc1[0] - acc0[0],
        "improved": int(np.sum(~without_correct & with_correct)),
        "worsened": int(np.sum(without_correct & ~with_correct)),
        "switched_to_model": int(np.sum((pairs["call_index_ai"].to_numpy() != pairs["call_index"].to_numpy())
                                        & (pairs["call_index_ai"].to_numpy() == pairs["model"].to_numpy()))),
        "mcnemar_p": _p(mcnemar["p"]), "mcnemar_statistic": _p(mcnemar["statistic"]),
        "misdiagnosis_without_ai": 1.0 - acc0[0], "misdiagnosis_with_ai": 1.0 - acc1[0],
        "mean_seconds_without_ai": float(seconds0.mean()),
        "mean_seconds_with_ai": float(seconds1.mean()),
        "median_seconds_without_ai": float(np.median(seconds0)),
        "median_seconds_with_ai": float(np.median(seconds1)),
        "wilcoxon_p": _wilcoxon(seconds0, seconds1),
        "model_accuracy": accm[0], "model_accuracy_lo": accm[1], "model_accuracy_hi": accm[2],
        "paper": PAPER_TEXT,
        "mcnemar_method": mcnemar["method"],
    }


def _level_rank(level: str) -> tuple[int, str]:
    return (LEVEL_ORDER.index(level) if level in LEVEL_ORDER else len(LEVEL_ORDER), level)


def build_table(patients: pd.DataFrame, calls: pd.DataFrame,
                class_names: Sequence[str]) -> pd.DataFrame:
    """The reader-study table from patient-level model calls and reader calls (a pure function).

    `patients`: case_id, y_true (class index), predicted (the model's class index).
    `calls`: CALL_COLUMNS (call = class name; with_ai 0/1). Rows: the model alone (on every
    case read), then one per reader (level order, then name), one per level (pooled reads of
    its readers; only when the calls name levels) and all readers pooled. Each row's
    model_accuracy is the model's on that row's distinct cases.
    """
    class_names = tuple(class_names)
    index = {name: i for i, name in enumerate(class_names)}
    patients = patients.assign(case_id=patients["case_id"].astype(str))
    truth = patients.set_index("case_id")["y_true"].astype(int)
    model = patients.set_index("case_id")["predicted"].astype(int)
    calls = calls.assign(case_id=calls["case_id"].astype(str),
                         reader_level=calls["reader_level"].fillna("").astype(str),
                         with_ai=calls["with_ai"].astype(int))
    unknown = sorted(set(calls["case_id"]) - set(truth.index))
    if unknown:
        raise ValueError(f"reader calls on cases without a model call: {unknown[:5]}")
    pairs = _pairs(calls, truth, model)
    if pairs.empty:
        raise ValueError("no (reader, case) read both without and with AI")
    pairs["call_index"] = pairs["call"].map(index)
    pairs["call_index_ai"] = pairs["call_ai"].map(index)
    if pairs[["call_index", "call_index_ai"]].isna().any().any():
        raise ValueError(f"reader calls must be class names: {', '.join(class_names)}")
    simulated = bool(calls["simulated"].astype(bool).all())
    read_cases = list(dict.fromkeys(pairs["case_id"]))
    y_cases, m_cases = truth.loc[read_cases].to_numpy(), model.loc[read_cases].to_numpy()
    model_acc = _accuracy(m_cases == y_cases)
    rows = [{"row": MODEL_ROW, "reader_level": "model", "kind": "model", "simulated": 0,
             "n_readers": 0, "n_cases": len(read_cases), "n_reads": len(read_cases),
             "model_accuracy": model_acc[0], "model_accuracy_lo": model_acc[1],
             "model_accuracy_hi": model_acc[2], "misdiagnosis_model": 1.0 - model_acc[0],
             "paper": PAPER_TEXT, "mcnemar_method": ""}]
    level_of = pairs.groupby("reader", sort=False)["reader_level"].first()
    for reader in sorted(level_of.index, key=lambda r: (_level_rank(level_of[r]), r)):
        part = pairs[pairs["reader"] == reader]
        rows.append(_summary_row(str(reader), level_of[reader], "reader", part, simulated))
    levels = sorted({lv for lv in level_of if lv}, key=_level_rank)
    if levels:
        for level in levels:
            part = pairs[pairs["reader_level"] == level]
            rows.append(_summary_row(f"{level} readers", level, "level", part, simulated))
    rows.append(_summary_row(ALL_ROW, "all", "all", pairs, simulated))
    table = pd.DataFrame(rows)
    first = list(rows[1].keys()) + [c for c in table.columns if c not in rows[1]]
    ordered = [c for c in first if c not in ("paper", "mcnemar_method")]
    table = table[ordered + ["paper", "mcnemar_method"]]
    table.attrs["simulated"] = simulated
    return table


# ----------------------------------------------------------------------------- markdown


def _p_text(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _seconds_text(value: float) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.1f}"


def _simulation_rules() -> list[str]:
    accuracy = "; ".join(
        f"{level} " + ", ".join(f"{name} {p:.2f}" for name, p in rates.items())
        for level, rates in ACCURACY_WITHOUT_AI.items())
    adopt = ", ".join(f"{level} {p:.2f}" for level, p in ADOPT_PROBABILITY.items())
    seconds = ", ".join(f"{level} median {m:.0f} s, sigma {s:.2f}"
                        for level, (m, s) in SECONDS_WITHOUT_AI.items())
    speed = ", ".join(f"{level} x{f:.2f}" for level, f in SPEEDUP_WITH_AI.items())
    readers = ", ".join(name for name, _ in SIMULATED_READERS)
    return [
        "- SIMULATED READERS (the phantom has no radiologists; Qi 2025 publishes no reader "
        "numbers, so every parameter below is an ASSUMPTION, the module constants of "
        f"reproduce/cns/readers.py). Readers: {readers}; each reads every test patient once "
        "without and once with the model's patient-level call shown.",
        f"  - Without AI: the call is correct with a level- and class-specific probability "
        f"({accuracy}); a wrong call is drawn uniformly among the other classes.",
        f"  - With AI: the reader keeps a correct own call (the same own impression as without "
        f"AI); a wrong own call is replaced by the model's call with probability {adopt} when "
        f"the model's call differs and the model is confident (top patient-level probability "
        f">= {CONFIDENT_PROBABILITY:.2f}). By construction AI can only help here (no automation "
        "bias), so the rows test the machinery, not the paper's claim.",
        f"  - Reading time: lognormal without AI ({seconds}); with AI the median is multiplied "
        f"by {speed} (same sigma); each read drawn independently.",
        "  - Seeded by --seed (numpy default_rng([seed, 2025, 7, reader index])): the same seed "
        "gives the same calls and times.",
    ]


def markdown(ctx: pipeline.StudyContext, table: pd.DataFrame,
             patients: pd.DataFrame | None = None) -> str:
    """The table's markdown; `patients` (patient_level rows) adds, for simulated readers, on
    how many patients the model was confident enough to be adopted."""
    simulated = bool(table.attrs.get("simulated", table.loc[table["kind"] != "model",
                                                            "simulated"].astype(bool).all()))
    shown = []
    for row in table.to_dict("records"):
        is_model = row["kind"] == "model"
        name = row["row"]
        if row["simulated"] and "simulated" not in name:
            name += " (simulated)"
        shown.append({
            "Reader": name, "Level": row["reader_level"],
            "Cases": str(row["n_cases"]), "Reads": "" if is_model else str(row["n_reads"]),
            "Accuracy without AI": "" if is_model else study.ci_text(
                row["accuracy_without_ai"], row["accuracy_without_ai_lo"], row["accuracy_without_ai_hi"]),
            "Accuracy with AI": "" if is_model else study.ci_text(
                row["accuracy_with_ai"], row["accuracy_with_ai_lo"], row["accuracy_with_ai_hi"]),
            "Improved / worsened": "" if is_model else f"{int(row['improved'])} / {int(row['worsened'])}",
            "Switched to model's call": "" if is_model else str(int(row["switched_to_model"])),
            "McNemar p": "" if is_model else _p_text(row["mcnemar_p"]),
            "Mean s without AI": "" if is_model else _seconds_text(row["mean_seconds_without_ai"]),
            "Mean s with AI": "" if is_model else _seconds_text(row["mean_seconds_with_ai"]),
            "Wilcoxon p": "" if is_model else _p_text(row["wilcoxon_p"]),
            "Model alone (same cases)": study.ci_text(
                row["model_accuracy"], row["model_accuracy_lo"], row["model_accuracy_hi"]),
            "Paper": PAPER_TEXT,
        })
    title_tag = " -- SIMULATED READERS" if simulated else ""
    model_row = table.iloc[0]
    lines = [
        f"# Reader study: radiologists without and with ResNet-34 (Qi 2025){title_tag}",
        "",
        f"**{study.results_label(ctx)}{'; simulated readers' if simulated else ''}.**",
        "",
        study.markdown_table(pd.DataFrame(shown)),
        "",
        f"- Paper (Qi 2025): {PAPER_TEXT}. The abstract says combining the DL system's "
        "prediction with the radiologist's judgment improved diagnostic accuracy and "
        "efficiency and reduced the misdiagnosis rate; no reader numbers are available.",
        f"- Task: {pipeline.TASK_TITLES[TASK]} (5 classes: a reader must also tell normal from "
        f"abnormal), patient level; {int(model_row['n_cases'])} test patients read. The model's "
        "call: argmax of the mean softmax over the patient's test images.",
    ]
    if simulated:
        lines += _simulation_rules()
        if patients is not None:
            proba = patients[[f"p_{name}" for name in ctx.spec.class_names]].to_numpy(float)
            confident = proba.max(axis=1) >= CONFIDENT_PROBABILITY
            right = patients["predicted"].to_numpy() == patients["y_true"].to_numpy()
            lines.append(
                f"  - Here the model was confident on {int(confident.sum())} of {len(patients)} "
                f"patients ({int((confident & right).sum())} of them called right): only there "
                "can a simulated reader take its call.")
    else:
        lines.append(f"- Reader calls from {ctx.readers}.")
    lines += [
        "- Accuracy: share of a reader's patients called correctly (5 classes), Wilson 95% CI; "
        "misdiagnosis rate = 1 - accuracy (in the CSV). Improved / worsened: reads wrong "
        "without and right with AI / the reverse.",
        "- McNemar: paired test of correctness without versus with AI on the same cases (exact "
        "binomial when fewer than 25 discordant pairs, else chi-square with continuity "
        "correction; the CSV names the method). Wilcoxon: signed-rank test of the paired "
        "reading times (scipy).",
        "- Level and all-reader rows pool the reads of their readers; their McNemar and "
        "Wilcoxon tests treat reads as independent, which ignores the clustering by reader "
        "and by case (a multi-reader multi-case analysis would not).",
        "- Model alone: ResNet-34's patient-level accuracy on the same (distinct) cases, Wilson "
        "95% CI.",
        *pipeline.common_notes(ctx)[:4],
        "",
        "How to read: compare each reader's accuracy without and with AI (a small McNemar p "
        "says the change is beyond chance on these cases) and with the model alone; a lower "
        "mean time with AI with a small Wilcoxon p is the efficiency gain.",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figure


_LEVEL_COLOURS = {"junior": "#d68910", "attending": "#7d3c98", "senior": "#239b56"}
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _p_label(p: float) -> str:
    text = _p_text(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def figure(table: pd.DataFrame, calls: pd.DataFrame | None = None, *, title: str = ""):
    """Left: accuracy without -> with AI per reader (paired dots, the model's accuracy as a
    dashed line); right: mean reading time without -> with AI per reader (and each read)."""
    from matplotlib.figure import Figure

    simulated = bool(table.attrs.get("simulated", False))
    readers = table[table["kind"] == "reader"]
    model_row = table[table["kind"] == "model"].iloc[0]
    fig = Figure(figsize=(10.0, 5.2), dpi=150, layout="constrained")
    ax_acc, ax_time = fig.subplots(1, 2)
    rng = np.random.default_rng(0)  # jitter of the individual reads only
    seen_in_level: dict[str, int] = {}
    for position, row in enumerate(readers.to_dict("records")):
        colour = _LEVEL_COLOURS.get(row["reader_level"], "#5d6d7e")
        marker = _MARKERS[seen_in_level.get(row["reader_level"], 0) % len(_MARKERS)]
        seen_in_level[row["reader_level"]] = seen_in_level.get(row["reader_level"], 0) + 1
        shift = (position - (len(readers) - 1) / 2) * 0.04
        x = np.array([0.0, 1.0]) + shift
        acc = [row["accuracy_without_ai"], row["accuracy_with_ai"]]
        lo = [row["accuracy_without_ai_lo"], row["accuracy_with_ai_lo"]]
        hi = [row["accuracy_without_ai_hi"], row["accuracy_with_ai_hi"]]
        ax_acc.errorbar(x, acc, yerr=[np.subtract(acc, lo), np.subtract(hi, acc)], fmt="-" + marker,
                        color=colour, capsize=3, lw=1.4, ms=5, alpha=0.9,
                        label=f"{row['row']} ({_p_label(row['mcnemar_p'])})")
        secs = [row["mean_seconds_without_ai"], row["mean_seconds_with_ai"]]
        ax_time.plot(x, secs, "-" + marker, color=colour, lw=1.4, ms=6,
                     label=f"{row['row']} ({_p_label(row['wilcoxon_p'])})")
        if calls is not None:
            mine = calls[calls["reader"] == row["row"]]
            for flag in (0, 1):
                values = mine.loc[mine["with_ai"].astype(int) == flag, "seconds"].to_numpy(float)
                ax_time.scatter(flag + shift + rng.uniform(-0.015, 0.015, values.size), values,
                                s=6, color=colour, alpha=0.25, lw=0)
    ax_acc.axhline(model_row["model_accuracy"], color="#c0392b", ls="--", lw=1.3,
                   label=f"ResNet-34 alone ({model_row['model_accuracy']:.2f})")
    for ax in (ax_acc, ax_time):
        ax.set_xticks([0, 1], ["without AI", "with AI"])
        ax.set_xlim(-0.4, 1.4)
        ax.spines[["top", "right"]].set_visible(False)
    ax_acc.set_ylim(max(0.0, min(readers["accuracy_without_ai_lo"].min(),
                                 model_row["model_accuracy"]) - 0.05), 1.02)
    ax_acc.set_ylabel("patient-level accuracy (Wilson 95% CI)")
    ax_acc.set_title("Accuracy per reader (McNemar p)", fontsize=10)
    ax_acc.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2,
                  frameon=False)
    ax_time.set_ylabel("reading time per case (s)")
    ax_time.set_title("Mean reading time per reader (Wilcoxon p)", fontsize=10)
    ax_time.set_ylim(bottom=0)
    ax_time.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2,
                   frameon=False)
    tag = "SIMULATED readers -- " if simulated else ""
    fig.suptitle(f"{tag}{title}", fontsize=10.5)
    return fig


# ----------------------------------------------------------------------------- run


def run(ctx: pipeline.StudyContext) -> tuple:
    check_reader_source(ctx)
    study.check_results_dir(ctx)
    rows, _ = pipeline.selected_test_rows(ctx)
    patients = pipeline.patient_level(rows, ctx.spec.class_names, "mean")
    calls = reader_calls(ctx, patients)
    table = build_table(patients, calls, ctx.spec.class_names)
    written = study.write_table(ctx, NAME, table, markdown(ctx, table, patients))
    label = study.results_label(ctx)
    fig = figure(table, calls, title=f"Qi 2025 reader study (5 classes, patient level); {label}")
    return (*written, study.write_figure(ctx, NAME, fig))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce cns readers",
                                     description=__doc__.split("\n\n")[0])
    pipeline.add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return study.run_cli(lambda args: (run(pipeline.context_from_args(args, TASK)), 0)[1],
                         build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
