"""The papers' reported numbers in reproduce.paper_values equal the printed text.

The table lines below are copied verbatim from ../shared/papers/pgds_tang2023.md (the journal
text flattens each table row into one line); a parser turns them back into numbers and the
stored values must match them. Where ../shared is present the lines are also checked to
occur verbatim in the paper file.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from scipy import stats

from reproduce import paper_values as pv

TABLE1_LINES = {
    "Pgds-ResNet": "Pgds-ResNet0.98 (0.97–0.99)0.89 (0.80–0.95)0.96 (0.89–0.99)0.920.6580.196",
    "ResNet-34": "ResNet-340.83 (0.80–0.86)0.50 (0.40–0.60)0.97 (0.91–0.99)0.65<0.0115.921",
    "VGG-16": "VGG-160.84 (0.81–0.86)0.41 (0.30–0.52)0.98 (0.92–0.99)0.57<0.0130.014",
    "VGG-19": "VGG-190.92 (0.89–0.93)0.45 (0.34–0.56)1.00 (0.95–1.00)0.62<0.0128.125",
}
TABLE2_LINES = {
    "all": "All genetic diseases860.90 (77/86)0.89 (0.80–0.95)0.96 (0.89–0.99)0.92",
    "T13": "Trisomy 13 syndrome160.75 (12/16)0.75 (0.47–0.92)0.95 (0.90–0.97)0.65",
    "T18": "Trisomy 18 syndrome130.92 (12/13)0.92 (0.62–0.99)0.93 (0.88–0.96)0.65",
    "T21": "Trisomy 21 syndrome120.83 (10/12)0.83 (0.51–0.97)0.94 (0.89–0.97)0.61",
    "rare": "Rare genetic diseases450.95 (43/45)0.96 (0.84–0.99)0.92 (0.86–0.96)0.87",
}
TABLE3_LINES = [
    "Accuracy0.930.630.740.91",
    "Sensitivity0.860.420.790.88",
    "(95%CI)(0.70–0.95)(0.26–0.61)(0.61–0.90)(0.71–0.96)",
    "Specificity0.970.730.720.93",
    "(95%CI)(0.88–0.99)(0.61–0.83)(0.59–0.82)(0.83–0.97)",
]
CI = r"(\d\.\d\d) \((\d\.\d\d)–(\d\.\d\d)\)"
TWO_DECIMALS = r"(\d\.\d\d)"


def parse_table1(line: str, model: str) -> dict:
    rest = line[len(model):]
    # p is either "<0.01" or three decimals; the F-value (three decimals) follows directly
    match = re.fullmatch(CI * 3 + TWO_DECIMALS + r"(?:<(0\.01)|(0\.\d{3}))(\d+\.\d{3})", rest)
    assert match, rest
    g = match.groups()
    upper_bound = g[10] is not None
    return {"auroc": tuple(map(float, g[0:3])), "sensitivity": tuple(map(float, g[3:6])),
            "specificity": tuple(map(float, g[6:9])), "f1": float(g[9]),
            "p_is_upper_bound": upper_bound, "p_value": float(g[10] if upper_bound else g[11]),
            "f_value": float(g[12])}


def parse_table2(line: str, label: str) -> dict:
    rest = line[len(label):]
    match = re.fullmatch(r"(\d+)" + TWO_DECIMALS + r" \((\d+)/(\d+)\)" + CI * 2 + TWO_DECIMALS,
                         rest)
    assert match, rest
    g = match.groups()
    return {"number": int(g[0]), "accuracy": float(g[1]), "correct": int(g[2]),
            "total": int(g[3]), "sensitivity": tuple(map(float, g[4:7])),
            "specificity": tuple(map(float, g[7:10])), "f1": float(g[10])}


def triple(reported: pv.Reported) -> tuple:
    return (reported.value, reported.lo, reported.hi)


@pytest.mark.parametrize("row", pv.TANG2023_TABLE1, ids=lambda r: r.model)
def test_table1_row_equals_printed_line(row):
    printed = parse_table1(TABLE1_LINES[row.model], row.model)
    assert triple(row.auroc) == printed["auroc"]
    assert triple(row.sensitivity) == printed["sensitivity"]
    assert triple(row.specificity) == printed["specificity"]
    assert (row.f1, row.p_value, row.p_is_upper_bound, row.f_value) == (
        printed["f1"], printed["p_value"], printed["p_is_upper_bound"], printed["f_value"])


@pytest.mark.parametrize("row", pv.TANG2023_TABLE2, ids=lambda r: r.subtype)
def test_table2_row_equals_printed_line(row):
    printed = parse_table2(TABLE2_LINES[row.subtype], row.group)
    assert (row.number, row.accuracy, row.correct, row.total, row.f1) == (
        printed["number"], printed["accuracy"], printed["correct"], printed["total"],
        printed["f1"])
    assert triple(row.sensitivity) == printed["sensitivity"]
    assert triple(row.specificity) == printed["specificity"]


def test_table2_subtype_counts_add_up_to_the_diseased_test_images():
    rows = {row.subtype: row for row in pv.TANG2023_TABLE2}
    parts = [rows[s] for s in ("T13", "T18", "T21", "rare")]
    assert sum(r.number for r in parts) == rows["all"].number == 86
    assert sum(r.correct for r in parts) == rows["all"].correct == 77
    assert pv.TANG2023_DATASET.test_diseased_images == 86
    assert pv.TANG2023_DATASET.test_images - 86 == pv.TANG2023_DATASET.test_normal_images
    for row in pv.TANG2023_TABLE2:
        assert row.number == row.total
        # the printed accuracy is k/n to two decimals, give or take the authors' rounding
        assert abs(row.accuracy - row.correct / row.total) <= 0.006


@pytest.mark.parametrize("subtype", ["T13", "T21", "rare"])
def test_table2_sensitivity_ci_is_wilson_with_continuity_correction(subtype):
    row = next(r for r in pv.TANG2023_TABLE2 if r.subtype == subtype)
    ci = stats.binomtest(row.correct, row.total).proportion_ci(method="wilsoncc")
    assert (round(ci.low, 2), round(ci.high, 2)) == (row.sensitivity.lo, row.sensitivity.hi)


def test_table1_p_values_fit_f_values_of_a_two_group_anova():
    # one-way ANOVA of calls vs labels over 186 images: df (1, 370)
    for row in pv.TANG2023_TABLE1:
        p = stats.f.sf(row.f_value, 1, 2 * pv.TANG2023_DATASET.test_images - 2)
        if row.p_is_upper_bound:
            assert p < row.p_value
        else:
            assert round(p, 3) == row.p_value


def test_table3_rows_and_attending_discrepancy_note():
    readers = [row.reader for row in pv.TANG2023_TABLE3]
    assert readers == ["Pgds-ResNet", "junior", "attending", "senior"]
    numbers = [float(x) for x in re.findall(r"\d\.\d\d", TABLE3_LINES[0])]
    assert [row.accuracy for row in pv.TANG2023_TABLE3] == numbers
    sens = [float(x) for x in re.findall(r"\d\.\d\d", TABLE3_LINES[1] + TABLE3_LINES[2])]
    spec = [float(x) for x in re.findall(r"\d\.\d\d", TABLE3_LINES[3] + TABLE3_LINES[4])]
    assert [row.sensitivity.value for row in pv.TANG2023_TABLE3] == sens[:4]
    assert [(row.sensitivity.lo, row.sensitivity.hi) for row in pv.TANG2023_TABLE3] == list(
        zip(sens[4::2], sens[5::2]))
    assert [row.specificity.value for row in pv.TANG2023_TABLE3] == spec[:4]
    assert [(row.specificity.lo, row.specificity.hi) for row in pv.TANG2023_TABLE3] == list(
        zip(spec[4::2], spec[5::2]))
    assert any("71%" in note and "0.74" in note for note in pv.NOTES)


def test_dataset_counts():
    d = pv.TANG2023_DATASET
    assert (d.normal_images, d.abnormal_images) == (845, 275)
    assert sum(d.subtype_images.values()) == d.abnormal_images
    assert d.normal_pregnancies + d.abnormal_pregnancies == (
        d.enrolled_pregnancies - d.excluded_pregnancies)
    assert d.normal_images * d.augmentation_multiplicity["normal"] == d.augmented_normal_images
    assert (d.abnormal_images * d.augmentation_multiplicity["genetic_disease"]
            == d.augmented_abnormal_images)
    assert d.augmented_normal_images + d.augmented_abnormal_images == d.augmented_training_images
    assert (d.threshold, d.gestational_week_mean, d.gestational_week_sd) == (0.16, 14.8, 2.6)


@pytest.mark.parametrize("value, lo, hi, expected", [
    (0.89, 0.80, 0.95, "0.89 (0.80–0.95)"),
    (1.0, 0.95, 1.0, "1.00 (0.95–1.00)"),
    (0.92, None, None, "0.92"),
])
def test_format_ci(value, lo, hi, expected):
    assert pv.format_ci(value, lo, hi) == expected


def test_reported_rejects_a_value_outside_its_ci_or_half_a_ci():
    with pytest.raises(ValueError):
        pv.Reported(0.5, 0.6, 0.7)
    with pytest.raises(ValueError):
        pv.Reported(0.5, 0.4)


def test_as_frame_expands_and_displays():
    frame = pv.as_frame(pv.TANG2023_TABLE1)
    assert list(frame["model"]) == ["Pgds-ResNet", "ResNet-34", "VGG-16", "VGG-19"]
    assert frame.loc[0, ["auroc", "auroc_lo", "auroc_hi"]].tolist() == [0.98, 0.97, 0.99]
    shown = pv.as_frame(pv.TANG2023_TABLE1, display=True)
    assert shown.loc[0, "sensitivity"] == "0.89 (0.80–0.95)"
    assert TABLE1_LINES["Pgds-ResNet"].startswith(
        "Pgds-ResNet" + shown.loc[0, "auroc"] + shown.loc[0, "sensitivity"])
    single = pv.as_frame(pv.TANG2023_DATASET)
    assert len(single) == 1 and single.loc[0, "subtype_images_T21"] == 60


@pytest.mark.parametrize("table, key, value", [
    (pv.HONG2021, ("accuracy", "mean"), 0.8860),
    (pv.HONG2021, ("auc", "ci_hi"), 0.9620),
    (pv.HONG2021, ("recall", "sd"), 0.0190),
    (pv.SHEN2024, ("accuracy", "cosface_pfm"), 0.848),
    (pv.SHEN2024, ("accuracy", "arcface_no_pfm"), 0.785),
    (pv.QI2025, ("five_class_accuracy",), 0.9825),
])
def test_other_studies_headlines(table, key, value):
    item = table
    for part in key:
        item = item[part]
    assert item == value


@pytest.fixture
def papers_dir(pgds_sample_dir) -> Path:
    # the papers sit beside the data in ../shared; the data fixture skips (or fails under CI)
    # where ../shared is absent
    return pgds_sample_dir.parents[1] / "papers"


@pytest.mark.shared_data
def test_copied_lines_occur_verbatim_in_the_papers(papers_dir):
    tang = (papers_dir / "pgds_tang2023.md").read_text(encoding="utf-8").splitlines()
    for line in [*TABLE1_LINES.values(), *TABLE2_LINES.values(), *TABLE3_LINES]:
        assert line in tang, line
    assert any("71% by the attending" in line for line in tang)
    hong = (papers_dir / "gs_face_vgg16_hong2021.md").read_text(encoding="utf-8")
    hong_compact = re.sub(r"\s+", "", hong)
    for name, stat in pv.HONG2021.items():
        if isinstance(stat, dict) and "sd" in stat:
            assert f"{stat['mean']:.4f}\\pm{stat['sd']:.4f}" in hong_compact, name
    assert "0.9210 - 0.9620" in hong
    for reader, row in pv.HONG2021_READERS.items():
        printed = "\t".join([reader] + [f"{row[k]:.4f}" for k in
                                        ("accuracy", "sensitivity", "specificity", "precision",
                                         "f1")])
        assert printed in hong, reader
    shen = (papers_dir / "ps_face_shen2024.md").read_text(encoding="utf-8")
    for phrase in ("from 78.5% to 84.5% for the ArcFace", "from 79.8% to 84.8% for the CosFace",
                   "highest accuracy (0.700)", "3297 (n = 1666)"):
        assert phrase in shen, phrase
    qi = (papers_dir / "cns_qi2025.md").read_text(encoding="utf-8")
    for phrase in ("accuracy reaches 94.5%", "AUROC value of 99.3%", "$0.9825$",
                   "micro/macro AUCs of $0.97$ and $0.95$"):
        assert phrase in qi, phrase
