"""The four papers' reported numbers, typed and cited, for paper-vs-reproduced tables.

Every number here is copied by hand from the paper text in `../shared/papers/` (the table
blocks and the abstracts) and is checked against that text by `tests/test_paper_values.py`.
Nothing is computed: where the paper contradicts itself, the table value is kept and the
contradiction is written down in `NOTES` (Tang 2023) so the README can quote it.

- `Reported(value, lo, hi)`: one reported number with its 95% CI when the paper gives one.
- `TANG2023_TABLE1` (four architectures), `TANG2023_TABLE2` (per subtype),
  `TANG2023_TABLE3` (Pgds-ResNet vs three sonographers), `TANG2023_DATASET` (counts).
- `HONG2021`, `HONG2021_READERS`, `SHEN2024`, `QI2025`: headline numbers of the other studies.
- `as_frame(table, display=False)`: any of the tables above as a pandas DataFrame, a
  `Reported` expanded to `<name>`, `<name>_lo`, `<name>_hi` (or, with display=True, to one
  string such as "0.89 (0.80–0.95)" made by `format_ci`).

A p-value printed as "<0.01" is stored as `p_value=0.01` with `p_is_upper_bound=True`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pandas as pd

EN_DASH = "\u2013"

CITATIONS: dict[str, str] = {
    "pgds": "Tang J, et al. Biomedicines 2023;11(6):1756. doi:10.3390/biomedicines11061756",
    "gs_vgg16": "Hong D, Zheng YY, Xin Y, et al. Orphanet J Rare Dis 2021;16:344",
    "ps_face": "Shen et al. Postgrad Med J 2024. doi:10.1093/postmj/qgae095 (abstract)",
    "cns": "Qi Y, Cai J, Lu J, et al. arXiv:2501.02000 (2025) (abstract, summary and captions)",
}


@dataclass(frozen=True)
class Reported:
    """One reported number and, where printed, its 95% confidence interval."""

    value: float
    lo: float | None = None
    hi: float | None = None

    def __post_init__(self) -> None:
        if (self.lo is None) != (self.hi is None):
            raise ValueError(f"a CI needs both bounds, got lo={self.lo} hi={self.hi}")
        if self.lo is not None and not (self.lo <= self.value <= self.hi):
            raise ValueError(f"value {self.value} lies outside its CI ({self.lo}, {self.hi})")

    def __str__(self) -> str:
        return format_ci(self.value, self.lo, self.hi)


def format_ci(value: float, lo: float | None = None, hi: float | None = None,
              digits: int = 2) -> str:
    """'0.89 (0.80–0.95)' as the papers print it (en dash); just '0.89' without a CI."""
    text = f"{value:.{digits}f}"
    if lo is None or hi is None:
        return text
    return f"{text} ({lo:.{digits}f}{EN_DASH}{hi:.{digits}f})"


# --------------------------------------------------------------------------------------------
# Tang 2023 (Pgds-ResNet), Table 1: four architectures on the 186-image test set.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table1Row:
    model: str
    auroc: Reported
    sensitivity: Reported
    specificity: Reported
    f1: float
    p_value: float
    p_is_upper_bound: bool
    f_value: float


TANG2023_TABLE1: tuple[Table1Row, ...] = (
    Table1Row("Pgds-ResNet", Reported(0.98, 0.97, 0.99), Reported(0.89, 0.80, 0.95),
              Reported(0.96, 0.89, 0.99), 0.92, 0.658, False, 0.196),
    Table1Row("ResNet-34", Reported(0.83, 0.80, 0.86), Reported(0.50, 0.40, 0.60),
              Reported(0.97, 0.91, 0.99), 0.65, 0.01, True, 15.921),
    Table1Row("VGG-16", Reported(0.84, 0.81, 0.86), Reported(0.41, 0.30, 0.52),
              Reported(0.98, 0.92, 0.99), 0.57, 0.01, True, 30.014),
    Table1Row("VGG-19", Reported(0.92, 0.89, 0.93), Reported(0.45, 0.34, 0.56),
              Reported(1.00, 0.95, 1.00), 0.62, 0.01, True, 28.125),
)
# The registry's architecture behind each Table 1 row (Pgds-ResNet is the tuned ResNet-18).
TANG2023_TABLE1_ARCHITECTURE: dict[str, str] = {
    "Pgds-ResNet": "resnet18", "ResNet-34": "resnet34", "VGG-16": "vgg16", "VGG-19": "vgg19",
}


# --------------------------------------------------------------------------------------------
# Tang 2023, Table 2: Pgds-ResNet per subtype (target subtype positive, the rest negative).
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table2Row:
    group: str            # the row label as printed
    subtype: str          # manifest vocabulary: "all", "T13", "T18", "T21", "rare"
    number: int           # test images of this group
    accuracy: float       # as printed (k/n rounded by the authors)
    correct: int          # k of "accuracy (k/n)"
    total: int            # n of "accuracy (k/n)"
    sensitivity: Reported
    specificity: Reported
    f1: float


TANG2023_TABLE2: tuple[Table2Row, ...] = (
    Table2Row("All genetic diseases", "all", 86, 0.90, 77, 86, Reported(0.89, 0.80, 0.95),
              Reported(0.96, 0.89, 0.99), 0.92),
    Table2Row("Trisomy 13 syndrome", "T13", 16, 0.75, 12, 16, Reported(0.75, 0.47, 0.92),
              Reported(0.95, 0.90, 0.97), 0.65),
    Table2Row("Trisomy 18 syndrome", "T18", 13, 0.92, 12, 13, Reported(0.92, 0.62, 0.99),
              Reported(0.93, 0.88, 0.96), 0.65),
    Table2Row("Trisomy 21 syndrome", "T21", 12, 0.83, 10, 12, Reported(0.83, 0.51, 0.97),
              Reported(0.94, 0.89, 0.97), 0.61),
    Table2Row("Rare genetic diseases", "rare", 45, 0.95, 43, 45, Reported(0.96, 0.84, 0.99),
              Reported(0.92, 0.86, 0.96), 0.87),
)


# --------------------------------------------------------------------------------------------
# Tang 2023, Table 3: Pgds-ResNet and three sonographers on 100 test images (section 2.6).
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table3Row:
    reader: str           # "Pgds-ResNet" or the sonographer's level
    accuracy: float
    sensitivity: Reported
    specificity: Reported


TANG2023_TABLE3: tuple[Table3Row, ...] = (
    Table3Row("Pgds-ResNet", 0.93, Reported(0.86, 0.70, 0.95), Reported(0.97, 0.88, 0.99)),
    Table3Row("junior", 0.63, Reported(0.42, 0.26, 0.61), Reported(0.73, 0.61, 0.83)),
    Table3Row("attending", 0.74, Reported(0.79, 0.61, 0.90), Reported(0.72, 0.59, 0.82)),
    Table3Row("senior", 0.91, Reported(0.88, 0.71, 0.96), Reported(0.93, 0.83, 0.97)),
)


# --------------------------------------------------------------------------------------------
# Tang 2023, dataset (sections 2.1, 2.2, 3.1, 3.3).
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PgdsDataset:
    normal_images: int = 845
    abnormal_images: int = 275
    normal_pregnancies: int = 556
    abnormal_pregnancies: int = 111
    enrolled_pregnancies: int = 1000
    excluded_pregnancies: int = 333
    subtype_images: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"T21": 60, "T18": 85, "T13": 45, "rare": 85})
    genetic_diseases: int = 12                 # "including 12 genetic diseases"
    test_images: int = 186
    test_diseased_images: int = 86
    test_normal_images: int = 100              # 186 - 86
    reader_study_images: int = 100             # section 2.6
    threshold: float = 0.16                    # best F1 on the training set (section 3.3)
    gestational_week_mean: float = 14.8
    gestational_week_sd: float = 2.6
    gestational_week_min: int = 11
    gestational_week_max: int = 27
    augmentation_multiplicity: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: {"normal": 2, "genetic_disease": 6})
    augmented_normal_images: int = 1690
    augmented_abnormal_images: int = 1650
    augmented_training_images: int = 3340      # section 3.1 (section 2.2 says 3246, see NOTES)
    epoch_grid: tuple[int, ...] = (25, 50, 100, 150, 200)
    batch_size: int = 32
    learning_rate: float = 1e-4
    bootstrap_replicates: int = 1000


TANG2023_DATASET = PgdsDataset()

# Where the paper disagrees with itself, or is easy to misread. The tables above keep the
# table's value; these lines say what else the text claims.
NOTES: tuple[str, ...] = (
    "Attending sonographer accuracy: section 3.6 says 71%, Table 3 says 0.74; Table 3's 0.74 "
    "is kept.",
    "Augmented image count: section 2.2 says 3246 images were obtained but also 1690 normal + "
    "1650 abnormal (= 3340); section 3.1 says 3340 for training. 3340 is kept.",
    "Augmented counts equal 845*2 and 275*6, i.e. all 1120 originals, although section 3.1 says "
    "970 images were augmented and 186 kept for testing (970 + 186 = 1156, not 1120).",
    "Section 2.1 keeps 556 + 111 = 667 of 1000 enrolled pregnancies (333 excluded), yet section "
    "2.2 says the 1120 images come 'from 1000 pregnancies'.",
    "Gestational age is printed as '11 to 27 years (14.8 ± 2.6)'; weeks are meant.",
    "Table 2 prints the rare-disease accuracy as 0.95 (43/45) although 43/45 = 0.956 and the "
    "sensitivity column prints 0.96 for the same count; the all-disease row prints accuracy "
    "0.90 (77/86 = 0.895) beside sensitivity 0.89.",
    "Table 2's 'Accuracy (k/n)' is the share of the group's images called diseased, i.e. the "
    "group's sensitivity, not an accuracy over positives and negatives.",
    "Table 1's p-values and F-values fit a one-way ANOVA of calls against labels with df "
    "(1, 370): F = 0.196 gives p = 0.658; '<0.01' is stored as 0.01 with p_is_upper_bound.",
    "CIs are called 'Wald CIs ... empirical bootstrap with 1000 replicates' (section 2.4), but "
    "Table 2's sensitivity CIs for T13, T21 and rare diseases match the Wilson score interval "
    "with continuity correction to two decimals.",
    "Table 3 is on the 100-image reader-study subset (section 2.6), so its Pgds-ResNet row "
    "(0.93 / 0.86 / 0.97) differs from Table 1 (186 images).",
    "Figure 4's colour bar spans -10 to 15 (raw Grad-CAM values); this toolkit's maps are "
    "normalised to [0, 1] per image, as tf-keras-vis does.",
)


# --------------------------------------------------------------------------------------------
# The other studies' headline numbers.
# --------------------------------------------------------------------------------------------
# Hong 2021 (VGG-16 on faces): mean ± SD over five test folds; AUC CI from the ROC band.
HONG2021: dict[str, Any] = {
    "accuracy": {"mean": 0.8860, "sd": 0.0211},
    "specificity": {"mean": 0.9124, "sd": 0.0308},
    "recall": {"mean": 0.8597, "sd": 0.0190},
    "precision": {"mean": 0.9079, "sd": 0.0315},
    "f1": {"mean": 0.8829, "sd": 0.0215},
    "auc": {"mean": 0.9443, "sd": 0.0276, "ci_lo": 0.9210, "ci_hi": 0.9620},
    "n_photos": 456, "n_syndrome": 228, "n_healthy": 228, "folds": 5,
}
# Hong 2021 Table 2, the five paediatricians (SP senior, JP junior).
HONG2021_READERS: dict[str, dict[str, float]] = {
    "SP 1": {"accuracy": 0.7983, "sensitivity": 0.8772, "specificity": 0.7193,
             "precision": 0.7576, "f1": 0.8130},
    "SP 2": {"accuracy": 0.7895, "sensitivity": 0.7368, "specificity": 0.8421,
             "precision": 0.8235, "f1": 0.7778},
    "JP 1": {"accuracy": 0.7259, "sensitivity": 0.5000, "specificity": 0.9518,
             "precision": 0.9120, "f1": 0.6459},
    "JP 2": {"accuracy": 0.6250, "sensitivity": 0.7719, "specificity": 0.4781,
             "precision": 0.5966, "f1": 0.6730},
    "JP 3": {"accuracy": 0.7675, "sensitivity": 0.8070, "specificity": 0.7281,
             "precision": 0.7480, "f1": 0.7764},
}
# Shen 2024 (ResNet-100, ArcFace / CosFace, with and without a pretrained foundation model).
SHEN2024: dict[str, Any] = {
    "accuracy": {
        "arcface_no_pfm": 0.785, "arcface_pfm": 0.845,
        "cosface_no_pfm": 0.798, "cosface_pfm": 0.848,
    },
    "best_pediatrician_accuracy": 0.700,
    "n_photos": 3297, "n_children": 1666,
    "n_children_per_class": {"williams_beuren": 174, "noonan": 235, "alagille": 51,
                             "none": 1206},
    "folds": 5,
}
# Qi 2025 (ResNet-34, fetal CNS anomalies).
QI2025: dict[str, Any] = {
    "patient_accuracy": 0.945,
    "patient_auroc": 0.993,
    "five_class_accuracy": 0.9825,
    "five_class_micro_auc": 0.97,
    "five_class_macro_auc": 0.95,
}


# --------------------------------------------------------------------------------------------
# Frames for tables.
# --------------------------------------------------------------------------------------------
def _flatten(row: Any, display: bool) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for field in dataclasses.fields(row):
        value = getattr(row, field.name)
        if isinstance(value, Reported):
            if display:
                flat[field.name] = str(value)
            else:
                flat[field.name] = value.value
                flat[f"{field.name}_lo"] = value.lo
                flat[f"{field.name}_hi"] = value.hi
        elif isinstance(value, Mapping):
            for key, item in value.items():
                flat[f"{field.name}_{key}"] = item
        else:
            flat[field.name] = value
    return flat


def as_frame(table: Iterable[Any] | Any, *, display: bool = False) -> pd.DataFrame:
    """A table of rows (or one dataclass such as TANG2023_DATASET) as a DataFrame.

    `Reported` fields become `<name>`, `<name>_lo`, `<name>_hi` columns (floats), or one
    "0.89 (0.80–0.95)" string each when display=True.
    """
    rows = [table] if dataclasses.is_dataclass(table) else list(table)
    if not rows or not all(dataclasses.is_dataclass(row) for row in rows):
        raise TypeError("as_frame expects a dataclass or a non-empty sequence of dataclasses")
    return pd.DataFrame([_flatten(row, display) for row in rows])
