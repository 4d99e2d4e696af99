"""Statistics for the four studies: every estimate and test their papers report.

What each paper reports and the function that computes it here:

* AUROC with a 95% CI -- :func:`auc_ci` (stratified bootstrap percentile CI, as R's pROC does,
  or DeLong's asymptotic CI); two correlated AUCs -- :func:`delong_test`.
* Sensitivity, specificity, accuracy, precision, NPV with CIs, F1 with a bootstrap CI --
  :func:`binary_report` (Tang 2023 Tables 1-2); proportions alone -- :func:`proportion_ci`.
  Tang 2023 calls its CIs "Wald", but its Table 2 is regenerated to two decimals by the Wilson
  score interval with continuity correction (R's ``prop.test``), so that is the default for the
  Pgds tables (:data:`PGDS_PROPORTION_CI`).
* The threshold: best F1 on the training set (Tang 2023, :func:`threshold_max_f1`) or Youden's J
  (the authors' test script, :func:`threshold_youden`); a case is called positive when
  ``score >= threshold``.
* The "ANOVA against the gold standard" of Tang 2023 Table 1 -- :func:`anova_vs_gold`.
* Per-class and micro/macro AUROC, per-class precision/recall/F1, confusion matrix, ROC and PR
  curves (Qi 2025, Shen 2024) -- :func:`multiclass_report`.
* Image-to-patient aggregation (Qi 2025's patient-level accuracy) -- :func:`aggregate_by_case`.
* Hong 2021: mean +- SD over five folds -- :func:`cv_summary`; the pROC ROC curve with a
  200-replicate bootstrap CI band and physicians' points tested against it --
  :func:`roc_ci_band`, :func:`outside_band`.
* Model versus reader on the same cases (Tang 2023 Table 3, Qi 2025 reader study) --
  :func:`reader_comparison` (McNemar, Cohen's kappa, each one's metrics).

Conventions: ``y_true`` holds 0/1 (1 = the disease, the positive class); a higher score means
more likely positive. Bad input (one class only, NaN, lengths that differ) raises ``ValueError``
naming the argument. scikit-learn, scipy and statsmodels compute everything they can; the
vectorised bootstrap, DeLong's variance (Sun and Xu 2014) and the pROC-style CI band are written
here and checked against slow independent implementations in ``tests/test_stats.py``.
1000 stratified bootstrap replicates of the AUROC for n=186 take a few milliseconds
(``bench/bench_stats.py``). This module imports neither TensorFlow nor Keras.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from scipy import stats as sps
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

#: Proportion CI used for the Pgds (Tang 2023) tables: it regenerates Table 2's CIs.
PGDS_PROPORTION_CI = "wilson_cc"
PROPORTION_CI_METHODS = ("wald", "wilson", "wilson_cc", "exact")
AUC_CI_METHODS = ("bootstrap", "delong")
#: McNemar switches from the exact binomial test to chi-square (with continuity correction)
#: when the discordant pairs reach this many.
MCNEMAR_EXACT_BELOW = 25
# Two specificities closer than this are the same ROC point (pROC compares them exactly; the
# tolerance only absorbs float noise such as 1 - 4/100 versus linspace(0, 1, 101)[96]).
_SPECIFICITY_TOL = 1e-9


class Estimate(NamedTuple):
    """A point estimate with the bounds of its confidence interval."""

    value: float
    lo: float
    hi: float

    def fmt(self, digits: int = 2) -> str:
        """'0.89 (0.80–0.95)' as the papers print it; 'n/a' when undefined."""
        if not np.isfinite(self.value):
            return "n/a"
        return f"{self.value:.{digits}f} ({self.lo:.{digits}f}–{self.hi:.{digits}f})"


# ----------------------------------------------------------------------------- input checks


def _as_1d(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    return array


def _binary_values(values: Any, name: str) -> np.ndarray:
    """0/1 (or bool) values as int64; NaN or any other value raises ValueError."""
    array = _as_1d(values, name)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold 0/1 (1 = positive), got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"{name} holds NaN or infinity (first at position {bad})")
    unexpected = ~np.isin(array, (0, 1))
    if unexpected.any():
        bad = int(np.flatnonzero(unexpected)[0])
        raise ValueError(
            f"{name} must hold only 0 and 1 (1 = positive); position {bad} holds {array[bad]!r}"
        )
    return array.astype(np.int64)


def _labels(y_true: Any, name: str = "y_true") -> np.ndarray:
    """Gold-standard 0/1 labels with both classes present."""
    labels = _binary_values(y_true, name)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        only = "positive (1)" if n_pos else "negative (0)"
        raise ValueError(
            f"{name} holds a single class (all {labels.size} are {only}); "
            "sensitivity, specificity and AUROC need both classes"
        )
    return labels


def _same_length(array: np.ndarray, n: int, name: str, reference: str = "y_true") -> None:
    if array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} values but {reference} has {n}")


def _scores(y_score: Any, n: int, name: str = "y_score") -> np.ndarray:
    array = _as_1d(y_score, name)
    _same_length(array, n, name)
    try:
        array = array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric: {error}") from None
    if not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"{name} holds NaN or infinity (first at position {bad})")
    return array


def _calls(calls: Any, n: int, name: str) -> np.ndarray:
    array = _binary_values(calls, name)
    _same_length(array, n, name)
    return array


def _check_alpha(alpha: float) -> None:
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")


def _check_n_boot(n_boot: int) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")


# ----------------------------------------------------------------------------- proportions


def proportion_ci(
    successes: int, n: int, method: str = "wilson_cc", alpha: float = 0.05
) -> tuple[float, float, float]:
    """Binomial proportion ``successes / n`` with its two-sided ``1 - alpha`` CI.

    Methods: ``"wald"`` (normal approximation, statsmodels ``"normal"``, clipped to [0, 1]),
    ``"wilson"`` (score interval), ``"wilson_cc"`` (score interval with continuity correction,
    Newcombe 1998 method 4; what R's ``prop.test`` prints and what regenerates Tang 2023's
    Table 2) and ``"exact"`` (Clopper-Pearson). The last three come from
    ``scipy.stats.binomtest(successes, n).proportion_ci``. Returns ``(p, lo, hi)``.
    """
    if method not in PROPORTION_CI_METHODS:
        raise ValueError(f"method must be one of {PROPORTION_CI_METHODS}, got {method!r}")
    _check_alpha(alpha)
    if int(successes) != successes or int(n) != n:
        raise ValueError(f"successes and n must be integers, got {successes!r} and {n!r}")
    successes, n = int(successes), int(n)
    if n < 1:
        raise ValueError(f"n must be at least 1 (no cases in the denominator), got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    p = successes / n
    if method == "wald":
        from statsmodels.stats.proportion import proportion_confint

        lo, hi = proportion_confint(successes, n, alpha=alpha, method="normal")
        return p, float(min(max(lo, 0.0), 1.0)), float(min(max(hi, 0.0), 1.0))
    scipy_method = {"wilson": "wilson", "wilson_cc": "wilsoncc", "exact": "exact"}[method]
    interval = sps.binomtest(successes, n).proportion_ci(
        confidence_level=1.0 - alpha, method=scipy_method
    )
    return p, float(interval.low), float(interval.high)


def _proportion_estimate(successes: int, n: int, method: str, alpha: float) -> Estimate:
    """Like proportion_ci, but an undefined proportion (n == 0) is NaN instead of an error."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan)
    return Estimate(*proportion_ci(successes, n, method=method, alpha=alpha))


def counts_from_rates(
    n_pos: int, n_neg: int, sensitivity: float, specificity: float
) -> dict[str, int]:
    """Confusion counts consistent with reported rates (rounded half up to whole images).

    Tang 2023 Table 1: ``counts_from_rates(86, 100, 0.89, 0.96)`` gives tp=77, fn=9, tn=96, fp=4.
    """
    tp = int(math.floor(sensitivity * n_pos + 0.5))
    tn = int(math.floor(specificity * n_neg + 0.5))
    if not (0 <= tp <= n_pos and 0 <= tn <= n_neg):
        raise ValueError(f"rates must lie in [0, 1], got {sensitivity} and {specificity}")
    return {"tp": tp, "fn": n_pos - tp, "tn": tn, "fp": n_neg - tn}


def arrays_from_counts(tp: int, fn: int, tn: int, fp: int) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, calls)`` 0/1 arrays realising a confusion matrix (positives first)."""
    if min(tp, fn, tn, fp) < 0:
        raise ValueError(f"counts must be non-negative, got tp={tp} fn={fn} tn={tn} fp={fp}")
    y_true = np.r_[np.ones(tp + fn, dtype=np.int64), np.zeros(tn + fp, dtype=np.int64)]
    calls = np.r_[
        np.ones(tp, dtype=np.int64), np.zeros(fn, dtype=np.int64),
        np.zeros(tn, dtype=np.int64), np.ones(fp, dtype=np.int64),
    ]
    return y_true, calls


def confusion_counts(y_true: Any, calls: Any) -> dict[str, int]:
    """tp, fp, tn, fn of 0/1 calls against 0/1 labels (sklearn ``confusion_matrix``)."""
    labels = _binary_values(y_true, "y_true")
    predicted = _calls(calls, labels.size, "calls")
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    return {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


def call_metrics(
    y_true: Any, calls: Any, *, ci_method: str = PGDS_PROPORTION_CI, alpha: float = 0.05
) -> dict[str, Estimate]:
    """Accuracy, sensitivity, specificity, precision (PPV), NPV of 0/1 calls, each with its
    proportion CI over the right denominator (n, positives, negatives, positive calls,
    negative calls). A proportion with an empty denominator is NaN."""
    labels = _labels(y_true)
    counts = confusion_counts(labels, _calls(calls, labels.size, "calls"))
    return _metrics_from_counts(counts, ci_method, alpha)


def _metrics_from_counts(counts: Mapping[str, int], ci_method: str, alpha: float) -> dict[str, Estimate]:
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    return {
        "accuracy": _proportion_estimate(tp + tn, tp + fp + tn + fn, ci_method, alpha),
        "sensitivity": _proportion_estimate(tp, tp + fn, ci_method, alpha),
        "specificity": _proportion_estimate(tn, tn + fp, ci_method, alpha),
        "precision": _proportion_estimate(tp, tp + fp, ci_method, alpha),
        "npv": _proportion_estimate(tn, tn + fn, ci_method, alpha),
    }


# ----------------------------------------------------------------------------- bootstrap AUC


def stratified_bootstrap_indices(y_true: Any, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` indices into the sample: each row draws the positives with replacement
    from the positives (first ``n_pos`` columns) and the negatives from the negatives, as
    pROC's stratified bootstrap does, so no replicate is single-class."""
    labels = _labels(y_true)
    _check_n_boot(n_boot)
    positives = np.flatnonzero(labels == 1)
    negatives = np.flatnonzero(labels == 0)
    rng = np.random.default_rng(seed)
    pos_draw = positives[rng.integers(0, positives.size, size=(n_boot, positives.size))]
    neg_draw = negatives[rng.integers(0, negatives.size, size=(n_boot, negatives.size))]
    return np.hstack([pos_draw, neg_draw])


def class_stratified_bootstrap_indices(codes: Any, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` indices: each replicate draws every class's members with replacement
    from that class (the multi-class form of :func:`stratified_bootstrap_indices`), so each
    replicate keeps the class counts and every one-vs-rest AUROC stays defined."""
    labels = _as_1d(codes, "codes")
    _check_n_boot(n_boot)
    rng = np.random.default_rng(seed)
    parts = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        parts.append(members[rng.integers(0, members.size, size=(n_boot, members.size))])
    return np.hstack(parts) if parts else np.zeros((n_boot, 0), dtype=np.int64)


def _replicate_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each original sample appears in each replicate: ``(n_boot, n)`` int64."""
    n_boot = indices.shape[0]
    flat = (indices + (np.arange(n_boot, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n)


def _auc_from_counts(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUROC (Mann-Whitney U with ties counted 1/2) of every weighted replicate at once.

    A replicate is the original sample with integer weights ``counts[b]``. For each positive
    the weighted number of negatives scoring below it (and tied with it) is read from a
    cumulative sum of the negatives' weights in score order, located once by ``searchsorted``;
    so all replicates cost O(n_boot * n) with no sort per replicate.
    """
    pos_scores = scores[labels == 1]
    neg_scores = scores[labels == 0]
    order = np.argsort(neg_scores, kind="stable")
    neg_sorted = neg_scores[order]
    below = np.searchsorted(neg_sorted, pos_scores, side="left")
    below_or_tied = np.searchsorted(neg_sorted, pos_scores, side="right")
    pos_weights = counts[:, labels == 1]
    neg_weights = counts[:, labels == 0][:, order]
    cumulative = np.zeros((counts.shape[0], neg_sorted.size + 1), dtype=np.int64)
    np.cumsum(neg_weights, axis=1, out=cumulative[:, 1:])
    # 2U = sum over positives of weight * (2 * #below + #tied) = weight * (#below + #below_or_tied)
    twice_u = np.einsum("bi,bi->b", pos_weights, cumulative[:, below] + cumulative[:, below_or_tied])
    n_pos = pos_weights.sum(axis=1)
    n_neg = neg_weights.sum(axis=1)
    if np.any(n_pos == 0) or np.any(n_neg == 0):
        raise ValueError("a bootstrap replicate holds a single class; use stratified indices")
    return twice_u / (2.0 * n_pos * n_neg)


def bootstrap_auc(y_true: Any, y_score: Any, indices: np.ndarray) -> np.ndarray:
    """AUROC of each replicate ``y_true[indices[b]], y_score[indices[b]]`` (vectorised).

    Equals ``sklearn.metrics.roc_auc_score`` on each replicate (to float rounding).
    """
    labels = _labels(y_true)
    scores = _scores(y_score, labels.size)
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.dtype.kind not in "iu":
        raise ValueError(f"indices must be a 2-D integer array, got shape {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= labels.size):
        raise ValueError(f"indices must lie in [0, {labels.size})")
    return _auc_from_counts(labels, scores, _replicate_counts(indices, labels.size))


def bootstrap_multiclass(codes: Any, proba: Any, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Every replicate's multi-class metrics at once (vectorised, no loop over replicates).

    ``codes`` (n,) class indices 0..K-1, ``proba`` (n, K), ``indices`` (n_boot, n) from
    :func:`class_stratified_bootstrap_indices`. Returns ``(n_boot,)`` arrays: ``micro_auroc``
    (all class-vs-rest decisions pooled, sklearn's ``average="micro"``), ``macro_auroc`` (mean
    of the one-vs-rest AUROCs, sklearn's ``multi_class="ovr", average="macro"``) and, per class
    ``c``, ``auroc_c``, ``precision_c``, ``recall_c``, ``f1_c`` of the argmax call (0 where
    undefined, as ``zero_division=0``). Each equals sklearn on ``codes[indices[b]]``.
    """
    labels = _as_1d(codes, "codes").astype(np.int64)
    probabilities = np.asarray(proba, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] != labels.size:
        raise ValueError(f"proba must have shape ({labels.size}, K), got {probabilities.shape}")
    k = probabilities.shape[1]
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.dtype.kind not in "iu":
        raise ValueError(f"indices must be a 2-D integer array, got shape {indices.shape}")
    counts = _replicate_counts(indices, labels.size)
    onehot = (labels[:, None] == np.arange(k)[None, :]).astype(np.int64)
    out: dict[str, np.ndarray] = {}
    class_aucs = []
    for c in range(k):
        class_aucs.append(_auc_from_counts(onehot[:, c], probabilities[:, c], counts))
        out[f"auroc_{c}"] = class_aucs[-1]
    out["macro_auroc"] = np.mean(class_aucs, axis=0)
    # micro: sample i's K decisions are entries i*K .. i*K+K-1 of the flattened arrays
    out["micro_auroc"] = _auc_from_counts(onehot.ravel(), probabilities.ravel(),
                                          np.repeat(counts, k, axis=1))
    predicted = probabilities.argmax(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        for c in range(k):
            true_pos = counts[:, (labels == c) & (predicted == c)].sum(axis=1)
            called = counts[:, predicted == c].sum(axis=1)
            actual = counts[:, labels == c].sum(axis=1)
            precision = np.where(called > 0, true_pos / called, 0.0)
            recall = np.where(actual > 0, true_pos / actual, 0.0)
            both = precision + recall
            out[f"precision_{c}"] = precision
            out[f"recall_{c}"] = recall
            out[f"f1_{c}"] = np.where(both > 0, 2 * precision * recall / both, 0.0)
    return out


# ----------------------------------------------------------------------------- DeLong


def _delong_components(labels: np.ndarray, scores_2d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong placement values of k score vectors (rows), by midranks (Sun & Xu 2014).

    V10[i] = fraction of negatives below positive i (ties 1/2); V01[j] = fraction of positives
    above negative j. AUC = mean(V10) = mean(V01).
    """
    positives = scores_2d[:, labels == 1]
    negatives = scores_2d[:, labels == 0]
    m, n = positives.shape[1], negatives.shape[1]
    if m < 2 or n < 2:
        raise ValueError(
            f"DeLong's variance needs at least 2 positives and 2 negatives, got {m} and {n}"
        )
    rank_pos = sps.rankdata(positives, axis=1)
    rank_neg = sps.rankdata(negatives, axis=1)
    rank_all = sps.rankdata(np.hstack([positives, negatives]), axis=1)
    auc = (rank_all[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    return auc, v10, v01


def _delong_covariance(labels: np.ndarray, scores_2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    auc, v10, v01 = _delong_components(labels, scores_2d)
    m, n = v10.shape[1], v01.shape[1]
    covariance = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return auc, covariance


def delong_variance(y_true: Any, y_score: Any) -> float:
    """DeLong's (1988) variance of the empirical AUROC: var(V10)/m + var(V01)/n (ddof=1)."""
    labels = _labels(y_true)
    scores = _scores(y_score, labels.size)
    _, covariance = _delong_covariance(labels, scores[None, :])
    return float(covariance[0, 0])


def delong_ci(y_true: Any, y_score: Any, alpha: float = 0.05) -> tuple[float, float, float]:
    """AUROC with DeLong's asymptotic normal CI, clipped to [0, 1] as pROC does."""
    _check_alpha(alpha)
    labels = _labels(y_true)
    scores = _scores(y_score, labels.size)
    auc, covariance = _delong_covariance(labels, scores[None, :])
    half_width = sps.norm.ppf(1.0 - alpha / 2.0) * math.sqrt(max(covariance[0, 0], 0.0))
    value = float(auc[0])
    return value, float(max(0.0, value - half_width)), float(min(1.0, value + half_width))


def delong_test(y_true: Any, score_a: Any, score_b: Any) -> tuple[float, float]:
    """Paired two-sided DeLong test of two correlated AUROCs on the same cases -> ``(z, p)``.

    z = (AUC_a - AUC_b) / sqrt(var_a + var_b - 2 cov_ab). When both the difference and its
    variance are 0 (identical rankings) z = 0, p = 1.
    """
    labels = _labels(y_true)
    scores = np.vstack(
        [_scores(score_a, labels.size, "score_a"), _scores(score_b, labels.size, "score_b")]
    )
    auc, covariance = _delong_covariance(labels, scores)
    difference = float(auc[0] - auc[1])
    variance = float(covariance[0, 0] + covariance[1, 1] - 2.0 * covariance[0, 1])
    if variance <= 0.0:
        if difference == 0.0:
            return 0.0, 1.0
        return math.copysign(math.inf, difference), 0.0
    z = difference / math.sqrt(variance)
    return z, float(2.0 * sps.norm.sf(abs(z)))


# ----------------------------------------------------------------------------- AUC CI


def auc_ci(
    y_true: Any,
    y_score: Any,
    method: str = "bootstrap",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AUROC (``sklearn.metrics.roc_auc_score``) with a two-sided ``1 - alpha`` CI.

    ``"bootstrap"``: percentile CI (numpy's linear quantile = R's type 7, as pROC's
    ``ci.auc``) of ``n_boot`` stratified replicates (:func:`stratified_bootstrap_indices`),
    deterministic for a seed. ``"delong"``: :func:`delong_ci`. Returns ``(auc, lo, hi)``.
    """
    if method not in AUC_CI_METHODS:
        raise ValueError(f"method must be one of {AUC_CI_METHODS}, got {method!r}")
    _check_alpha(alpha)
    labels = _labels(y_true)
    scores = _scores(y_score, labels.size)
    if method == "delong":
        return delong_ci(labels, scores, alpha=alpha)
    _check_n_boot(n_boot)
    auc = float(skm.roc_auc_score(labels, scores))
    counts = _replicate_counts(stratified_bootstrap_indices(labels, n_boot, seed), labels.size)
    replicates = _auc_from_counts(labels, scores, counts)
    lo, hi = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return auc, float(lo), float(hi)


# ----------------------------------------------------------------------------- thresholds


def threshold_max_f1(y_true: Any, y_score: Any) -> float:
    """Threshold with the best F1 (Tang 2023: chosen on the training set, 0.16 reported).

    Candidates are the distinct scores from ``sklearn.metrics.precision_recall_curve``; a case is
    positive when ``score >= threshold``. Ties in F1 go to the lowest threshold (the most
    sensitive of the equally good cut-offs).
    """
    labels = _labels(y_true)
    scores = _scores(y_score, labels.size)
    precision, recall, thresholds = skm.precision_recall_curve(labels, scores)
    precision, recall = precision[: thresholds.size], recall[: thresholds.size]
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    # thresholds increase along the array, so the first maximum is the lowest threshold.
    return float(thresholds[int(np.argmax(f1))])


def threshold_youden(y_true: Any, y_score: Any) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (the authors' script).

    Candidates are the distinct scores from ``sklearn.metrics.roc_curve`` (all points,
    ``drop_intermediate=False``); a case is positive when ``score >= threshold``. Ties go to
    the highest threshold (the first maximum of ``tpr - fpr``, as ``np.argmax`` over
    ``roc_curve`` gives; the most specific cut-off). If no cut-off beats chance (J <= 0
    everywhere) the result is ``inf``: every case negative.
    """
    labels = _labels(y_true)
    scores = _scores(y_score, labels.size)
    fpr, tpr, thresholds = skm.roc_curve(labels, scores, drop_intermediate=False)
    return float(thresholds[int(np.argmax(tpr - fpr))])


# ----------------------------------------------------------------------------- binary report


@dataclass(frozen=True)
class BinaryReport:
    """Metrics of one binary classifier at one threshold, each with its CI."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    auroc: Estimate
    sensitivity: Estimate
    specificity: Estimate
    accuracy: Estimate
    precision: Estimate
    npv: Estimate
    f1: Estimate
    ci_method: str
    auc_method: str
    n_boot: int
    alpha: float

    @property
    def n_pos(self) -> int:
        return self.tp + self.fn

    @property
    def n_neg(self) -> int:
        return self.tn + self.fp

    def as_dict(self) -> dict[str, Any]:
        """Flat numeric dict: ``<metric>``, ``<metric>_lo``, ``<metric>_hi`` and the counts."""
        row: dict[str, Any] = {"threshold": self.threshold, "tp": self.tp, "fp": self.fp,
                               "tn": self.tn, "fn": self.fn, "n_pos": self.n_pos, "n_neg": self.n_neg}
        for name in ("auroc", "sensitivity", "specificity", "accuracy", "precision", "npv", "f1"):
            estimate: Estimate = getattr(self, name)
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = estimate
        row.update(ci_method=self.ci_method, auc_method=self.auc_method, n_boot=self.n_boot, alpha=self.alpha)
        return row

    def to_row(self, digits: int = 2) -> dict[str, str]:
        """Strings for a paper-style table: 'Sensitivity (95% CI)': '0.89 (0.80–0.95)', ..."""
        level = f"{round(100 * (1 - self.alpha))}% CI"
        return {
            f"AUROC ({level})": self.auroc.fmt(digits),
            f"Sensitivity ({level})": self.sensitivity.fmt(digits),
            f"Specificity ({level})": self.specificity.fmt(digits),
            f"Accuracy ({level})": self.accuracy.fmt(digits),
            f"Precision ({level})": self.precision.fmt(digits),
            f"NPV ({level})": self.npv.fmt(digits),
            f"F1 ({level})": self.f1.fmt(digits),
            "TP/FN/TN/FP": f"{self.tp}/{self.fn}/{self.tn}/{self.fp}",
            "Threshold": f"{self.threshold:.{max(digits, 2)}f}",
        }


def binary_report(
    y_true: Any,
    y_score: Any,
    threshold: float,
    *,
    ci_method: str = PGDS_PROPORTION_CI,
    auc_method: str = "bootstrap",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> BinaryReport:
    """Everything Tang 2023 Tables 1-2 print for one model, with CIs.

    Calls are ``y_score >= threshold``. Sensitivity (tp / positives), specificity
    (tn / negatives), accuracy (/ n), precision (tp / positive calls) and NPV
    (tn / negative calls) get the proportion CI ``ci_method`` (:func:`proportion_ci`); an empty
    denominator gives NaN. F1 = 2tp / (2tp + fp + fn) gets a stratified-bootstrap percentile
    CI, AUROC the ``auc_method`` CI (:func:`auc_ci`); both bootstraps share the same
    ``n_boot`` replicates drawn with ``seed``.
    """
    if ci_method not in PROPORTION_CI_METHODS:
        raise ValueError(f"ci_method must be one of {PROPORTION_CI_METHODS}, got {ci_method!r}")
    if auc_method not in AUC_CI_METHODS:
        raise ValueError(f"auc_method must be one of {AUC_CI_METHODS}, got {auc_method!r}")
    _check_alpha(alpha)
    _check_n_boot(n_boot)
    labels = _labels(y_true)
    scores = _scores(y_score, labels.size)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    calls = (scores >= threshold).astype(np.int64)
    counts = confusion_counts(labels, calls)
    proportions = _metrics_from_counts(counts, ci_method, alpha)

    replicate_counts = _replicate_counts(stratified_bootstrap_indices(labels, n_boot, seed), labels.size)
    quantiles = [alpha / 2.0, 1.0 - alpha / 2.0]
    if auc_method == "bootstrap":
        replicate_aucs = _auc_from_counts(labels, scores, replicate_counts)
        auroc = Estimate(float(skm.roc_auc_score(labels, scores)), *map(float, np.quantile(replicate_aucs, quantiles)))
    else:
        auroc = Estimate(*delong_ci(labels, scores, alpha=alpha))

    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    f1_value = 2 * tp / (2 * tp + fp + fn)  # 2tp + fp + fn >= n_pos > 0
    tp_b = replicate_counts @ (calls * labels)
    fp_b = replicate_counts @ (calls * (1 - labels))
    fn_b = replicate_counts @ ((1 - calls) * labels)
    replicate_f1 = 2 * tp_b / (2 * tp_b + fp_b + fn_b)
    f1 = Estimate(f1_value, *map(float, np.quantile(replicate_f1, quantiles)))

    return BinaryReport(
        threshold=float(threshold), tp=tp, fp=fp, tn=counts["tn"], fn=fn, auroc=auroc,
        f1=f1, ci_method=ci_method, auc_method=auc_method, n_boot=int(n_boot), alpha=float(alpha),
        **proportions,
    )


# ----------------------------------------------------------------------------- ANOVA


def anova_vs_gold(y_true: Any, y_pred: Any) -> tuple[float, float]:
    """Tang 2023 Table 1's "ANOVA against the gold standard": returns ``(F, p)``.

    What is compared: two groups of N numbers each, one per test image. Group 1 holds the
    gold-standard label of every test image (1 = genetic disease, 0 = normal); group 2 holds
    the model's binary call for the same images (1 = called genetic disease at the chosen
    threshold). A one-way ANOVA (``scipy.stats.f_oneway(labels, calls)``) tests whether the two
    group means differ, with 1 and 2N - 2 degrees of freedom. The means are the prevalence and
    the proportion of positive calls, which differ by (fn - fp) / N; so F is large when the
    model calls "disease" much less (or more) often than the disease occurs, and F = 0 when
    false negatives equal false positives, however many there are. It is not a test of
    accuracy, and it treats paired calls as independent groups; we compute it only because the
    paper reports it. With Tang's 86 diseased and 100 normal test images and the reported
    sensitivity/specificity it gives F = 0.27 for Pgds-ResNet (paper 0.196), 19.7 for
    ResNet-34 (15.9), 31.5 for VGG-16 (30.0) and 28.5 for VGG-19 (28.1). For a paired
    comparison of two raters use :func:`reader_comparison` (McNemar).
    """
    labels = _labels(y_true)
    calls = _calls(y_pred, labels.size, "y_pred")
    if labels.sum() == calls.sum():
        # Equal group means (fn == fp): F is exactly 0; f_oneway's float noise can give
        # a tiny negative F and a NaN p.
        return 0.0, 1.0
    result = sps.f_oneway(labels.astype(np.float64), calls.astype(np.float64))
    return float(result.statistic), float(result.pvalue)


# ----------------------------------------------------------------------------- multi-class


@dataclass(frozen=True)
class MulticlassReport:
    """One-vs-rest and averaged AUROCs, per-class metrics, confusion matrix and curves."""

    class_names: tuple[str, ...]
    auc_per_class: dict[str, float]
    auc_micro: float
    auc_macro: float
    accuracy: float
    per_class: dict[str, dict[str, float]]  # precision, recall, f1-score, support
    confusion: np.ndarray  # rows = truth, columns = prediction, in class_names order
    roc_curves: dict[str, dict[str, np.ndarray]]  # fpr, tpr, thresholds
    pr_curves: dict[str, dict[str, np.ndarray]]  # precision, recall, thresholds
    roc_micro: dict[str, np.ndarray] = field(default_factory=dict)  # fpr, tpr
    roc_macro: dict[str, np.ndarray] = field(default_factory=dict)  # fpr, mean tpr

    def to_rows(self, digits: int = 3) -> list[dict[str, str]]:
        """One row per class plus micro and macro rows, as strings for a table."""
        rows = []
        for name in self.class_names:
            metrics = self.per_class[name]
            rows.append({
                "class": name, "AUROC": f"{self.auc_per_class[name]:.{digits}f}",
                "precision": f"{metrics['precision']:.{digits}f}",
                "recall": f"{metrics['recall']:.{digits}f}",
                "F1": f"{metrics['f1-score']:.{digits}f}", "support": str(int(metrics["support"])),
            })
        blank = {"precision": "", "recall": "", "F1": "", "support": ""}
        rows.append({"class": "micro-average", "AUROC": f"{self.auc_micro:.{digits}f}", **blank})
        rows.append({"class": "macro-average", "AUROC": f"{self.auc_macro:.{digits}f}", **blank})
        return rows


def _class_codes(y_true: Any, class_names: Sequence[str]) -> np.ndarray:
    array = _as_1d(y_true, "y_true")
    k = len(class_names)
    if array.dtype.kind in "biu" or (array.dtype.kind == "f" and np.all(np.isfinite(array))
                                      and np.all(array == np.round(array))):
        codes = array.astype(np.int64)
        bad = (codes < 0) | (codes >= k)
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            raise ValueError(f"y_true position {position} holds {array[position]!r}, not a class index in [0, {k})")
        return codes
    if array.dtype.kind == "f":
        raise ValueError("y_true holds NaN or non-integer class indices")
    lookup = {str(name): index for index, name in enumerate(class_names)}
    codes = np.empty(array.size, dtype=np.int64)
    for position, value in enumerate(array):
        if str(value) not in lookup:
            raise ValueError(f"y_true position {position} holds {value!r}, not one of {list(class_names)}")
        codes[position] = lookup[str(value)]
    return codes


def multiclass_report(y_true: Any, proba: Any, class_names: Sequence[str]) -> MulticlassReport:
    """Qi 2025 / Shen 2024 style evaluation of class probabilities ``proba`` (n, K).

    ``y_true``: class indices 0..K-1 or names from ``class_names``; rows of ``proba`` must sum
    to 1 (softmax outputs). Per-class AUROC is one-vs-rest; macro = ``roc_auc_score(...,
    multi_class="ovr", average="macro")`` (unweighted mean of the per-class AUROCs); micro =
    ``roc_auc_score`` over the ``label_binarize``-d labels with ``average="micro"`` (all
    class-vs-rest decisions pooled). The predicted class is the argmax; precision, recall and
    F1 come from ``classification_report`` (0 where undefined). Every class must occur in
    ``y_true``.
    """
    class_names = tuple(str(name) for name in class_names)
    k = len(class_names)
    if k < 2 or len(set(class_names)) != k:
        raise ValueError(f"class_names must hold at least 2 distinct names, got {list(class_names)}")
    codes = _class_codes(y_true, class_names)
    probabilities = np.asarray(proba, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != k:
        raise ValueError(f"proba must have shape (n, {k}), got {probabilities.shape}")
    _same_length(probabilities, codes.size, "proba")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("proba holds NaN or infinity")
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("rows of proba must sum to 1 (apply softmax to logits first)")
    missing = [class_names[c] for c in range(k) if not np.any(codes == c)]
    if missing:
        raise ValueError(f"y_true holds no case of class(es) {missing}; one-vs-rest AUROC needs every class")

    indices = list(range(k))
    onehot = label_binarize(codes, classes=indices) if k > 2 else np.column_stack([1 - codes, codes])
    auc_per_class, roc_curves, pr_curves = {}, {}, {}
    for index, name in enumerate(class_names):
        auc_per_class[name] = float(skm.roc_auc_score(onehot[:, index], probabilities[:, index]))
        fpr, tpr, roc_thresholds = skm.roc_curve(onehot[:, index], probabilities[:, index])
        roc_curves[name] = {"fpr": fpr, "tpr": tpr, "thresholds": roc_thresholds}
        precision, recall, pr_thresholds = skm.precision_recall_curve(onehot[:, index], probabilities[:, index])
        pr_curves[name] = {"precision": precision, "recall": recall, "thresholds": pr_thresholds}
    if k > 2:
        auc_macro = float(skm.roc_auc_score(codes, probabilities, multi_class="ovr", average="macro", labels=indices))
    else:
        auc_macro = float(np.mean(list(auc_per_class.values())))
    auc_micro = float(skm.roc_auc_score(onehot, probabilities, average="micro"))
    micro_fpr, micro_tpr, _ = skm.roc_curve(onehot.ravel(), probabilities.ravel())
    macro_fpr = np.unique(np.concatenate([curve["fpr"] for curve in roc_curves.values()]))
    macro_tpr = np.mean([np.interp(macro_fpr, c["fpr"], c["tpr"]) for c in roc_curves.values()], axis=0)

    predicted = probabilities.argmax(axis=1)
    report = skm.classification_report(
        codes, predicted, labels=indices, target_names=list(class_names), output_dict=True, zero_division=0
    )
    per_class = {name: {key: float(value) for key, value in report[name].items()} for name in class_names}
    return MulticlassReport(
        class_names=class_names, auc_per_class=auc_per_class, auc_micro=auc_micro, auc_macro=auc_macro,
        accuracy=float(skm.accuracy_score(codes, predicted)), per_class=per_class,
        confusion=skm.confusion_matrix(codes, predicted, labels=indices),
        roc_curves=roc_curves, pr_curves=pr_curves,
        roc_micro={"fpr": micro_fpr, "tpr": micro_tpr}, roc_macro={"fpr": macro_fpr, "tpr": macro_tpr},
    )


# ----------------------------------------------------------------------------- ROC CI band


@dataclass(frozen=True)
class RocBand:
    """Bootstrap CI of sensitivity at fixed specificities (pROC ``ci.se``), ascending."""

    specificity: np.ndarray
    sensitivity: np.ndarray  # the observed ROC curve at these specificities
    lower: np.ndarray
    median: np.ndarray
    upper: np.ndarray
    n_boot: int
    alpha: float


def sensitivity_at_specificity(fpr: np.ndarray, tpr: np.ndarray, specificities: np.ndarray) -> np.ndarray:
    """Sensitivity of an empirical ROC curve at given specificities, as pROC's ``coords``.

    ``fpr``, ``tpr``: all points of ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    Where the curve has points at the specificity, the highest sensitivity among them (the
    top of a vertical step); elsewhere linear interpolation between the neighbouring points.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    # Collapse the curve to its distinct fpr values: the bottom and top of each vertical step.
    distinct, first = np.unique(fpr, return_index=True)
    last = np.r_[first[1:] - 1, fpr.size - 1]
    bottom, top = tpr[first], tpr[last]
    target = 1.0 - np.asarray(specificities, dtype=np.float64)
    right = np.clip(np.searchsorted(distinct, target - _SPECIFICITY_TOL, side="left"), 0, distinct.size - 1)
    on_point = np.abs(distinct[right] - target) <= _SPECIFICITY_TOL
    left = np.clip(right - 1, 0, distinct.size - 1)
    span = distinct[right] - distinct[left]
    fraction = np.divide(target - distinct[left], span, out=np.zeros_like(target), where=span > 0)
    interpolated = top[left] + fraction * (bottom[right] - top[left])
    return np.where(on_point, top[right], interpolated)


def roc_ci_band(
    y_true: Any,
    y_score: Any,
    n_boot: int = 200,
    specificities: Iterable[float] | None = None,
    alpha: float = 0.05,
    seed: int = 0,
) -> RocBand:
    """Hong 2021's ROC CI band: pROC ``ci.se(roc, specificities, boot.n=200)``.

    For each of ``n_boot`` stratified bootstrap replicates the empirical ROC curve is rebuilt
    and its sensitivity read at each specificity (:func:`sensitivity_at_specificity`); the band
    is the percentile (R type 7) ``alpha/2`` and ``1 - alpha/2`` quantiles. Default
    specificities: 0, 0.01, ..., 1.
    """
    labels = _labels(y_true)
    scores = _scores(y_score, labels.size)
    _check_alpha(alpha)
    _check_n_boot(n_boot)
    grid = np.linspace(0.0, 1.0, 101) if specificities is None else np.asarray(list(specificities), dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)) or grid.min() < 0 or grid.max() > 1:
        raise ValueError("specificities must be a non-empty list of numbers in [0, 1]")
    grid = np.sort(grid)
    fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    observed = sensitivity_at_specificity(fpr, tpr, grid)
    indices = stratified_bootstrap_indices(labels, n_boot, seed)
    replicates = np.empty((n_boot, grid.size))
    for b, row in enumerate(indices):
        fpr_b, tpr_b, _ = skm.roc_curve(labels[row], scores[row], drop_intermediate=False)
        replicates[b] = sensitivity_at_specificity(fpr_b, tpr_b, grid)
    lower, median, upper = np.quantile(replicates, [alpha / 2.0, 0.5, 1.0 - alpha / 2.0], axis=0)
    return RocBand(specificity=grid, sensitivity=observed, lower=lower, median=median, upper=upper,
                   n_boot=int(n_boot), alpha=float(alpha))


def outside_band(sensitivity: float, specificity: float, band: RocBand) -> bool:
    """True when a reader's (sensitivity, specificity) point lies outside the model's CI band.

    The band's bounds are linearly interpolated at the reader's specificity; a point on a
    bound counts as inside. Hong 2021 calls the reader and the model different when True.
    """
    for name, value in (("sensitivity", sensitivity), ("specificity", specificity)):
        if not (np.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    lower = float(np.interp(specificity, band.specificity, band.lower))
    upper = float(np.interp(specificity, band.specificity, band.upper))
    return bool(sensitivity < lower or sensitivity > upper)


# ----------------------------------------------------------------------------- readers


def _mcnemar(first_correct: np.ndarray, second_correct: np.ndarray, exact_below: int) -> dict[str, Any]:
    from statsmodels.stats.contingency_tables import mcnemar

    table = np.array([
        [np.sum(first_correct & second_correct), np.sum(first_correct & ~second_correct)],
        [np.sum(~first_correct & second_correct), np.sum(~first_correct & ~second_correct)],
    ])
    discordant = int(table[0, 1] + table[1, 0])
    exact = discordant < exact_below
    result = mcnemar(table, exact=exact, correction=True)
    return {
        "table": table, "discordant": discordant,
        "method": "exact binomial" if exact else "chi-square with continuity correction",
        "statistic": float(result.statistic), "p": float(result.pvalue),
    }


def reader_comparison(
    y_true: Any,
    model_calls: Any,
    reader_calls: Any,
    *,
    ci_method: str = PGDS_PROPORTION_CI,
    alpha: float = 0.05,
    exact_below: int = MCNEMAR_EXACT_BELOW,
) -> dict[str, Any]:
    """Model versus one reader on the same cases (0/1 calls).

    ``mcnemar``: statsmodels' McNemar test on the 2x2 table of (model correct, reader correct);
    exact binomial when the discordant pairs number fewer than ``exact_below`` (25), otherwise
    chi-square with continuity correction; ``method`` says which. ``mcnemar_sensitivity`` and
    ``mcnemar_specificity`` repeat it within the positives and within the negatives.
    ``kappa``: Cohen's kappa between the model's and the reader's calls (sklearn; NaN when both
    call every case the same). ``model`` / ``reader``: :func:`call_metrics` of each.
    """
    labels = _labels(y_true)
    model = _calls(model_calls, labels.size, "model_calls")
    reader = _calls(reader_calls, labels.size, "reader_calls")
    model_correct = model == labels
    reader_correct = reader == labels
    positive = labels == 1
    if np.all(model == model[0]) and np.all(reader == model[0]):
        kappa = math.nan  # no variation in either rater: kappa is 0/0
    else:
        kappa = float(skm.cohen_kappa_score(model, reader))
    return {
        "mcnemar": _mcnemar(model_correct, reader_correct, exact_below),
        "mcnemar_sensitivity": _mcnemar(model_correct[positive], reader_correct[positive], exact_below),
        "mcnemar_specificity": _mcnemar(model_correct[~positive], reader_correct[~positive], exact_below),
        "kappa": kappa,
        "model": call_metrics(labels, model, ci_method=ci_method, alpha=alpha),
        "reader": call_metrics(labels, reader, ci_method=ci_method, alpha=alpha),
    }


# ----------------------------------------------------------------------------- cross-validation


def cv_summary(per_fold_metrics: Sequence[Mapping[str, float]] | Mapping[str, Sequence[float]],
               digits: int = 4) -> dict[str, dict[str, Any]]:
    """Mean +- SD over folds as Hong 2021 prints it: the SD is the sample SD (ddof=1).

    Accepts a list with one ``{metric: value}`` dict per fold, or ``{metric: [value per fold]}``.
    Returns ``{metric: {"mean", "sd", "n_folds", "text"}}`` with text like "0.8860 ± 0.0211".
    """
    if isinstance(per_fold_metrics, Mapping):
        columns = {str(name): list(values) for name, values in per_fold_metrics.items()}
    else:
        folds = list(per_fold_metrics)
        if not folds:
            raise ValueError("per_fold_metrics is empty")
        names = list(folds[0])
        for number, fold in enumerate(folds, start=1):
            if set(fold) != set(names):
                raise ValueError(f"fold {number} has metrics {sorted(fold)}, fold 1 has {sorted(names)}")
        columns = {str(name): [fold[name] for fold in folds] for name in names}
    if not columns:
        raise ValueError("per_fold_metrics holds no metric")
    summary = {}
    for name, values in columns.items():
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or array.size < 2:
            raise ValueError(f"metric {name!r} needs at least 2 folds for a sample SD, got {array.size}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"metric {name!r} holds NaN or infinity in fold {int(np.flatnonzero(~np.isfinite(array))[0]) + 1}")
        mean, sd = float(array.mean()), float(array.std(ddof=1))
        summary[name] = {"mean": mean, "sd": sd, "n_folds": int(array.size),
                         "text": f"{mean:.{digits}f} ± {sd:.{digits}f}"}
    return summary


# ----------------------------------------------------------------------------- image -> case


def _case_codes(case_ids: Any) -> tuple[np.ndarray, np.ndarray]:
    """Distinct case ids in order of first appearance, and each row's index into them."""
    ids = _as_1d(case_ids, "case_ids")
    as_text = np.array([str(value) for value in ids], dtype=object)
    for position, value in enumerate(ids):
        if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
            raise ValueError(f"case_ids position {position} is empty or NaN")
    _, first, inverse = np.unique(as_text, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return ids[first[order]], rank[inverse.ravel()]


def aggregate_by_case(case_ids: Any, proba: Any, how: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Image-level scores to case (patient) level: ``(case ids, aggregated scores)``.

    ``proba``: 1-D scores (binary) or (n, K) class probabilities. ``how="mean"`` averages the
    images of a case; ``how="max"`` takes the maximum, and for 2-D input then rescales each
    row to sum to 1 (the argmax is unchanged) so the result stays a probability vector.
    Cases come in order of first appearance.
    """
    if how not in ("mean", "max"):
        raise ValueError(f"how must be 'mean' or 'max', got {how!r}")
    cases, codes = _case_codes(case_ids)
    values = np.asarray(proba, dtype=np.float64)
    if values.ndim not in (1, 2):
        raise ValueError(f"proba must be 1-D scores or 2-D class probabilities, got shape {values.shape}")
    _same_length(values, codes.size, "proba", "case_ids")
    if not np.all(np.isfinite(values)):
        raise ValueError("proba holds NaN or infinity")
    matrix = values.reshape(values.shape[0], -1)
    if how == "mean":
        sums = np.zeros((cases.size, matrix.shape[1]))
        np.add.at(sums, codes, matrix)
        aggregated = sums / np.bincount(codes, minlength=cases.size)[:, None]
    else:
        aggregated = np.full((cases.size, matrix.shape[1]), -np.inf)
        np.maximum.at(aggregated, codes, matrix)
        if values.ndim == 2:
            aggregated = aggregated / aggregated.sum(axis=1, keepdims=True)
    return cases, (aggregated[:, 0] if values.ndim == 1 else aggregated)


def case_labels(case_ids: Any, y_true: Any) -> tuple[np.ndarray, np.ndarray]:
    """One label per case, in :func:`aggregate_by_case` order; a case with two labels raises."""
    cases, codes = _case_codes(case_ids)
    labels = _as_1d(y_true, "y_true")
    _same_length(labels, codes.size, "y_true", "case_ids")
    result = np.empty(cases.size, dtype=labels.dtype)
    seen = np.zeros(cases.size, dtype=bool)
    for code, label in zip(codes, labels):
        if seen[code] and result[code] != label:
            raise ValueError(f"case {cases[code]!r} has images labelled both {result[code]!r} and {label!r}")
        result[code], seen[code] = label, True
    return cases, result


def pointing_game_headline(scores) -> dict[str, float]:
    """The localisation headline of a gradcam_localisation table (rows with `correct`,
    `pointing_game_hit`, `chance_hit`, `energy_inside`): the pointing-game hit rate on the
    correctly called rows with its Wilson interval with continuity correction, the rate a
    maximum dropped at random would reach, and the mean energy share inside the masks; NaN
    when no row is correct."""
    values = dict.fromkeys(("pointing_game_correct", "pointing_game_chance_correct",
                            "energy_inside_correct", "pointing_game_correct_lo",
                            "pointing_game_correct_hi"), float("nan"))
    correct = scores[scores["correct"].astype(bool)]
    if len(correct):
        hits = int(correct["pointing_game_hit"].astype(bool).sum())
        _, lo, hi = proportion_ci(hits, len(correct), PGDS_PROPORTION_CI)
        values.update({"pointing_game_correct": hits / len(correct),
                       "pointing_game_correct_lo": lo, "pointing_game_correct_hi": hi,
                       "pointing_game_chance_correct": float(correct["chance_hit"].mean()),
                       "energy_inside_correct": float(correct["energy_inside"].mean())})
    return values
