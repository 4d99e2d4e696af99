"""Tests of reproduce/stats.py against scikit-learn, scipy, statsmodels, slow reference code
written here, and the numbers printed in Tang 2023 (Tables 1-3)."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm
from statsmodels.stats.proportion import proportion_confint

from reproduce import stats as st

TOL = 1e-12


def _scores(kind: str, n_pos: int = 40, n_neg: int = 50, seed: int = 0):
    """Labels (positives first) and scores with a chosen amount of ties."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, dtype=int), np.zeros(n_neg, dtype=int)]
    raw = rng.normal(loc=y * 1.2, scale=1.0)
    if kind == "continuous":
        s = raw
    elif kind == "rounded":  # many ties within and across classes
        s = np.round(raw, 1)
    elif kind == "coarse":  # a handful of distinct values: heavy ties
        s = np.clip(np.round(raw), -1, 2)
    elif kind == "all_tied":
        s = np.full(y.size, 0.5)
    elif kind == "perfect":
        s = y + rng.uniform(0, 0.5, y.size)
    else:
        raise AssertionError(kind)
    order = rng.permutation(y.size)  # classes interleaved
    return y[order], s[order]


TIE_KINDS = ["continuous", "rounded", "coarse", "all_tied", "perfect"]


# ----------------------------------------------------------------------------- slow references


def slow_placements(y, s):
    """O(m n) DeLong placement values, written from the definition."""
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)  # V10 (per positive), V01 (per negative)


def slow_delong_cov(y, a, b):
    v10a, v01a = slow_placements(y, a)
    v10b, v01b = slow_placements(y, b)
    m, n = v10a.size, v01a.size

    def cov(p, q):
        return np.sum((p - p.mean()) * (q - q.mean())) / (p.size - 1)

    var_a = cov(v10a, v10a) / m + cov(v01a, v01a) / n
    var_b = cov(v10b, v10b) / m + cov(v01b, v01b) / n
    cov_ab = cov(v10a, v10b) / m + cov(v01a, v01b) / n
    return v10a.mean(), v10b.mean(), var_a, var_b, cov_ab


def slow_proc_sensitivity(y, s, specificity):
    """pROC coords(roc, x, input='specificity', ret='sensitivity'), transcribed literally.

    The curve is built as pROC builds it: thresholds at -inf, the midpoints between sorted
    distinct values and +inf, in increasing order, so sp rises from 0 to 1 and se falls.
    """
    values = np.unique(s)
    thresholds = np.r_[-np.inf, (values[:-1] + values[1:]) / 2, np.inf]
    cases, controls = s[y == 1], s[y == 0]
    se = np.array([np.mean(cases > t) for t in thresholds])
    sp = np.array([np.mean(controls <= t) for t in thresholds])
    exact = np.flatnonzero(np.abs(sp - specificity) <= 1e-9)
    if exact.size:
        return se[exact[0]]  # R's match(): the first point, i.e. the highest sensitivity
    nxt = int(np.flatnonzero(sp > specificity)[0])
    proportion = (specificity - sp[nxt - 1]) / (sp[nxt] - sp[nxt - 1])
    return se[nxt - 1] - proportion * (se[nxt - 1] - se[nxt])


def newcombe_wilson_cc(k, n, alpha=0.05):
    """Wilson score interval with continuity correction (Newcombe 1998, method 4)."""
    z = sps.norm.ppf(1 - alpha / 2)
    p = k / n
    lo = (2 * n * p + z**2 - 1 - z * math.sqrt(z**2 - 2 - 1 / n + 4 * p * (n * (1 - p) + 1))) / (2 * (n + z**2))
    hi = (2 * n * p + z**2 + 1 + z * math.sqrt(z**2 + 2 - 1 / n + 4 * p * (n * (1 - p) - 1))) / (2 * (n + z**2))
    return (0.0 if k == 0 else max(lo, 0.0)), (1.0 if k == n else min(hi, 1.0))


# ----------------------------------------------------------------------------- bootstrap AUC


@pytest.mark.parametrize("kind", TIE_KINDS)
def test_vectorised_bootstrap_auc_equals_sklearn_on_each_replicate(kind):
    y, s = _scores(kind)
    indices = st.stratified_bootstrap_indices(y, n_boot=25, seed=3)
    fast = st.bootstrap_auc(y, s, indices)
    slow = np.array([skm.roc_auc_score(y[row], s[row]) for row in indices])
    np.testing.assert_allclose(fast, slow, rtol=0, atol=TOL)


def test_bootstrap_auc_also_handles_unstratified_weights():
    y, s = _scores("rounded", seed=5)
    rng = np.random.default_rng(0)
    indices = rng.integers(0, y.size, size=(20, y.size))  # ordinary bootstrap, both classes present
    slow = np.array([skm.roc_auc_score(y[row], s[row]) for row in indices])
    np.testing.assert_allclose(st.bootstrap_auc(y, s, indices), slow, rtol=0, atol=TOL)


@pytest.mark.parametrize("k,rounded", [(3, False), (4, True), (5, False)])
def test_multiclass_bootstrap_equals_sklearn_on_each_replicate(k, rounded):
    rng = np.random.default_rng(k)
    codes = np.repeat(np.arange(k), rng.integers(3, 9, size=k))
    logits = rng.normal(size=(codes.size, k)) + 1.5 * np.eye(k)[codes]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if rounded:  # ties inside and across classes
        proba = np.round(proba, 1)
    indices = st.class_stratified_bootstrap_indices(codes, n_boot=30, seed=1)
    fast = st.bootstrap_multiclass(codes, proba, indices)
    labels = list(range(k))
    onehot = np.eye(k, dtype=int)
    for b, row in enumerate(indices):
        y, p = codes[row], proba[row]
        assert fast["micro_auroc"][b] == pytest.approx(
            skm.roc_auc_score(onehot[y], p, average="micro"), abs=TOL)
        assert fast["macro_auroc"][b] == pytest.approx(
            np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in labels]), abs=TOL)
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            y, p.argmax(axis=1), labels=labels, zero_division=0)
        for c in labels:
            assert fast[f"auroc_{c}"][b] == pytest.approx(skm.roc_auc_score(y == c, p[:, c]), abs=TOL)
            assert fast[f"precision_{c}"][b] == pytest.approx(precision[c], abs=TOL)
            assert fast[f"recall_{c}"][b] == pytest.approx(recall[c], abs=TOL)
            assert fast[f"f1_{c}"][b] == pytest.approx(f1[c], abs=TOL)


def test_stratified_indices_keep_class_sizes_and_are_seeded():
    y, _ = _scores("continuous", n_pos=3, n_neg=30)
    indices = st.stratified_bootstrap_indices(y, n_boot=200, seed=7)
    assert indices.shape == (200, 33)
    assert np.all(y[indices].sum(axis=1) == 3)
    np.testing.assert_array_equal(indices, st.stratified_bootstrap_indices(y, n_boot=200, seed=7))
    assert not np.array_equal(indices, st.stratified_bootstrap_indices(y, n_boot=200, seed=8))


@pytest.mark.parametrize("kind", TIE_KINDS)
def test_auc_ci_bootstrap_is_percentile_of_sklearn_replicates(kind):
    y, s = _scores(kind, n_pos=2, n_neg=9, seed=1)  # tiny positive class: still no NaN
    auc, lo, hi = st.auc_ci(y, s, n_boot=300, seed=11)
    indices = st.stratified_bootstrap_indices(y, n_boot=300, seed=11)
    replicates = [skm.roc_auc_score(y[row], s[row]) for row in indices]
    assert auc == pytest.approx(skm.roc_auc_score(y, s), abs=TOL)
    np.testing.assert_allclose([lo, hi], np.quantile(replicates, [0.025, 0.975]), rtol=0, atol=TOL)
    assert np.isfinite([lo, hi]).all() and lo <= hi
    assert st.auc_ci(y, s, n_boot=300, seed=11) == (auc, lo, hi)


# ----------------------------------------------------------------------------- DeLong


@pytest.mark.parametrize("kind", ["continuous", "rounded", "coarse", "perfect"])
def test_delong_variance_matches_placement_definition(kind):
    y, s = _scores(kind, seed=2)
    auc, _, _, var, _, = slow_delong_cov(y, s, s)
    assert st.delong_variance(y, s) == pytest.approx(var, rel=1e-10, abs=TOL)
    value, lo, hi = st.delong_ci(y, s)
    assert value == pytest.approx(skm.roc_auc_score(y, s), abs=TOL)
    half = sps.norm.ppf(0.975) * math.sqrt(var)
    assert lo == pytest.approx(max(0.0, auc - half), abs=TOL)
    assert hi == pytest.approx(min(1.0, auc + half), abs=TOL)
    assert st.auc_ci(y, s, method="delong") == (value, lo, hi)


@pytest.mark.parametrize("kind_a,kind_b,seed", [
    ("continuous", "continuous", 0), ("rounded", "coarse", 1), ("coarse", "coarse", 2), ("rounded", "continuous", 3),
])
def test_delong_test_matches_placement_definition(kind_a, kind_b, seed):
    y, a = _scores(kind_a, seed=seed)
    rng = np.random.default_rng(seed + 100)
    b = a + rng.normal(0, 1.0, a.size)  # correlated with a
    if kind_b == "coarse":
        b = np.round(b)
    auc_a, auc_b, var_a, var_b, cov_ab = slow_delong_cov(y, a, b)
    z_slow = (auc_a - auc_b) / math.sqrt(var_a + var_b - 2 * cov_ab)
    z, p = st.delong_test(y, a, b)
    assert z == pytest.approx(z_slow, rel=1e-10, abs=TOL)
    assert p == pytest.approx(2 * sps.norm.sf(abs(z_slow)), rel=1e-10, abs=TOL)
    z_swapped, p_swapped = st.delong_test(y, b, a)
    assert z_swapped == pytest.approx(-z, abs=TOL) and p_swapped == pytest.approx(p, abs=TOL)


def test_delong_test_of_identical_scores_is_null():
    y, s = _scores("rounded")
    assert st.delong_test(y, s, s) == (0.0, 1.0)
    assert st.delong_test(y, s, 3 * s + 1) == (0.0, 1.0)  # same ranking


# ----------------------------------------------------------------------------- proportions


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (12, 16), (43, 45), (50, 100), (86, 86), (3, 7)])
@pytest.mark.parametrize("method,statsmodels_method", [("wilson", "wilson"), ("exact", "beta")])
def test_proportion_ci_matches_statsmodels(k, n, method, statsmodels_method):
    p, lo, hi = st.proportion_ci(k, n, method=method)
    ref_lo, ref_hi = proportion_confint(k, n, alpha=0.05, method=statsmodels_method)
    assert p == k / n
    assert lo == pytest.approx(ref_lo, abs=1e-10) and hi == pytest.approx(ref_hi, abs=1e-10)


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (12, 16), (43, 45), (50, 100), (86, 86), (3, 7)])
def test_wald_and_wilson_cc_match_their_formulas(k, n):
    p = k / n
    half = sps.norm.ppf(0.975) * math.sqrt(p * (1 - p) / n)
    assert st.proportion_ci(k, n, method="wald") == pytest.approx((p, max(0, p - half), min(1, p + half)), abs=TOL)
    _, lo, hi = st.proportion_ci(k, n, method="wilson_cc")
    ref_lo, ref_hi = newcombe_wilson_cc(k, n)
    assert lo == pytest.approx(ref_lo, abs=1e-10) and hi == pytest.approx(ref_hi, abs=1e-10)


@pytest.mark.parametrize("k,n,paper_lo,paper_hi", [
    # Tang 2023 Table 2, sensitivity column (these three are named in the paper's text)
    (12, 16, 0.47, 0.92), (10, 12, 0.51, 0.97), (43, 45, 0.84, 0.99),
    # Table 2 specificity column, negatives = 186 test images minus the subtype's
    (161, 170, 0.90, 0.97), (161, 173, 0.88, 0.96), (163, 174, 0.89, 0.97), (130, 141, 0.86, 0.96),
    # Table 1 Pgds-ResNet specificity, 96/100
    (96, 100, 0.89, 0.99),
    # Table 3 sonographers, 33 diseased / 67 normal (accuracies 0.63, 0.74, 0.91 follow)
    (14, 33, 0.26, 0.61), (26, 33, 0.61, 0.90), (29, 33, 0.71, 0.96),
    (49, 67, 0.61, 0.83), (48, 67, 0.59, 0.82), (62, 67, 0.83, 0.97),
])
def test_pgds_default_ci_regenerates_tang_tables(k, n, paper_lo, paper_hi):
    assert st.PGDS_PROPORTION_CI == "wilson_cc"
    _, lo, hi = st.proportion_ci(k, n, method=st.PGDS_PROPORTION_CI)
    assert (round(lo, 2), round(hi, 2)) == (paper_lo, paper_hi)


def test_wald_does_not_regenerate_tang_table_2():
    wald = [st.proportion_ci(k, n, method="wald") for k, n in [(12, 16), (10, 12), (43, 45)]]
    assert [(round(lo, 2), round(hi, 2)) for _, lo, hi in wald] == [(0.54, 0.96), (0.62, 1.0), (0.9, 1.0)]


# ----------------------------------------------------------------------------- thresholds


def _brute_best(y, s, criterion):
    best, chosen = -np.inf, []
    for t in np.unique(s):
        value = criterion(y, (s >= t).astype(int))
        if value > best + 1e-15:
            best, chosen = value, [t]
        elif abs(value - best) <= 1e-15:
            chosen.append(t)
    return best, chosen


def _youden(y, calls):
    return skm.recall_score(y, calls) + skm.recall_score(1 - y, 1 - calls) - 1


@pytest.mark.parametrize("kind", ["continuous", "rounded", "coarse", "perfect"])
def test_threshold_max_f1_is_best_lowest_cutoff(kind):
    y, s = _scores(kind, seed=4)
    best, chosen = _brute_best(y, s, lambda yy, cc: skm.f1_score(yy, cc))
    t = st.threshold_max_f1(y, s)
    assert skm.f1_score(y, (s >= t).astype(int)) == pytest.approx(best, abs=TOL)
    assert t == min(chosen)


@pytest.mark.parametrize("kind", ["continuous", "rounded", "coarse", "perfect"])
def test_threshold_youden_is_best_highest_cutoff(kind):
    y, s = _scores(kind, seed=6)
    best, chosen = _brute_best(y, s, _youden)
    t = st.threshold_youden(y, s)
    assert _youden(y, (s >= t).astype(int)) == pytest.approx(best, abs=TOL)
    assert t == max(chosen)


def test_threshold_ties_documented_rule():
    # F1: cut 0.9 gives tp1 fp0 fn1 and cut 0.6 gives tp2 fp2 fn0, both F1 = 2/3: lowest wins
    y = np.array([1, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.7, 0.6])
    assert st.threshold_max_f1(y, s) == 0.6
    # Youden: cut 0.9 gives 0.5 - 0 and cut 0.7 gives 1 - 0.5, both J = 0.5: highest wins
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    assert st.threshold_youden(y, s) == 0.9


# ----------------------------------------------------------------------------- binary report


@pytest.mark.parametrize("kind,ci_method", [("rounded", "wilson_cc"), ("continuous", "exact"), ("coarse", "wald")])
def test_binary_report_matches_sklearn_and_slow_bootstrap(kind, ci_method):
    y, s = _scores(kind, seed=8)
    threshold = float(np.median(s))
    report = st.binary_report(y, s, threshold, ci_method=ci_method, n_boot=200, seed=5)
    calls = (s >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, calls).ravel()
    assert (report.tp, report.fp, report.tn, report.fn) == (tp, fp, tn, fn)
    assert report.sensitivity.value == pytest.approx(skm.recall_score(y, calls), abs=TOL)
    assert report.specificity.value == pytest.approx(skm.recall_score(1 - y, 1 - calls), abs=TOL)
    assert report.precision.value == pytest.approx(skm.precision_score(y, calls), abs=TOL)
    assert report.npv.value == pytest.approx(skm.precision_score(1 - y, 1 - calls), abs=TOL)
    assert report.accuracy.value == pytest.approx(skm.accuracy_score(y, calls), abs=TOL)
    assert report.f1.value == pytest.approx(skm.f1_score(y, calls), abs=TOL)
    assert report.sensitivity == st.Estimate(*st.proportion_ci(tp, tp + fn, method=ci_method))
    assert report.specificity == st.Estimate(*st.proportion_ci(tn, tn + fp, method=ci_method))
    assert report.precision == st.Estimate(*st.proportion_ci(tp, tp + fp, method=ci_method))
    indices = st.stratified_bootstrap_indices(y, n_boot=200, seed=5)
    slow_f1 = [skm.f1_score(y[row], calls[row]) for row in indices]
    np.testing.assert_allclose(report.f1[1:], np.quantile(slow_f1, [0.025, 0.975]), rtol=0, atol=TOL)
    assert tuple(report.auroc) == st.auc_ci(y, s, n_boot=200, seed=5)
    row = report.to_row()
    assert row["Sensitivity (95% CI)"] == report.sensitivity.fmt(2)
    assert report.as_dict()["f1_hi"] == report.f1.hi


def test_binary_report_empty_denominator_is_nan_and_delong_option():
    y, s = _scores("continuous")
    report = st.binary_report(y, s, threshold=float(s.max()) + 1, auc_method="delong", n_boot=50)
    assert report.tp == report.fp == 0 and math.isnan(report.precision.value)
    assert report.to_row()["Precision (95% CI)"] == "n/a"
    assert tuple(report.auroc) == st.delong_ci(y, s)


def test_tang_table_1_counts_from_rates():
    assert st.counts_from_rates(86, 100, 0.89, 0.96) == {"tp": 77, "fn": 9, "tn": 96, "fp": 4}
    y, calls = st.arrays_from_counts(tp=77, fn=9, tn=96, fp=4)
    assert st.confusion_counts(y, calls) == {"tp": 77, "fp": 4, "tn": 96, "fn": 9}
    metrics = st.call_metrics(y, calls)
    assert metrics["sensitivity"].fmt(2) == "0.90 (0.81–0.95)"  # paper: 0.89 (0.80–0.95)
    assert metrics["specificity"].fmt(2) == "0.96 (0.89–0.99)"  # paper: 0.96 (0.89–0.99)


# ----------------------------------------------------------------------------- ANOVA


@pytest.mark.parametrize("model,sensitivity,specificity,expected_f,paper_f", [
    ("Pgds-ResNet", 0.89, 0.96, 0.270, 0.196),
    ("ResNet-34", 0.50, 0.97, 19.68, 15.921),
    ("VGG-16", 0.41, 0.98, 31.47, 30.014),
    ("VGG-19", 0.45, 1.00, 28.51, 28.125),
])
def test_anova_vs_gold_regenerates_tang_table_1(model, sensitivity, specificity, expected_f, paper_f):
    counts = st.counts_from_rates(86, 100, sensitivity, specificity)
    y, calls = st.arrays_from_counts(**counts)
    f, p = st.anova_vs_gold(y, calls)
    assert f == pytest.approx(expected_f, abs=0.01)
    assert p == pytest.approx(sps.f.sf(f, 1, 2 * 186 - 2), rel=1e-9)
    assert (p < 0.01) == (model != "Pgds-ResNet")  # Table 1: p 0.658 vs < 0.01


def test_anova_is_zero_when_false_negatives_equal_false_positives():
    y, calls = st.arrays_from_counts(tp=50, fn=10, tn=40, fp=10)
    assert st.anova_vs_gold(y, calls) == pytest.approx((0.0, 1.0))


# ----------------------------------------------------------------------------- multi-class


def _multiclass(k=5, n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(k), rng.integers(0, k, n - k)]
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    logits = np.round(logits, 1)  # ties
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


@pytest.mark.parametrize("k", [2, 3, 5])
def test_multiclass_report_matches_sklearn(k):
    y, proba = _multiclass(k=k)
    names = [f"c{i}" for i in range(k)]
    report = st.multiclass_report(y, proba, names)
    onehot = np.eye(k)[y]
    for i, name in enumerate(names):
        assert report.auc_per_class[name] == pytest.approx(skm.roc_auc_score(y == i, proba[:, i]), abs=TOL)
        fpr, tpr, _ = skm.roc_curve(y == i, proba[:, i])
        np.testing.assert_allclose(report.roc_curves[name]["tpr"], tpr)
    assert report.auc_macro == pytest.approx(np.mean(list(report.auc_per_class.values())), abs=TOL)
    assert report.auc_micro == pytest.approx(skm.roc_auc_score(onehot.ravel(), proba.ravel()), abs=TOL)
    predicted = proba.argmax(axis=1)
    np.testing.assert_array_equal(report.confusion, skm.confusion_matrix(y, predicted, labels=range(k)))
    f1 = skm.f1_score(y, predicted, average=None, labels=range(k))
    np.testing.assert_allclose([report.per_class[n]["f1-score"] for n in names], f1, atol=TOL)
    assert report.accuracy == pytest.approx(skm.accuracy_score(y, predicted), abs=TOL)
    assert report.roc_macro["fpr"][0] == 0 and report.roc_macro["tpr"][-1] == pytest.approx(1.0)
    assert len(report.to_rows()) == k + 2
    by_name = st.multiclass_report(np.array(names)[y], proba, names)
    assert by_name.auc_micro == report.auc_micro


def test_multiclass_report_rejects_absent_class_and_unnormalised_rows():
    y, proba = _multiclass(k=3)
    with pytest.raises(ValueError, match="no case of class"):
        st.multiclass_report(np.where(y == 2, 0, y), proba, ["a", "b", "c"])
    with pytest.raises(ValueError, match="sum to 1"):
        st.multiclass_report(y, proba * 2, ["a", "b", "c"])


# ----------------------------------------------------------------------------- ROC CI band


@pytest.mark.parametrize("kind", ["continuous", "rounded", "coarse", "perfect", "all_tied"])
def test_sensitivity_at_specificity_matches_proc_coords(kind):
    y, s = _scores(kind, n_pos=20, n_neg=25, seed=9)
    grid = np.r_[np.linspace(0, 1, 101), np.arange(26) / 25]  # includes every exact specificity
    fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    fast = st.sensitivity_at_specificity(fpr, tpr, grid)
    slow = [slow_proc_sensitivity(y, s, g) for g in grid]
    np.testing.assert_allclose(fast, slow, rtol=0, atol=TOL)


def test_roc_ci_band_equals_slow_bootstrap_and_flags_readers():
    y, s = _scores("rounded", n_pos=30, n_neg=35, seed=10)
    band = st.roc_ci_band(y, s, n_boot=60, seed=2)
    indices = st.stratified_bootstrap_indices(y, n_boot=60, seed=2)
    slow = np.array([[slow_proc_sensitivity(y[r], s[r], g) for g in band.specificity] for r in indices])
    np.testing.assert_allclose(band.lower, np.quantile(slow, 0.025, axis=0), atol=TOL)
    np.testing.assert_allclose(band.upper, np.quantile(slow, 0.975, axis=0), atol=TOL)
    assert np.all(band.lower <= band.upper) and band.specificity.size == 101
    i = 80  # specificity 0.80
    assert not st.outside_band(band.median[i], band.specificity[i], band)
    assert st.outside_band(band.upper[i] + 0.05, band.specificity[i], band) is True
    assert band.lower[i] > 0.05 and st.outside_band(band.lower[i] - 0.05, band.specificity[i], band) is True
    # between grid points the bounds are interpolated
    mid_lower = (band.lower[80] + band.lower[81]) / 2
    assert not st.outside_band(mid_lower + 1e-9, 0.805, band)
    assert st.outside_band(mid_lower - 1e-6, 0.805, band)


# ----------------------------------------------------------------------------- readers


def test_reader_comparison_mcnemar_kappa_and_metrics():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(33, dtype=int), np.zeros(67, dtype=int)]
    model = np.where(rng.uniform(size=100) < 0.9, y, 1 - y)
    reader = np.where(rng.uniform(size=100) < 0.65, y, 1 - y)
    result = st.reader_comparison(y, model, reader)
    m_ok, r_ok = model == y, reader == y
    b, c = int(np.sum(m_ok & ~r_ok)), int(np.sum(~m_ok & r_ok))
    assert result["mcnemar"]["discordant"] == b + c
    if b + c < st.MCNEMAR_EXACT_BELOW:
        assert result["mcnemar"]["method"] == "exact binomial"
        assert result["mcnemar"]["p"] == pytest.approx(sps.binomtest(min(b, c), b + c).pvalue, abs=1e-12)
    else:
        assert result["mcnemar"]["method"] == "chi-square with continuity correction"
        chi2 = (abs(b - c) - 1) ** 2 / (b + c)
        assert result["mcnemar"]["statistic"] == pytest.approx(chi2, abs=1e-12)
        assert result["mcnemar"]["p"] == pytest.approx(sps.chi2.sf(chi2, 1), abs=1e-12)
    po = np.mean(model == reader)
    pe = np.mean(model) * np.mean(reader) + np.mean(1 - model) * np.mean(1 - reader)
    assert result["kappa"] == pytest.approx((po - pe) / (1 - pe), abs=1e-12)
    assert result["kappa"] == pytest.approx(skm.cohen_kappa_score(model, reader), abs=TOL)
    assert result["model"]["accuracy"].value == pytest.approx(np.mean(m_ok))
    assert result["reader"]["sensitivity"].value == pytest.approx(np.mean(reader[y == 1]))


@pytest.mark.parametrize("b,c,method", [(3, 9, "exact binomial"), (20, 40, "chi-square with continuity correction")])
def test_mcnemar_switches_on_discordant_count(b, c, method):
    # positives only disagree; build b model-right/reader-wrong and c model-wrong/reader-right
    n_agree = 50
    y = np.r_[np.ones(b + c + n_agree, dtype=int), np.zeros(10, dtype=int)]
    model = np.r_[np.ones(b), np.zeros(c), np.ones(n_agree), np.zeros(10)].astype(int)
    reader = np.r_[np.zeros(b), np.ones(c), np.ones(n_agree), np.zeros(10)].astype(int)
    result = st.reader_comparison(y, model, reader)
    assert result["mcnemar"]["method"] == method
    assert result["mcnemar_sensitivity"]["discordant"] == b + c
    assert result["mcnemar_specificity"]["discordant"] == 0 and result["mcnemar_specificity"]["p"] == 1.0


# ----------------------------------------------------------------------------- folds and cases


def test_cv_summary_sample_sd_and_text():
    folds = [{"auc": 0.9, "acc": 0.8}, {"auc": 0.85, "acc": 0.82}, {"auc": 0.88, "acc": 0.79},
             {"auc": 0.91, "acc": 0.81}, {"auc": 0.89, "acc": 0.84}]
    summary = st.cv_summary(folds)
    values = [f["auc"] for f in folds]
    assert summary["auc"]["sd"] == pytest.approx(np.std(values, ddof=1), abs=TOL)
    assert summary["auc"]["text"] == f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
    assert summary["auc"]["n_folds"] == 5
    assert st.cv_summary({"auc": values})["auc"] == summary["auc"]


def test_aggregate_by_case_mean_max_1d_and_2d():
    cases = np.array(["p2", "p1", "p2", "p3", "p1"])
    scores = np.array([0.2, 0.9, 0.6, 0.4, 0.5])
    ids, mean = st.aggregate_by_case(cases, scores)
    assert list(ids) == ["p2", "p1", "p3"]
    np.testing.assert_allclose(mean, [0.4, 0.7, 0.4], atol=TOL)
    np.testing.assert_allclose(st.aggregate_by_case(cases, scores, how="max")[1], [0.6, 0.9, 0.4])
    proba = np.column_stack([1 - scores, scores])
    np.testing.assert_allclose(st.aggregate_by_case(cases, proba)[1][:, 1], mean, atol=TOL)
    max2d = st.aggregate_by_case(cases, proba, how="max")[1]
    np.testing.assert_allclose(max2d.sum(axis=1), 1.0)
    np.testing.assert_array_equal(max2d.argmax(axis=1), [0, 1, 0])
    ids, labels = st.case_labels(cases, [1, 0, 1, 0, 0])
    assert list(labels) == [1, 0, 0]
    with pytest.raises(ValueError, match="p1"):
        st.case_labels(cases, [1, 0, 1, 0, 1])


# ----------------------------------------------------------------------------- bad input

_Y = np.array([1, 0, 1, 0, 1, 0, 1, 0])
_S = np.array([0.9, 0.1, 0.8, 0.3, 0.6, 0.4, 0.7, 0.2])
_ONE_CLASS = np.ones(8, dtype=int)
_NAN = _S.copy()
_NAN[3] = np.nan
_CALLS = (_S >= 0.5).astype(int)
_BAND = st.roc_ci_band(_Y, _S, n_boot=5)

BAD_INPUTS = [
    # (function, args, message fragment)
    (st.auc_ci, (_ONE_CLASS, _S), "single class"),
    (st.auc_ci, (_Y, _NAN), "NaN"),
    (st.auc_ci, (_Y, _S[:-1]), "has 7 values but y_true has 8"),
    (st.auc_ci, (_Y, _S, "delong"), None),  # fine: control row, must not raise
    (st.delong_test, (_ONE_CLASS, _S, _S), "single class"),
    (st.delong_test, (_Y, _S, _NAN), "score_b holds NaN"),
    (st.delong_test, (_Y, _S[:-1], _S), "score_a has 7 values"),
    (st.delong_variance, (_ONE_CLASS, _S), "single class"),
    (st.delong_variance, (_Y, _NAN), "NaN"),
    (st.delong_ci, (_Y, _S[:5]), "has 5 values"),
    (st.threshold_max_f1, (_ONE_CLASS, _S), "single class"),
    (st.threshold_max_f1, (_Y, _NAN), "NaN"),
    (st.threshold_youden, (_Y, _S[:3]), "has 3 values"),
    (st.threshold_youden, (np.r_[_Y[:-1], np.nan], _S), "y_true holds NaN"),
    (st.binary_report, (_ONE_CLASS, _S, 0.5), "single class"),
    (st.binary_report, (_Y, _NAN, 0.5), "NaN"),
    (st.binary_report, (_Y, _S[:-2], 0.5), "has 6 values"),
    (st.anova_vs_gold, (_ONE_CLASS, _CALLS), "single class"),
    (st.anova_vs_gold, (_Y, _NAN), "NaN"),
    (st.anova_vs_gold, (_Y, _CALLS[:-1]), "y_pred has 7 values"),
    (st.roc_ci_band, (_ONE_CLASS, _S), "single class"),
    (st.roc_ci_band, (_Y, _NAN), "NaN"),
    (st.roc_ci_band, (_Y, _S[1:]), "has 7 values"),
    (st.reader_comparison, (_ONE_CLASS, _CALLS, _CALLS), "single class"),
    (st.reader_comparison, (_Y, _CALLS, _NAN), "reader_calls holds NaN"),
    (st.reader_comparison, (_Y, _CALLS[:-1], _CALLS), "model_calls has 7 values"),
    (st.call_metrics, (_ONE_CLASS, _CALLS), "single class"),
    (st.stratified_bootstrap_indices, (_ONE_CLASS,), "single class"),
    (st.bootstrap_auc, (_Y, _NAN, np.zeros((2, 8), dtype=int)), "NaN"),
    (st.multiclass_report, (np.zeros(8, dtype=int), np.full((8, 2), 0.5), ["a", "b"]), "no case of class"),
    (st.multiclass_report, (_Y, np.column_stack([1 - _NAN, _NAN]), ["a", "b"]), "NaN"),
    (st.multiclass_report, (_Y, np.full((7, 2), 0.5), ["a", "b"]), "proba has 7 values"),
    (st.aggregate_by_case, (np.arange(8), _NAN), "NaN"),
    (st.aggregate_by_case, (np.arange(7), _S), "proba has 8 values but case_ids has 7"),
    (st.cv_summary, ({"auc": [0.9, float("nan")]},), "NaN"),
    (st.cv_summary, ({"auc": [0.9]},), "at least 2 folds"),
    (st.proportion_ci, (5, 4), r"successes must lie in \[0, n=4\]"),
    (st.proportion_ci, (0, 0), "n must be at least 1"),
    (st.proportion_ci, (3, 10, "agresti"), "method must be one of"),
    (st.outside_band, (float("nan"), 0.5, _BAND), "sensitivity must lie in"),
]


@pytest.mark.parametrize("function,args,message", BAD_INPUTS,
                         ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(BAD_INPUTS)])
def test_bad_input_raises_clear_value_error(function, args, message):
    if message is None:
        function(*args)
        return
    with pytest.raises(ValueError, match=message):
        function(*args)


def test_stats_module_does_not_import_tensorflow(repo_root):
    code = "import sys, reproduce.stats; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(repo_root))
    assert out.stdout.strip() == "False"
