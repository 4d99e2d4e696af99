"""Tests of the Pgds fetal-profile phantom (data_prep.phantom / data_prep.phantom_pgds).

What they pin down: the paper profile's planned counts (845/275 images, 556/111 cases, T21 60,
T18 85, T13 45, rare 85) and gestational weeks (11-27, mean ~14.8, sd ~2.6); byte-identical
output for the same seed (DICOM included) and different output for another seed; rendering of a
case does not depend on the others; manifest columns and validation; truth masks (non-empty,
not a line, inside the sector for every abnormal image; empty for normal ones); PHI masks
outside the sector and covering every burned-in pixel; the fake PHI strings kept out of the
manifest and present in the DICOM tags; views turned by exactly 0/7/14 degrees; the disease
signal is shape (a 16-bin intensity histogram gives AUROC <= 0.65) while a pose-aligned 16x16
face crop separates the classes (AUROC >= 0.75); and the CLI's refusal to overwrite.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep import phantom, phantom_pgds
from data_prep.errors import InputError
from data_prep.manifest import load_manifest

PAPER = phantom_pgds.PROFILES["paper"]
CI = phantom_pgds.PROFILES["ci"]
LABELS = ["normal", "genetic_disease"]


def _sha256_tree(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != "run.json"}


def _gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.ndim == 2 and image.dtype == np.uint8, path
    return image


@pytest.fixture(scope="module")
def ci_runs(tmp_path_factory) -> dict[str, Path]:
    """The ci phantom twice with seed 0 (with DICOM) and once with seed 1."""
    base = tmp_path_factory.mktemp("phantom")
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        manifest = phantom.generate_phantom("pgds", "ci", base / name, seed=seed,
                                            dicom=name != "c", progress=False)
        runs[name] = manifest.parent
    return runs


@pytest.fixture(scope="module")
def ci_manifest(ci_runs) -> pd.DataFrame:
    return pd.read_csv(ci_runs["a"] / "manifest.csv", dtype=str, keep_default_na=False)


# ----------------------------------------------------------------------------- plan


@pytest.mark.parametrize("seed", [0, 7])
def test_paper_plan_has_the_papers_counts(seed):
    cases = phantom_pgds.plan_cases(PAPER, seed)
    images = pd.DataFrame([(c.case_id, c.subtype, c.label, v) for c in cases for v in c.views],
                          columns=["case_id", "subtype", "label", "view"])
    assert images.label.value_counts().to_dict() == {"normal": 845, "genetic_disease": 275}
    case_labels = images.drop_duplicates("case_id").label.value_counts().to_dict()
    assert case_labels == {"normal": 556, "genetic_disease": 111}
    assert images.subtype.value_counts().to_dict() == {"normal": 845, "T21": 60, "T18": 85,
                                                       "T13": 45, "rare": 85}
    assert images.case_id.nunique() == len(cases)
    assert all(c.views == phantom_pgds.VIEW_ANGLES[:len(c.views)] for c in cases)


@pytest.mark.parametrize("name", ["ci", "default", "paper"])
def test_every_profile_plans_its_counts(name):
    profile = phantom_pgds.PROFILES[name]
    cases = phantom_pgds.plan_cases(profile, 0)
    for subtype, group in profile.counts.items():
        mine = [c for c in cases if c.subtype == subtype]
        assert len(mine) == group.cases
        assert sum(len(c.views) for c in mine) == group.images
        assert all(1 <= len(c.views) <= 3 for c in mine)
    # Subtype proportions of the abnormal images follow the paper's (60:85:45:85).
    share = {s: profile.counts[s].images / profile.abnormal_images for s in ("T21", "T18", "T13", "rare")}
    paper = {s: PAPER.counts[s].images / PAPER.abnormal_images for s in share}
    assert all(abs(share[s] - paper[s]) < 0.05 for s in share), share
    assert 1.9 < profile.normal_images / profile.abnormal_images < 3.2  # paper: 3.07


def test_plan_rejects_impossible_counts():
    bad = dataclasses.replace(CI, counts={**CI.counts, "T21": phantom_pgds.GroupCount(10, 3)})
    with pytest.raises(ValueError, match="T21"):
        phantom_pgds.plan_cases(bad, 0)


def test_gestational_weeks_match_the_paper():
    weeks = np.array([c.gestational_week for c in phantom_pgds.plan_cases(PAPER, 0)])
    assert weeks.min() >= 11.0 and weeks.max() <= 27.0
    assert abs(weeks.mean() - 14.8) < 0.3
    assert abs(weeks.std() - 2.6) < 0.4
    assert np.allclose(weeks, np.round(weeks, 1))


def test_rotation_spread_does_not_depend_on_the_label():
    """Abnormal cases have more views (as in the paper); their rotation must not spread more."""
    rotations = {"normal": [], "genetic_disease": []}
    for case in phantom_pgds.plan_cases(PAPER, 0):
        pose = phantom_pgds.sample_case_pose(PAPER, case.gestational_week, case.views,
                                             np.random.default_rng([0, case.case_number]))
        rotations[case.label] += [pose.rotation_deg + pose.view_sign * (view - pose.view_center)
                                  for view in case.views]
    normal, abnormal = (np.std(rotations[k]) for k in ("normal", "genetic_disease"))
    assert abs(normal - abnormal) < 0.12 * normal
    assert abs(np.mean(np.abs(rotations["normal"])) - np.mean(np.abs(rotations["genetic_disease"]))) < 0.8


def test_head_placement_does_not_depend_on_the_markers(tmp_path):
    """The same fetus rendered as each subtype sits at the same place in the sector: the head
    is placed by its natural face, so its position cannot hint at the class (placing the
    marked face moved proboscis heads 19 px down, a cue the network read at the vertex), and
    its chin stays where it is under a nose marker (a cue far from the marker's mask)."""
    for folder in ("images", "masks", "phi_masks"):
        (tmp_path / folder).mkdir()
    template = phantom_pgds.plan_cases(CI, 0)[0]
    for number in range(1, 13):
        poses, chins = {}, {}
        for subtype in phantom_pgds.SUBTYPES:
            case = dataclasses.replace(template, case_number=number, subtype=subtype,
                                       views=(0, 7, 14))
            rendered = phantom_pgds.render_case(CI, case, 0, tmp_path)
            poses[subtype] = [(g["head_x"], g["head_y"], g["head_scale_px"])
                              for g in rendered.geometry]
            chins[subtype] = [(g["menton_x"], g["menton_y"]) for g in rendered.geometry]
        for subtype, pose in poses.items():
            assert pose == poses["normal"], (number, subtype)
        # Nose markers (T21, T13, rare) change the nose, not where the chin is; T18's are the jaw.
        for subtype in ("T21", "T13", "rare"):
            assert np.allclose(chins[subtype], chins["normal"], atol=1e-6), (number, subtype)


@pytest.mark.parametrize("subtype", ["T21", "T18", "T13", "rare"])
def test_truth_mask_holds_every_pixel_the_markers_changed(subtype):
    """The mask is the marked regions plus every pixel whose echogenicity differs from the
    same fetus without its markers; a jaw marker changes the jaw, not the neck below it."""
    layout = CI.layout
    for number in range(8):
        rng = np.random.default_rng([21, number])
        natural, shape = phantom_pgds.sample_face_shapes(subtype, 15.0, rng)
        geometry = phantom_pgds.build_face_geometry(shape)
        placement = phantom_pgds.build_face_geometry(natural)
        case_pose = phantom_pgds.sample_case_pose(CI, 15.0, (0,), rng)
        pose = phantom_pgds.fit_view_pose(CI, case_pose, 0, placement, rng)
        _, mask = phantom_pgds.render_view(CI, shape, geometry, pose, rng, natural=placement)
        marked, unmarked = (np.full((layout.height, layout.width), 0.0, np.float32)
                            for _ in range(2))
        phantom_pgds.draw_head(marked, shape, geometry, pose)
        phantom_pgds.draw_head(unmarked, natural, placement, pose)
        changed = (np.abs(marked - unmarked) > 0.05) & phantom_pgds.sector_mask(layout)
        assert changed.any()
        assert (mask[changed] > 0).all(), (subtype, number, shape.markers)
        # and the mask stays local: within the face, not the whole frame
        assert (mask > 0).mean() < 0.12
        if "micrognathia" in shape.markers:   # the neck does not move with the jaw
            body = 3 + 4 + 60   # chest, back and back of the head close head_polygon
            assert np.allclose(geometry.head_polygon[-body:], placement.head_polygon[-body:])


def test_case_ids_do_not_carry_the_label():
    cases = phantom_pgds.plan_cases(PAPER, 0)
    first_abnormal = [c.case_number for c in cases if c.label == "genetic_disease"][:5]
    assert max(first_abnormal) < 100  # abnormal cases are spread over the ids, not appended


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("subtype, allowed, regions", [
    ("normal", [set()], set()),
    ("T21", [{"absent_nasal_bone", "flat_profile"}, {"hypoplastic_nasal_bone", "flat_profile"}],
     {"nasal"}),
    ("T18", [{"micrognathia"}, {"cleft_lip"}, {"micrognathia", "cleft_lip"}], {"jaw", "lip"}),
    ("T13", [{"proboscis"}, {"cebocephaly"}, {"premaxillary_agenesis"}],
     {"proboscis", "nasal", "lip"}),
    ("rare", [{"frontal_bossing"}, {"short_nose"}, {"lip_change"},
              {"frontal_bossing", "short_nose"}, {"frontal_bossing", "lip_change"},
              {"short_nose", "lip_change"}], {"forehead", "nasal", "lip"}),
])
def test_subtype_markers(subtype, allowed, regions):
    seen = set()
    for index in range(60):
        shape = phantom_pgds.sample_face_shape(subtype, 14.8, np.random.default_rng([3, index]))
        assert set(shape.markers) in allowed
        assert set(shape.regions) <= regions
        assert bool(shape.regions) == (subtype != "normal")
        seen.add(frozenset(shape.markers))
        if "absent_nasal_bone" in shape.markers:
            assert shape.nasal_bone == 0.0
        if "micrognathia" in shape.markers:
            assert shape.chin_retrusion > 0.1 and shape.jaw_scale < 0.8
    assert len(seen) == len(allowed)  # every variant occurs


def test_normal_variation_overlaps_the_subtle_markers():
    """The rare subtype's changes sit inside the tails of normal variation, not beyond them."""
    rng = np.random.default_rng(11)
    normal = [phantom_pgds.sample_face_shape("normal", 14.8, rng) for _ in range(2000)]
    rare = [phantom_pgds.sample_face_shape("rare", 14.8, rng) for _ in range(400)]
    boss_normal = np.array([s.boss for s in normal])
    boss_rare = np.array([s.boss for s in rare if "frontal_bossing" in s.markers])
    assert boss_normal.max() > boss_rare.min()
    nose_normal = np.array([s.nose_length for s in normal])
    nose_rare = np.array([s.nose_length for s in rare if "short_nose" in s.markers])
    assert nose_normal.min() < nose_rare.max()


# ----------------------------------------------------------------------------- files


def test_same_seed_gives_identical_files(ci_runs):
    first, second = _sha256_tree(ci_runs["a"]), _sha256_tree(ci_runs["b"])
    assert first == second
    assert any(name.endswith(".dcm") for name in first)
    assert len(first) > 3 * (CI.normal_images + CI.abnormal_images)


def test_another_seed_gives_other_images(ci_runs):
    first, other = _sha256_tree(ci_runs["a"]), _sha256_tree(ci_runs["c"])
    images = [name for name in other if name.startswith("images/")]
    differing = [name for name in images if first.get(name) != other[name]]
    assert len(differing) == len(images)


def test_a_case_renders_the_same_alone(ci_runs, tmp_path):
    """Per-case random streams: rendering one case alone reproduces its files."""
    case = phantom_pgds.plan_cases(CI, 0)[4]
    for folder in ("images", "masks", "phi_masks"):
        (tmp_path / folder).mkdir()
    rendered = phantom_pgds.render_case(CI, case, 0, tmp_path)
    for row in rendered.rows:
        for column in ("image_path", "mask_path", "phi_mask_path"):
            assert (tmp_path / row[column]).read_bytes() == (ci_runs["a"] / row[column]).read_bytes()


def test_manifest_is_valid_and_complete(ci_runs, ci_manifest):
    loaded = load_manifest(ci_runs["a"] / "manifest.csv", labels=LABELS)
    assert list(ci_manifest.columns) == list(phantom_pgds.MANIFEST_COLUMNS)
    assert len(loaded) == CI.normal_images + CI.abnormal_images
    assert set(ci_manifest.view) <= {"0", "7", "14"}
    assert set(ci_manifest.center) == {"phantom-A"}
    assert ((ci_manifest.subtype == "normal") == (ci_manifest.label == "normal")).all()
    assert ci_manifest.subtype.value_counts().to_dict() == {
        s: g.images for s, g in CI.counts.items()}
    weeks = loaded.gestational_week
    assert weeks.between(11, 27).all()
    assert all(len(w.split(".")[1]) == 1 for w in ci_manifest.gestational_week)
    for row in ci_manifest.itertuples():
        stem = f"{row.case_id}_v{int(row.view):02d}.png"
        assert (row.image_path, row.mask_path, row.phi_mask_path) == (
            f"images/{stem}", f"masks/{stem}", f"phi_masks/{stem}")
    load_manifest(ci_runs["a"] / "manifest_dicom.csv", labels=LABELS)


def test_frames_are_gray_and_sized(ci_runs, ci_manifest):
    layout = CI.layout
    sector_png = _gray(ci_runs["a"] / "sector_mask.png") > 0
    assert np.array_equal(sector_png, phantom_pgds.sector_mask(layout))
    for path in ci_manifest.image_path[:10]:
        frame = _gray(ci_runs["a"] / path)
        assert frame.shape == (layout.height, layout.width)
        assert 15 < frame[sector_png].mean() < 120  # the real frames: 34-65 over the crop


def test_truth_masks(ci_runs, ci_manifest):
    sector = phantom_pgds.sector_mask(CI.layout)
    kernel = np.ones((3, 3), np.uint8)
    for row in ci_manifest.itertuples():
        mask = _gray(ci_runs["a"] / row.mask_path)
        assert set(np.unique(mask)) <= {0, 255}
        if row.label == "normal":
            assert not mask.any(), row.mask_path
            continue
        assert mask.any(), row.mask_path
        assert not (mask[~sector]).any(), row.mask_path
        # A region with a margin, not a line: it survives a 3x3 erosion twice.
        assert cv2.erode(mask, kernel, iterations=2).any(), row.mask_path


def test_phi_masks_cover_every_burned_in_pixel_outside_the_sector(ci_runs, ci_manifest):
    sector = phantom_pgds.sector_mask(CI.layout)
    for row in ci_manifest.itertuples():
        frame = _gray(ci_runs["a"] / row.image_path)
        phi = _gray(ci_runs["a"] / row.phi_mask_path) > 0
        assert phi.any() and not (phi & sector).any(), row.phi_mask_path
        assert not frame[~sector & ~phi].any(), row.image_path
        assert frame[phi].any()


@pytest.mark.parametrize("name", ["ci", "default", "paper"])
def test_overlay_stays_outside_the_sector_at_every_size(name):
    layout = phantom_pgds.PROFILES[name].layout
    sector = phantom_pgds.sector_mask(layout)
    ys, xs = np.nonzero(sector)
    assert (ys.min(), xs.min()) >= (layout.sector_top, layout.sector_left)
    assert ys.max() < layout.sector_top + layout.sector_height
    assert xs.max() < layout.sector_left + layout.sector_width
    longest = phantom_pgds.FakePhi("FANTOMAS^VIKTOR", "PH-999999", "19820101", "20211020",
                                   "235959", max(phantom_pgds._HOSPITALS, key=len),
                                   "PHANTOMDOC^VIKTOR", "PHA9999999")
    for view in phantom_pgds.VIEW_ANGLES:
        overlay, mask = phantom_pgds.draw_overlay(layout, longest, view,
                                                  np.random.default_rng(view))
        assert overlay.any() and not (mask.astype(bool) & sector).any()
        assert not (overlay.astype(bool) & ~mask.astype(bool)).any()


def _phi_strings(root: Path) -> list[str]:
    truth = json.loads((root / "phi_truth.json").read_text())["cases"]
    strings = []
    for entry in truth.values():
        strings += [v for k, v in entry.items() if k != "burned_in"] + entry["burned_in"]
    return strings


def test_fake_phi_is_kept_out_of_the_manifest(ci_runs, ci_manifest):
    truth = json.loads((ci_runs["a"] / "phi_truth.json").read_text())["cases"]
    assert set(truth) == set(ci_manifest.case_id)
    assert all(entry["patient_id"].startswith("PH-") for entry in truth.values())
    strings = _phi_strings(ci_runs["a"])
    for name in ("manifest.csv", "manifest_dicom.csv", "markers.csv", "geometry.csv"):
        text = (ci_runs["a"] / name).read_text()
        leaked = [s for s in strings if s in text]
        assert not leaked, (name, leaked[:3])


def test_dicom_carries_the_fake_phi(ci_runs, ci_manifest):
    import pydicom

    truth = json.loads((ci_runs["a"] / "phi_truth.json").read_text())["cases"]
    dicom_manifest = pd.read_csv(ci_runs["a"] / "manifest_dicom.csv", dtype=str)
    for png_row, dcm_row in list(zip(ci_manifest.itertuples(), dicom_manifest.itertuples()))[:6]:
        dataset = pydicom.dcmread(ci_runs["a"] / dcm_row.image_path)
        phi = truth[png_row.case_id]
        assert str(dataset.PatientName) == phi["patient_name"]
        assert dataset.PatientID == phi["patient_id"]
        assert dataset.PatientBirthDate == phi["birth_date"]
        assert dataset.StudyDate == phi["study_date"]
        assert dataset.InstitutionName == phi["institution"]
        assert str(dataset.ReferringPhysicianName) == phi["referring_physician"]
        assert dataset.AccessionNumber == phi["accession_number"]
        block = dataset.private_block(phantom_pgds.PRIVATE_GROUP, phantom_pgds.PRIVATE_CREATOR)
        assert block[0x01].value == phi["patient_id"]
        assert dataset.Modality == "US"
        assert np.array_equal(dataset.pixel_array, _gray(ci_runs["a"] / png_row.image_path))


def test_views_differ_by_the_papers_angles(ci_runs, ci_manifest):
    geometry = pd.read_csv(ci_runs["a"] / "geometry.csv").set_index("image_path")
    rotation = ci_manifest.assign(rotation=geometry.loc[ci_manifest.image_path,
                                                        "rotation_deg"].to_numpy())
    multi = 0
    for _, views in rotation.groupby("case_id"):
        if len(views) < 2:
            continue
        multi += 1
        turned = (views.rotation - views.rotation.iloc[0]).abs().round(2).tolist()
        assert turned == views.view.astype(float).tolist()
    assert multi > 5


def test_markers_file_matches_the_manifest(ci_runs, ci_manifest):
    markers = pd.read_csv(ci_runs["a"] / "markers.csv", dtype=str, keep_default_na=False)
    per_case = ci_manifest.drop_duplicates("case_id").set_index("case_id").subtype
    assert markers.set_index("case_id").subtype.to_dict() == per_case.to_dict()
    assert ((markers.markers == "") == (markers.subtype == "normal")).all()


# ----------------------------------------------------------------------------- signal


@pytest.fixture(scope="module")
def signal_run(tmp_path_factory) -> Path:
    """A bigger phantom at the ci resolution: enough cases for a stable AUROC."""
    counts = phantom_pgds._counts((150, 100), (16, 7), (24, 10), (12, 5), (24, 10))
    profile = dataclasses.replace(CI, name="signal-test", counts=counts)
    return phantom.generate_phantom("pgds", profile, tmp_path_factory.mktemp("signal") / "p",
                                    seed=3, progress=False).parent


def _cross_validated_auroc(features: np.ndarray, frame: pd.DataFrame, C: float = 1.0) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = (frame.label == "genetic_disease").to_numpy().astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
    scores = cross_val_predict(model, features, labels, groups=frame.case_id,
                               cv=StratifiedGroupKFold(5, shuffle=True, random_state=0),
                               method="predict_proba")[:, 1]
    return roc_auc_score(labels, scores)


def test_intensity_histogram_does_not_separate_the_classes(signal_run):
    frame = pd.read_csv(signal_run / "manifest.csv")
    sector = phantom_pgds.sector_mask(CI.layout)
    histograms = []
    for path in frame.image_path:
        counts = np.histogram(_gray(signal_run / path)[sector], bins=16, range=(0, 256))[0]
        histograms.append(counts / counts.sum())
    assert _cross_validated_auroc(np.array(histograms), frame) <= 0.65


def _face_crop(image: np.ndarray, pose: pd.Series, size: int = 16) -> np.ndarray:
    """The face region in head coordinates (pose from geometry.csv), area-downsampled."""
    angle = math.radians(pose.rotation_deg)
    rotation = np.array([[math.cos(angle), -math.sin(angle)],
                         [math.sin(angle), math.cos(angle)]]) * pose.head_scale_px
    corners = np.array([[0.35, -0.45], [1.65, -0.45], [0.35, 1.45]]) @ rotation.T
    source = (corners + [pose.head_x, pose.head_y]).astype(np.float32)
    target = np.array([[0, 0], [4 * size, 0], [0, 4 * size]], np.float32)
    big = cv2.warpAffine(image.astype(np.float32), cv2.getAffineTransform(source, target),
                         (4 * size, 4 * size), flags=cv2.INTER_LINEAR)
    crop = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return ((crop - crop.mean()) / (crop.std() + 1e-6)).ravel()


def test_face_shape_separates_the_classes(signal_run):
    frame = pd.read_csv(signal_run / "manifest.csv")
    poses = pd.read_csv(signal_run / "geometry.csv").set_index("image_path")
    crops = np.array([_face_crop(_gray(signal_run / path), poses.loc[path])
                      for path in frame.image_path])
    assert _cross_validated_auroc(crops, frame, C=0.01) >= 0.75


# ----------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    phantom.add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError:
        return 2


def test_cli_refuses_to_overwrite(tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert _cli(["phantom", "--profile", "ci", "--out", str(occupied)]) == 2
    # --force never replaces a folder that is not a phantom folder.
    assert _cli(["phantom", "--profile", "ci", "--out", str(occupied), "--force"]) == 2
    assert (occupied / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["occupied"]  # no staging left behind

    out = tmp_path / "phantom"
    assert _cli(["phantom", "--study", "pgds", "--profile", "ci", "--out", str(out),
                 "--seed", "2"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["seed"] == 2 and record["config"]["study"] == "pgds"
    # run records keep no machine path (data_prep.provenance.portable_path)
    assert record["manifest"] in (".../manifest.csv", "manifest.csv") or not record["manifest"].startswith("/")
    assert _cli(["phantom", "--profile", "ci", "--out", str(out)]) == 2
    assert _cli(["phantom", "--profile", "ci", "--out", str(out), "--force", "--seed", "3"]) == 0
    assert json.loads((out / "run.json").read_text())["seed"] == 3


@pytest.mark.parametrize("argv", [
    ["phantom", "--study", "no_such_study", "--out", "x"],
    ["phantom", "--profile", "huge", "--out", "x"],
    ["phantom", "--seed", "-1", "--out", "x"],
    ["phantom", "--profile", "ci"],
])
def test_cli_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit) as exit_info:
        _cli(argv)
    assert exit_info.value.code == 2


def test_unknown_study_or_profile_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="study"):
        phantom.generate_phantom("no_such_study", "ci", tmp_path / "x")
    with pytest.raises(InputError, match="profile"):
        phantom.generate_phantom("pgds", "huge", tmp_path / "x")
    assert not (tmp_path / "x").exists()
