"""Synthetic fetal central-nervous-system ultrasound phantom for the CNS study (Qi 2025).

Each patient (pregnancy) has 1-6 images, each one of four standard planes: three axial planes
of the fetal head -- trans-ventricular (TV: falx, cavum septi pellucidi, frontal horns, the
atrium of the far lateral ventricle filled by the bright choroid plexus), trans-thalamic (TT:
the two thalami either side of the third ventricle, behind the cavum) and trans-cerebellar (TC:
the cerebellar hemispheres and vermis with the dark cisterna magna behind them) -- and a
sagittal spine plane (SP: the lower thoracic to sacral spine, its two rows of ossification
centres converging at the sacrum, the back's skin line over them, the trunk below with liver,
stomach, kidney, bowel and bladder). The frame is a scan sector (convex fan or linear
rectangle) on a black background; the fetus lies in dark amniotic fluid within grey maternal
tissue, and the B-mode look (Rayleigh speckle, depth attenuation with partial gain
compensation, per-image gain and log compression, brighter skull where the beam meets it
square) follows `phantom_pgds`.

Classes (manifest `label`) and where each shows (`findings.csv` says it per image):
- anencephaly: no calvarium: the smooth skull ring and scalp are gone; an irregular, lumpy mass
  of heterogeneous tissue (angiomatous stroma) with an echogenic, uneven surface and the orbits'
  bright rims in front takes the head's place on the head planes;
- encephalocele: a gap in the occipital bone and a sac (bright wall, fluid or herniated
  brain inside) bulging out of it, on every head plane (largest on TC);
- holoprosencephaly: no falx and no cavum, one crescent-shaped ventricle wrapping fused thalami
  (alobar; semilobar keeps a posterior falx), sometimes a dorsal cyst, on the head planes;
- rachischisis: an open spinal defect on SP (skin line and posterior arches missing over a
  lumbosacral segment, a fluid-filled cleft down to the exposed neural placode) and the Chiari II
  signs on the head planes (frontal scalloping -- the "lemon"; a wide atrium on TV, its choroid
  plexus dangling in the fluid; a curved "banana" cerebellum with no cisterna magna on TC);
- normal: natural variation of every structure.
So every head plane of an anomalous patient shows its anomaly; the spine plane shows only
rachischisis (for the other classes it looks normal and its truth mask is empty). Every
patient's first image is a head plane, whatever the class, so every anomalous patient has a
plane that shows it; each later image is any plane (spine one time in five). An earlier rule
made every second image the spine plane: a third of the images of anencephaly, encephalocele
and holoprosencephaly then showed nothing of their label, and on fold 0 of the default 4-class
task image AUROC went from 0.89 to 0.93 when that share fell to a seventh.

No shortcuts: centres, gestational periods and images per patient are drawn with the same
(stratified) distribution in every class; the planes with one class-independent rule; frame
size, sector shape, speckle, resolution, gain and text layout belong to the centre; pose, gain
and background come from per-image streams the class does not touch; the head is placed by the
fetus without its anomaly. Gestational weeks 12-40 (a third each below 20, 20-28, above 28 in
every class). The head is magnified to fill most of the sector, as a sonographer sets the depth
and zoom for a biometry plane, so it grows only a little with the week (0.85 to 1.0 of its
40-week size); the earlier 0.62-1.0 at 0.31 of the sector width left a 12-week head about 25
pixels wide in a 96x96 input.

Every image has a truth mask (PNG 0/255) of its anomaly: each pixel whose echogenicity differs
from the same fetus without the anomaly, plus the anatomical region, dilated by 0.06 head units
(empty for normal images and where the anomaly does not show). Fake PHI (name, ID, date,
hospital, scanner settings, grey-scale bar) is burned in outside the sector in each centre's
own layout, with pixel masks and `phi_truth.json`, so `data_prep.deidentify` can be checked.

Output folder (see `generate`): `manifest.csv` (image_path, case_id, label, plane,
gestational_week, center, mask_path, phi_mask_path), `images/`, `masks/`, `phi_masks/` (PNG,
`<case_id>_i<k>.png`), `sector_masks/<center>.png`, `findings.csv`, `geometry.csv`,
`phi_truth.json`, `run.json`, and with `dicom=True` `dicom/*.dcm` + `manifest_dicom.csv`.
Same seed -> byte-identical files (run.json aside) on every x86-64 CPU (float work only with
`data_prep.portable` and elementwise NumPy). Measured on one core (seed 0): ci (76 images of
30 patients, 4 frame sizes about 128x112) ~0.7 s, default (737 images of 220 patients, about
176x160) ~6 s, paper (1666 images of 500 patients, about 448x400) ~56 s.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from . import atomic, portable
from .errors import InputError
from .preprocess import EVAL_KEEP   # the evaluation centre crop keeps this: anatomy goes inside
# Reused from the Pgds phantom: materials, sector geometry, drawing, fake PHI, output helpers.
from .phantom_pgds import (_BONE, _FLUID, _FONT, _PLEXUS, _SCANNER_TEXT, _SKIN, _TISSUE,
                           PRIVATE_CREATOR, PRIVATE_GROUP, FakePhi, FrameLayout, Pose,
                           _check_out_dir, _fill, _font_scale, _line, _pixel_grid, _png,
                           _write_dicom, draw_fake_phi, sector_geometry)

STUDY = "cns"
LABELS = ("normal", "anencephaly", "encephalocele", "holoprosencephaly", "rachischisis")
ANOMALIES = LABELS[1:]
PLANES = ("TV", "TT", "TC", "SP")
HEAD_PLANES = PLANES[:3]
PLANE_NAMES = {"TV": "trans-ventricular", "TT": "trans-thalamic", "TC": "trans-cerebellar",
               "SP": "sagittal spine"}
MANIFEST_COLUMNS = ("image_path", "case_id", "label", "plane", "gestational_week", "center",
                    "mask_path", "phi_mask_path")
WEEK_PERIODS = ((12.0, 19.9), (20.0, 28.0), (28.1, 40.0))   # below 20, 20-28, above 28

# Bumped whenever the same seed and profile would render different frames.
GENERATOR_VERSION = 2

# Head units beyond the skull reserved behind the occiput (a sac reaches ~0.5-0.9 beyond it).
_SAC_ROOM = 0.6

# Fetal brain parenchyma is darker than phantom_pgds's brain (the structures stand out).
_PARENCHYMA = 0.07
_FALX = 0.5

_STREAM_PLAN, _STREAM_GA, _STREAM_PLANES, _STREAM_FETUS, _STREAM_ANOMALY, _STREAM_POSE, \
    _STREAM_IMAGE, _STREAM_PHI = range(8)

# Plane of the second and later images (the first is a head plane).
_LATER_PLANE_WEIGHTS = (0.28, 0.28, 0.24, 0.2)


# ----------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Center:
    """One hospital's scanner: frame and sector, probe, speckle grain, resolution, gain, text."""
    name: str
    hospital: str
    frame: FrameLayout
    linear: bool            # linear probe: a rectangular sector
    speckle: float          # speckle grain size (1 = phantom_pgds's)
    resolution: float       # point-spread blur (1 = phantom_pgds's; larger is blurrier)
    gain: float             # mean log gain
    text_style: str         # "top", "side", "split" or "column" (see draw_overlay)
    bar: str                # grey-scale bar: "left", "right" or "none"


@dataclass(frozen=True)
class _CenterStyle:
    name: str
    hospital: str
    size: tuple[float, float]                      # frame (width, height) / the profile's base
    margins: tuple[float, float, float, float]     # left, top, right, bottom (share of frame)
    half_angle_deg: float                          # 0: linear probe
    speckle: float
    resolution: float
    gain: float
    text_style: str
    bar: str


_CENTER_STYLES = (
    _CenterStyle("center-A", "PHANTOM UNIVERSITY HOSPITAL", (1.0, 1.0), (0.06, 0.13, 0.06, 0.08),
                 34.0, 1.0, 1.0, 0.0, "top", "right"),
    _CenterStyle("center-B", "MOCK MATERNAL HEALTH CENTRE", (1.0625, 1.0),
                 (0.21, 0.08, 0.04, 0.13), 30.0, 1.25, 1.3, 0.12, "side", "right"),
    _CenterStyle("center-C", "SYNTHETIC WOMENS HOSPITAL", (1.0, 0.93), (0.06, 0.10, 0.16, 0.10),
                 0.0, 0.8, 0.85, -0.12, "split", "none"),
    _CenterStyle("center-D", "FAKEVILLE PRENATAL CLINIC", (0.9375, 1.0),
                 (0.08, 0.08, 0.19, 0.09), 25.0, 1.1, 1.1, 0.06, "column", "left"),
)


def _even(value: float) -> int:
    return int(round(value / 2.0)) * 2


def make_centers(base_width: int, base_height: int) -> tuple[Center, ...]:
    """The four centres' scanners at a profile's base frame size (frame size: centre only)."""
    centers = []
    for style in _CENTER_STYLES:
        width, height = _even(base_width * style.size[0]), _even(base_height * style.size[1])
        left, top, right, bottom = (int(round(m * d)) for m, d in
                                    zip(style.margins, (width, height, width, height)))
        frame = FrameLayout(width, height, left, top, width - left - right, height - top - bottom,
                            style.half_angle_deg or 18.0)
        centers.append(Center(style.name, style.hospital, frame, style.half_angle_deg == 0.0,
                              style.speckle, style.resolution, style.gain, style.text_style,
                              style.bar))
    return tuple(centers)


@dataclass(frozen=True)
class CnsPhantomProfile:
    """Patients per class, the images-per-patient distribution, the centres and head size."""
    name: str
    patients: dict[str, int]
    images_per_patient: tuple[tuple[int, float], ...]   # (count, weight)
    centers: tuple[Center, ...]
    head_scale: float = 0.40       # head half-length (40 weeks) / sector width (was 0.31)
    png_compression: int = 1

    def as_config(self) -> dict:
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}

    @property
    def total_patients(self) -> int:
        return sum(self.patients.values())


def _patients(normal: int, anencephaly: int, encephalocele: int, holoprosencephaly: int,
              rachischisis: int) -> dict[str, int]:
    return dict(zip(LABELS, (normal, anencephaly, encephalocele, holoprosencephaly,
                             rachischisis)))


_IMAGES_1_TO_6 = ((1, 0.12), (2, 0.2), (3, 0.24), (4, 0.2), (5, 0.14), (6, 0.1))

PROFILES: dict[str, CnsPhantomProfile] = {
    # The paper's counts are not public (abstract: multi-centre, four anomalies + normal):
    # a few hundred patients, normal the largest class, 448x400-sized frames.
    "paper": CnsPhantomProfile("paper", _patients(200, 90, 70, 60, 80), _IMAGES_1_TO_6,
                               make_centers(448, 400)),
    # Sized for grouped 5-fold CV of ResNet-34 on 2 CPU cores: ~750 images about 176x160.
    "default": CnsPhantomProfile("default", _patients(80, 36, 34, 30, 40), _IMAGES_1_TO_6,
                                 make_centers(176, 160)),
    "ci": CnsPhantomProfile("ci", _patients(8, 6, 5, 5, 6), ((2, 0.5), (3, 0.5)),
                            make_centers(128, 112)),
}


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedCase:
    case_number: int          # 1-based; also the case's random-stream key
    case_id: str
    label: str
    center: str
    gestational_week: float
    planes: tuple[str, ...]   # one per image


def _stratified(rng: np.random.Generator, n: int, values: list, weights: list) -> list:
    """n draws whose histogram follows `weights` as closely as n allows (systematic
    sampling of the inverse CDF with one random offset), in random order."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64) / math.fsum(weights))
    quantiles = (np.arange(n) + rng.uniform()) / n
    picked = np.minimum(np.searchsorted(cdf, quantiles, side="right"), len(values) - 1)
    return [values[int(i)] for i in picked[rng.permutation(n)]]


def draw_planes(n_images: int, rng: np.random.Generator) -> tuple[str, ...]:
    """The planes of one patient's images, the same rule for every class: a head plane first,
    then any plane (`_LATER_PLANE_WEIGHTS`)."""
    planes = [HEAD_PLANES[int(rng.integers(3))]]
    for _ in range(n_images - 1):
        planes.append(PLANES[int(rng.choice(4, p=_LATER_PLANE_WEIGHTS))])
    return tuple(planes)


def plan_cases(profile: CnsPhantomProfile, seed: int) -> list[PlannedCase]:
    """Patients, classes, centres, weeks and planes, without rendering anything.

    Within each class the image counts, centres and gestational periods are stratified draws of
    the same distributions; case ids are assigned in a seeded random order (P0001, ...).
    """
    rng = np.random.default_rng([seed, 0, _STREAM_PLAN])
    counts, weights = [c for c, _ in profile.images_per_patient], [w for _, w in
                                                                   profile.images_per_patient]
    if min(counts) < 1 or max(counts) > 6:
        raise ValueError(f"profile {profile.name}: 1-6 images per patient, got {counts}")
    centers = [c.name for c in profile.centers]
    pending = []
    for label in LABELS:
        n = profile.patients[label]
        n_images = _stratified(rng, n, counts, weights)
        center = _stratified(rng, n, centers, [1.0] * len(centers))
        period = _stratified(rng, n, [0, 1, 2], [1.0, 1.0, 1.0])
        pending.extend(zip([label] * n, n_images, center, period))
    order = rng.permutation(len(pending))
    width = max(4, len(str(len(pending))))
    cases = []
    for number, index in enumerate(order, start=1):
        label, n_images, center, period = pending[index]
        low, high = WEEK_PERIODS[period]
        week = round(low + (high - low) * np.random.default_rng([seed, number, _STREAM_GA])
                     .uniform(), 1)
        planes = draw_planes(n_images, np.random.default_rng([seed, number, _STREAM_PLANES]))
        cases.append(PlannedCase(number, f"P{number:0{width}d}", label, center, week, planes))
    return cases


# ----------------------------------------------------------------------------- the fetus


@dataclass(frozen=True)
class Anomaly:
    """The anomaly of one fetus; which fields matter depends on `kind` (a label)."""
    kind: str
    # anencephaly: remnant size / offset / outline harmonics, lumps (x, y, ax, ay, deg, echo)
    remnant: float = 0.0
    remnant_shift: float = 0.0
    harmonics: tuple = ()
    lumps: tuple = ()
    # encephalocele: defect direction (deg from the occiput), sac radius, content
    defect_angle: float = 0.0
    sac_radius: float = 0.0
    sac_brain: bool = False
    # holoprosencephaly
    semilobar: bool = False
    ventricle: float = 0.0         # extent of the monoventricle (0-1)
    dorsal_cyst: float = 0.0       # radius, 0 = none
    # rachischisis: defect along the spine (x from -1 cranial to 1 caudal), Chiari II signs
    defect_start: float = 0.0
    defect_length: float = 0.0
    placode: tuple = ()            # jitter of the exposed neural tissue
    lemon: float = 0.0             # depth of the frontal scalloping (head units)
    atrium_factor: float = 1.0
    banana: float = 0.0


@dataclass(frozen=True)
class Fetus:
    """Shape of one fetus in head units (1 = half the occipito-frontal length) for the head
    planes and spine units (1 = half the spine's length) for the spine plane."""
    week: float
    maturity: float          # 0 at 12 weeks, 1 at 40
    cephalic: float          # biparietal / occipito-frontal diameter
    skull: float             # skull thickness
    ossification: float      # skull and vertebra echo (grows with the week)
    csp_x: float
    csp_length: float
    csp_width: float
    atrium: float            # width of the lateral ventricle's atrium
    plexus: float            # share of the atrium the choroid plexus fills
    thalamus: float          # size factor
    cerebellum: float        # radius of a cerebellar hemisphere
    cisterna: float          # depth of the cisterna magna
    spine_curve: float
    back_tissue: float       # skin to posterior elements
    body_depth: float
    anomaly: Anomaly | None = None


def sample_fetus(label: str, week: float, rng: np.random.Generator,
                 anomaly_rng: np.random.Generator) -> tuple[Fetus, Fetus]:
    """(natural, fetus): the fetus's natural variation, and the same fetus with its anomaly
    (the same object for normal). The anomaly's draws come from their own stream, so the
    natural fetus, its pose and its noise are the same whatever the class."""
    maturity = float(np.clip((week - 12.0) / 28.0, 0.0, 1.0))
    natural = Fetus(
        week=week, maturity=maturity, cephalic=rng.uniform(0.74, 0.84),
        skull=0.035 + 0.03 * maturity + rng.normal(0.0, 0.004),
        ossification=0.55 + 0.45 * maturity, csp_x=rng.uniform(0.28, 0.36),
        csp_length=rng.uniform(0.18, 0.25), csp_width=rng.uniform(0.05, 0.065),
        atrium=rng.uniform(0.09, 0.13),
        plexus=float(np.clip(0.95 - 0.25 * maturity + rng.normal(0.0, 0.03), 0.6, 0.98)),
        thalamus=rng.uniform(0.9, 1.1), cerebellum=0.13 + 0.04 * maturity + rng.normal(0, 0.008),
        cisterna=rng.uniform(0.08, 0.13), spine_curve=rng.uniform(0.05, 0.15),
        back_tissue=rng.uniform(0.09, 0.13), body_depth=rng.uniform(0.9, 1.1))
    if label == "normal":
        return natural, natural
    if label not in ANOMALIES:
        raise ValueError(f"unknown label {label!r}")
    a = anomaly_rng
    if label == "anencephaly":
        absent = a.random() < 0.25   # little brain tissue left
        anomaly = Anomaly(
            label, remnant=a.uniform(0.65, 0.8) if absent else a.uniform(0.95, 1.1),
            remnant_shift=a.uniform(0.0, 0.1),
            harmonics=tuple((k, a.uniform(0.06, 0.14) / k ** 0.5, a.uniform(0, 2 * math.pi))
                            for k in (2, 3, 5, 7)),
            lumps=tuple((a.uniform(-0.6, 0.6), a.uniform(-0.5, 0.5), a.uniform(0.08, 0.2),
                         a.uniform(0.05, 0.14), a.uniform(0, 180), a.uniform(0.02, 0.4))
                        for _ in range(int(a.integers(12, 19)))))
    elif label == "encephalocele":
        anomaly = Anomaly(label, defect_angle=a.normal(0.0, 12.0),
                          sac_radius=a.uniform(0.36, 0.6), sac_brain=bool(a.random() < 0.7))
    elif label == "holoprosencephaly":
        semilobar = bool(a.random() < 0.35)
        anomaly = Anomaly(label, semilobar=semilobar,
                          ventricle=a.uniform(0.35, 0.6) if semilobar else a.uniform(0.6, 0.9),
                          dorsal_cyst=0.0 if semilobar or a.random() < 0.5 else a.uniform(0.2, 0.3))
    else:
        anomaly = Anomaly(label, defect_start=a.uniform(0.2, 0.45),
                          defect_length=a.uniform(0.36, 0.5),
                          placode=tuple(a.uniform(-0.025, 0.025, 9)),
                          lemon=a.uniform(0.11, 0.16) * (1.0 - 0.4 * maturity),
                          atrium_factor=a.uniform(1.8, 2.6), banana=a.uniform(0.7, 1.0))
    return natural, dataclasses.replace(natural, anomaly=anomaly)


def shows_anomaly(fetus: Fetus, plane: str) -> bool:
    """Whether the plane shows the fetus's anomaly: every head plane shows it, the spine plane
    only rachischisis's."""
    return fetus.anomaly is not None and (plane != "SP" or fetus.anomaly.kind == "rachischisis")


def findings(fetus: Fetus, plane: str) -> list[str]:
    if not shows_anomaly(fetus, plane):
        return []
    kind = fetus.anomaly.kind
    if kind == "anencephaly":
        return ["absent_calvarium", "irregular_brain_tissue"]
    if kind == "encephalocele":
        return ["occipital_skull_defect", "sac"]
    if kind == "holoprosencephaly":
        return ["monoventricle", "absent_falx", "fused_thalami"]
    if plane == "SP":
        return ["open_spinal_defect"]
    extra = {"TV": ["ventriculomegaly"],
             "TC": ["banana_cerebellum", "obliterated_cisterna_magna"]}.get(plane, [])
    return ["lemon_sign"] + extra


# ----------------------------------------------------------------------------- drawing helpers


@dataclass(frozen=True)
class Placement:
    """Canonical units -> frame pixels: mirror x by `flip`, then phantom_pgds.Pose."""
    pose: Pose
    flip: int

    def __call__(self, points) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        return self.pose.apply(np.stack([points[..., 0] * self.flip, points[..., 1]], axis=-1))


def _ellipse(cx: float, cy: float, ax: float, ay: float, angle_deg: float = 0.0,
             n: int = 40) -> np.ndarray:
    t = np.radians(np.arange(n) * (360.0 / n))
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    x, y = ax * np.cos(t), ay * np.sin(t)
    return np.stack([cx + x * c - y * s, cy + x * s + y * c], axis=-1)


def _poly(echo, place, points, value) -> None:
    _fill(echo, place(points), value)


def _curve(echo, place, points, value, width_units) -> None:
    _line(echo, place(points), value, width_units * place.pose.scale)


def _beam_lit(echo, place, points, value, width_units, keep=None) -> None:
    """A bone surface as short segments, bright where the (vertical) beam meets it square."""
    px = place(points)
    step = np.diff(px, axis=0)
    horizontal = np.abs(step[:, 0]) / np.maximum(np.sqrt(step[:, 0] ** 2 + step[:, 1] ** 2), 1e-9)
    for k in range(len(step)):
        if keep is None or keep[k]:
            _line(echo, px[k:k + 2], value * (0.35 + 0.65 * horizontal[k]),
                  width_units * place.pose.scale)


# ----------------------------------------------------------------------------- head planes


def _skull_radius(fetus: Fetus, theta: np.ndarray) -> np.ndarray:
    """Polar radius of the skull's mid-line (ellipse 1 x cephalic), with the lemon sign."""
    b = fetus.cephalic
    c, s = np.cos(theta), np.sin(theta)
    radius = b / np.sqrt((b * c) ** 2 + s * s)
    anomaly = fetus.anomaly
    if anomaly is not None and anomaly.lemon > 0:
        off = np.minimum(np.abs((np.abs(theta) - math.radians(55.0)) / math.radians(32.0)), 1.0)
        radius = radius - anomaly.lemon * (1.0 - off * off) ** 2   # compact bump
    return radius


def _outline(fetus: Fetus, offset: float, n: int = 72) -> np.ndarray:
    theta = np.radians(np.arange(n) * (360.0 / n) - 180.0)
    radius = _skull_radius(fetus, theta) + offset
    return np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=-1)


def _ring_keep(fetus: Fetus, n: int = 72) -> np.ndarray | None:
    """Skull segments kept (encephalocele: an occipital gap)."""
    anomaly = fetus.anomaly
    if anomaly is None or anomaly.kind != "encephalocele":
        return None
    centers = np.arange(n) * (360.0 / n) - 180.0 + 180.0 / n
    away = np.abs((centers - 180.0 - anomaly.defect_angle + 540.0) % 360.0 - 180.0)
    return away > 10.0 + 22.0 * anomaly.sac_radius


def _sac(fetus: Fetus, plane: str) -> tuple[np.ndarray, float, np.ndarray]:
    """Encephalocele sac: polygon, radius and direction (canonical head units)."""
    anomaly = fetus.anomaly
    radius = anomaly.sac_radius * {"TC": 1.0, "TT": 0.82, "TV": 0.66, "SP": 0.85}[plane]
    angle = math.radians(180.0 + anomaly.defect_angle)
    direction = np.array([math.cos(angle), math.sin(angle)])
    reach = float(_skull_radius(fetus, np.array([angle]))[0]) + 0.55 * radius
    center = direction * reach
    return _ellipse(center[0], center[1], radius, radius * 0.9, math.degrees(angle), 36), \
        radius, direction


def _draw_sac(echo, place, polygon, brain: bool, outside) -> None:
    _poly(echo, place, polygon, _PARENCHYMA if brain else _FLUID)
    if brain:   # gyri of the herniated brain
        center = polygon.mean(axis=0)
        for k in (0.35, 0.65):
            _curve(echo, place, center + (polygon[4:15] - center) * k, 0.3, 0.03)
    closed = np.vstack([polygon, polygon[:1]])
    keep = outside(closed[:-1] * 0.5 + closed[1:] * 0.5)
    for k in range(len(polygon)):
        if keep[k]:
            _curve(echo, place, closed[k:k + 2], _SKIN, 0.045)


def _draw_head_normal_contents(echo, fetus: Fetus, plane: str, place) -> None:
    b, m = fetus.cephalic, fetus.maturity
    anomaly = fetus.anomaly
    hpe = anomaly is not None and anomaly.kind == "holoprosencephaly"
    chiari = anomaly is not None and anomaly.kind == "rachischisis"
    inner = 1.0 - fetus.skull
    if m > 0.3:   # Sylvian fissures / insula from mid-gestation
        for side in (-1, 1):
            _curve(echo, place, np.array([[0.15, side * 0.72 * b], [0.0, side * 0.78 * b],
                                          [-0.15, side * 0.74 * b]]), 0.3, 0.02)
    if plane == "TC":
        # posterior fossa: cisterna magna, cerebellum (hemispheres + vermis), peduncles
        back = -inner + 0.02
        front = -inner + 0.02 + fetus.cisterna + 2 * fetus.cerebellum
        cx = back + fetus.cisterna + fetus.cerebellum
        r = fetus.cerebellum
        if chiari:   # banana: cerebellum curved round the brainstem, no cisterna magna
            t = np.linspace(-1.0, 1.0, 11)
            arc = np.stack([cx + 0.6 * r - anomaly.banana * 1.1 * r * (1.0 - t * t),
                            t * 1.9 * r], axis=-1)
            _curve(echo, place, arc, 0.4, 0.8 * r)
            _curve(echo, place, arc, 0.28, 0.55 * r)
        else:
            _poly(echo, place, _ellipse(back + fetus.cisterna * 0.55, 0.0,
                                        fetus.cisterna * 0.6, 0.24 * b), _FLUID)
            for side in (-1, 1):
                _poly(echo, place, _ellipse(cx, side * 0.9 * r, r, r * 0.95), 0.24)
                _curve(echo, place, _ellipse(cx, side * 0.9 * r, r, r * 0.95, 0, 20)[
                    [15, 16, 17, 18, 19, 0, 1, 2, 3, 4, 5]], 0.4, 0.015)
            _poly(echo, place, _ellipse(cx, 0.0, 0.65 * r, 0.45 * r), 0.45)
            _curve(echo, place, np.array([[cx - r, 0.0], [back + 0.01, 0.0]]), 0.3, 0.015)
        _poly(echo, place, _ellipse(front + 0.12, 0.0, 0.13, 0.1), 0.15)
    if hpe:   # one crescent ventricle wrapping the fused thalami; no falx, no cavum
        ext, t = anomaly.ventricle, fetus.thalamus
        if plane == "TC":   # the posterior fossa is kept; a smaller ventricle in front
            _poly(echo, place, _ellipse(0.3 + 0.05 * ext, 0.0, 0.2 + 0.2 * ext,
                                        (0.25 + 0.25 * ext) * b), _FLUID)
            _poly(echo, place, _ellipse(0.12, 0.0, 0.2 * t, 0.26 * t * b), 0.22)
            return
        _poly(echo, place, _ellipse(0.1 + 0.08 * ext, 0.0, 0.3 + 0.36 * ext,
                                    (0.3 + 0.36 * ext) * b), _FLUID)
        if anomaly.dorsal_cyst > 0:
            _poly(echo, place, _ellipse(-0.6, 0.0, anomaly.dorsal_cyst,
                                        1.3 * anomaly.dorsal_cyst * b), _FLUID)
        for side in (-1, 1):   # choroid plexus in the ventricle's posterior horns
            _poly(echo, place, _ellipse(-0.22, side * (0.3 + 0.2 * ext) * b, 0.13, 0.07,
                                        side * -30), _PLEXUS)
        if anomaly.semilobar:   # a posterior falx, thalami partly apart
            _curve(echo, place, np.array([[-inner + 0.02, 0.0], [-0.45, 0.0]]), _FALX, 0.02)
            for side in (-1, 1):
                _poly(echo, place, _ellipse(-0.1, side * 0.1 * t, 0.26 * t, 0.16 * t), 0.22)
        else:
            _poly(echo, place, _ellipse(-0.1, 0.0, 0.3 * t, 0.34 * t * b), 0.22)
        return
    # falx, interrupted by the cavum septi pellucidi
    x0, x1 = fetus.csp_x - fetus.csp_length / 2, fetus.csp_x + fetus.csp_length / 2
    if plane == "TT":
        x0, x1 = x0 + 0.04, x1 + 0.04
    rear = -0.2 if plane == "TT" else (-inner + 0.05 + fetus.cisterna + 2 * fetus.cerebellum
                                       if plane == "TC" else -inner + 0.02)
    _curve(echo, place, np.array([[x1, 0.0], [inner - 0.03, 0.0]]), _FALX, 0.02)
    if plane != "TC":
        _curve(echo, place, np.array([[rear, 0.0], [x0, 0.0]]), _FALX, 0.02)
    if plane == "TT":
        _curve(echo, place, np.array([[-inner + 0.02, 0.0], [-0.55, 0.0]]), _FALX, 0.02)
    w = fetus.csp_width
    _poly(echo, place, np.array([[x0, -w], [x1, -w], [x1, w], [x0, w]]), _FLUID)
    for side in (-1, 1):
        _curve(echo, place, np.array([[x0, side * w], [x1, side * w]]), 0.4, 0.012)
    if plane == "TV":
        for side in (-1, 1):   # frontal horns
            _poly(echo, place, _ellipse(x1 + 0.08, side * 0.1, 0.09, 0.03, side * 25), _FLUID)
        # atrium of the far lateral ventricle (deeper = +y) with its choroid plexus; the near
        # one is hazy (reverberation)
        width = fetus.atrium * (anomaly.atrium_factor if chiari else 1.0)
        for side, fluid, plexus in ((1, _FLUID, _PLEXUS), (-1, 0.07, 0.17)):
            center = (-0.38, side * (0.3 * b + 0.3 * (width - 0.11)))
            _poly(echo, place, _ellipse(center[0], center[1], 0.27, width, side * -12), fluid)
            # the plexus keeps its size: in a dilated atrium it dangles in the fluid
            _poly(echo, place, _ellipse(center[0] - 0.03, center[1], 0.24 * fetus.plexus,
                                        fetus.atrium * 0.85 * fetus.plexus, side * -12), plexus)
        _curve(echo, place, np.array([[0.45, 0.16 * b], [-0.1, 0.26 * b + width],
                                      [-0.6, 0.36 * b + width]]), 0.3, 0.015)
    elif plane == "TT":
        t = fetus.thalamus
        for side in (-1, 1):
            _poly(echo, place, _ellipse(-0.02, side * 0.115 * t, 0.19 * t, 0.1 * t, side * 18), 0.2)
        _curve(echo, place, np.array([[-0.18, 0.0], [0.14, 0.0]]), _FLUID, 0.012)
        _curve(echo, place, _ellipse(-0.1, 0.0, 0.26 * t, 0.26 * t, 0, 24)[6:19], 0.33, 0.015)
    elif plane == "TC":
        for side in (-1, 1):
            _poly(echo, place, _ellipse(0.08, side * 0.09, 0.13, 0.07, side * 15), 0.16)


def _draw_anencephaly_head(echo, fetus: Fetus, place) -> None:
    anomaly = fetus.anomaly
    theta = np.radians(np.arange(48) * 7.5 - 180.0)
    wobble = sum(amp * np.cos(k * theta + phase) for k, amp, phase in anomaly.harmonics)
    radius = anomaly.remnant * _skull_radius(dataclasses.replace(fetus, anomaly=None), theta) \
        * (1.0 + wobble)
    shift = anomaly.remnant_shift
    outline = np.stack([shift + radius * np.cos(theta), radius * np.sin(theta)], axis=-1)
    _poly(echo, place, outline, 0.08)
    for x, y, ax, ay, angle, value in anomaly.lumps:
        _poly(echo, place, _ellipse(shift + x * anomaly.remnant, y * anomaly.remnant,
                                    ax * anomaly.remnant, ay * anomaly.remnant, angle, 16), value)
    # the exposed, echogenic surface of the angiomatous stroma
    _beam_lit(echo, place, np.vstack([outline, outline[:1]]), 0.85 * _BONE * fetus.ossification,
              fetus.skull * 1.5)
    for side in (-1, 1):   # the orbits' bony rims ("frog eyes")
        center = (shift + 0.82 * anomaly.remnant, side * 0.32 * fetus.cephalic)
        _beam_lit(echo, place, _ellipse(center[0], center[1], 0.12, 0.11, 0, 16)[[12, 13, 14,
                                                                                  15, 0, 1, 2,
                                                                                  3, 4]],
                  _BONE * fetus.ossification, 0.03)


def draw_head_plane(echo: np.ndarray, fetus: Fetus, plane: str, place: Placement) -> None:
    """Echogenicity of an axial head plane (before blur, speckle and compression)."""
    anomaly = fetus.anomaly
    if anomaly is not None and anomaly.kind == "anencephaly":
        _draw_anencephaly_head(echo, fetus, place)
        return
    _poly(echo, place, _outline(fetus, fetus.skull / 2 + 0.04), _TISSUE * 0.8)   # scalp
    _poly(echo, place, _outline(fetus, 0.0), _PARENCHYMA)
    _draw_head_normal_contents(echo, fetus, plane, place)
    keep = _ring_keep(fetus)
    ring = _outline(fetus, 0.0)
    _beam_lit(echo, place, np.vstack([ring, ring[:1]]), _BONE * fetus.ossification,
              fetus.skull, keep)
    if anomaly is not None and anomaly.kind == "encephalocele":
        polygon, _, _ = _sac(fetus, plane)
        _draw_sac(echo, place, polygon, anomaly.sac_brain, lambda p: (
            np.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2)
            > _skull_radius(fetus, np.arctan2(p[:, 1], p[:, 0])) + fetus.skull / 2))


# ----------------------------------------------------------------------------- spine plane


def _spine_frame(fetus: Fetus, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points of the spine's centre line and the unit normals towards the back (up)."""
    c = fetus.spine_curve
    centre = np.stack([x, c * (x * x - 0.33)], axis=-1)
    slope = 2.0 * c * x
    norm = np.sqrt(1.0 + slope * slope)
    return centre, np.stack([slope / norm, -1.0 / norm], axis=-1)


def _taper(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - 0.6 * (x - 0.55) / 0.45, 0.4, 1.0)


def draw_spine_plane(echo: np.ndarray, fetus: Fetus, plane: str, place: Placement) -> None:
    """Echogenicity of the sagittal spine plane: the lower thoracic, lumbar and sacral spine
    (back up, cranial end at -x, running out of the sector)."""
    del plane
    anomaly = fetus.anomaly
    kind = anomaly.kind if anomaly is not None else "normal"
    xs = np.linspace(-1.5, 1.08, 44)
    centre, normal = _spine_frame(fetus, xs)
    post = 0.075 * _taper(xs)
    skin_offset = post + fetus.back_tissue * (0.75 + 0.25 * _taper(xs))
    skin = centre + normal * skin_offset[:, None]
    depth = fetus.body_depth * np.interp(xs, [-1.5, -0.7, 0.1, 0.7, 1.1],
                                         [0.8, 0.8, 0.9, 0.62, 0.3])
    front = centre - normal * depth[:, None]
    bone = _BONE * fetus.ossification
    # trunk: lung base, liver, stomach, kidney, bowel, bladder, the front skin
    bottom_end = (skin[-1] + front[-1]) / 2.0
    half = float(np.sqrt(np.sum((skin[-1] - front[-1]) ** 2))) / 2.0
    rump = _ellipse(bottom_end[0], bottom_end[1], 0.75 * half, half, 0, 16)
    _poly(echo, place, rump, _TISSUE * 0.8)
    _poly(echo, place, np.vstack([skin, front[::-1]]), _TISSUE * 0.8)
    organs = ((-1.15, 0.4, 0.4, 0.3, 0.5), (-0.45, 0.5, 0.38, 0.3, 0.34),
              (-0.3, 0.55, 0.11, 0.08, _FLUID), (0.05, 0.22, 0.14, 0.07, 0.2),
              (0.4, 0.45, 0.18, 0.13, 0.42), (0.8, 0.22, 0.08, 0.06, _FLUID))
    at, back = _spine_frame(fetus, np.array([organ[0] for organ in organs]))
    for (_, down, ax, ay, value), point, toward in zip(organs, at, back):
        if value == _FLUID and ax < 0.1 and fetus.maturity <= 0.15:
            continue   # no bladder seen before ~16 weeks
        center = point - toward * down * fetus.body_depth
        _poly(echo, place, _ellipse(center[0], center[1], ax, ay * fetus.body_depth), value)
    _curve(echo, place, front[2:], 0.45, 0.015)
    # spinal canal, vertebral bodies, posterior elements, skin
    vx = np.linspace(-1.5, 1.0, 27)
    vc, vn = _spine_frame(fetus, vx)
    tap = _taper(vx)
    _curve(echo, place, vc, 0.05, 0.09)
    open_from, open_to = ((anomaly.defect_start, anomaly.defect_start + anomaly.defect_length)
                          if kind == "rachischisis" else (9.0, 9.0))
    unit = _ellipse(0.0, 0.0, 1.0, 1.0, 0, 12)
    bodies = place((vc - vn * (0.07 * tap)[:, None])[:, None, :]
                   + unit * (np.array([0.038, 0.033]) * tap[:, None])[:, None, :])
    arches = place((vc + vn * (0.075 * tap)[:, None])[:, None, :]
                   + unit * (np.array([0.034, 0.027]) * tap[:, None])[:, None, :])
    for k in range(len(vx)):   # vertebral bodies and posterior arches (placed at once: fast)
        _fill(echo, bodies[k], 0.85 * bone)
        if not open_from <= vx[k] <= open_to:
            _fill(echo, arches[k], 0.95 * bone)
    if kind == "rachischisis":   # open cleft down to the exposed neural placode
        a, b = open_from, open_to
        cleft_x = np.array([a - 0.16, a + 0.02, (a + b) / 2, b - 0.02, b + 0.16])
        cc, cn = _spine_frame(fetus, cleft_x)
        top = skin_offset.max() + 0.08
        bottom = np.array([top, -0.01, -0.02, -0.01, top])
        _poly(echo, place, np.vstack([cc + cn * bottom[:, None], (cc + cn * top)[::-1]]), _FLUID)
        px = np.linspace(a + 0.02, b - 0.02, len(anomaly.placode))
        pc, pn = _spine_frame(fetus, px)
        _curve(echo, place, pc + pn * (0.01 + np.asarray(anomaly.placode))[:, None], 0.4, 0.04)
        for part in (skin[xs < a - 0.1], skin[xs > b + 0.1]):
            if len(part) > 1:
                _curve(echo, place, part, _SKIN, 0.018)
    else:
        _curve(echo, place, skin, _SKIN, 0.018)


def draw_plane(echo: np.ndarray, fetus: Fetus, plane: str, place: Placement) -> None:
    (draw_spine_plane if plane == "SP" else draw_head_plane)(echo, fetus, plane, place)


def anomaly_regions(fetus: Fetus, plane: str) -> list[np.ndarray]:
    """Canonical point sets whose convex hulls are the anomaly's anatomical regions (none for
    a normal fetus or where the anomaly does not show)."""
    if not shows_anomaly(fetus, plane):
        return []
    anomaly = fetus.anomaly
    kind = anomaly.kind
    if plane == "SP":   # rachischisis: the open segment
        x = np.linspace(anomaly.defect_start - 0.17,
                        anomaly.defect_start + anomaly.defect_length + 0.17, 6)
        centre, normal = _spine_frame(fetus, x)
        return [np.vstack([centre - normal * 0.03, centre + normal * 0.3])]
    natural = dataclasses.replace(fetus, anomaly=None)
    if kind == "anencephaly":
        return [_outline(natural, 0.06)]
    if kind == "encephalocele":
        polygon, _, direction = _sac(fetus, plane)
        return [np.vstack([polygon, direction * 0.88])]
    if kind == "holoprosencephaly":
        return [_outline(natural, -fetus.skull) * 0.9]
    # rachischisis on a head plane: each frontal bone (the lemon); the atrium and the
    # posterior fossa are in the changed pixels
    regions = []
    for side in (1, -1):
        theta = side * np.radians(np.linspace(25.0, 85.0, 7))
        radius = _skull_radius(natural, theta)
        regions.append(np.vstack([np.stack([np.cos(theta), np.sin(theta)], -1) * r[:, None]
                                  for r in (radius + 0.05, radius - 0.05 - anomaly.lemon)]))
    return regions


# ----------------------------------------------------------------------------- pose


def _contains(center: Center, points: np.ndarray, margin: float) -> np.ndarray:
    frame = center.frame
    if center.linear:
        x, y = points[..., 0], points[..., 1]
        return ((x >= frame.sector_left + margin)
                & (x <= frame.sector_left + frame.sector_width - 1 - margin)
                & (y >= frame.sector_top + margin)
                & (y <= frame.sector_top + frame.sector_height - 1 - margin))
    return sector_geometry(frame).contains(points, margin)


def _fit_points(natural: Fetus, plane: str) -> np.ndarray:
    """What must lie inside the sector: the natural head (room behind the occiput for a sac,
    the same for every class) or the lumbosacral spine with the trunk below it."""
    if plane == "SP":
        xs = np.linspace(-0.5, 1.1, 12)
        centre, normal = _spine_frame(natural, xs)
        return np.vstack([centre + normal * 0.25, centre - normal * 0.6])
    # Room behind the occiput where a sac would bulge (angles 180 +- 25 deg, beyond the skull),
    # reserved in EVERY class's frame so the placement still says nothing of the class.
    behind = np.radians(np.linspace(155.0, 205.0, 7))
    reach = _skull_radius(natural, behind) + _SAC_ROOM
    room = np.stack([np.cos(behind) * reach, np.sin(behind) * reach], axis=1)
    return np.vstack([_outline(natural, 0.08, 24), room])


def _inside_eval_crop(frame, points: np.ndarray, margin: float) -> np.ndarray:
    """[..., P, 2] -> [...]: all points inside the centred square that an evaluation Resize(256)
    + CenterCrop(224) of this frame keeps (`EVAL_KEEP` of its shorter side): what lies outside
    it is never seen by a model evaluated the way the CNS authors evaluate."""
    side = min(frame.width, frame.height) * EVAL_KEEP
    x0, y0 = (frame.width - side) / 2.0 + margin, (frame.height - side) / 2.0 + margin
    x1, y1 = x0 + side - 2 * margin, y0 + side - 2 * margin
    x, y = points[..., 0], points[..., 1]
    return ((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).all(axis=-1)


def sample_placement(profile: CnsPhantomProfile, center: Center, natural: Fetus, plane: str,
                     rng: np.random.Generator) -> Placement:
    """Pose of one image from its own stream: size from the week, rotation, mirror, position.

    The fetus is centred in the sector box (plus a random offset); if it does not fit, the
    nearest shift (4 % steps of the box, up to 40 %) that fits is taken, else the scale shrinks
    by 3 % and the search repeats. A fit lies inside the sector AND inside the centre crop an
    evaluation keeps (`EVAL_KEEP`). Placed by the NATURAL fetus with room behind the occiput
    reserved in every class (`_fit_points`): the pose says nothing of the class, and an
    encephalocele sac, which grows there, is not cut away by the frame or the centre crop.
    """
    frame = center.frame
    box = np.array([frame.sector_width, frame.sector_height], dtype=np.float64)
    if plane == "SP":
        scale = frame.sector_width * 0.5 * (0.92 + 0.1 * natural.maturity) * rng.uniform(0.92, 1.08)
        rotation = rng.uniform(-12.0, 12.0)
    else:
        # magnified to the sector: 0.85-1.0 of the 40-week size (not the head's true growth)
        scale = (frame.sector_width * profile.head_scale * (0.85 + 0.15 * natural.maturity)
                 * rng.uniform(0.93, 1.07))
        rotation = rng.uniform(-30.0, 30.0)
    flip = int(rng.choice([-1, 1]))
    offset = rng.uniform(-0.12, 0.12, 2) * box
    box_center = np.array([frame.sector_left, frame.sector_top]) + box / 2.0
    steps = np.arange(-10, 11) * 0.04
    shifts = np.stack(np.meshgrid(steps, steps), -1).reshape(-1, 2)
    shifts = shifts[np.argsort(shifts[:, 0] ** 2 + shifts[:, 1] ** 2, kind="stable")] * box
    points = _fit_points(natural, plane)
    for _ in range(20):
        placed = Placement(Pose(0.0, 0.0, scale, rotation), flip)(points)
        nominal = box_center - (placed.min(axis=0) + placed.max(axis=0)) / 2.0 + offset
        centers = nominal + shifts
        candidates = placed[None, :, :] + centers[:, None, :]
        inside = (_contains(center, candidates, 2.0).all(axis=1)
                  & _inside_eval_crop(frame, candidates, 1.0))
        if inside.any():
            x, y = centers[int(np.argmax(inside))]
            return Placement(Pose(float(x), float(y), scale, rotation), flip)
        scale *= 0.97
    raise RuntimeError("phantom fetus does not fit the sector; head_scale is too large")


# ----------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=32)
def _sector_and_depth(center: Center) -> tuple[np.ndarray, np.ndarray]:
    """Boolean sector mask and depth (0 at the probe, 1 at the bottom) of a centre's frame."""
    frame = center.frame
    grid = _pixel_grid(frame)
    if center.linear:
        sector = _contains(center, grid, 0.0)
        depth = (grid[..., 1] - frame.sector_top) / frame.sector_height
    else:
        geometry = sector_geometry(frame)
        sector = geometry.contains(grid)
        dx, dy = grid[..., 0] - geometry.apex_x, grid[..., 1] - geometry.apex_y
        depth = (np.sqrt(dx * dx + dy * dy) - geometry.r_in) / (geometry.r_out - geometry.r_in)
    sector.flags.writeable = False
    depth.flags.writeable = False
    return sector, depth


def sector_mask(center: Center) -> np.ndarray:
    return _sector_and_depth(center)[0].copy()


def _background(center: Center, natural: Fetus, plane: str, place: Placement,
                rng: np.random.Generator) -> np.ndarray:
    """Maternal tissue with an amniotic-fluid pocket around the (natural) fetus."""
    frame = center.frame
    echo = np.full((frame.height, frame.width), _TISSUE * rng.uniform(0.5, 0.8), np.float32)
    placed = place(_fit_points(natural, plane))
    middle = (placed.min(axis=0) + placed.max(axis=0)) / 2.0
    half = (placed.max(axis=0) - placed.min(axis=0)) / 2.0
    theta = np.radians(np.arange(36) * 10.0)
    radius = 1.0 + sum(rng.uniform(0.0, 0.08) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
                       for k in (2, 3, 4))
    grow = rng.uniform(1.25, 1.75, 2)
    pocket = np.stack([middle[0] + half[0] * grow[0] * radius * np.cos(theta),
                       middle[1] + half[1] * grow[1] * radius * np.sin(theta)], axis=-1)
    _fill(echo, pocket, _FLUID)
    if rng.random() < 0.5:   # placenta along the top
        y = frame.sector_top + frame.sector_height * rng.uniform(0.0, 0.15)
        band = frame.sector_height * rng.uniform(0.06, 0.14)
        cv2.rectangle(echo, (0, int(y)), (frame.width - 1, int(y + band)),
                      float(_TISSUE * rng.uniform(1.0, 1.3)), -1)
    return echo


def _ultrasound(echo: np.ndarray, center: Center, rng: np.random.Generator) -> np.ndarray:
    """B-mode display of an echogenicity map: blur, Rayleigh speckle, slow fields, gain, log
    compression (phantom_pgds's recipe with the centre's grain, resolution and gain)."""
    frame = center.frame
    sector, depth = _sector_and_depth(center)
    height, width = echo.shape
    res, grain = center.resolution, center.speckle
    echo = portable.gaussian_blur(echo, (0.004 * frame.sector_width + 0.3) * res,
                                  (0.002 * frame.sector_height + 0.3) * res)
    half_width = (width + 1) // 2
    noise = rng.standard_normal((2, height, half_width))
    sigma_lateral = 0.008 * frame.sector_width * grain
    sigma_axial = 0.0055 * frame.sector_height * grain
    real, imag = (portable.gaussian_blur(part, sigma_lateral, sigma_axial) for part in noise)
    speckle = portable.gaussian_blur(np.sqrt(real * real + imag * imag), 0.5 * sigma_lateral,
                                     0.5 * sigma_axial)
    speckle = portable.resize(speckle, width, height, "linear")
    speckle *= 0.75 / portable.exact_mean(speckle)
    speckle += 0.25
    coarse = rng.standard_normal((max(2, height // 14), max(2, width // 14)))
    attenuation = rng.uniform(0.4, 1.3)
    compensation = attenuation * rng.uniform(0.4, 0.9)
    gain = math.exp(center.gain + rng.normal(0.0, 0.15))
    slow = np.exp(0.25 * portable.resize(coarse, width, height, "cubic")
                  + (compensation - attenuation) * depth)
    intensity = echo * speckle * slow * gain
    image = np.power(np.maximum(intensity, 0.0), rng.uniform(0.72, 0.92)) * 255.0
    image[~sector] = 0.0
    return portable.to_uint8(image)


def render_image(center: Center, natural: Fetus, fetus: Fetus, plane: str, place: Placement,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One frame (uint8, sector only) and its truth mask (uint8 0/255).

    The mask: every pixel where the fetus is drawn otherwise than the same fetus without its
    anomaly (both on a blank canvas, so a fluid-filled sac over amniotic fluid counts too) and
    the anomaly's anatomical regions, dilated by 0.06 head units, inside the sector; empty for
    a normal fetus and where the anomaly does not show on this plane."""
    sector, _ = _sector_and_depth(center)
    echo = _background(center, natural, plane, place, rng)
    draw_plane(echo, fetus, plane, place)
    frame = _ultrasound(echo, center, rng)
    mask = np.zeros(frame.shape, np.uint8)
    regions = anomaly_regions(fetus, plane)
    if regions:
        with_anomaly, without = (np.zeros(frame.shape, np.float32) for _ in range(2))
        draw_plane(with_anomaly, fetus, plane, place)
        draw_plane(without, natural, plane, place)
        mask[with_anomaly != without] = 255
        for region in regions:
            hull = cv2.convexHull(place(region).astype(np.float32))
            _fill(mask, hull.reshape(-1, 2), 255)
        radius = max(1, int(round(0.06 * place.pose.scale)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask, kernel)
        mask[~sector] = 0
    return frame, mask


# ----------------------------------------------------------------------------- fake PHI


def _text_rows(overlay: np.ndarray, rows: list[tuple[str, ...]], x0: int, x1: int, y0: int,
               y1: int, value: int) -> None:
    """Rows of text in the box [x0, x1) x [y0, y1): one text left-aligned, or two (left and
    right-aligned), each row a share of the box's height."""
    if not rows or x1 - x0 < 6 or y1 - y0 < 4:
        return
    line_height = (y1 - y0) / len(rows)
    widest = max(len(row) for row in rows)
    scale = _font_scale(line_height - 1, (x1 - x0) / widest - (2 if widest > 1 else 0),
                        [t for row in rows for t in row])
    (_, _), descent = cv2.getTextSize("Ag", _FONT, scale, 1)
    for index, row in enumerate(rows):
        baseline_y = int(math.floor(y0 + (index + 1) * line_height - descent))
        cv2.putText(overlay, row[0], (x0, baseline_y), _FONT, scale, value, 1, cv2.LINE_AA)
        if len(row) > 1:
            text_width = cv2.getTextSize(row[1], _FONT, scale, 1)[0][0]
            cv2.putText(overlay, row[1], (max(x0, x1 - text_width), baseline_y), _FONT, scale,
                        value, 1, cv2.LINE_AA)


def draw_overlay(center: Center, phi: FakePhi) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The centre's burned-in text and grey-scale bar outside the sector box.

    Layouts: "top" (hospital / date, then name / ID across the top; scanner settings down the
    left), "side" (hospital across the top; name, ID, date and time down the left margin),
    "split" (date / hospital across the top, name / ID across the bottom, settings down the
    right), "column" (name / ID across the top; date, time, hospital and settings down the
    right). Returns (pixels, mask 0/255, the PHI strings drawn)."""
    frame = center.frame
    overlay = np.zeros((frame.height, frame.width), np.uint8)
    solid = np.zeros_like(overlay)
    left, top = frame.sector_left, frame.sector_top
    right, bottom = left + frame.sector_width, top + frame.sector_height
    width, height = frame.width, frame.height
    # Blank pixels between text and sector: de-identification blurs 3x3 before it thresholds,
    # so a smaller gap would join the text to the sector.
    gap = max(4, int(round(0.02 * min(width, height))))
    date, clock = phi.stamp().split(" ")
    name, given = phi.patient_name.split("^")
    pid = f"ID {phi.patient_id}"
    style = center.text_style
    if style == "top":
        drawn = [phi.institution, phi.stamp(), phi.patient_name, pid]
        _text_rows(overlay, [(phi.institution, phi.stamp()), (phi.patient_name, pid)], 2,
                   width - 2, 1, top - gap, 230)
        _text_rows(overlay, [(t,) for t in _SCANNER_TEXT], 1, left - gap, top + 1, bottom - 1, 200)
    elif style == "side":
        drawn = [phi.institution, name, given, pid, date, clock]
        _text_rows(overlay, [(phi.institution,)], 2, width - 2, 1, top - gap, 230)
        _text_rows(overlay, [(name,), (given,), (pid,), (date,), (clock,), ("",),
                             *[(t,) for t in _SCANNER_TEXT[:4]]], 1, left - gap, top + 1,
                   bottom - 1, 210)
    elif style == "split":
        drawn = [phi.institution, phi.stamp(), phi.patient_name, pid]
        _text_rows(overlay, [(phi.stamp(), phi.institution)], 2, width - 2, 1, top - gap, 220)
        _text_rows(overlay, [(phi.patient_name, pid)], 2, width - 2, bottom + gap, height - 1, 220)
        _text_rows(overlay, [(t,) for t in _SCANNER_TEXT], right + gap, width - 1, top + 1,
                   bottom - 1, 190)
    elif style == "column":
        drawn = [phi.patient_name, pid, date, clock, phi.institution]
        _text_rows(overlay, [(phi.patient_name, pid)], 2, width - 2, 1, top - gap, 230)
        words = phi.institution.split(" ")
        _text_rows(overlay, [(date,), (clock,), *[(w,) for w in words], ("",),
                             *[(t,) for t in _SCANNER_TEXT[:3]]], right + gap, width - 1, top + 1,
                   bottom - 1, 210)
    else:
        raise ValueError(f"unknown text style {style!r}")
    margin = left if center.bar == "left" else width - right
    if center.bar != "none" and margin >= 6:
        bar_width = max(2, margin // 5)
        x0 = right + max(gap, margin // 3) if center.bar == "right" else \
            left - max(gap, margin // 3) - bar_width
        y0, y1 = int(top + 0.08 * frame.sector_height), int(top + 0.5 * frame.sector_height)
        overlay[y0:y1, x0:x0 + bar_width] = np.linspace(250, 20, y1 - y0).astype(np.uint8)[:, None]
        solid[y0:y1, x0:x0 + bar_width] = 1
    mask = ((overlay > 0) | (solid > 0)).astype(np.uint8) * 255
    return overlay, cv2.dilate(mask, np.ones((3, 3), np.uint8)), drawn


# ----------------------------------------------------------------------------- output


@dataclass
class RenderedCase:
    tables: dict[str, list[dict]]   # "manifest", "findings", "geometry": one row per image
    phi: dict                       # the patient's fake PHI and the strings burned in

    @property
    def rows(self) -> list[dict]:
        return self.tables["manifest"]


def _center(profile: CnsPhantomProfile, name: str) -> Center:
    for center in profile.centers:
        if center.name == name:
            return center
    raise ValueError(f"profile {profile.name} has no centre {name!r}")


def _dicom_tags(phi: FakePhi, case: PlannedCase, index: int, seed: int) -> dict:
    from pydicom.uid import generate_uid

    from .phantom_pgds import _dicom_tags as pgds_tags

    key = f"phantom-cns/{seed}/{case.case_id}"
    return {**pgds_tags(phi, case, 0, seed), "InstanceNumber": index + 1,
            "StudyInstanceUID": generate_uid(entropy_srcs=[key, "study"]),
            "SeriesInstanceUID": generate_uid(entropy_srcs=[key, "series"]),
            "SOPInstanceUID": generate_uid(entropy_srcs=[key, "image", str(index)])}


def render_case(profile: CnsPhantomProfile, case: PlannedCase, seed: int, out_dir: Path,
                dicom: bool = False) -> RenderedCase:
    """Render and write every image of one patient; returns its manifest rows."""
    number = case.case_number
    center = _center(profile, case.center)
    natural, fetus = sample_fetus(case.label, case.gestational_week,
                                  np.random.default_rng([seed, number, _STREAM_FETUS]),
                                  np.random.default_rng([seed, number, _STREAM_ANOMALY]))
    phi = dataclasses.replace(draw_fake_phi(np.random.default_rng([seed, number, _STREAM_PHI])),
                              institution=center.hospital)
    overlay, phi_mask, drawn = draw_overlay(center, phi)
    rows, found, geometry = [], [], []
    for index, plane in enumerate(case.planes):
        place = sample_placement(profile, center, natural, plane,
                                 np.random.default_rng([seed, number, _STREAM_POSE, index]))
        frame, mask = render_image(center, natural, fetus, plane, place,
                                   np.random.default_rng([seed, number, _STREAM_IMAGE, index]))
        frame = np.where(overlay > 0, overlay, frame)
        stem = f"{case.case_id}_i{index + 1}"
        row = {"image_path": f"images/{stem}.png", "case_id": case.case_id, "label": case.label,
               "plane": plane, "gestational_week": f"{case.gestational_week:.1f}",
               "center": center.name, "mask_path": f"masks/{stem}.png",
               "phi_mask_path": f"phi_masks/{stem}.png"}
        _png(out_dir / row["image_path"], frame, profile.png_compression)
        _png(out_dir / row["mask_path"], mask)
        _png(out_dir / row["phi_mask_path"], phi_mask)
        if dicom:
            row["dicom_path"] = f"dicom/{stem}.dcm"
            _write_dicom(out_dir / row["dicom_path"], frame, _dicom_tags(phi, case, index, seed))
        rows.append(row)
        found.append({"image_path": row["image_path"], "case_id": case.case_id,
                      "label": case.label, "plane": plane,
                      "anomaly_visible": int(shows_anomaly(fetus, plane)),
                      "findings": ";".join(findings(fetus, plane))})
        geometry.append({"image_path": row["image_path"], "center_x": place.pose.center_x,
                         "center_y": place.pose.center_y, "scale_px": place.pose.scale,
                         "rotation_deg": place.pose.rotation_deg, "flip": place.flip})
    return RenderedCase({"manifest": rows, "findings": found, "geometry": geometry},
                        {**dataclasses.asdict(phi), "burned_in": drawn})


def resolve_profile(profile: str | CnsPhantomProfile) -> CnsPhantomProfile:
    if isinstance(profile, CnsPhantomProfile):
        return profile
    if profile not in PROFILES:
        raise InputError(None, f"unknown phantom profile '{profile}' for study cns "
                               f"(choose from {', '.join(PROFILES)})")
    return PROFILES[profile]


def _write_folder_files(stage: Path, profile: CnsPhantomProfile, tables: dict[str, list[dict]],
                        phi_truth: dict, dicom: bool) -> None:
    """manifest.csv (+ manifest_dicom.csv), findings.csv, geometry.csv, phi_truth.json and the
    centres' sector masks."""
    manifest = pd.DataFrame(tables["manifest"])
    columns = list(MANIFEST_COLUMNS)
    atomic.write_csv(stage / "manifest.csv", manifest[columns])
    if dicom:
        atomic.write_csv(stage / "manifest_dicom.csv",
                         manifest.assign(image_path=manifest["dicom_path"])[columns])
    atomic.write_csv(stage / "findings.csv", pd.DataFrame(tables["findings"]))
    atomic.write_csv(stage / "geometry.csv", pd.DataFrame(tables["geometry"]).round(2))
    atomic.write_json(stage / "phi_truth.json", {
        "note": "synthetic phantom: made-up identifiers (deterministic from the seed), burned "
                "into the frames and DICOM tags so that de-identification can be tested",
        "dicom_private_tag": {"group": f"{PRIVATE_GROUP:04X}", "creator": PRIVATE_CREATOR,
                              "element": "01", "holds": "patient_id"},
        "cases": phi_truth})
    for center in profile.centers:
        _png(stage / "sector_masks" / f"{center.name}.png",
             sector_mask(center).astype(np.uint8) * 255, 9)


def generate(profile: str | CnsPhantomProfile, out_dir: str | Path, *, seed: int = 0,
             dicom: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Render the whole phantom into `out_dir` (built atomically); return the manifest path."""
    from .provenance import portable_path, write_run_json

    profile = resolve_profile(profile)
    out_dir = Path(out_dir)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(None, f"--seed must be a non-negative integer, got {seed!r}")
    _check_out_dir(out_dir, force)
    cases = plan_cases(profile, int(seed))
    total = sum(len(case.planes) for case in cases)
    started = time.perf_counter()
    with atomic.staged_dir(out_dir, overwrite=True) as stage:
        folders = ("images", "masks", "phi_masks", "sector_masks") + (("dicom",) if dicom else ())
        for folder in folders:
            (stage / folder).mkdir()
        tables: dict[str, list[dict]] = {"manifest": [], "findings": [], "geometry": []}
        phi_truth = {}
        for number, case in enumerate(cases, start=1):
            rendered = render_case(profile, case, int(seed), stage, dicom)
            for name, table in rendered.tables.items():
                tables[name].extend(table)
            phi_truth[case.case_id] = rendered.phi
            if progress and total >= 200 and number % max(1, len(cases) // 10) == 0:
                print(f"phantom cns/{profile.name}: {number}/{len(cases)} patients "
                      f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        _write_folder_files(stage, profile, tables, phi_truth, dicom)
        config = {**profile.as_config(), "study": STUDY, "dicom": bool(dicom)}
        write_run_json(stage, config, seed=int(seed), manifest=stage / "manifest.csv",
                       extra={"manifest": portable_path(out_dir / "manifest.csv")}, force=True)
    if progress:
        print(f"phantom cns/{profile.name}: {total} images, {len(cases)} patients in "
              f"{time.perf_counter() - started:.1f} s -> {out_dir}", file=sys.stderr)
    return out_dir / "manifest.csv"
