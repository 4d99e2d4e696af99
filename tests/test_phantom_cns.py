"""Tests of the CNS phantom (data_prep.phantom_cns: fetal head and spine planes, Qi 2025).

What they pin down: each profile's planned counts (patients per class, 1-6 images, the plane
rule, every centre and gestational period in every class); byte-identical output for the same
seed (DICOM included), on every CPU (the committed hash listings, also with OpenCV's and
NumPy's SIMD dispatch off), and other output for another seed; a patient renders the same
alone; the manifest (columns, validation, file names without the label); truth masks
(non-empty regions inside the sector where the anomaly shows, empty for normal images and
where it does not show -- the spine plane of the head anomalies; they hold every pixel the
anomaly changed, and the frame does not change elsewhere); the fake PHI outside the sector,
removed by `deidentify --crop`; NO SHORTCUTS: frame size, centre, sector brightness (mean and percentiles) and an 8x8 thumbnail
do not predict the class (5-class logistic regression, cross-validated over patients, balanced
accuracy near the chance level 0.2), nor do a patient's image count and plane mix, while a
pose-aligned 16x16 crop of the fetus does (the signal is the anatomy); the head grows with the
week; and the command line.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from data_prep import deidentify, phantom, phantom_cns
from data_prep.manifest import load_manifest
from tests import phantom_hashes_cns
from tests.test_phantom import _gray, _sha256_tree
from tests.test_phantom_portable import OPENCV_DISABLE, _first_difference, _numpy_dispatch_features

CI = phantom_cns.PROFILES["ci"]
REPO = Path(__file__).resolve().parent.parent
CHANCE = 1.0 / len(phantom_cns.LABELS)
# Balanced accuracy a shortcut classifier may reach (chance 0.2 plus cross-validation noise of
# ~150 patients; a class read from the feature would give far more).
SHORTCUT_LIMIT = CHANCE + 0.1


def _sectors(profile=CI) -> dict[str, np.ndarray]:
    return {center.name: phantom_cns.sector_mask(center) for center in profile.centers}


@pytest.fixture(scope="module")
def ci_runs(tmp_path_factory) -> dict[str, Path]:
    """The ci phantom twice with seed 0 (once with DICOM) and once with seed 1."""
    base = tmp_path_factory.mktemp("cns")
    return {name: phantom.generate_phantom("cns", "ci", base / name, seed=seed, dicom=name == "a",
                                           progress=False).parent
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}


@pytest.fixture(scope="module")
def ci_manifest(ci_runs) -> pd.DataFrame:
    return pd.read_csv(ci_runs["a"] / "manifest.csv", dtype=str, keep_default_na=False)


# ----------------------------------------------------------------------------- plan


@pytest.mark.parametrize("name", ["ci", "default", "paper"])
def test_every_profile_plans_its_counts(name):
    profile = phantom_cns.PROFILES[name]
    cases = phantom_cns.plan_cases(profile, 0)
    frame = pd.DataFrame([dataclasses.asdict(c) for c in cases])
    assert frame.label.value_counts().to_dict() == {k: v for k, v in profile.patients.items()}
    assert frame.case_id.is_unique and len(frame) == profile.total_patients
    counts = {c for c, _ in profile.images_per_patient}
    for case in cases:
        assert len(case.planes) in counts
        assert case.planes[0] in phantom_cns.HEAD_PLANES            # a head plane first
        assert set(case.planes) <= set(phantom_cns.PLANES)
        assert 12.0 <= case.gestational_week <= 40.0
        assert case.gestational_week == round(case.gestational_week, 1)
    periods = pd.cut(frame.gestational_week, [0, 19.95, 28.05, 99], labels=["<20", "20-28", ">28"])
    centers = [c.name for c in profile.centers]
    for label, group in frame.groupby("label"):
        n = len(group)
        # every centre and every gestational period in every class, in equal shares (+-1)
        assert set(group.center) == set(centers) or n < len(centers), label
        assert group.center.value_counts().max() - group.center.value_counts().min() <= 1
        per_period = periods[group.index].value_counts()
        assert per_period.max() - per_period.min() <= 1
        assert periods[group.index].nunique() == 3, label
    if name != "ci":
        assert profile.patients["normal"] == max(profile.patients.values())
        assert len(set(profile.patients.values())) > 2   # unequal class sizes
        assert frame.planes.map(len).between(1, 6).all() and frame.planes.map(len).nunique() == 6


def test_profile_sizes_fit_their_budgets():
    """default: 600-900 images for 10 ResNet-34 trainings on 2 cores, >= 48 patients; paper:
    a few hundred patients in ~448x400 frames; ci: a few dozen small frames."""
    totals = {name: sum(len(c.planes) for c in phantom_cns.plan_cases(p, 0))
              for name, p in phantom_cns.PROFILES.items()}
    assert 40 <= totals["ci"] <= 100 and 600 <= totals["default"] <= 900
    assert phantom_cns.PROFILES["default"].total_patients >= 48
    assert 300 <= phantom_cns.PROFILES["paper"].total_patients <= 800
    for name, (low, high) in {"ci": (100, 140), "default": (150, 200), "paper": (400, 480)}.items():
        widths = [c.frame.width for c in phantom_cns.PROFILES[name].centers]
        assert low <= min(widths) and max(widths) <= high, (name, widths)


def test_case_ids_are_in_random_order():
    cases = phantom_cns.plan_cases(phantom_cns.PROFILES["paper"], 0)
    for label in phantom_cns.LABELS:
        first = [c.case_number for c in cases if c.label == label][:5]
        assert max(first) < 120, label   # spread over the ids, not appended class by class
    assert all(c.case_id == f"P{c.case_number:04d}" for c in cases)


def test_patient_shortcuts_image_count_and_plane_mix():
    """A patient's image count and plane mix are drawn the same way for every class."""
    cases = phantom_cns.plan_cases(phantom_cns.PROFILES["paper"], 0)
    frame = pd.DataFrame({"label": [c.label for c in cases],
                          "n": [len(c.planes) for c in cases],
                          **{p: [c.planes.count(p) / len(c.planes) for c in cases]
                             for p in phantom_cns.PLANES}})
    means = frame.groupby("label").n.mean()
    assert means.max() - means.min() < 0.2, means.to_dict()   # stratified: nearly equal
    # class x plane image counts: independent (chi-square; the same rule draws every plane)
    planes = pd.crosstab(*zip(*[(c.label, p) for c in cases for p in c.planes]))
    assert chi2_contingency(planes).pvalue > 0.05, planes
    features = np.column_stack([frame.n] + [frame[p] for p in phantom_cns.PLANES])
    accuracy = _cross_validated_accuracy(features, frame.label.to_numpy(), np.arange(len(frame)))
    assert accuracy <= SHORTCUT_LIMIT, accuracy


# ----------------------------------------------------------------------------- files


def test_same_seed_gives_identical_files(ci_runs):
    first, second = _sha256_tree(ci_runs["a"]), _sha256_tree(ci_runs["b"])
    dicom = {name for name in first if name.startswith("dicom/") or name == "manifest_dicom.csv"}
    assert dicom and {k: v for k, v in first.items() if k not in dicom} == second


def test_another_seed_gives_other_images(ci_runs):
    first, other = _sha256_tree(ci_runs["a"]), _sha256_tree(ci_runs["c"])
    images = [name for name in other if name.startswith("images/")]
    assert images and all(first.get(name) != other[name] for name in images)


def test_patients_render_the_same_alone_and_in_any_order(ci_runs, tmp_path):
    """Per-patient random streams: a few patients rendered alone, last first, give the files
    of the whole phantom."""
    for folder in ("images", "masks", "phi_masks"):
        (tmp_path / folder).mkdir()
    picked = phantom_cns.plan_cases(CI, 0)[3:8][::-1]
    rows = [row for case in picked for row in phantom_cns.render_case(CI, case, 0, tmp_path).rows]
    files = [row[c] for row in rows for c in ("image_path", "mask_path", "phi_mask_path")]
    assert len(files) == 3 * sum(len(c.planes) for c in picked)
    assert all((tmp_path / f).read_bytes() == (ci_runs["a"] / f).read_bytes() for f in files)


def test_manifest_is_valid_and_complete(ci_runs, ci_manifest):
    loaded = load_manifest(ci_runs["a"] / "manifest.csv", labels=list(phantom_cns.LABELS),
                           check_images=True)
    load_manifest(ci_runs["a"] / "manifest_dicom.csv", labels=list(phantom_cns.LABELS))
    assert list(ci_manifest.columns) == list(phantom_cns.MANIFEST_COLUMNS)
    cases = phantom_cns.plan_cases(CI, 0)
    assert len(loaded) == sum(len(c.planes) for c in cases)
    assert loaded.gestational_week.between(12, 40).all()
    assert set(ci_manifest.plane) == set(phantom_cns.PLANES)
    assert set(ci_manifest.center) == {c.name for c in CI.centers}
    for case in cases:
        rows = ci_manifest[ci_manifest.case_id == case.case_id]
        assert tuple(rows.plane) == case.planes and set(rows.label) == {case.label}
        assert list(rows.image_path) == [f"images/{case.case_id}_i{k}.png"
                                         for k in range(1, len(case.planes) + 1)]
    for label in phantom_cns.LABELS:   # no label in a file name or id
        assert not ci_manifest.image_path.str.contains(label[:5]).any()
    findings = pd.read_csv(ci_runs["a"] / "findings.csv", dtype=str, keep_default_na=False)
    assert list(findings.image_path) == list(ci_manifest.image_path)
    visible = findings.anomaly_visible == "1"
    assert (visible == (findings.findings != "")).all()
    # every head plane of an anomalous patient shows it; the spine only rachischisis
    shows = (findings.plane != "SP") | (findings.label == "rachischisis")
    assert (visible == ((findings.label != "normal") & shows)).all()


def test_frames_are_gray_and_sized_by_their_centre(ci_runs, ci_manifest):
    sectors = _sectors()
    for center in CI.centers:
        png = _gray(ci_runs["a"] / "sector_masks" / f"{center.name}.png") > 0
        assert np.array_equal(png, sectors[center.name])
    shapes = {}
    for row in ci_manifest.itertuples():
        frame = _gray(ci_runs["a"] / row.image_path)
        shapes.setdefault(row.center, set()).add(frame.shape)
        assert 10 < frame[sectors[row.center]].mean() < 120
    assert all(len(s) == 1 for s in shapes.values()) and len(set.union(*shapes.values())) == 4


def test_centres_have_their_own_sector_shape():
    for profile in phantom_cns.PROFILES.values():
        kinds = [c.linear for c in profile.centers]
        assert kinds.count(True) == 1
        angles = {c.frame.half_angle_deg for c in profile.centers if not c.linear}
        assert len(angles) == 3
        for center in profile.centers:
            frame = center.frame
            ys, xs = np.nonzero(phantom_cns.sector_mask(center))
            assert ys.min() >= frame.sector_top and xs.min() >= frame.sector_left
            assert ys.max() < frame.sector_top + frame.sector_height
            assert xs.max() < frame.sector_left + frame.sector_width
            if not center.linear:
                sector = phantom_cns.sector_geometry(frame)
                assert 0.05 < sector.r_in / sector.r_out < 0.3, center.name


def test_truth_masks(ci_runs, ci_manifest):
    sectors = _sectors()
    findings = pd.read_csv(ci_runs["a"] / "findings.csv").set_index("image_path")
    kernel = np.ones((3, 3), np.uint8)
    for row in ci_manifest.itertuples():
        mask = _gray(ci_runs["a"] / row.mask_path)
        assert set(np.unique(mask)) <= {0, 255}
        if not findings.loc[row.image_path, "anomaly_visible"]:
            assert not mask.any(), row.mask_path       # normal, or a head anomaly on SP
            continue
        assert mask.any(), row.mask_path
        assert not mask[~sectors[row.center]].any(), row.mask_path
        assert cv2.erode(mask, kernel, iterations=2).any(), row.mask_path   # a region
        assert (mask > 0).mean() < 0.5


def _fetuses(label: str, plane: str, n: int = 6):
    for number in range(n):
        center = CI.centers[number % 4]
        week = 12.0 + 28.0 * number / max(1, n - 1)
        natural, fetus = phantom_cns.sample_fetus(label, week, np.random.default_rng([5, number]),
                                                  np.random.default_rng([6, number]))
        place = phantom_cns.sample_placement(CI, center, natural, plane,
                                             np.random.default_rng([7, number]))
        yield center, natural, fetus, place, np.random.default_rng([8, number])


@pytest.mark.parametrize("label", phantom_cns.ANOMALIES)
@pytest.mark.parametrize("plane", phantom_cns.PLANES)
def test_masks_hold_every_pixel_the_anomaly_changed(label, plane):
    """The mask holds every pixel whose echogenicity differs from the same fetus without the
    anomaly; the frame is unchanged beyond it (plus the blur's reach): the same pose, speckle
    and background whatever the class."""
    for center, natural, fetus, place, rng in _fetuses(label, plane):
        frame, mask = phantom_cns.render_image(center, natural, fetus, plane, place, rng)
        shape = frame.shape
        with_anomaly, without = (np.zeros(shape, np.float32) for _ in range(2))
        phantom_cns.draw_plane(with_anomaly, fetus, plane, place)
        phantom_cns.draw_plane(without, natural, plane, place)
        changed = (with_anomaly != without) & phantom_cns.sector_mask(center)
        if not phantom_cns.shows_anomaly(fetus, plane):
            assert not changed.any() and not mask.any()
            continue
        assert changed.any() and (mask[changed] > 0).all(), (label, plane)


@pytest.mark.parametrize("label", phantom_cns.ANOMALIES)
def test_the_same_fetus_differs_only_where_the_anomaly_is(label):
    for plane in phantom_cns.PLANES:
        for number, (center, natural, fetus, place, _) in enumerate(_fetuses(label, plane, 3)):
            frame, mask = phantom_cns.render_image(center, natural, fetus, plane, place,
                                                   np.random.default_rng([8, number]))
            plain, _ = phantom_cns.render_image(center, natural, natural, plane, place,
                                                np.random.default_rng([8, number]))
            reach = cv2.dilate(mask, np.ones((11, 11), np.uint8))   # 5 px: the blur's radius
            assert np.array_equal(frame[reach == 0], plain[reach == 0]), (label, plane)
            assert (frame != plain).any() == phantom_cns.shows_anomaly(fetus, plane)


def test_head_is_magnified_to_fill_the_sector(ci_runs, ci_manifest):
    """Head size / (sector width x head_scale): 0.85-1.0 by the week, times +-7 % jitter, less
    where the fit shrinks it (3 % steps) to keep the head and the room behind its occiput inside
    the sector and the evaluation centre crop; so a young head is not a small blob (seen:
    0.57-0.79, median 0.64 on the ci phantom), and it still grows with the week."""
    profile = phantom_cns.PROFILES["ci"]
    sector = {c.name: c.frame.sector_width for c in profile.centers}
    geometry = pd.read_csv(ci_runs["a"] / "geometry.csv").set_index("image_path")
    table = ci_manifest.assign(scale=geometry.loc[ci_manifest.image_path, "scale_px"].to_numpy(),
                               week=ci_manifest.gestational_week.astype(float))
    head = table[table.plane != "SP"]
    relative = head.scale / (head.center.map(sector) * profile.head_scale)
    assert relative.min() >= 0.5 and relative.max() <= 1.0 * 1.07 + 1e-9
    assert relative.median() >= 0.6
    assert np.corrcoef(head.week, relative)[0, 1] > 0


# ----------------------------------------------------------------------------- PHI


def test_phi_masks_cover_every_burned_in_pixel_outside_the_sector(ci_runs, ci_manifest):
    sectors = _sectors()
    for row in ci_manifest.itertuples():
        frame = _gray(ci_runs["a"] / row.image_path)
        phi = _gray(ci_runs["a"] / row.phi_mask_path) > 0
        sector = sectors[row.center]
        assert phi.any() and not (phi & sector).any(), row.phi_mask_path
        assert not frame[~sector & ~phi].any(), row.image_path
    truth = json.loads((ci_runs["a"] / "phi_truth.json").read_text())["cases"]
    assert set(truth) == set(ci_manifest.case_id)
    text = "".join((ci_runs["a"] / name).read_text() for name in
                   ("manifest.csv", "findings.csv", "geometry.csv"))
    leaked = [v for entry in truth.values() for v in entry["burned_in"] + [entry["patient_id"]]
              if v in text]
    assert not leaked, leaked[:3]


@pytest.mark.parametrize("name", ["ci", "default", "paper"])
def test_overlay_stays_outside_the_sector_at_every_size(name):
    longest = phantom_cns.FakePhi("FANTOMAS^VIKTOR", "PH-999999", "19820101", "20211020",
                                  "235959", "X", "PHANTOMDOC^VIKTOR", "PHA9999999")
    for center in phantom_cns.PROFILES[name].centers:
        phi = dataclasses.replace(longest, institution=center.hospital)
        overlay, mask, drawn = phantom_cns.draw_overlay(center, phi)
        box = np.zeros_like(mask, bool)
        frame = center.frame
        box[frame.sector_top:frame.sector_top + frame.sector_height,
            frame.sector_left:frame.sector_left + frame.sector_width] = True
        assert overlay.any() and not (mask.astype(bool) & box).any(), center.name
        assert not (overlay.astype(bool) & ~mask.astype(bool)).any()
        assert "PH-999999" in " ".join(drawn) and center.hospital.split()[0] in " ".join(drawn)


def test_deidentify_removes_every_phi_pixel(ci_runs, ci_manifest, tmp_path):
    """`python -m data_prep deidentify --manifest ... --crop` on the phantom: no fake-PHI pixel
    survives, the anatomy does, and convex and linear sectors are told apart."""
    out = tmp_path / "deid"
    done = subprocess.run([sys.executable, "-m", "data_prep", "deidentify", "--manifest",
                           str(ci_runs["b"] / "manifest.csv"), "--out", str(out), "--crop"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = pd.read_csv(out / "deid_report.csv").set_index("image_path")
    sectors = _sectors()
    linear = {c.name for c in CI.centers if c.linear}
    for row in ci_manifest.itertuples():
        box = report.loc[row.image_path, ["sector_x0", "sector_y0", "sector_x1", "sector_y1"]]
        x0, y0, x1, y1 = (int(v) for v in box)
        before = _gray(ci_runs["b"] / row.image_path)
        after = np.zeros_like(before)
        after[y0:y1, x0:x1] = _gray(out / row.image_path)
        phi = _gray(ci_runs["b"] / row.phi_mask_path) > 0
        assert before[phi].any() and not after[phi].any(), row.image_path
        sector = sectors[row.center]
        assert np.array_equal(after[sector], before[sector]), row.image_path
        kind = report.loc[row.image_path, "sector_kind"]
        assert kind == ("rectangle" if row.center in linear else "fan"), (row.image_path, kind)
    truth = json.loads((ci_runs["b"] / "phi_truth.json").read_text())["cases"]
    strings = {s for entry in truth.values() for s in entry["burned_in"] if len(s) >= 6}
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".json"):
            assert not [s for s in strings if s in path.read_text()], path.name


def test_deidentify_folder_keeps_masks_aligned(ci_runs, ci_manifest, tmp_path):
    out = tmp_path / "deid"
    deidentify.deidentify_folder(None, out, manifest=ci_runs["b"] / "manifest.csv", crop=True,
                                 progress_every=0)
    for row in ci_manifest.head(12).itertuples():
        mask = _gray(ci_runs["b"] / row.mask_path)
        assert _gray(out / row.mask_path).sum() == mask.sum()   # the truth lies in the crop


# ----------------------------------------------------------------------------- no shortcuts


def _cross_validated_accuracy(features: np.ndarray, labels: np.ndarray, groups) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(
        C=0.1, solver="newton-cg", max_iter=1000, class_weight="balanced"))
    predicted = cross_val_predict(model, features, labels, groups=groups,
                                  cv=StratifiedGroupKFold(5, shuffle=True, random_state=0))
    return balanced_accuracy_score(labels, predicted)


@pytest.fixture(scope="module")
def shortcut_features(tmp_path_factory):
    """Per image of a 150-patient phantom at the ci resolution (1-6 images per patient):
    frame size, centre, sector brightness and 8x8 thumbnails."""
    profile = dataclasses.replace(CI, name="shortcut-test", images_per_patient=
                                  phantom_cns.PROFILES["default"].images_per_patient,
                                  patients=phantom_cns._patients(30, 30, 30, 30, 30))
    root = phantom.generate_phantom("cns", profile, tmp_path_factory.mktemp("shortcut") / "p",
                                    seed=5, progress=False).parent
    frame = pd.read_csv(root / "manifest.csv")
    sectors = _sectors(profile)
    names = sorted(sectors)
    features = {"size": [], "center": [], "brightness": [], "thumbnail": [],
                "sector_thumbnail": []}
    for row in frame.itertuples():
        image = _gray(root / row.image_path)
        sector = sectors[row.center]
        values = image[sector].astype(np.float64)
        features["size"].append(image.shape)
        features["center"].append([row.center == name for name in names])
        features["brightness"].append([values.mean(), *np.percentile(values, [5, 25, 50, 75, 95])])
        features["thumbnail"].append(cv2.resize(image.astype(np.float32), (8, 8),
                                                interpolation=cv2.INTER_AREA).ravel())
        x, y, w, h = cv2.boundingRect(sector.astype(np.uint8))
        crop = (image * sector)[y:y + h, x:x + w].astype(np.float32)
        features["sector_thumbnail"].append(cv2.resize(crop, (8, 8),
                                                       interpolation=cv2.INTER_AREA).ravel())
    features = {k: np.asarray(v, dtype=np.float64) for k, v in features.items()}
    features["all"] = np.hstack(list(features.values()))
    return root, frame, features


@pytest.mark.parametrize("feature", ["size", "center", "brightness", "thumbnail",
                                     "sector_thumbnail", "all"])
def test_no_shortcut_predicts_the_class(shortcut_features, feature):
    _, frame, features = shortcut_features
    accuracy = _cross_validated_accuracy(features[feature], frame.label.to_numpy(),
                                         frame.case_id.to_numpy())
    assert accuracy <= SHORTCUT_LIMIT, (feature, accuracy)


def test_every_centre_has_every_class_in_the_same_proportions(shortcut_features):
    _, frame, _ = shortcut_features
    table = pd.crosstab(frame.drop_duplicates("case_id").center,
                        frame.drop_duplicates("case_id").label)
    assert (table.max() - table.min()).max() <= 1, table


def _aligned_crop(image: np.ndarray, pose, plane: str, size: int = 16) -> np.ndarray:
    """The fetus in its own coordinates (pose from geometry.csv), area-downsampled."""
    angle = math.radians(pose.rotation_deg)
    rotation = np.array([[math.cos(angle), -math.sin(angle)],
                         [math.sin(angle), math.cos(angle)]]) * pose.scale_px
    corners = (np.array([[-1.9, -0.9], [1.2, -0.9], [-1.9, 1.0]]) if plane == "SP"
               else np.array([[-1.5, -1.2], [1.2, -1.2], [-1.5, 1.2]]))
    corners[:, 0] *= pose.flip
    source = (corners @ rotation.T + [pose.center_x, pose.center_y]).astype(np.float32)
    target = np.array([[0, 0], [4 * size, 0], [0, 4 * size]], np.float32)
    big = cv2.warpAffine(image.astype(np.float32), cv2.getAffineTransform(source, target),
                         (4 * size, 4 * size), flags=cv2.INTER_LINEAR)
    crop = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return ((crop - crop.mean()) / (crop.std() + 1e-6)).ravel()


def test_the_anatomy_separates_the_classes(shortcut_features):
    """Positive control: the same classifier on a pose-aligned 16x16 crop of the fetus reads
    the class (the signal is the anatomy, where the shortcuts above read nothing)."""
    root, frame, _ = shortcut_features
    poses = pd.read_csv(root / "geometry.csv").set_index("image_path")
    crops = np.array([_aligned_crop(_gray(root / row.image_path), poses.loc[row.image_path],
                                    row.plane) for row in frame.itertuples()])
    head = frame.plane.isin(phantom_cns.HEAD_PLANES).to_numpy()
    labels, groups = frame.label.to_numpy(), frame.case_id.to_numpy()
    assert _cross_validated_accuracy(crops, labels, groups) >= 0.6
    assert _cross_validated_accuracy(crops[head], labels[head], groups[head]) >= 0.75


# ----------------------------------------------------------------------------- portable


def _committed() -> dict[str, str]:
    return {name: path.read_text(encoding="utf-8")
            for name, path in phantom_hashes_cns.LISTINGS.items()}


@pytest.mark.parametrize("simd", ["as run", "without SIMD"])
def test_phantom_matches_committed_hashes(simd):
    """In this process, and in a subprocess where OpenCV and NumPy may use none of their
    CPU-specific code paths: the same bytes on every x86-64 CPU."""
    if simd == "as run":
        found = phantom_hashes_cns.listings()
    else:
        env = dict(os.environ, OPENCV_CPU_DISABLE=OPENCV_DISABLE,
                   NPY_DISABLE_CPU_FEATURES=_numpy_dispatch_features(), PYTHONPATH=str(REPO))
        done = subprocess.run([sys.executable, "-m", "tests.phantom_hashes_cns", "--json",
                               "--no-opencv-optimizations"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        found = json.loads(done.stdout)
    for name, expected in _committed().items():
        assert found[name] == expected, (
            f"{name} ({simd}) differs from {phantom_hashes_cns.LISTINGS[name].name}: "
            f"{_first_difference(expected, found[name])}. If intended, bump "
            "phantom_cns.GENERATOR_VERSION and run python -m tests.phantom_hashes_cns --write")


def test_listing_covers_every_file_class():
    ci = _committed()["ci"]
    names = [line.split("  ", 1)[1] for line in ci.splitlines()]
    images = sum(len(c.planes) for c in phantom_cns.plan_cases(CI, 0))
    for folder in ("images/", "masks/", "phi_masks/"):
        assert sum(n.startswith(folder) for n in names) == images
    assert {"manifest.csv", "phi_truth.json", "findings.csv", "geometry.csv"} <= set(names)
    sample = _committed()["default_sample"]
    assert "plan.json" in sample
    assert sample.count("images/") >= phantom_hashes_cns.DEFAULT_SAMPLE_CASES


# ----------------------------------------------------------------------------- CLI


def test_command_line(tmp_path):
    out = tmp_path / "cns"
    done = subprocess.run([sys.executable, "-m", "data_prep", "phantom", "--study", "cns",
                           "--profile", "ci", "--out", str(out), "--seed", "2"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(out / "manifest.csv")
    record = json.loads((out / "run.json").read_text())
    assert record["seed"] == 2 and record["config"]["study"] == "cns"
    assert record["config"]["generator_version"] == phantom_cns.GENERATOR_VERSION
    again = subprocess.run([sys.executable, "-m", "data_prep", "phantom", "--study", "cns",
                            "--profile", "ci", "--out", str(out)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2   # refuses a non-empty --out without --force
    with pytest.raises(phantom_cns.InputError, match="profile"):
        phantom.generate_phantom("cns", "huge", tmp_path / "x")
