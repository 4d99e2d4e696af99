"""Synthetic midsagittal fetal-profile ultrasound phantom for the Pgds study (Tang 2023).

Each frame is a convex scan sector on a black background holding a fetal head in profile (face
to the right): mid-grey speckled soft tissue, a bright skull and facial bones (frontal bone,
nasal bone, palate, mandible), a bright skin line along the profile, a dark brain and anechoic
amniotic fluid in front of the face. The rendering uses multiplicative Rayleigh speckle (complex
Gaussian noise blurred anisotropically, then its magnitude), depth attenuation with partial
time-gain compensation, per-image gain and log compression, so the classes cannot be told apart
by brightness: the disease signal is the SHAPE of the profile (Tang 2023, sections 3.3-3.5):

- T21: absent or hypoplastic nasal bone, flat profile (shallow nasion, short nose, thick
  prenasal skin);
- T18: micrognathia (small, retruded mandible) and/or a cleft in the upper lip;
- T13: one of proboscis (a trunk above the orbit level, no normal nose), cebocephaly (flat
  nose with a single nostril) or premaxillary agenesis (missing premaxilla / central lip);
- rare: one or two subtler changes (frontal bossing, short nose, thin upper / everted lower
  lip) whose size overlaps the tails of the normal variation;
- normal: natural variation of every shape parameter.

Head size grows with the gestational week (11-27, skewed, mean about 14.8, sd about 2.6), the
pose is jittered (rotation, translation, scale) and each case has up to three views whose head
rotation differs by 0, 7 and 14 degrees (the paper's rotated 3-D volume planes). The head is
placed by the same fetus WITHOUT its markers, and the lips, jaw and neck hang from that natural
face, so a marker changes its own structure and nothing else: no position cue of the class.
Every image has a truth mask of its abnormal structure(s) (the marked structures and every
pixel that differs from the same fetus without the markers, plus a margin; empty for normal)
and fake burned-in PHI outside the sector (name, ID, date, hospital, scanner text, grey-scale
bar, ECG trace) with its own pixel mask, so de-identification can be tested.

Output folder (see `generate`): `manifest.csv`, `images/`, `masks/`, `phi_masks/` (PNG, named
`<case_id>_v<view>.png`), `sector_mask.png`, `phi_truth.json` (the fake PHI strings per case;
never in the manifest), `markers.csv` (the shape markers of each case), `geometry.csv` (per
image: head pose and profile landmarks in frame pixels, for pose-aligned baselines and
localisation checks), `run.json`, and with `dicom=True` `dicom/*.dcm` + `manifest_dicom.csv`.
Same seed -> byte-identical files (run.json aside); each case draws from its own random
streams (`np.random.default_rng([seed, case_number, stream])`), so cases are independent.
Measured on one core: ci (72 images of 160x140) ~1 s, default (1120 of 280x240) ~12 s,
paper (1120 of 560x480) ~27 s of CPU.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

from . import atomic, portable
from .errors import InputError

STUDY = "pgds"
LABELS = ("normal", "genetic_disease")
SUBTYPES = ("normal", "T21", "T18", "T13", "rare")
VIEW_ANGLES = (0, 7, 14)
CENTER = "phantom-A"
MANIFEST_COLUMNS = ("image_path", "case_id", "label", "subtype", "gestational_week", "view",
                    "mask_path", "phi_mask_path", "center")

# Bumped whenever the same seed and profile would render different frames, so a phantom made
# by an older checkout (in the git-ignored runs/) is regenerated, not reused. 2: heads placed
# by the natural face (no position cue of the class); 3: lips, palate and jaw hang from the
# natural face, so a nose or lip marker does not move the chin; 4: the neck hangs from the
# natural jaw, and truth masks hold every pixel the markers changed; 5: curves sampled per
# segment, so a marker's change stays local (no sub-pixel shift of the whole profile);
# 6: float rendering in float64 with data_prep.portable, the same bytes on every x86-64 CPU
# (OpenCV's float blur, resize, exp and pow took another SIMD path on another CPU).
GENERATOR_VERSION = 6

# Per-case random streams: np.random.default_rng([seed, case_number, STREAM, ...]) so every case
# is rendered independently of the others (order-independent, parallelisable).
_STREAM_PLAN, _STREAM_GA, _STREAM_SHAPE, _STREAM_POSE, _STREAM_VIEW, _STREAM_PHI = range(6)

# Echogenicity (reflectivity before speckle and compression) of each material.
_FLUID, _BRAIN, _TONGUE, _TISSUE, _PLEXUS, _SKIN, _BONE = 0.012, 0.10, 0.24, 0.36, 0.50, 0.6, 1.0


# ----------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class GroupCount:
    """Images and cases (pregnancies) of one subtype; each case has 1-3 views."""
    images: int
    cases: int


@dataclass(frozen=True)
class FrameLayout:
    """Raw frame and scan-sector geometry, in pixels.

    The convex sector fills the box (left, top, width, height): its apex lies above the box,
    the ends of its inner arc touch the box top, the middle of its outer arc the box bottom,
    its sides the box sides at the outer radius (the sector's bounding box is the box). The margins around the box hold the burned-in text, bar and ECG.
    """
    width: int
    height: int
    sector_left: int
    sector_top: int
    sector_width: int
    sector_height: int
    half_angle_deg: float = 18.0


@dataclass(frozen=True)
class PgdsPhantomProfile:
    """Counts per subtype, frame layout and size of the head in the frame."""
    name: str
    counts: dict[str, GroupCount]
    layout: FrameLayout
    head_scale: float = 0.31       # head half-length (occiput to forehead / 2) / sector width
    png_compression: int = 1       # cv2 PNG level: 1 is fast; output is deterministic at any level

    @property
    def normal_images(self) -> int:
        return self.counts["normal"].images

    @property
    def abnormal_images(self) -> int:
        return sum(c.images for s, c in self.counts.items() if s != "normal")

    @property
    def normal_cases(self) -> int:
        return self.counts["normal"].cases

    @property
    def abnormal_cases(self) -> int:
        return sum(c.cases for s, c in self.counts.items() if s != "normal")

    def as_config(self) -> dict:
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}


def _counts(normal: tuple[int, int], t21: tuple[int, int], t18: tuple[int, int],
            t13: tuple[int, int], rare: tuple[int, int]) -> dict[str, GroupCount]:
    return {name: GroupCount(*pair) for name, pair in
            zip(SUBTYPES, (normal, t21, t18, t13, rare))}


PROFILES: dict[str, PgdsPhantomProfile] = {
    # Tang 2023 sections 2.1, 2.2, 3.1: 845 normal images from 556 pregnancies, 275 abnormal
    # images (T21 60, T18 85, T13 45, rare 85) from 111 pregnancies; abnormal cases are split
    # over subtypes in proportion to their images (about 2.5 images per case).
    "paper": PgdsPhantomProfile(
        name="paper",
        counts=_counts((845, 556), (60, 24), (85, 35), (45, 18), (85, 34)),
        layout=FrameLayout(560, 480, 70, 40, 440, 400)),
    # The paper's images and cases in half-size frames. (A third of them, 372 images, was too
    # few cases to learn the subtler markers from scratch: Pgds-ResNet test AUROC 0.75-0.90
    # there, 0.93-0.98 with these counts, in development runs on one split.)
    "default": PgdsPhantomProfile(
        name="default",
        counts=_counts((845, 556), (60, 24), (85, 35), (45, 18), (85, 34)),
        layout=FrameLayout(280, 240, 35, 20, 220, 200)),
    "ci": PgdsPhantomProfile(
        name="ci",
        counts=_counts((48, 32), (5, 2), (7, 3), (4, 2), (8, 3)),
        layout=FrameLayout(160, 140, 20, 14, 120, 110)),
}


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedCase:
    case_number: int          # 1-based; also the case's random-stream key
    case_id: str
    subtype: str
    gestational_week: float
    views: tuple[int, ...]

    @property
    def label(self) -> str:
        return "normal" if self.subtype == "normal" else "genetic_disease"


def draw_gestational_week(rng: np.random.Generator) -> float:
    """Shifted log-normal in [11, 27] weeks, mean about 14.8 and sd about 2.6 (Tang 2023, 2.2)."""
    mean_excess, sd = 14.8 - 11.0, 2.6
    sigma2 = math.log(1.0 + (sd / mean_excess) ** 2)
    mu = math.log(mean_excess) - sigma2 / 2.0
    week = 11.0 + rng.lognormal(mu, math.sqrt(sigma2))
    return round(float(min(week, 27.0)), 1)


def plan_cases(profile: PgdsPhantomProfile, seed: int) -> list[PlannedCase]:
    """Cases, subtypes, views and gestational weeks, without rendering anything.

    Case ids are assigned in a seeded random order (C0001, ...) so neither the id nor the
    file name carries the label.
    """
    rng = np.random.default_rng([seed, 0, _STREAM_PLAN])
    pending: list[tuple[str, int]] = []
    for subtype in SUBTYPES:
        group = profile.counts[subtype]
        if not group.cases <= group.images <= len(VIEW_ANGLES) * group.cases:
            raise ValueError(f"profile {profile.name}: {subtype} needs cases <= images <= "
                             f"{len(VIEW_ANGLES)} * cases, got {group}")
        n_views = np.full(group.cases, group.images // group.cases)
        n_views[rng.permutation(group.cases)[:group.images - n_views.sum()]] += 1
        pending.extend((subtype, int(k)) for k in n_views)
    order = rng.permutation(len(pending))
    width = max(4, len(str(len(pending))))
    cases = []
    for number, index in enumerate(order, start=1):
        subtype, n_views = pending[index]
        week = draw_gestational_week(np.random.default_rng([seed, number, _STREAM_GA]))
        cases.append(PlannedCase(number, f"C{number:0{width}d}", subtype, week,
                                 VIEW_ANGLES[:n_views]))
    return cases


# ----------------------------------------------------------------------------- face shape


@dataclass
class FaceShape:
    """Shape parameters of one fetus, in head units (1 = half the occipito-frontal length).

    Defaults are the normal means; face features below the nasion are further scaled by
    `face_scale`.
    """
    boss: float = 0.0             # forward offset of the forehead
    slope: float = 0.0            # forward offset of the upper forehead
    nasion_depth: float = 0.07    # how far the nasion sits behind the forehead curve
    nose_length: float = 0.27
    nose_projection: float = 0.23
    nasal_bone: float = 0.22      # length; 0 = absent
    prenasal: float = 0.08        # skin thickness over the nasal bone
    upper_lip: float = 0.0        # forward offset of the upper lip
    lower_lip: float = 0.0        # forward offset of the lower lip
    lower_lip_drop: float = 0.0   # downward offset of the lower lip (eversion)
    chin_retrusion: float = 0.0
    jaw_scale: float = 1.0
    cleft_depth: float = 0.0      # 0 = no cleft lip
    proboscis_length: float = 0.0
    proboscis_width: float = 0.12
    proboscis_angle: float = 0.0  # degrees, negative = upwards
    single_nostril: bool = False
    premaxilla_missing: bool = False
    face_scale: float = 1.3       # face size relative to the cranium (grows with gestation)
    skull_thickness: float = 0.035
    plexus_scale: float = 1.0     # choroid plexus fills less of the brain later in gestation
    # The same fetus without its markers, from which the lips, palate, jaw and neck hang (None:
    # this face itself). Set for every sampled face, so a nose, lip or jaw marker changes that
    # structure, not the position of the structures below it.
    natural: "FaceShape | None" = None
    markers: list[str] = field(default_factory=list)   # names of the abnormalities drawn
    regions: list[str] = field(default_factory=list)   # truth-mask regions to fill


def sample_face_shape(subtype: str, week: float, rng: np.random.Generator) -> FaceShape:
    """Natural variation for everyone, then the subtype's markers on top."""
    return sample_face_shapes(subtype, week, rng)[1]


def sample_face_shapes(subtype: str, week: float,
                       rng: np.random.Generator) -> tuple[FaceShape, FaceShape]:
    """(natural, marked): the fetus's natural variation, and the same face with the subtype's
    markers on top. The head is placed in the sector by the natural face (`render_case`), so
    where the head sits cannot tell the class (see `fit_view_pose`)."""
    maturity = float(np.clip((week - 11.0) / 16.0, 0.0, 1.0))
    shape = FaceShape(
        boss=rng.normal(0.0, 0.022), slope=rng.normal(0.0, 0.02),
        nasion_depth=rng.normal(0.07, 0.013), nose_length=rng.normal(0.27, 0.02),
        nose_projection=rng.normal(0.23, 0.018), nasal_bone=rng.normal(0.22, 0.018),
        prenasal=rng.normal(0.08, 0.01), upper_lip=rng.normal(0.0, 0.014),
        lower_lip=rng.normal(0.0, 0.014), lower_lip_drop=rng.normal(0.0, 0.01),
        chin_retrusion=rng.normal(0.0, 0.022), jaw_scale=rng.normal(1.0, 0.04),
        face_scale=1.28 + 0.2 * maturity + rng.normal(0.0, 0.03),
        skull_thickness=0.03 + 0.02 * maturity,
        plexus_scale=1.0 - 0.5 * maturity)
    # A few normal fetuses have a short nasal bone (a known false-positive source for T21).
    if subtype == "normal" and rng.random() < 0.03:
        shape.nasal_bone *= rng.uniform(0.5, 0.7)
    natural = dataclasses.replace(shape, markers=[], regions=[])
    shape.natural = natural
    if subtype == "T21":
        if rng.random() < 0.55:
            shape.nasal_bone = 0.0
            shape.markers.append("absent_nasal_bone")
        else:
            shape.nasal_bone = rng.uniform(0.03, 0.07)
            shape.markers.append("hypoplastic_nasal_bone")
        shape.nasion_depth = rng.uniform(0.0, 0.02)
        shape.nose_projection *= rng.uniform(0.68, 0.80)
        shape.prenasal = rng.uniform(0.11, 0.14)   # prenasal oedema
        shape.boss -= rng.uniform(0.0, 0.03)
        shape.markers.append("flat_profile")
        shape.regions.append("nasal")
    elif subtype == "T18":
        micrognathia = rng.random() < 0.8
        cleft = rng.random() < 0.45 or not micrognathia
        if micrognathia:
            shape.chin_retrusion = rng.uniform(0.15, 0.24)
            shape.jaw_scale = rng.uniform(0.62, 0.76)
            shape.lower_lip -= rng.uniform(0.01, 0.03)
            shape.markers.append("micrognathia")
            shape.regions.append("jaw")
        if cleft:
            shape.cleft_depth = rng.uniform(0.13, 0.19)
            shape.markers.append("cleft_lip")
            shape.regions.append("lip")
    elif subtype == "T13":
        kind = ("proboscis", "cebocephaly", "premaxillary_agenesis")[int(rng.integers(3))]
        shape.markers.append(kind)
        if kind == "proboscis":
            shape.proboscis_length = rng.uniform(0.28, 0.40)
            shape.proboscis_width = rng.uniform(0.10, 0.14)
            shape.proboscis_angle = rng.uniform(-20.0, 5.0)
            shape.nose_projection = rng.uniform(0.02, 0.04)
            shape.nose_length = rng.uniform(0.17, 0.21)
            shape.nasal_bone = 0.0
            shape.regions += ["proboscis", "nasal"]
        elif kind == "cebocephaly":
            shape.nose_projection = rng.uniform(0.06, 0.09)
            shape.nose_length *= rng.uniform(0.70, 0.80)
            shape.nasal_bone = 0.0 if rng.random() < 0.6 else rng.uniform(0.04, 0.07)
            shape.single_nostril = True
            shape.regions.append("nasal")
        else:
            shape.premaxilla_missing = True
            shape.nose_projection = rng.uniform(0.07, 0.11)
            shape.nose_length *= rng.uniform(0.78, 0.88)
            shape.regions += ["lip", "nasal"]
    elif subtype == "rare":
        options = ("frontal_bossing", "short_nose", "lip_change")
        chosen = rng.permutation(3)[:1 + int(rng.random() < 0.4)]
        for index in sorted(chosen):
            kind = options[index]
            shape.markers.append(kind)
            if kind == "frontal_bossing":
                shape.boss += rng.uniform(0.065, 0.10)
                shape.slope += rng.uniform(0.02, 0.045)
                shape.regions.append("forehead")
            elif kind == "short_nose":
                shape.nose_length -= rng.uniform(0.065, 0.095)
                shape.nose_projection -= rng.uniform(0.045, 0.065)
                shape.nasal_bone *= rng.uniform(0.6, 0.75)
                shape.regions.append("nasal")
            else:
                shape.upper_lip -= rng.uniform(0.04, 0.055)
                shape.lower_lip += rng.uniform(0.045, 0.065)
                shape.lower_lip_drop += rng.uniform(0.015, 0.03)
                shape.regions.append("lip")
    elif subtype != "normal":
        raise ValueError(f"unknown subtype {subtype!r}")
    return natural, shape


# ----------------------------------------------------------------------------- face geometry


def _ellipse(theta_deg: np.ndarray | float, a: float, b: float) -> np.ndarray:
    theta = np.radians(np.asarray(theta_deg, dtype=float))
    return np.stack([a * np.cos(theta), b * np.sin(theta)], axis=-1)


def _smooth(points: np.ndarray, per_segment: int = 12) -> np.ndarray:
    """Shape-preserving (PCHIP, no overshoot) curve through control points, by chord length,
    sampled `per_segment` times between each pair of control points. Per segment, not evenly
    over the whole length: moving one control point (a marker) then moves the samples of the
    segments it shapes and no others (even sampling slid every vertex along the curve, a
    sub-pixel change of the whole profile)."""
    points = np.asarray(points, dtype=float)
    step = np.diff(points, axis=0)
    chord = np.r_[0.0, np.cumsum(np.sqrt(step[:, 0] ** 2 + step[:, 1] ** 2))]
    keep = np.r_[True, np.diff(chord) > 1e-9]
    points, chord = points[keep], chord[keep]
    steps = np.arange(per_segment) / per_segment
    samples = np.r_[(chord[:-1, None] + np.diff(chord)[:, None] * steps).ravel(), chord[-1]]
    return PchipInterpolator(chord, points, axis=0)(samples)


def _inward_offset(curve: np.ndarray, distance: float) -> np.ndarray:
    """Offset a curve travelled with the head on its left (image axes, y down) into the head."""
    tangent = np.gradient(curve, axis=0)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
    inward = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    return curve + distance * inward


def _capsule(base: np.ndarray, angle_deg: float, length: float, width: float) -> np.ndarray:
    """Trunk-like tube from `base` along `angle_deg` with a rounded tip."""
    direction = np.array([math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))])
    normal = np.array([-direction[1], direction[0]])
    tip = base + direction * (length - width / 2)
    arc = np.radians(np.linspace(-90, 90, 9))
    cap = [tip + width / 2 * (math.cos(t) * direction + math.sin(t) * normal) for t in arc]
    return np.array([base - normal * width / 2 - direction * 0.06, *cap[::-1],
                     base + normal * width / 2 - direction * 0.06])


@dataclass
class FaceGeometry:
    """Everything drawn for one fetus, in canonical head units (x to the face, y down)."""
    head_polygon: np.ndarray
    profile: np.ndarray            # skin line from the top of the forehead to under the chin
    skull: np.ndarray
    brain: np.ndarray
    plexus: tuple                  # (center, axes, angle)
    thalamus: tuple
    cranial_base: np.ndarray
    spine: np.ndarray
    tongue: tuple
    nasal_bone: np.ndarray | None
    palate: np.ndarray
    premaxilla: np.ndarray | None
    mandible: np.ndarray
    proboscis: np.ndarray | None
    proboscis_canal: np.ndarray | None
    cleft: np.ndarray | None
    nostril: tuple | None
    regions: dict[str, np.ndarray]   # truth-mask region name -> points whose hull it is
    fit_points: np.ndarray           # points that must lie inside the sector
    landmarks: dict[str, np.ndarray]  # named profile points (soft tissue)


def build_face_geometry(shape: FaceShape) -> FaceGeometry:
    """Curves and regions of the head in profile, from the shape parameters.

    The cranium is an ellipse (half-axes 1.04 x 0.90 at the skin) centred at the origin; the
    face hangs below the nasion and is scaled about it by `face_scale`.
    """
    skin = lambda theta: _ellipse(theta, 1.04, 0.90)  # noqa: E731  (skin over the cranium)
    top = skin(-72.0)
    upper_forehead = skin(-42.0) + [shape.boss * 0.5 + shape.slope, 0.0]
    forehead = skin(-14.0) + [shape.boss, 0.0]
    nasion = skin(10.0) - [shape.nasion_depth, 0.0]
    fs, js = shape.face_scale, shape.jaw_scale
    base = shape.natural or shape
    anchor_nasion = skin(10.0) - [base.nasion_depth, 0.0]

    def face(offset) -> np.ndarray:   # the nose: hangs from this face's nasion
        return nasion + fs * np.asarray(offset, dtype=float)

    def mouth(offset) -> np.ndarray:  # lips, palate, jaw: hang from the natural nasion
        return anchor_nasion + fs * np.asarray(offset, dtype=float)

    proj, length = shape.nose_projection, shape.nose_length
    tip = face([proj, length])
    dorsum = face([proj * 0.5 + 0.012, length * 0.5 - 0.01])
    tip_under = face([proj - 0.015, length + 0.035])
    subnasale = face([proj * 0.40, length + 0.06])
    # Where the upper lip starts on the natural face (the nose base, before any nose marker).
    lip_base_off = np.array([base.nose_projection * 0.40, base.nose_length + 0.06])
    lip_base = mouth(lip_base_off)
    natural_stomion_off = lip_base_off + [base.upper_lip * 0.5, 0.135]
    if shape.premaxilla_missing:   # the central upper lip falls back; lower lip and jaw stay
        upper_lip_off = lip_base_off + [-0.15, 0.075]
        stomion_off = lip_base_off + [-0.11, 0.15]
    else:
        upper_lip_off = lip_base_off + [0.045 + shape.upper_lip, 0.075]
        stomion_off = lip_base_off + [shape.upper_lip * 0.5, 0.135]
    upper_lip, stomion = mouth(upper_lip_off), mouth(stomion_off)
    lower_lip = mouth(natural_stomion_off + [0.035 + shape.lower_lip,
                                             0.065 + shape.lower_lip_drop])
    cr = shape.chin_retrusion
    labiomental = mouth(natural_stomion_off + [-0.02 - 0.5 * cr,
                                               0.075 + 0.07 * js + shape.lower_lip_drop])
    pogonion = mouth(natural_stomion_off + [0.02 - cr, 0.22 * js])
    menton = mouth(natural_stomion_off + [-0.08 - cr, 0.31 * js])
    submental = menton + fs * np.array([-0.22 * js, 0.02])
    # The neck (and the body below it) hangs from the natural jaw: a small jaw changes the
    # chin, not where the neck and chest are.
    natural_menton = mouth(natural_stomion_off + [-0.08 - base.chin_retrusion,
                                                  0.31 * base.jaw_scale])
    neck = natural_menton + fs * np.array([-0.22 * base.jaw_scale, 0.02]) + [-0.12, 0.14]
    chest = np.array([neck + [-0.02, 0.5], neck + [-0.15, 1.3], neck + [-0.25, 2.2]])
    back = np.array([[-0.75, neck[1] + 2.0], [-0.62, neck[1] + 1.2], [-0.50, neck[1] + 0.35],
                     skin(118.0)])

    control = np.array([top, upper_forehead, forehead, nasion, dorsum, tip, tip_under, subnasale,
                        upper_lip, stomion, lower_lip, labiomental, pogonion, menton, submental,
                        neck])
    profile = _smooth(control)
    back_of_head = skin(np.linspace(118.0, 288.0, 60))
    head_polygon = np.vstack([profile, chest, back, back_of_head])

    # Frontal bone follows the forehead skin (so bossing moves the bone); the rest of the skull
    # follows the cranium ellipse.
    forehead_curve = _smooth(control[:4])
    frontal = _inward_offset(forehead_curve, 0.065)[: -4]
    skull = np.vstack([_ellipse(np.linspace(125.0, 280.0, 50), 0.975, 0.84), frontal])
    brain = _ellipse(np.linspace(0, 360, 72), 0.87, 0.70) + [-0.04, -0.08]
    cranial_base = np.array([[0.55, 0.42], [0.25, 0.55], [-0.05, 0.62]])
    spine = np.array([[-0.62 + 0.09 * k, 0.80 + 0.17 * k] for k in range(7)])

    direction = (tip - nasion) / max(np.linalg.norm(tip - nasion), 1e-9)
    into_face = np.array([-direction[1], direction[0]])
    bone_start = nasion + fs * (shape.prenasal * into_face + 0.02 * direction)
    nasal_bone = (np.array([bone_start, bone_start + direction * fs * shape.nasal_bone])
                  if shape.nasal_bone > 0.01 else None)
    alveolus = upper_lip + fs * np.array([-0.075, 0.03])
    palate_front = lip_base + fs * np.array([-0.07, 0.035])
    palate_back = lip_base + fs * np.array([-0.55, 0.07])
    if shape.premaxilla_missing:
        palate = np.array([lip_base + fs * np.array([-0.27, 0.05]), palate_back])
        premaxilla = None
    else:
        palate = np.array([alveolus, palate_front, palate_back])
        premaxilla = np.array([palate_front, palate_front + fs * np.array([-0.14, 0.01])])
    # Midsagittal plane: the symphysis and the front of the lower border (the rami are lateral).
    mandible = np.array([lower_lip + fs * np.array([-0.075, 0.03]),
                         pogonion + fs * np.array([-0.065, 0.0]),
                         menton + fs * np.array([-0.03, -0.045]),
                         menton + fs * np.array([-0.20 * js, -0.06])])
    tongue = (lip_base + fs * np.array([-0.27, 0.12]), (0.17 * fs, 0.06 * fs), 5.0)

    proboscis = canal = None
    if shape.proboscis_length > 0:
        # Attached above the orbit level, between forehead and nasion.
        base = forehead + 0.55 * (nasion - forehead)
        proboscis = _capsule(base, shape.proboscis_angle, shape.proboscis_length * fs,
                             shape.proboscis_width * fs)
        angle = math.radians(shape.proboscis_angle)
        axis = np.array([math.cos(angle), math.sin(angle)])
        canal = np.array([base, base + axis * (shape.proboscis_length - 0.05) * fs])
    cleft = None
    if shape.cleft_depth > 0:
        cleft = np.array([upper_lip + fs * np.array([0.05, -0.055]),
                          upper_lip + fs * np.array([-(0.02 + shape.cleft_depth), -0.005]),
                          upper_lip + fs * np.array([0.05, 0.045])])
    nostril = None
    if shape.single_nostril:
        nostril = (nasion + fs * np.array([proj * 0.45, length * 0.78]), 0.032 * fs)

    inner = lambda p, dx: p + fs * np.array([-dx, 0.0])  # noqa: E731
    regions = {
        "nasal": np.array([forehead + 0.6 * (nasion - forehead), inner(nasion, 0.2), tip,
                           tip_under, subnasale, inner(subnasale, 0.12),
                           *([] if nasal_bone is None else list(nasal_bone))]),
        "forehead": np.vstack([upper_forehead, forehead, nasion, _inward_offset(forehead_curve, 0.12)]),
        "lip": np.array([subnasale, upper_lip, stomion, lower_lip, inner(subnasale, 0.3),
                         inner(stomion, 0.25), inner(lower_lip, 0.12),
                         *([] if cleft is None else list(cleft)),
                         *([] if premaxilla is None else list(premaxilla))]),
        "jaw": np.vstack([lower_lip, labiomental, pogonion, menton, submental, mandible,
                          inner(stomion, 0.25), inner(menton, 0.15)]),
        "proboscis": proboscis if proboscis is not None else np.zeros((0, 2)),
    }
    fit_points = np.vstack([profile, skin(np.linspace(200.0, 290.0, 12)), mandible,
                            *([] if proboscis is None else [proboscis])])
    return FaceGeometry(head_polygon, profile, skull, brain,
                        ((-0.28, -0.02), (0.38 * shape.plexus_scale + 0.12,
                                          0.20 * shape.plexus_scale + 0.07), 20.0),
                        ((0.08, 0.18), (0.22, 0.14), -10.0), cranial_base, spine, tongue,
                        nasal_bone, palate, premaxilla, mandible, proboscis, canal, cleft,
                        nostril, regions, fit_points,
                        {"forehead": forehead, "nasion": nasion, "nasal_tip": tip,
                         "subnasale": subnasale, "upper_lip": upper_lip, "stomion": stomion,
                         "lower_lip": lower_lip, "pogonion": pogonion, "menton": menton})


# ----------------------------------------------------------------------------- sector and pose


@dataclass(frozen=True)
class Sector:
    """Convex scan sector: ring between radii r_in and r_out around the apex, +- half_angle."""
    apex_x: float
    apex_y: float
    r_in: float
    r_out: float
    half_angle: float   # radians

    def contains(self, points: np.ndarray, margin: float = 0.0) -> np.ndarray:
        dx, dy = points[..., 0] - self.apex_x, points[..., 1] - self.apex_y
        radius = np.sqrt(dx * dx + dy * dy)
        angle = np.abs(np.arctan2(dx, dy))
        return ((radius >= self.r_in + margin) & (radius <= self.r_out - margin)
                & (angle <= self.half_angle - margin / np.maximum(radius, 1.0)))


def sector_geometry(layout: FrameLayout) -> Sector:
    theta = math.radians(layout.half_angle_deg)
    r_out = (layout.sector_width - 1) / (2.0 * math.sin(theta))
    apex_y = layout.sector_top + layout.sector_height - 1 - r_out
    # The inner arc is highest at its ends: they touch the box top.
    r_in = (layout.sector_top - apex_y) / math.cos(theta)
    return Sector(layout.sector_left + (layout.sector_width - 1) / 2.0, apex_y, r_in, r_out,
                  theta)


def _pixel_grid(layout: FrameLayout) -> np.ndarray:
    ys, xs = np.mgrid[0:layout.height, 0:layout.width].astype(np.float64)
    return np.stack([xs, ys], axis=-1)


def sector_mask(layout: FrameLayout) -> np.ndarray:
    """Boolean (H, W) mask of the scan sector (pixel centres inside the fan)."""
    return sector_geometry(layout).contains(_pixel_grid(layout))


@dataclass(frozen=True)
class Pose:
    center_x: float
    center_y: float
    scale: float         # pixels per head unit
    rotation_deg: float  # positive turns the face downwards (clockwise on screen)

    def apply(self, points: np.ndarray) -> np.ndarray:
        angle = math.radians(self.rotation_deg)
        cos, sin = math.cos(angle), math.sin(angle)
        points = np.asarray(points, dtype=float)
        x, y = points[..., 0], points[..., 1]
        # Elementwise, not `points @ rotation`: BLAS picks its kernel (and FMA use) by CPU.
        return np.stack([(x * cos - y * sin) * self.scale + self.center_x,
                         (x * sin + y * cos) * self.scale + self.center_y], axis=-1)


@dataclass(frozen=True)
class CasePose:
    scale: float
    rotation_deg: float  # rotation of the mean view angle
    view_sign: int
    view_center: float   # mean of the case's view angles
    offset_x: float      # fraction of the sector width
    offset_y: float      # fraction of the sector height


ROTATION_SD_DEG = 6.0


def sample_case_pose(profile: PgdsPhantomProfile, week: float, views: tuple[int, ...],
                     rng: np.random.Generator) -> CasePose:
    """Head size from the gestational week (the sonographer zooms, so it grows only mildly).

    Views are turned about their mean angle, and the case's own rotation is drawn with the
    variance the views do not already add, so an image's rotation has the same spread
    (ROTATION_SD_DEG) whether its case has 1, 2 or 3 views -- otherwise rotation would hint
    at the label (abnormal cases have more views, as in the paper).
    """
    maturity = float(np.clip((week - 11.0) / 16.0, 0.0, 1.0))
    scale = (profile.head_scale * profile.layout.sector_width * (0.90 + 0.22 * maturity)
             * rng.uniform(0.94, 1.06))
    center = float(np.mean(views))
    spread = float(np.mean((np.asarray(views, dtype=float) - center) ** 2))
    sd = math.sqrt(max(ROTATION_SD_DEG ** 2 - spread, 1.0))
    return CasePose(scale, float(np.clip(rng.normal(0.0, sd), -2.0 * sd, 2.0 * sd)),
                    int(rng.choice([-1, 1])), center, rng.uniform(-0.04, 0.04),
                    rng.uniform(-0.03, 0.03))


def fit_view_pose(profile: PgdsPhantomProfile, case_pose: CasePose, view: int,
                  geometry: FaceGeometry, rng: np.random.Generator) -> Pose:
    """The view's pose: the case pose turned by the view angle, with the face inside the sector.

    The head is centred in the sector box plus the case's offset; when the face would leave
    the sector, the nearest shift (2 % steps of the box, up to 16 %) that fits is taken, and
    only when none fits is the head shrunk by 3 % and the search repeated. `render_case` passes
    the case's NATURAL face (no markers), so the pose says nothing of the class; a marker that
    reaches further (a long proboscis) may be cut by the sector edge, as in a real scan.
    """
    layout = profile.layout
    sector = sector_geometry(layout)
    margin = 0.08 * case_pose.scale
    scale = case_pose.scale * rng.uniform(0.98, 1.02)
    box = np.array([layout.sector_width, layout.sector_height], dtype=float)
    box_center = np.array([layout.sector_left, layout.sector_top]) + box / 2.0
    offset = (np.array([case_pose.offset_x, case_pose.offset_y]) + rng.normal(0, 0.01, 2)) * box
    rotation = case_pose.rotation_deg + case_pose.view_sign * (view - case_pose.view_center)
    steps = np.arange(-8, 9) * 0.02
    shifts = np.stack(np.meshgrid(steps, steps), -1).reshape(-1, 2)
    shifts = shifts[np.argsort(shifts[:, 0] ** 2 + shifts[:, 1] ** 2, kind="stable")] * box
    for _ in range(15):
        points = Pose(0.0, 0.0, scale, rotation).apply(geometry.fit_points)
        nominal = box_center - (points.min(axis=0) + points.max(axis=0)) / 2.0 + offset
        centers = nominal + shifts
        inside = sector.contains(points[None, :, :] + centers[:, None, :], margin).all(axis=1)
        if inside.any():
            x, y = centers[int(np.argmax(inside))]
            return Pose(float(x), float(y), scale, rotation)
        scale *= 0.97
    raise RuntimeError("phantom head does not fit the sector; the profile's head_scale is too large")


# ----------------------------------------------------------------------------- rendering


_SHIFT = 4  # cv2 fixed-point bits: sub-pixel accurate drawing


def _fixed(points_px: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points_px) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _fill(canvas: np.ndarray, points_px: np.ndarray, value: float) -> None:
    cv2.fillPoly(canvas, [_fixed(points_px)], float(value), cv2.LINE_8, _SHIFT)


def _line(canvas: np.ndarray, points_px: np.ndarray, value: float, width_px: float) -> None:
    cv2.polylines(canvas, [_fixed(points_px)], False, float(value), max(1, int(round(width_px))),
                  cv2.LINE_8, _SHIFT)


def _ellipse_fill(canvas: np.ndarray, pose: Pose, spec: tuple, value: float) -> None:
    center, axes, angle = spec
    c = pose.apply(np.array([center]))[0]
    axes_px = (max(1, int(round(axes[0] * pose.scale * (1 << _SHIFT)))),
               max(1, int(round(axes[1] * pose.scale * (1 << _SHIFT)))))
    cv2.ellipse(canvas, tuple(int(v) for v in np.round(c * (1 << _SHIFT))), axes_px,
                angle + pose.rotation_deg, 0, 360, float(value), -1, cv2.LINE_8, _SHIFT)


@dataclass(frozen=True)
class _LayoutCache:
    sector: np.ndarray      # bool (H, W)
    depth: np.ndarray       # float64, 0 at the inner arc, 1 at the outer arc


_LAYOUT_CACHE: dict[FrameLayout, _LayoutCache] = {}


def _layout_cache(layout: FrameLayout) -> _LayoutCache:
    if layout not in _LAYOUT_CACHE:
        sector = sector_geometry(layout)
        grid = _pixel_grid(layout)
        dx, dy = grid[..., 0] - sector.apex_x, grid[..., 1] - sector.apex_y
        radius = np.sqrt(dx * dx + dy * dy)
        depth = (radius - sector.r_in) / (sector.r_out - sector.r_in)
        _LAYOUT_CACHE[layout] = _LayoutCache(sector.contains(grid), depth)
    return _LAYOUT_CACHE[layout]


def _uterine_wall(canvas: np.ndarray, layout: FrameLayout, head_top_px: float,
                  rng: np.random.Generator) -> None:
    """Maternal tissue / placenta across the top of the sector, kept clear of the fetal head."""
    room = head_top_px - layout.sector_top
    if rng.random() > 0.7 or room < 0.12 * layout.sector_height:
        return
    lowest = layout.sector_top + rng.uniform(0.25, 0.7) * room
    radius = rng.uniform(1.5, 4.0) * layout.sector_width
    cx = layout.sector_left + layout.sector_width * rng.uniform(-0.3, 1.3)
    cy = lowest - radius
    band = max(2, int(rng.uniform(0.02, 0.05) * layout.sector_height))
    cv2.circle(canvas, (int(cx), int(cy)), int(radius), float(_TISSUE * rng.uniform(0.6, 0.9)), -1)
    cv2.circle(canvas, (int(cx), int(cy)), int(radius), float(_SKIN * 0.8), band)


def draw_head(echo: np.ndarray, shape: FaceShape, geometry: FaceGeometry, pose: Pose) -> None:
    """Draw the head's echogenicity (before blur, speckle and compression) into `echo`."""
    s = pose.scale
    px = pose.apply
    _fill(echo, px(geometry.head_polygon), _TISSUE)
    _fill(echo, px(geometry.brain), _BRAIN)
    _ellipse_fill(echo, pose, geometry.plexus, _PLEXUS)
    _ellipse_fill(echo, pose, geometry.thalamus, 0.17)
    _line(echo, px(geometry.cranial_base), _TISSUE * 1.3, 0.05 * s)
    for vertebra in px(geometry.spine):
        cv2.circle(echo, tuple(int(v) for v in np.round(vertebra * (1 << _SHIFT))),
                   max(1, int(0.03 * s * (1 << _SHIFT))), 0.85, -1, cv2.LINE_8, _SHIFT)
    _ellipse_fill(echo, pose, geometry.tongue, _TONGUE)
    _line(echo, px(geometry.skull), _BONE, shape.skull_thickness * s)
    _line(echo, px(geometry.palate), 0.85 * _BONE, 0.028 * s)
    if geometry.premaxilla is not None:
        _line(echo, px(geometry.premaxilla), 0.85 * _BONE, 0.045 * s)
    _line(echo, px(geometry.mandible), 0.9 * _BONE, 0.038 * s)
    if geometry.nasal_bone is not None:
        _line(echo, px(geometry.nasal_bone), _BONE, 0.05 * s)
    if geometry.proboscis is not None:
        _fill(echo, px(geometry.proboscis), _TISSUE)
        _line(echo, px(np.vstack([geometry.proboscis, geometry.proboscis[:1]])[1:-1]), _SKIN,
              0.02 * s)
        _line(echo, px(geometry.proboscis_canal), _FLUID, 0.015 * s)
    _line(echo, px(geometry.profile), _SKIN, max(1.0, 0.02 * s))
    if geometry.cleft is not None:
        _fill(echo, px(geometry.cleft), _FLUID)
    if geometry.nostril is not None:
        center, radius = geometry.nostril
        _ellipse_fill(echo, pose, (center, (radius, radius * 0.8), 0.0), _FLUID)


#: Echogenicity difference from the natural face above which a pixel counts as changed.
_CHANGED = 0.05


def render_view(profile: PgdsPhantomProfile, shape: FaceShape, geometry: FaceGeometry,
                pose: Pose, rng: np.random.Generator,
                natural: FaceGeometry | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One B-mode frame (uint8, sector only; outside is 0) and its truth mask (uint8 0/255).

    The truth mask is the convex hull of each marked region (`shape.regions`) and, given the
    `natural` face's geometry, every pixel whose echogenicity differs from it (so the mask
    holds all that the markers changed, and nothing else), dilated by a margin of 0.06 head
    units and clipped to the sector."""
    layout = profile.layout
    cache = _layout_cache(layout)
    s = pose.scale
    px = pose.apply
    echo = np.full((layout.height, layout.width), _FLUID, np.float32)
    head_top = float(min(px(geometry.skull)[:, 1].min(), px(geometry.profile)[:, 1].min()))
    _uterine_wall(echo, layout, head_top, rng)
    draw_head(echo, shape, geometry, pose)
    changed = None
    if natural is not None and shape.regions:
        marked = np.full(echo.shape, _FLUID, np.float32)
        unmarked = np.full(echo.shape, _FLUID, np.float32)
        draw_head(marked, shape, geometry, pose)
        draw_head(unmarked, shape.natural or shape, natural, pose)
        changed = np.abs(marked - unmarked) > _CHANGED

    height, width = echo.shape
    # Float work in float64 with data_prep.portable (no CPU-dependent SIMD path; see there).
    echo = portable.gaussian_blur(echo, 0.004 * layout.sector_width + 0.3,
                                  0.002 * layout.sector_height + 0.3)
    # Rayleigh speckle: magnitude of complex Gaussian noise low-passed by an anisotropic PSF
    # (lateral resolution worse than axial), mixed with a constant (a diffuse component, as
    # compounding gives) so that it is softer than fully developed speckle.
    # The PSF is wide laterally, so the field is drawn at half width and interpolated (faster).
    half_width = (width + 1) // 2
    noise = rng.standard_normal((2, height, half_width))
    sigma_lateral, sigma_axial = 0.008 * layout.sector_width, 0.0055 * layout.sector_height
    real, imag = (portable.gaussian_blur(part, sigma_lateral, sigma_axial) for part in noise)
    # A little smoothing after detection fills the zero crossings (as compounding does).
    speckle = portable.gaussian_blur(np.sqrt(real * real + imag * imag), 0.5 * sigma_lateral,
                                     0.5 * sigma_axial)
    speckle = portable.resize(speckle, width, height, "linear")
    speckle *= 0.75 / portable.exact_mean(speckle)
    speckle += 0.25
    # Slow multiplicative fields: tissue heterogeneity, depth attenuation with partial
    # time-gain compensation, and overall gain.
    coarse = rng.standard_normal((max(2, height // 14), max(2, width // 14)))
    attenuation = rng.uniform(0.4, 1.3)
    compensation = attenuation * rng.uniform(0.4, 0.9)
    gain = math.exp(rng.normal(0.0, 0.18))
    slow = np.exp(0.28 * portable.resize(coarse, width, height, "cubic")
                  + (compensation - attenuation) * cache.depth)
    intensity = echo * speckle * slow * gain
    # Display mapping: power-law compression, 8 bits, nothing outside the sector.
    image = np.power(np.maximum(intensity, 0.0), rng.uniform(0.72, 0.92)) * 255.0
    image[~cache.sector] = 0.0
    frame = portable.to_uint8(image)

    mask = np.zeros((height, width), np.uint8)
    for region in shape.regions:
        points = geometry.regions[region]
        if len(points):
            hull = cv2.convexHull(px(points).astype(np.float32))
            _fill(mask, hull.reshape(-1, 2), 255)
    if changed is not None:
        mask[changed] = 255
    if mask.any():
        radius = max(1, int(round(0.06 * s)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask, kernel)
        mask[~cache.sector] = 0
    return frame, mask


# ----------------------------------------------------------------------------- fake PHI


_GIVEN_NAMES = ("ALICE", "BORIS", "CLARA", "DMITRI", "EDITH", "FELIX", "GRETA", "HUGO", "IRIS",
                "JONAS", "KAREN", "LEON", "MAYA", "NILS", "OLGA", "PAVEL", "QUINN", "ROSA",
                "SVEN", "TESSA", "UMA", "VIKTOR", "WANDA", "XENIA", "YURI", "ZOE")
_FAMILY_NAMES = ("PHANTOM", "FANTOMAS", "MOCKWELL", "DUMMLER", "SYNTHSON", "FAKEBURG")
_HOSPITALS = ("PHANTOM GENERAL HOSPITAL", "MOCK WOMEN AND CHILDREN CENTER",
              "SYNTHETIC MATERNITY CLINIC")
_SCANNER_TEXT = ("MI 0.9", "TIs 0.3", "RIC6-12", "3D", "VCI", "Q max")


@dataclass(frozen=True)
class FakePhi:
    """Made-up identifiers of one case (deterministic from the seed); never real people."""
    patient_name: str
    patient_id: str
    birth_date: str          # YYYYMMDD
    study_date: str          # YYYYMMDD
    study_time: str          # HHMMSS
    institution: str
    referring_physician: str
    accession_number: str

    def burned_in(self) -> list[str]:
        return [self.institution, self.stamp(), self.patient_name, f"ID {self.patient_id}"]

    def stamp(self) -> str:
        d, t = self.study_date, self.study_time
        return f"{d[:4]}-{d[4:6]}-{d[6:]} {t[:2]}:{t[2:4]}:{t[4:]}"

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "burned_in": self.burned_in()}


def draw_fake_phi(rng: np.random.Generator) -> FakePhi:
    from datetime import date, timedelta

    given = _GIVEN_NAMES[int(rng.integers(len(_GIVEN_NAMES)))]
    family = _FAMILY_NAMES[int(rng.integers(len(_FAMILY_NAMES)))]
    birth = date(1982, 1, 1) + timedelta(days=int(rng.integers(0, 16 * 365)))
    # Study dates in the paper's enrolment window (March 2020 - October 2021).
    study = date(2020, 3, 1) + timedelta(days=int(rng.integers(0, 600)))
    seconds = int(rng.integers(8 * 3600, 17 * 3600))
    doctor = _GIVEN_NAMES[int(rng.integers(len(_GIVEN_NAMES)))]
    return FakePhi(
        patient_name=f"{family}^{given}",
        patient_id=f"PH-{int(rng.integers(0, 1_000_000)):06d}",
        birth_date=birth.strftime("%Y%m%d"), study_date=study.strftime("%Y%m%d"),
        study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        institution=_HOSPITALS[int(rng.integers(len(_HOSPITALS)))],
        referring_physician=f"PHANTOMDOC^{doctor}",
        accession_number=f"PHA{int(rng.integers(0, 10_000_000)):07d}")


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _font_scale(max_height: float, max_width: float | None = None,
                texts: Iterable[str] = ()) -> float:
    (_, height), baseline = cv2.getTextSize("Ag", _FONT, 1.0, 1)
    scale = min(0.42, max_height / (height + baseline))
    if max_width is not None:
        widest = max((cv2.getTextSize(t, _FONT, 1.0, 1)[0][0] for t in texts), default=1)
        scale = min(scale, max_width / widest)
    return max(scale, 0.1)


def _ecg_wave(phase: np.ndarray) -> np.ndarray:
    """P, QRS and T waves of one beat (phase in [0, 1))."""
    bumps = ((0.12, 0.2, 0.035), (-0.15, 0.37, 0.012), (1.0, 0.40, 0.013), (-0.28, 0.43, 0.012),
             (0.3, 0.65, 0.05))
    return sum(a * np.exp(-0.5 * ((phase - c) / w) ** 2) for a, c, w in bumps)


def draw_overlay(layout: FrameLayout, phi: FakePhi, view: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Burned-in text, grey-scale bar and ECG outside the sector; returns (pixels, mask 0/255)."""
    overlay = np.zeros((layout.height, layout.width), np.uint8)
    bar_mask = np.zeros_like(overlay)
    top, left = layout.sector_top, layout.sector_left
    right = left + layout.sector_width
    bottom = top + layout.sector_height
    # Two text lines in the top margin: hospital / date-time, then name / ID.
    line_height = (top - 3) / 2.0
    scale = _font_scale(line_height - 1)
    (_, text_h), descent = cv2.getTextSize("Ag", _FONT, scale, 1)
    lines = ((phi.institution, phi.stamp()), (phi.patient_name, f"ID {phi.patient_id}"))
    for index, (left_text, right_text) in enumerate(lines):
        baseline_y = int(math.floor(1 + (index + 1) * line_height - descent))
        cv2.putText(overlay, left_text, (2, baseline_y), _FONT, scale, 230, 1, cv2.LINE_AA)
        width = cv2.getTextSize(right_text, _FONT, scale, 1)[0][0]
        cv2.putText(overlay, right_text, (max(2, layout.width - width - 2), baseline_y), _FONT,
                    scale, 230, 1, cv2.LINE_AA)
    # Scanner settings down the left margin.
    left_scale = _font_scale(line_height - 1, left - 5, _SCANNER_TEXT)
    (_, left_h), left_descent = cv2.getTextSize("Ag", _FONT, left_scale, 1)
    step = (left_h + left_descent) * 2.2
    for index, text in enumerate(_SCANNER_TEXT):
        baseline_y = int(top + (index + 1) * step)
        if baseline_y + left_descent >= bottom:
            break
        cv2.putText(overlay, text, (1, baseline_y), _FONT, left_scale, 200, 1, cv2.LINE_AA)
    # Grey-scale bar in the right margin.
    margin_right = layout.width - right
    if margin_right >= 6:
        x0 = right + max(2, margin_right // 3)
        x1 = min(layout.width - 1, x0 + max(2, margin_right // 4))
        y0, y1 = int(top + 0.08 * layout.sector_height), int(top + 0.5 * layout.sector_height)
        ramp = np.linspace(250, 20, y1 - y0).astype(np.uint8)[:, None]
        overlay[y0:y1, x0:x1] = ramp
        bar_mask[y0:y1, x0:x1] = 1
    # ECG trace below the sector.
    margin_bottom = layout.height - bottom
    if margin_bottom >= 6:
        xs = np.arange(left, right, dtype=np.float64)
        period = layout.sector_width * rng.uniform(0.22, 0.3)
        phase = ((xs - left) / period + rng.uniform(0, 1)) % 1.0
        ys = bottom + 0.55 * margin_bottom - 0.28 * margin_bottom * _ecg_wave(phase)
        cv2.polylines(overlay, [np.round(np.stack([xs, ys], 1)).astype(np.int32)], False, 200, 1,
                      cv2.LINE_AA)
    mask = ((overlay > 0) | (bar_mask > 0)).astype(np.uint8) * 255
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    return overlay, mask


# ----------------------------------------------------------------------------- output


@dataclass
class RenderedCase:
    rows: list[dict]
    phi: FakePhi
    markers: list[str]
    geometry: list[dict]   # per image: head pose and profile landmarks in frame pixels


def _png(path: Path, image: np.ndarray, level: int = 1) -> None:
    # Run-length strategy: fast, and smaller than the default filter for speckle and masks.
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, level,
                                          cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]):
        raise OSError(f"could not write {path}")


def _dicom_tags(phi: FakePhi, case: PlannedCase, view: int, seed: int) -> dict:
    from pydicom.uid import generate_uid

    key = f"phantom-pgds/{seed}/{case.case_id}"
    return {
        "PatientName": phi.patient_name, "PatientID": phi.patient_id,
        "PatientBirthDate": phi.birth_date, "PatientSex": "F",
        "StudyDate": phi.study_date, "StudyTime": phi.study_time,
        "ContentDate": phi.study_date, "ContentTime": phi.study_time,
        "InstitutionName": phi.institution, "ReferringPhysicianName": phi.referring_physician,
        "AccessionNumber": phi.accession_number, "StudyID": "1",
        "SeriesNumber": 1, "InstanceNumber": VIEW_ANGLES.index(view) + 1,
        "Manufacturer": "PHANTOM (synthetic)", "BurnedInAnnotation": "YES",
        "StudyInstanceUID": generate_uid(entropy_srcs=[key, "study"]),
        "SeriesInstanceUID": generate_uid(entropy_srcs=[key, "series"]),
        "SOPInstanceUID": generate_uid(entropy_srcs=[key, "image", str(view)]),
    }


PRIVATE_GROUP, PRIVATE_CREATOR = 0x0009, "PHANTOM PGDS"


def _write_dicom(path: Path, frame: np.ndarray, tags: dict) -> None:
    """Ultrasound DICOM via data_prep.io, plus a private tag holding the fake patient ID."""
    import pydicom

    from .io import write_dicom_grayscale

    write_dicom_grayscale(path, frame, extra_tags=tags)
    dataset = pydicom.dcmread(path)
    block = dataset.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", tags["PatientID"])
    with atomic.atomic_path(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)


def render_case(profile: PgdsPhantomProfile, case: PlannedCase, seed: int, out_dir: Path,
                dicom: bool = False) -> RenderedCase:
    """Render and write every view of one case; returns its manifest rows."""
    number = case.case_number
    natural, shape = sample_face_shapes(case.subtype, case.gestational_week,
                                        np.random.default_rng([seed, number, _STREAM_SHAPE]))
    geometry = build_face_geometry(shape)
    # Placed by the face WITHOUT its markers: fitting the marked face moved the whole head with
    # the face's extent (a proboscis pushed T13 heads 8 px down on average, 19 px for the
    # proboscis itself; a small jaw moved T18 heads 3 px), a position cue the network read at
    # the skull vertex instead of the face.
    placement = build_face_geometry(natural)
    case_pose = sample_case_pose(profile, case.gestational_week, case.views,
                                 np.random.default_rng([seed, number, _STREAM_POSE]))
    phi = draw_fake_phi(np.random.default_rng([seed, number, _STREAM_PHI]))
    rows, geometry_rows = [], []
    for view in case.views:
        rng = np.random.default_rng([seed, number, _STREAM_VIEW, view])
        pose = fit_view_pose(profile, case_pose, view, placement, rng)
        frame, mask = render_view(profile, shape, geometry, pose, rng, natural=placement)
        overlay, phi_mask = draw_overlay(profile.layout, phi, view, rng)
        frame = np.where(overlay > 0, overlay, frame)
        stem = f"{case.case_id}_v{view:02d}"
        row = {"image_path": f"images/{stem}.png", "case_id": case.case_id, "label": case.label,
               "subtype": case.subtype, "gestational_week": f"{case.gestational_week:.1f}",
               "view": view, "mask_path": f"masks/{stem}.png",
               "phi_mask_path": f"phi_masks/{stem}.png", "center": CENTER}
        _png(out_dir / row["image_path"], frame, profile.png_compression)
        _png(out_dir / row["mask_path"], mask)
        _png(out_dir / row["phi_mask_path"], phi_mask)
        if dicom:
            row["dicom_path"] = f"dicom/{stem}.dcm"
            _write_dicom(out_dir / row["dicom_path"], frame, _dicom_tags(phi, case, view, seed))
        rows.append(row)
        named = dict(zip(geometry.landmarks, pose.apply(np.array(list(geometry.landmarks.values())))))
        geometry_rows.append({"image_path": row["image_path"], "head_x": pose.center_x,
                              "head_y": pose.center_y, "head_scale_px": pose.scale,
                              "rotation_deg": pose.rotation_deg,
                              **{f"{name}_{axis}": float(point[i]) for name, point in named.items()
                                 for i, axis in enumerate("xy")}})
    return RenderedCase(rows, phi, shape.markers, geometry_rows)


def resolve_profile(profile: str | PgdsPhantomProfile) -> PgdsPhantomProfile:
    if isinstance(profile, PgdsPhantomProfile):
        return profile
    if profile not in PROFILES:
        raise InputError(None, f"unknown phantom profile '{profile}' for study pgds "
                               f"(choose from {', '.join(PROFILES)})")
    return PROFILES[profile]


def _check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse a non-empty --out unless force; even with force, only replace a phantom folder."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder; choose another --out")
    if not any(out_dir.iterdir()):
        return
    if not force:
        raise InputError(out_dir, "output folder exists and is not empty; use --force to "
                                  "replace it or choose another --out")
    run_json = out_dir / "run.json"
    try:
        study = json.loads(run_json.read_text(encoding="utf-8"))["config"]["study"]
    except (OSError, ValueError, KeyError, TypeError):
        study = None
    if study is None or not (out_dir / "manifest.csv").is_file():
        raise InputError(out_dir, "refusing to replace a folder that is not a phantom folder "
                                  "(no manifest.csv and run.json with a phantom study); "
                                  "choose another --out")


def generate(profile: str | PgdsPhantomProfile, out_dir: str | Path, *, seed: int = 0,
             dicom: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Render the whole phantom into `out_dir` (built atomically); return the manifest path."""
    from .provenance import portable_path, write_run_json

    profile = resolve_profile(profile)
    out_dir = Path(out_dir)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(None, f"--seed must be a non-negative integer, got {seed!r}")
    _check_out_dir(out_dir, force)
    cases = plan_cases(profile, int(seed))
    total = sum(len(case.views) for case in cases)
    report_every = max(1, total // 10) if progress and total >= 200 else 0
    started = time.perf_counter()
    with atomic.staged_dir(out_dir, overwrite=True) as stage:
        for folder in ("images", "masks", "phi_masks") + (("dicom",) if dicom else ()):
            (stage / folder).mkdir()
        rows, phi_truth, markers, geometry = [], {}, [], []
        for case in cases:
            rendered = render_case(profile, case, int(seed), stage, dicom)
            done_before = len(rows)
            rows.extend(rendered.rows)
            geometry.extend(rendered.geometry)
            phi_truth[case.case_id] = rendered.phi.as_dict()
            markers.append({"case_id": case.case_id, "subtype": case.subtype,
                            "markers": ";".join(rendered.markers)})
            if report_every and len(rows) // report_every > done_before // report_every:
                print(f"phantom pgds/{profile.name}: {len(rows)}/{total} images "
                      f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        frame = pd.DataFrame(rows)
        atomic.write_csv(stage / "manifest.csv", frame[list(MANIFEST_COLUMNS)])
        if dicom:
            dicom_frame = frame.assign(image_path=frame["dicom_path"])
            atomic.write_csv(stage / "manifest_dicom.csv", dicom_frame[list(MANIFEST_COLUMNS)])
        atomic.write_csv(stage / "markers.csv", pd.DataFrame(markers))
        atomic.write_csv(stage / "geometry.csv", pd.DataFrame(geometry).round(2))
        atomic.write_json(stage / "phi_truth.json", {
            "note": "synthetic phantom: every identifier here is made up (deterministic from "
                    "the seed) and burned into the frames / DICOM tags to test de-identification",
            "dicom_private_tag": {"group": f"{PRIVATE_GROUP:04X}", "creator": PRIVATE_CREATOR,
                                  "element": "01", "holds": "patient_id"},
            "cases": phi_truth})
        _png(stage / "sector_mask.png", sector_mask(profile.layout).astype(np.uint8) * 255, 9)
        config = {**profile.as_config(), "study": STUDY, "dicom": bool(dicom)}
        write_run_json(stage, config, seed=int(seed), manifest=stage / "manifest.csv",
                       extra={"manifest": portable_path(out_dir / "manifest.csv")}, force=True)
    if progress:
        print(f"phantom pgds/{profile.name}: {total} images, {len(cases)} cases in "
              f"{time.perf_counter() - started:.1f} s -> {out_dir}", file=sys.stderr)
    return out_dir / "manifest.csv"
