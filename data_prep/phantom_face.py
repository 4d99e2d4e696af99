"""Synthetic children's frontal face photos for the face studies (Hong 2021, later Shen 2024).

Each child has an IDENTITY drawn once from its own random streams (age, sex, skin tone, hair,
iris colour and the natural shape of every facial feature) and, when affected, a SYNDROME
(which of Hong's 35, and how severe) drawn from another stream. Each PHOTO of a child varies only
what a camera session varies: pose (in-plane roll, a small yaw and pitch drawn as depth-scaled
shifts of the features, scale, position), expression (smile, slightly open mouth, eye opening),
lighting (direction, ambient share, colour temperature, exposure), background, clothes and
camera blur and noise. `gs_vgg16` (Hong 2021) takes one photo per child; `ps_face` (Shen 2024:
several photos per child and a many-identity pretraining set) can reuse the same generator
through `FacePhantomProfile.groups` and `photos_per_child` without changing how a child looks.

What a face is: a head outline whose proportions follow age (0-14 years: the cranium is large
and the lower face short and round in infants; the chin, nose and mouth move down and the
face lengthens with age), smoothly shaded by a Lambert + specular model of a height field
(head ellipsoid, brow ridge, eye sockets, cheeks, nose bridge, tip and alae, lips, philtrum,
chin), ears behind the head, neck and shoulders in clothes, hair (short, fringe, long behind
the head with the ears free, sparse), eyebrows, eyes (sclera, iris, pupil, catch-light, upper-lid shadow, lash line, lower
lid, optional lid crease and epicanthal fold), nostrils and alar creases, lips with a Cupid's
bow and a mouth line, on a wall-coloured background. Every shape is a polygon rasterised 4x4
super-sampled (exact integer coverage) and composited with that coverage: edges are
anti-aliased.

Syndromic gestalts are changes of shape and placement (`TRAITS`), e.g. Williams-Beuren:
periorbital fullness, wide mouth, full lips and cheeks, short upturned nose, long philtrum;
Noonan: hypertelorism, ptosis, down-slanting fissures, low-set posteriorly rotated ears;
Alagille: broad forehead, deep-set eyes, pointed chin; Down: up-slanting fissures, epicanthal
folds, flat nasal bridge and midface, small ears. Hong's rarer syndromes are milder mixtures
(`SYNDROMES`). A child's severity is uniform in SEVERITY_RANGE (1.0-1.7) and each trait
jitters around it.

No shortcuts: within every class age (Hong's Table 1: mean ~37 months, SD ~41; log-normal,
1-168 months), sex and skin-tone bin are stratified draws of the same distributions; pose,
lighting, background, clothes and noise come from per-photo streams the class never touches;
the face is placed by the child WITHOUT its syndrome; the natural face draws come from a stream
the syndrome never touches. So the healthy and syndromic renderings of the same child and photo
differ only where the syndrome changed the face: the truth mask is exactly those pixels (any
channel differs), dilated by 0.03 head half-widths (empty, all zero, for healthy children).
The face's relief is one ellipsoid for every face (plus the features' bumps) and the cheeks'
turn-away shading follows the natural outline, so a changed outline changes only the pixels
along it: a mask covers ~12 % of a photo (median; 90th percentile ~15 %).

Landmarks (manifest `landmarks`, 10 numbers x1 y1 ... x5 y5 in image pixels, x right, y down,
the centre of the top-left pixel at (0, 0)): the eye centre (pupil) with the SMALLER x first
(the subject's right eye in a frontal photo), then the other eye, the nose tip, the mouth
corner with the smaller x, the other mouth corner: the order of the insightface ArcFace
template and of MTCNN's keypoints.

Fake PHI for de-identification: each photo is written as it comes from a camera, a PNG with an
eXIf chunk (TIFF/EXIF: Make, Model, DateTime, Artist, Copyright, ImageDescription holding the
child's fake name, Exif IFD DateTimeOriginal, CameraOwnerName, BodySerialNumber, GPS IFD with
latitude and longitude) and a file name holding the child's fake name
(`photos/<case>_<FAMILY>_<GIVEN>_<k>.png`); every planted value is in `phi_truth.json`. PNG,
not JPEG: the pixels are exact and the file is written here byte by byte (chunks + Python's
zlib), so it is the same on every CPU.

Output folder (see `generate`): `manifest.csv` (image_path, case_id, label, subtype,
age_months, sex, landmarks, mask_path), `photos/`, `masks/` (PNG 0/255), `children.csv` (the
identity of each child: skin tone, hair, severity, trait values), `photos.csv` (each photo's
conditions: roll, yaw, pitch, scale, light, expression), `phi_truth.json` and `run.json`.
Same seed -> byte-identical files (run.json aside) on every x86-64 CPU: pixel work is IEEE
elementwise + - * / sqrt (powers by square roots, `_pow`), `data_prep.portable` filters and
integer rasterisation; NumPy's sin / cos only place polygon vertices, rounded to 1/64 pixel
(a last-bit difference moves one only within ~1e-13 of a rounding boundary, the risk
`data_prep.portable` accepts for exp). `tests/test_phantom_face.py` checks the committed
hashes also with OpenCV's and NumPy's SIMD dispatch off.
Measured on one shared core (seed 0): ci (32 children, 64x64) 0.3 s, default (260 children,
160x160) 7 s, paper (456 children, 288x288) 37 s. MTCNN (mtcnn 1.0.0, its default thresholds)
finds exactly one face in 249 of the 260 default photos (95.8 %; seed 1: 250, 96.2 %), its five
keypoints 0.045 inter-ocular distances from the drawn ones on average; at confidence >= 0.95
(data_prep.faces' threshold) only 184 (70.8 %; seed 1: 178), a few more syndromic than healthy.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from . import atomic, portable
from .errors import InputError

STUDY = "gs_vgg16"
HEALTHY = "healthy"
SYNDROME = "syndrome"
LABELS = (HEALTHY, SYNDROME)
NO_SYNDROME = "none"
MANIFEST_COLUMNS = ("image_path", "case_id", "label", "subtype", "age_months", "sex",
                    "landmarks", "mask_path")
LANDMARK_NAMES = ("eye_small_x", "eye_large_x", "nose_tip", "mouth_small_x", "mouth_large_x")
SEXES = ("M", "F")

# Bumped whenever the same seed and profile would render different photos.
GENERATOR_VERSION = 3

_STREAM_PLAN, _STREAM_IDENTITY, _STREAM_SYNDROME, _STREAM_PHOTO, _STREAM_PHI = range(5)

# A syndromic child's severity (the factor on every trait of its gestalt). Version 1 drew
# 0.55-1.0: a HOG + logistic-regression probe of the aligned default faces reached AUC 0.85
# and the from-scratch face VGG-16 0.83 (five folds), short of the 0.90 the study is asked to
# show on its phantom. 1.0-1.7 (a trait of 1 being "clear but not extreme") raised the probe
# to 0.92 (0.8-1.4: 0.89) while the faces still look like faces.
SEVERITY_RANGE = (1.0, 1.7)
_SS = 4                 # super-sampling per axis of the polygon coverage
_SHIFT = 4              # cv2 fixed-point bits of the polygon vertices


# ----------------------------------------------------------------------------- syndromes

# Dysmorphic traits: a value of 1 is a clear but not extreme finding (see `face_shape` for
# what each moves). Signed traits: + / - are the two directions (e.g. fissure_slant + up).
TRAITS = ("eye_spacing", "fissure_slant", "ptosis", "epicanthus", "deep_set_eyes",
          "periorbital_fullness", "fissure_length", "flat_nasal_bridge", "nose_length",
          "upturned_nose", "nose_width", "philtrum_length", "mouth_width", "lip_fullness",
          "downturned_mouth", "cheek_fullness", "broad_forehead", "pointed_chin", "small_jaw",
          "long_face", "ear_low", "ear_rotation", "ear_size", "arched_brows", "synophrys",
          "microcephaly", "midface_flat", "short_neck", "blue_sclera")


@dataclass(frozen=True)
class Syndrome:
    """One syndrome of Hong 2021: its count there, its gestalt (trait -> weight) and strength
    (1 for the three common syndromes whose gestalts are well known, less for rarer ones)."""
    name: str
    hong_count: int
    gestalt: tuple[tuple[str, float], ...]
    strength: float = 0.8


def _s(name: str, count: int, strength: float = 0.8, **gestalt: float) -> Syndrome:
    unknown = set(gestalt) - set(TRAITS)
    if unknown:
        raise ValueError(f"{name}: unknown traits {sorted(unknown)}")
    return Syndrome(name, count, tuple(gestalt.items()), strength)


# Hong 2021, "Patients and facial photos": 35 syndromes, 228 children. Gestalts from the
# syndromes' usual descriptions (Orphanet / GeneReviews facial features), shape only except
# brittle cornea's blue sclera.
SYNDROMES: tuple[Syndrome, ...] = (
    _s("Williams-Beuren syndrome", 108, 1.0, periorbital_fullness=1.0, mouth_width=0.8,
       lip_fullness=1.0, cheek_fullness=0.9, nose_length=-0.8, upturned_nose=0.8,
       philtrum_length=0.9, flat_nasal_bridge=0.5, small_jaw=0.4, epicanthus=0.3),
    _s("Noonan syndrome", 52, 1.0, eye_spacing=1.0, ptosis=0.9, fissure_slant=-0.9, ear_low=0.9,
       ear_rotation=0.9, epicanthus=0.4, flat_nasal_bridge=0.3, pointed_chin=0.4,
       broad_forehead=0.3),
    _s("Down syndrome", 14, 1.0, fissure_slant=1.0, epicanthus=1.0, flat_nasal_bridge=1.0,
       ear_size=-0.9, ear_low=0.3, midface_flat=0.8, nose_length=-0.4, mouth_width=-0.3,
       microcephaly=0.3),
    _s("Marfan syndrome", 5, long_face=1.0, deep_set_eyes=0.7, fissure_slant=-0.5,
       small_jaw=0.5, cheek_fullness=-0.5),
    _s("Loeys-Dietz syndrome", 4, eye_spacing=0.9, fissure_slant=-0.5, long_face=0.4,
       small_jaw=0.4),
    _s("Alagille syndrome", 4, 1.0, broad_forehead=1.0, deep_set_eyes=1.0, pointed_chin=1.0,
       eye_spacing=0.5, nose_width=0.3),
    _s("DiGeorge syndrome", 3, ptosis=0.4, nose_width=0.6, mouth_width=-0.5, ear_size=-0.5,
       ear_low=0.3, long_face=0.3),
    _s("Acromicric and Geleophysic dysplasia", 3, cheek_fullness=0.7, nose_length=-0.6,
       upturned_nose=0.6, philtrum_length=0.6, lip_fullness=-0.5),
    _s("Kabuki syndrome", 2, fissure_length=1.0, arched_brows=1.0, ear_size=0.6, nose_length=-0.4,
       fissure_slant=-0.3, ptosis=0.3),
    _s("Barth syndrome", 2, cheek_fullness=0.6, deep_set_eyes=0.5, pointed_chin=0.6,
       ear_size=0.5),
    _s("Cornelia de Lange syndrome", 2, synophrys=1.0, arched_brows=0.8, philtrum_length=1.0,
       lip_fullness=-0.8, downturned_mouth=1.0, nose_length=-0.7, upturned_nose=0.7,
       microcephaly=0.6, ear_low=0.4),
    _s("Koolen-de Vries syndrome", 2, long_face=0.6, fissure_slant=0.5, epicanthus=0.5,
       nose_width=0.6, ear_size=0.4),
    _s("14q32 duplication syndrome", 2, eye_spacing=0.5, nose_width=0.4, downturned_mouth=0.4),
    _s("Congenital mental retardation, AD", 2, epicanthus=0.4, flat_nasal_bridge=0.4,
       mouth_width=0.4, philtrum_length=0.4),
    _s("8p23.1 deletion syndrome", 2, microcephaly=0.5, eye_spacing=0.4, nose_width=0.4,
       ear_low=0.4),
    _s("21q22.3 deletion syndrome", 2, fissure_slant=0.5, flat_nasal_bridge=0.5, small_jaw=0.4),
    _s("Helsmoortel-Van der Aa syndrome", 1, broad_forehead=0.6, fissure_slant=-0.5,
       flat_nasal_bridge=0.4, lip_fullness=-0.4),
    _s("Mulibrey nanism", 1, broad_forehead=0.8, pointed_chin=0.8, eye_spacing=0.3),
    _s("Congenital fibrosis of extraocular muscles", 1, ptosis=1.2),
    _s("Mandibulofacial dysostosis-microcephaly syndrome", 1, microcephaly=0.8, small_jaw=0.9,
       cheek_fullness=-0.7, ear_size=-0.6, fissure_slant=-0.5),
    _s("Cerebro-oculo-facio-skeletal syndrome", 1, microcephaly=0.8, deep_set_eyes=0.8,
       small_jaw=0.7, ear_size=0.5),
    _s("Oculo-facio-cardio-dental syndrome", 1, long_face=0.7, nose_width=0.7, eye_spacing=0.3),
    _s("Wolf-Hirschhorn syndrome", 1, eye_spacing=1.0, nose_width=0.5, philtrum_length=-0.6,
       downturned_mouth=0.8, microcephaly=0.7, arched_brows=0.6),
    _s("Costello syndrome", 1, lip_fullness=1.0, mouth_width=0.7, cheek_fullness=0.6,
       nose_width=0.6, ear_low=0.5, epicanthus=0.4),
    _s("Cri du Chat syndrome", 1, microcephaly=0.8, eye_spacing=0.7, epicanthus=0.6,
       cheek_fullness=0.5, downturned_mouth=0.6, fissure_slant=-0.4),
    _s("Stickler syndrome", 1, midface_flat=1.0, flat_nasal_bridge=0.8, small_jaw=0.8,
       nose_length=-0.4),
    _s("Coffin-Siris syndrome", 1, lip_fullness=0.9, mouth_width=0.7, nose_width=0.7,
       synophrys=0.4),
    _s("Klippel-Feil syndrome", 1, short_neck=1.0, ear_low=0.3),
    _s("Congenital contractural arachnodactyly", 1, long_face=0.6, ear_rotation=0.6,
       small_jaw=0.4),
    _s("16p11.2 duplication syndrome", 1, eye_spacing=-0.5, long_face=0.3),
    _s("Holt-Oram syndrome", 1, 0.6, eye_spacing=0.4),
    _s("X-Linked Oto-palato-digital spectrum disorders", 1, eye_spacing=0.8, broad_forehead=0.7,
       flat_nasal_bridge=0.6, fissure_slant=-0.5, small_jaw=0.5),
    _s("16p11.2 microdeletion syndrome", 1, broad_forehead=0.4, cheek_fullness=0.5,
       microcephaly=-0.5),
    _s("Brittle cornea syndrome", 1, blue_sclera=1.0, fissure_length=-0.4),
    _s("18q microdeletion syndrome", 1, midface_flat=0.7, deep_set_eyes=0.6, downturned_mouth=0.7,
       ear_size=0.5),
)
SYNDROME_BY_NAME = {s.name: s for s in SYNDROMES}


# ----------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class FacePhantomProfile:
    """Children per group, photos per child, photo size, demographics.

    `groups`: (label, subtype, children); subtype is a `SYNDROMES` name or `NO_SYNDROME`.
    `male_share`: (label, share of boys) -- the same in every label unless a paper says not.
    Ages: log-normal (median, sigma) truncated to `age_range_months`, stratified per label.
    """
    name: str
    groups: tuple[tuple[str, str, int], ...]
    photos_per_child: tuple[tuple[int, float], ...]
    width: int
    height: int
    male_share: tuple[tuple[str, float], ...]
    # Hong Table 1: 36.85 +- 42.33 and 37.28 +- 40.77 months: a truncated log-normal with this
    # median and sigma has mean 38.5, SD 39.2 (10 % below 4 months, 10 % above 100)
    age_median_months: float = 30.0
    age_sigma: float = 1.6
    age_range_months: tuple[float, float] = (1.0, 168.0)
    skin_tone_bins: int = 5
    png_compression: int = 6

    def as_config(self) -> dict:
        return {**dataclasses.asdict(self), "generator_version": GENERATOR_VERSION}

    @property
    def total_children(self) -> int:
        return sum(n for _, _, n in self.groups)

    def children_per_label(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for label, _, n in self.groups:
            counts[label] = counts.get(label, 0) + n
        return counts


def _spread_over_syndromes(total: int) -> tuple[tuple[str, str, int], ...]:
    """`total` syndromic children over Hong's syndromes in proportion to her counts (largest
    remainder), every syndrome with a share below one child dropped."""
    weights = np.array([s.hong_count for s in SYNDROMES], dtype=np.float64)
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[:total - counts.sum()]:
        counts[index] += 1
    return tuple((SYNDROME, s.name, int(n)) for s, n in zip(SYNDROMES, counts) if n > 0)


def _gs_profile(name: str, healthy: int, syndromic: tuple[tuple[str, str, int], ...], width: int,
                height: int, male_share: tuple[tuple[str, float], ...] | None = None
                ) -> FacePhantomProfile:
    share = 0.535   # Hong's boys over both classes, 244 / 456, the same in each
    return FacePhantomProfile(name, ((HEALTHY, NO_SYNDROME, healthy),) + syndromic, ((1, 1.0),),
                              width, height, male_share or ((HEALTHY, share), (SYNDROME, share)))


PROFILES: dict[str, FacePhantomProfile] = {
    # Hong 2021: 228 children over 35 syndromes with her counts, 228 healthy, one photo each;
    # boys 125/228 with a syndrome, 119/228 healthy (Table 1).
    "paper": _gs_profile("paper", 228, tuple((SYNDROME, s.name, s.hong_count) for s in SYNDROMES),
                         288, 288, ((HEALTHY, 119 / 228), (SYNDROME, 125 / 228))),
    # Sized for 5-fold CV of a VGG-16-face on a 2-core CPU in minutes: 260 children, 160 px.
    "default": _gs_profile("default", 130, _spread_over_syndromes(130), 160, 160),
    "ci": _gs_profile("ci", 16, _spread_over_syndromes(16), 64, 64),
}


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedChild:
    number: int               # 1-based; also the child's random-stream key
    case_id: str
    label: str
    subtype: str
    age_months: float
    sex: str
    skin_tone_bin: int
    photos: int


def _stratified(rng: np.random.Generator, n: int, values: list, weights: list) -> list:
    """n draws whose histogram follows `weights` as closely as n allows (systematic sampling
    of the inverse CDF with one random offset), in random order (as phantom_cns)."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64) / math.fsum(weights))
    quantiles = (np.arange(n) + rng.uniform()) / n
    picked = np.minimum(np.searchsorted(cdf, quantiles, side="right"), len(values) - 1)
    return [values[int(i)] for i in picked[rng.permutation(n)]]


def _stratified_ages(rng: np.random.Generator, n: int, profile: FacePhantomProfile) -> list[float]:
    """n ages (months, 0.1) at stratified quantiles of the truncated log-normal, random order."""
    normal = statistics.NormalDist(math.log(profile.age_median_months), profile.age_sigma)
    low, high = (normal.cdf(math.log(a)) for a in profile.age_range_months)
    quantiles = low + (high - low) * (np.arange(n) + rng.uniform()) / n
    ages = [round(math.exp(normal.inv_cdf(float(q))), 1) for q in quantiles]
    return [ages[int(i)] for i in rng.permutation(n)]


def plan_children(profile: FacePhantomProfile, seed: int) -> list[PlannedChild]:
    """Children, labels, subtypes, ages, sexes, skin-tone bins and photo counts, without
    rendering. Within each label ages, sexes, skin-tone bins and photo counts are stratified
    draws of the same distributions (the subtypes of a label share them); case ids are given
    in a seeded random order (C0001, ...)."""
    rng = np.random.default_rng([seed, 0, _STREAM_PLAN])
    counts = [c for c, _ in profile.photos_per_child]
    weights = [w for _, w in profile.photos_per_child]
    share = dict(profile.male_share)
    bins = list(range(profile.skin_tone_bins))
    pending = []
    for label, n in profile.children_per_label().items():
        subtypes = [s for lab, s, k in profile.groups if lab == label for _ in range(k)]
        subtypes = [subtypes[int(i)] for i in rng.permutation(n)]
        ages = _stratified_ages(rng, n, profile)
        boys = int(round(share[label] * n))
        sexes = [SEXES[0]] * boys + [SEXES[1]] * (n - boys)
        sexes = [sexes[int(i)] for i in rng.permutation(n)]
        tones = _stratified(rng, n, bins, [1.0] * len(bins))
        photos = _stratified(rng, n, counts, weights)
        pending.extend(zip([label] * n, subtypes, ages, sexes, tones, photos))
    order = rng.permutation(len(pending))
    width = max(4, len(str(len(pending))))
    return [PlannedChild(number, f"C{number:0{width}d}", *pending[index])
            for number, index in enumerate(order, start=1)]


# ----------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Appearance:
    """Colours of one child (identity; never changed by a syndrome)."""
    skin: tuple[float, float, float]        # RGB 0-255
    skin_tone: float                        # 0 light .. 1 dark
    hair: tuple[float, float, float]
    hair_style: str                         # short, fringe, long, sparse
    hair_volume: float
    hair_line: float                        # v of the hairline at the midline
    fringe_jags: tuple[float, ...]
    iris: tuple[float, float, float]
    lid_crease: bool
    brow_density: float
    clothes: tuple[float, float, float]
    collar: tuple[float, float, float]


@dataclass(frozen=True)
class Child:
    """One child's identity: the natural draws (`natural`: (name, value) pairs of shape
    numbers) and the syndrome's trait values (`traits`: empty for a healthy child)."""
    planned: PlannedChild
    appearance: Appearance
    natural: tuple[tuple[str, float], ...]
    traits: tuple[tuple[str, float], ...]
    severity: float

    def shape(self, with_syndrome: bool = True) -> "FaceShape":
        return face_shape(dict(self.natural), dict(self.traits) if with_syndrome else {},
                          self.planned.age_months)


_SKIN_ANCHORS = np.array([(250, 222, 200), (236, 196, 166), (214, 160, 124), (168, 114, 82),
                          (110, 72, 52)], dtype=np.float64)
_HAIR_ANCHORS = np.array([(22, 18, 17), (48, 34, 26), (92, 62, 38), (150, 108, 60),
                          (200, 165, 105)], dtype=np.float64)
_IRIS_COLOURS = ((58, 36, 24), (84, 54, 32), (40, 28, 22), (110, 84, 50), (70, 100, 130),
                 (86, 108, 76))


def _palette(anchors: np.ndarray, t: float) -> tuple[float, float, float]:
    position = float(np.clip(t, 0.0, 1.0)) * (len(anchors) - 1)
    low = min(int(position), len(anchors) - 2)
    w = position - low
    return tuple(float(v) for v in anchors[low] * (1.0 - w) + anchors[low + 1] * w)


def sample_child(planned: PlannedChild, profile: FacePhantomProfile, seed: int) -> Child:
    """Draw one child's identity from its streams: the natural face and colours from
    `_STREAM_IDENTITY` (the same draws whatever the class), the syndrome's traits and severity
    from `_STREAM_SYNDROME`."""
    rng = np.random.default_rng([seed, planned.number, _STREAM_IDENTITY])
    tone = (planned.skin_tone_bin + rng.uniform()) / profile.skin_tone_bins
    g = _growth(planned.age_months)
    hair_t = float(np.clip(rng.beta(1.2, 4.0), 0.0, 1.0))
    style = str(rng.choice(["short", "fringe", "long", "sparse"], p=[0.34, 0.3, 0.24, 0.12]))
    if planned.age_months < 10 and rng.random() < 0.6:
        style = "sparse"
    iris = _IRIS_COLOURS[int(rng.choice(len(_IRIS_COLOURS), p=[0.4, 0.25, 0.15, 0.1, 0.05,
                                                                 0.05]))]
    clothes = tuple(float(v) for v in rng.uniform(30, 230, 3))
    collar = tuple(float(v) for v in rng.uniform(30, 240, 3)) if rng.random() < 0.5 else clothes
    appearance = Appearance(
        skin=_palette(_SKIN_ANCHORS, tone), skin_tone=round(tone, 4),
        hair=_palette(_HAIR_ANCHORS, hair_t),
        hair_style=style, hair_volume=float(rng.uniform(0.04, 0.12)),
        hair_line=float(-0.76 - 0.06 * g + rng.normal(0.0, 0.04)),
        fringe_jags=tuple(float(v) for v in rng.uniform(-1.0, 1.0, 9)), iris=iris,
        lid_crease=bool(rng.random() < 0.45), brow_density=float(0.5 + 0.35 * g +
                                                                rng.uniform(0.0, 0.2)),
        clothes=clothes, collar=collar)
    n = rng.normal
    natural = {
        "eye_spacing": 0.405 + n(0.0, 0.018), "fissure_slant": 4.0 + n(0.0, 2.5),
        "ptosis": abs(n(0.0, 0.06)), "epicanthus": float(np.clip(n(0.25, 0.2), 0.0, 0.7)),
        "eye_depth": n(0.0, 0.02), "periorbital": abs(n(0.0, 0.15)),
        "fissure_length": 1.0 + n(0.0, 0.05), "bridge": 1.0 + n(0.0, 0.12),
        "nose_length": n(0.0, 0.02), "upturn": abs(n(0.0, 0.15)), "nose_width": n(0.0, 0.012),
        "philtrum": n(0.0, 0.015), "mouth_width": n(0.0, 0.018), "lips": 1.0 + n(0.0, 0.1),
        "corner_drop": n(0.0, 0.008), "cheeks": n(0.0, 0.15), "forehead": n(0.0, 0.12),
        "chin_q": n(0.0, 0.15), "jaw": n(0.0, 0.02), "face_length": n(0.0, 0.03),
        "ear_height": n(0.0, 0.03), "ear_tilt": n(0.0, 4.0), "ear_size": 1.0 + n(0.0, 0.06),
        "brow_arch": 0.045 + n(0.0, 0.012), "brow_height": n(0.0, 0.02),
        "brow_thickness": 1.0 + n(0.0, 0.12), "cranium": n(0.0, 0.03), "midface": n(0.0, 0.1),
        "neck": n(0.0, 0.03), "asymmetry": n(0.0, 0.006),
    }
    natural = tuple((k, float(round(v, 6))) for k, v in natural.items())
    traits, severity = {}, 0.0
    if planned.subtype != NO_SYNDROME:
        syndrome = SYNDROME_BY_NAME[planned.subtype]
        srng = np.random.default_rng([seed, planned.number, _STREAM_SYNDROME])
        severity = float(srng.uniform(*SEVERITY_RANGE))
        for trait, weight in syndrome.gestalt:
            traits[trait] = round(weight * syndrome.strength * severity
                                  * float(srng.uniform(0.75, 1.15)), 6)
    return Child(planned, appearance, natural, tuple(traits.items()), round(severity, 6))


def _growth(age_months: float) -> float:
    """0 at birth, 1 at 14 years; fast in infancy (face proportions change most early)."""
    return math.sqrt(min(max(age_months, 0.0) / 168.0, 1.0))


# ----------------------------------------------------------------------------- face shape


@dataclass(frozen=True)
class FaceShape:
    """A face in canonical units: head half-width 1, eye line at v = 0, v down, u towards the
    image right (the subject's left in a frontal photo)."""
    v_top: float             # crown
    v_mid: float             # widest level
    v_chin: float
    forehead: float          # widening of the upper outline
    forehead_p: float        # exponent of the upper outline (larger: squarer temples)
    cheek: float             # widening at the cheeks
    chin_q: float            # exponent of the lower outline (smaller: more pointed)
    jaw: float               # narrowing of the lower face
    eye_x: float             # half inter-pupillary distance
    eye_v: float
    fissure_half: float      # half palpebral fissure length
    eye_open: float          # half opening height (upper lid)
    slant_deg: float
    ptosis: float
    epicanthus: float
    eye_depth: float
    periorbital: float
    sclera: tuple[float, float, float]
    iris_r: float
    brow_v: float
    brow_arch: float
    brow_thickness: float
    synophrys: float
    bridge: float            # nasal bridge height factor
    nose_v: float            # nose tip
    nose_half_width: float
    upturn: float
    midface: float
    mouth_v: float
    mouth_half_width: float
    upper_lip: float
    lower_lip: float
    corner_drop: float
    ear_v: float
    ear_half_height: float
    ear_tilt_deg: float
    neck_half_width: float
    shoulder_v: float        # top of the shoulders (absolute v)
    natural_chin: float      # the chin without the syndrome (what the neck's shadow follows)
    asymmetry: float


def face_shape(natural: dict, traits: dict, age_months: float) -> FaceShape:
    """The face of a child of this age with these natural draws and trait values (what each
    trait moves is written here, in head half-widths)."""
    t = {name: float(traits.get(name, 0.0)) for name in TRAITS}
    g = _growth(age_months)
    v_top = -1.32 + 0.06 * g + natural["cranium"] + 0.12 * t["microcephaly"]
    long_face = 0.13 * t["long_face"]
    v_chin = 1.14 + 0.3 * g + natural["face_length"] + long_face - 0.07 * t["small_jaw"] \
        + 0.04 * t["pointed_chin"]
    nose_v = 0.42 + 0.115 * g + natural["nose_length"] + 0.08 * t["nose_length"] \
        + 0.4 * long_face
    philtrum = 0.22 + 0.045 * g + natural["philtrum"] + 0.06 * t["philtrum_length"]
    lips = natural["lips"] * (1.0 + 0.45 * t["lip_fullness"])
    upper_lip = 0.052 * lips
    lower_lip = 0.068 * lips
    mouth_v = nose_v + 0.05 + philtrum + upper_lip
    fissure_half = (0.23 - 0.035 * g) * natural["fissure_length"] \
        * (1.0 + 0.22 * t["fissure_length"])
    return FaceShape(
        v_top=v_top, v_mid=0.12, v_chin=max(v_chin, mouth_v + lower_lip + 0.18),
        forehead=0.09 * t["broad_forehead"] + 0.06 * natural["forehead"] - 0.05 * t["microcephaly"],
        forehead_p=2.0 + 0.7 * t["broad_forehead"] + 0.3 * natural["forehead"],
        cheek=0.06 * natural["cheeks"] + 0.085 * t["cheek_fullness"],
        chin_q=max(1.25, 2.1 + 0.4 * (1.0 - g) + natural["chin_q"] - 0.75 * t["pointed_chin"]),
        jaw=natural["jaw"] + 0.06 * t["small_jaw"] + 0.05 * t["pointed_chin"],
        eye_x=natural["eye_spacing"] + 0.075 * t["eye_spacing"],
        eye_v=0.0,
        fissure_half=fissure_half,
        eye_open=fissure_half * (0.56 + 0.06 * (1.0 - g)) * (1.0 - 0.12 * t["deep_set_eyes"]),
        slant_deg=natural["fissure_slant"] + 11.0 * t["fissure_slant"],
        ptosis=min(0.75, natural["ptosis"] + 0.45 * t["ptosis"]),
        epicanthus=natural["epicanthus"] + 0.9 * t["epicanthus"],
        eye_depth=natural["eye_depth"] + 0.13 * t["deep_set_eyes"],
        periorbital=natural["periorbital"] + 1.2 * t["periorbital_fullness"],
        sclera=tuple(240.0 - np.array([40.0, 25.0, 0.0]) * min(1.0, t["blue_sclera"])),
        iris_r=0.115 + 0.02 * (1.0 - g),
        brow_v=-0.23 - 0.04 * g + natural["brow_height"] - 0.02 * t["arched_brows"],
        brow_arch=natural["brow_arch"] + 0.05 * t["arched_brows"],
        brow_thickness=natural["brow_thickness"] * (1.0 + 0.3 * t["synophrys"]),
        synophrys=min(1.0, t["synophrys"]),
        bridge=max(0.1, natural["bridge"] * (1.0 - 0.75 * t["flat_nasal_bridge"])),
        nose_v=nose_v,
        nose_half_width=0.15 + 0.025 * g + natural["nose_width"] + 0.045 * t["nose_width"],
        upturn=natural["upturn"] + 1.1 * t["upturned_nose"],
        midface=natural["midface"] - 0.7 * t["midface_flat"],
        mouth_v=mouth_v,
        mouth_half_width=0.27 + 0.03 * g + natural["mouth_width"] + 0.07 * t["mouth_width"],
        upper_lip=upper_lip, lower_lip=lower_lip,
        corner_drop=natural["corner_drop"] + 0.05 * t["downturned_mouth"],
        ear_v=0.2 + 0.06 * g + natural["ear_height"] + 0.17 * t["ear_low"] + 0.3 * long_face,
        ear_half_height=(0.3 + 0.02 * g) * natural["ear_size"] * (1.0 + 0.25 * t["ear_size"]),
        ear_tilt_deg=natural["ear_tilt"] + 20.0 * t["ear_rotation"],
        neck_half_width=0.5 + 0.06 * g + natural["neck"],
        # the body hangs from the NATURAL chin: a syndromic jaw does not move the clothes
        shoulder_v=1.64 + 0.3 * g + natural["face_length"] - 0.22 * t["short_neck"],
        natural_chin=1.14 + 0.3 * g + natural["face_length"],
        asymmetry=natural["asymmetry"])


def half_width(shape: FaceShape, v: np.ndarray) -> np.ndarray:
    """Half-width of the head outline at height v (0 outside the crown-chin range).

    Upper part: (1 - s^p)^(1/2) from the widest level (s = 0) to the crown (s = 1), squarer
    for p > 2 and widened at the temples by a broad forehead; lower part: (1 - t^q)^(1/2) to
    the chin (small q: pointed), widened at the cheeks and narrowed by a small jaw."""
    v = np.asarray(v, dtype=np.float64)
    up = np.clip((shape.v_mid - v) / (shape.v_mid - shape.v_top), 0.0, 1.0)
    low = np.clip((v - shape.v_mid) / (shape.v_chin - shape.v_mid), 0.0, 1.0)
    p = shape.forehead_p
    # s^p from square roots and products (`_pow`): exp(p log s) would round by CPU
    upper = np.sqrt(np.maximum(0.0, 1.0 - _pow(up, p))) * _temple_widening(up, p)
    upper = upper * (1.0 + shape.forehead * 4.0 * up * (1.0 - up) * 1.3)
    q = shape.chin_q
    lower = np.sqrt(np.maximum(0.0, 1.0 - _pow(low, q)))
    lower = lower * (1.0 + shape.cheek * _bump1(low, 0.35, 0.45) - shape.jaw * low)
    width = np.where(v < shape.v_mid, upper, lower)
    return np.where((v >= shape.v_top) & (v <= shape.v_chin), width, 0.0)


def _pow(x: np.ndarray, p: float) -> np.ndarray:
    """x^p for x in [0, 1] and p in [1, 4] from sqrt and products only (CPU-independent):
    p is split into 1/16 steps, x^(k/16) by four square roots."""
    x = np.asarray(x, dtype=np.float64)
    steps = int(round(p * 16))
    out = np.ones_like(x)
    whole, frac = divmod(steps, 16)
    for _ in range(whole):
        out = out * x
    root = x
    for bit in (8, 4, 2, 1):   # x^(1/2), x^(1/4), x^(1/8), x^(1/16)
        root = np.sqrt(root)
        if frac & bit:
            out = out * root
    return out


def _temple_widening(up: np.ndarray, p: float) -> np.ndarray:
    """1 for a round cranium (p = 2); for a squarer one (p > 2) the outline between the widest
    level and the crown bulges out (what a 1/p root instead of the square root would do)."""
    return 1.0 + (p - 2.0) * 0.35 * up * up * (1.0 - up)


def _bump1(x: np.ndarray, center: float, radius: float) -> np.ndarray:
    r = (np.asarray(x) - center) / radius
    s = np.maximum(0.0, 1.0 - r * r)
    return s * s * s


def _bump(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    """Compact polynomial bump (1 - r^2)^3, r the elliptic radius: exact, zero outside."""
    du, dv = (u - cu) / ru, (v - cv) / rv
    s = np.maximum(0.0, 1.0 - du * du - dv * dv)
    return s * s * s


# ----------------------------------------------------------------------------- photo


@dataclass(frozen=True)
class PhotoConditions:
    """What one camera session varies (drawn from the photo's own stream)."""
    roll_deg: float
    yaw: float                # canonical shift per unit depth (+: features move right)
    pitch: float
    scale_px: float           # pixels per head half-width
    center_x: float           # pixel position of the canonical origin (mid-eye line)
    center_y: float
    light: tuple[float, float, float]   # unit vector towards the light (x right, y down, z out)
    ambient: float
    warmth: float             # -1 cool .. 1 warm
    exposure: float
    smile: float
    mouth_open: float
    eye_open: float
    background: tuple[tuple[float, float, float], tuple[float, float, float]]
    background_angle_deg: float
    blur_px: float
    noise: float              # sensor noise SD (0-255 scale)


def sample_photo(child: Child, index: int, profile: FacePhantomProfile, seed: int
                 ) -> PhotoConditions:
    """Pose, expression, lighting, background and camera of photo `index` of a child. The
    placement is fitted to the child WITHOUT its syndrome (`_natural_extent`), so it says
    nothing of the class."""
    rng = np.random.default_rng([seed, child.planned.number, _STREAM_PHOTO, index])
    top, bottom = _natural_extent(child)
    fill = rng.uniform(0.50, 0.60)          # crown-to-chin share of the photo height
    scale = profile.height * fill / (bottom - top)
    center_y = profile.height * (0.5 + rng.normal(0.0, 0.015)) - scale * (top + bottom) / 2.0
    center_x = profile.width * (0.5 + rng.normal(0.0, 0.02))
    azimuth = math.radians(rng.uniform(-60.0, 60.0))
    elevation = math.radians(rng.uniform(35.0, 70.0))
    light = (math.cos(elevation) * math.sin(azimuth), -math.cos(elevation) * math.cos(azimuth)
             * 0.6, math.sin(elevation))
    norm = math.sqrt(sum(c * c for c in light))
    smile = float(rng.uniform(0.0, 1.0) ** 2)
    wall = rng.uniform(0.0, 1.0)
    base = np.array(rng.uniform(120, 235, 3)) * (0.6 + 0.4 * wall)
    tint = base * rng.uniform(0.75, 1.05, 3)
    return PhotoConditions(
        roll_deg=float(np.clip(rng.normal(0.0, 4.0), -10.0, 10.0)),
        yaw=float(rng.uniform(-0.07, 0.07)), pitch=float(rng.uniform(-0.03, 0.03)),
        scale_px=float(scale), center_x=float(center_x), center_y=float(center_y),
        light=tuple(c / norm for c in light), ambient=float(rng.uniform(0.45, 0.65)),
        warmth=float(rng.uniform(-1.0, 1.0)), exposure=float(rng.uniform(0.88, 1.08)),
        smile=smile, mouth_open=float(rng.uniform(0.0, 1.0) if rng.random() < 0.12 else 0.0),
        eye_open=float(rng.uniform(0.88, 1.05)),
        background=(tuple(float(c) for c in base), tuple(float(c) for c in tint)),
        background_angle_deg=float(rng.uniform(0.0, 360.0)),
        blur_px=float(rng.uniform(0.35, 0.7) * profile.height / 160.0),
        noise=float(rng.uniform(1.0, 3.5)))


def _natural_extent(child: Child) -> tuple[float, float]:
    """Crown (with hair volume) and chin of the child without its syndrome (canonical v)."""
    shape = child.shape(with_syndrome=False)
    return shape.v_top - child.appearance.hair_volume, shape.v_chin


# ----------------------------------------------------------------------------- raster


class _Canvas:
    """Pixel grid of one photo: canonical coordinates of every pixel centre and polygon
    coverage by 4x4 super-sampling (cv2.fillPoly on integers: exact on every CPU)."""

    def __init__(self, width: int, height: int, photo: PhotoConditions):
        self.width, self.height, self.photo = width, height, photo
        self.cos = math.cos(math.radians(photo.roll_deg))
        self.sin = math.sin(math.radians(photo.roll_deg))
        x = np.arange(width, dtype=np.float64)[None, :] - photo.center_x
        y = np.arange(height, dtype=np.float64)[:, None] - photo.center_y
        self.u = (x * self.cos + y * self.sin) / photo.scale_px
        self.v = (-x * self.sin + y * self.cos) / photo.scale_px

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        u, v = points[..., 0], points[..., 1]
        s = self.photo.scale_px
        return np.stack([self.photo.center_x + s * (u * self.cos - v * self.sin),
                         self.photo.center_y + s * (u * self.sin + v * self.cos)], axis=-1)

    def window(self, polygons: list[np.ndarray], pad: float = 0.0
               ) -> tuple[int, int, int, int] | None:
        """Pixel box (x0, y0, x1, y1) holding the polygons (plus `pad` pixels), or None."""
        pixels = np.vstack([self.to_pixels(p) for p in polygons])
        x0 = max(0, int(math.floor(pixels[:, 0].min() - 1 - pad)))
        y0 = max(0, int(math.floor(pixels[:, 1].min() - 1 - pad)))
        x1 = min(self.width, int(math.ceil(pixels[:, 0].max() + 2 + pad)))
        y1 = min(self.height, int(math.ceil(pixels[:, 1].max() + 2 + pad)))
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def fine(self, polygons: list[np.ndarray], window, stroke: float = 0.0,
             closed: bool = True) -> np.ndarray:
        """uint8 0/1 super-sampled mask of the filled polygons (or, with `stroke` > 0, of
        the polylines that wide in canonical units) over `window`."""
        x0, y0, x1, y1 = window
        fine = np.zeros(((y1 - y0) * _SS, (x1 - x0) * _SS), np.uint8)
        points = []
        for polygon in polygons:
            px = self.to_pixels(polygon)
            sub = (px - np.array([x0, y0]) + 0.5) * _SS - 0.5
            points.append(np.round(sub * (1 << _SHIFT)).astype(np.int32))
        if stroke > 0:
            thickness = max(1, int(round(stroke * self.photo.scale_px * _SS)))
            cv2.polylines(fine, points, closed, 1, thickness, cv2.LINE_8, _SHIFT)
        else:
            cv2.fillPoly(fine, points, 1, cv2.LINE_8, _SHIFT)
        return fine

    @staticmethod
    def coverage(fine: np.ndarray) -> np.ndarray:
        """Share of each pixel's 16 sub-samples that are set (k / 16: exact)."""
        h, w = fine.shape[0] // _SS, fine.shape[1] // _SS
        # four horizontal sub-samples per uint32; four rows summed (each byte <= 4, no carry);
        # the bytes' sum lands in the top byte of x * 0x01010101 (<= 16, no overflow)
        quads = np.ascontiguousarray(fine).view(np.uint32).reshape(h, _SS, w)
        rows = quads.sum(axis=1, dtype=np.uint32)
        counts = (rows * np.uint32(0x01010101)) >> np.uint32(24)
        return counts.astype(np.float64) / float(_SS * _SS)


def _paint(image: np.ndarray, window, alpha: np.ndarray, colour) -> None:
    """Composite `colour` (RGB, or a per-pixel RGB field over the window) with `alpha`."""
    x0, y0, x1, y1 = window
    region = image[y0:y1, x0:x1]
    colour = np.asarray(colour, dtype=np.float64)
    region += (colour - region) * alpha[..., None]


def _layer(image: np.ndarray, canvas: "_Canvas", polygon: np.ndarray, colour,
           alpha: float = 1.0) -> np.ndarray:
    """Composite a filled polygon over `image` (colour: RGB or a full-image RGB field) inside
    the polygon's pixel box only; returns its coverage over the whole image."""
    full = np.zeros((canvas.height, canvas.width))
    window = canvas.window([polygon])
    if window is None:
        return full
    x0, y0, x1, y1 = window
    cover = canvas.coverage(canvas.fine([polygon], window))
    colour = np.asarray(colour, dtype=np.float64)
    if colour.ndim == 3:
        colour = colour[y0:y1, x0:x1]
    _paint(image, window, cover * alpha, colour)
    full[y0:y1, x0:x1] = cover
    return full


def _ellipse_points(cu: float, cv: float, ru: float, rv: float, angle_deg: float = 0.0,
                    n: int = 32) -> np.ndarray:
    t = np.arange(n) * (2.0 * math.pi / n)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    x, y = ru * np.cos(t), rv * np.sin(t)
    return np.stack([cu + x * c - y * s, cv + x * s + y * c], axis=-1)


# ----------------------------------------------------------------------------- features


@dataclass(frozen=True)
class _Placed:
    """Feature positions after the photo's yaw / pitch (depth-scaled shifts)."""
    eyes: tuple[tuple[float, float], tuple[float, float]]   # smaller u first
    nose: tuple[float, float]
    mouth: tuple[float, float]
    brows_shift: tuple[float, float]
    ear_shift: float
    yaw: float
    pitch: float


# depth of each feature in head half-widths (how far a yaw or pitch moves it)
_DEPTH = {"eye": 0.55, "brow": 0.6, "nose": 1.0, "mouth": 0.7, "chin": 0.5, "ear": -0.3}


def _place(shape: FaceShape, photo: PhotoConditions) -> _Placed:
    yaw, pitch = photo.yaw, photo.pitch

    def at(u, v, part):
        return (u + yaw * _DEPTH[part], v + pitch * _DEPTH[part])

    eyes = (at(-shape.eye_x - shape.asymmetry, shape.eye_v, "eye"),
            at(shape.eye_x - shape.asymmetry, shape.eye_v + shape.asymmetry, "eye"))
    return _Placed(eyes, at(0.0, shape.nose_v, "nose"), at(0.0, shape.mouth_v, "mouth"),
                   (yaw * _DEPTH["brow"], pitch * _DEPTH["brow"]), yaw * _DEPTH["ear"], yaw, pitch)


def head_outline(shape: FaceShape, n: int = 40) -> np.ndarray:
    """Closed polygon of the head (canonical), right side crown to chin, then the left."""
    phi = np.linspace(0.0, math.pi / 2.0, n)
    upper_v = shape.v_mid - (shape.v_mid - shape.v_top) * np.sin(phi[::-1])
    lower_v = shape.v_mid + (shape.v_chin - shape.v_mid) * np.sin(phi[1:])
    v = np.concatenate([upper_v, lower_v])
    v[0], v[-1] = shape.v_top + 1e-9, shape.v_chin - 1e-9
    u = half_width(shape, v)
    right = np.stack([u, v], axis=-1)
    left = np.stack([-u[::-1], v[::-1]], axis=-1)
    return np.vstack([right, left])


def landmarks(shape: FaceShape, photo: PhotoConditions, canvas: _Canvas) -> np.ndarray:
    """The 5 landmarks (pixels, [5, 2]): eye (smaller x), eye, nose tip, mouth corner (smaller
    x), mouth corner."""
    placed = _place(shape, photo)
    corners = _mouth_corners(shape, placed, photo)
    points = np.array([placed.eyes[0], placed.eyes[1], (placed.nose[0], placed.nose[1] - 0.03),
                       corners[0], corners[1]])
    pixels = canvas.to_pixels(points)
    order_eyes = np.argsort(pixels[:2, 0], kind="stable")
    order_mouth = 3 + np.argsort(pixels[3:, 0], kind="stable")
    return pixels[np.concatenate([order_eyes, [2], order_mouth])]


def _mouth_corners(shape: FaceShape, placed: _Placed, photo: PhotoConditions):
    width = shape.mouth_half_width * (1.0 + 0.1 * photo.smile)
    drop = shape.corner_drop - 0.045 * photo.smile
    mu, mv = placed.mouth
    return ((mu - width, mv + drop), (mu + width, mv + drop))


def _height_field(shape: FaceShape, placed: _Placed, canvas: "_Canvas") -> np.ndarray:
    """Relief of the face (canonical units) at every pixel: a head ellipsoid plus compact bumps
    for brow ridge, sockets, cheeks, nose, lips, philtrum and chin.

    The ellipsoid is the same for every face: shaped by the outline, a broader forehead or a
    smaller jaw would reshade the whole face, and the truth mask would cover it all; the
    outline itself is drawn by the head's coverage."""
    u, v = canvas.u, canvas.v
    vertical = (v - 0.1) / 1.4
    z = 0.95 * np.sqrt(np.maximum(0.0, 1.0 - (u / 1.08) ** 2)) \
        * np.sqrt(np.maximum(0.0, 1.0 - 0.5 * vertical * vertical))

    def add(amplitude: float, cu: float, cv: float, ru: float, rv: float) -> None:
        # a bump is zero outside its ellipse: evaluate it only in that ellipse's pixel box
        r = max(ru, rv)
        box = np.array([[cu - r, cv - r], [cu + r, cv - r], [cu + r, cv + r], [cu - r, cv + r]])
        window = canvas.window([box])
        if window is not None:
            x0, y0, x1, y1 = window
            z[y0:y1, x0:x1] += amplitude * _bump(u[y0:y1, x0:x1], v[y0:y1, x0:x1], cu, cv, ru, rv)

    (lu, lv), (ru_, rv_) = placed.eyes
    nu, nv = placed.nose
    mu, mv = placed.mouth
    bu, bv = placed.brows_shift
    for eu, ev, side in ((lu, lv, -1.0), (ru_, rv_, 1.0)):
        add(0.05 * (1.0 + 2.0 * shape.eye_depth), eu + bu + side * 0.02,
            shape.brow_v + 0.05 + bv, 0.3, 0.13)                                  # brow ridge
        add(-(0.14 + shape.eye_depth), eu, ev - 0.01, 0.26, 0.21)                 # socket
        add(0.035 * shape.periorbital, eu, ev + shape.eye_open + 0.09, 0.22, 0.08)
        add(0.035 * shape.periorbital, eu, ev - shape.eye_open - 0.06, 0.2, 0.07)
        add((0.06 + 0.03 * shape.midface) * (1.0 + 0.8 * max(0.0, shape.cheek / 0.085)),
            side * 0.52 + placed.yaw * 0.3, 0.42, 0.32, 0.3)                      # cheek
    root_v = (shape.brow_v + nv) / 2.0
    add(0.05 * shape.bridge, nu * 0.7, root_v - 0.05, 0.12, (nv - shape.brow_v) * 0.45)
    add(0.07 + 0.02 * shape.midface, nu, nv - 0.12, 0.1, 0.17)                   # dorsum
    add(0.13 + 0.03 * shape.midface, nu, nv - 0.035 - 0.02 * shape.upturn, 0.12, 0.1)  # tip
    for side in (-1.0, 1.0):
        add(0.08, nu + side * shape.nose_half_width * 0.78, nv + 0.005, 0.075, 0.07)  # ala
        add(0.012, mu + side * 0.035, (nv + mv) / 2.0, 0.02, (mv - nv) * 0.45)  # philtral column
    add(0.045, mu, mv - shape.upper_lip * 0.5, shape.mouth_half_width * 0.95, shape.upper_lip * 1.6)
    add(0.05, mu, mv + shape.lower_lip * 0.6, shape.mouth_half_width * 0.85, shape.lower_lip * 1.5)
    add(-0.02, mu, mv + shape.lower_lip + 0.05, 0.2, 0.05)                      # labiomental fold
    add(0.07, mu * 0.7, shape.v_chin - 0.12, 0.2, 0.13)                          # chin
    return z


def _shade(z: np.ndarray, photo: PhotoConditions) -> tuple[np.ndarray, np.ndarray]:
    """Lambert shade (1 for a surface facing the camera) and specular highlight of a relief."""
    scale = photo.scale_px
    padded = np.pad(z, 1, mode="edge")
    gx = (padded[1:-1, 2:] - padded[1:-1, :-2]) * 0.5 * scale
    gy = (padded[2:, 1:-1] - padded[:-2, 1:-1]) * 0.5 * scale
    # the outline's slope grows without bound: limit it (a rim, not a black line)
    gx, gy = np.clip(gx, -3.0, 3.0), np.clip(gy, -3.0, 3.0)
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    lx, ly, lz = photo.light
    diffuse = np.maximum(0.0, (-gx * lx - gy * ly + lz) / norm)
    ambient = photo.ambient
    shade = (ambient + (1.0 - ambient) * diffuse) / (ambient + (1.0 - ambient) * lz)
    hx, hy, hz = lx, ly, lz + 1.0
    hn = math.sqrt(hx * hx + hy * hy + hz * hz)
    spec = np.maximum(0.0, (-gx * hx - gy * hy + hz) / (norm * hn))
    for _ in range(5):      # ^32 by squaring
        spec = spec * spec
    return shade, spec


def _lid_curves(shape: FaceShape, photo: PhotoConditions, xi: np.ndarray):
    """Upper and lower lid (local eta, down positive) at local x `xi` (-1 inner .. 1 outer)."""
    s = np.maximum(0.0, 1.0 - xi * xi)
    root = np.sqrt(s)
    opening = shape.eye_open * photo.eye_open * (1.0 - 0.12 * photo.smile)
    upper = -opening * root * np.sqrt(root) * (1.0 - shape.ptosis) * (1.0 - 0.12 * xi)
    upper = upper - opening * 0.25 * shape.ptosis * s
    lower = opening * 0.72 * s * (1.0 + 0.1 * xi) * (1.0 - 0.15 * photo.smile)
    return upper, lower


def _draw_eye(image: np.ndarray, canvas: _Canvas, shape: FaceShape, app: Appearance,
              photo: PhotoConditions, centre: tuple[float, float], side: float) -> None:
    """One eye: side -1 for the eye at smaller u (the subject's right), +1 the other."""
    cu, cv = centre
    half = shape.fissure_half
    a = math.radians(shape.slant_deg)
    ex = np.array([side * math.cos(a), -math.sin(a)])     # outward along the fissure
    ey = np.array([side * math.sin(a), math.cos(a)])      # down

    def local(xi, eta):
        xi, eta = np.asarray(xi, dtype=np.float64), np.asarray(eta, dtype=np.float64)
        return np.stack([cu + xi * half * ex[0] + eta * ey[0],
                         cv + xi * half * ex[1] + eta * ey[1]], axis=-1)

    xi = np.linspace(-1.0, 1.0, 25)
    upper, lower = _lid_curves(shape, photo, xi)
    opening = np.vstack([local(xi, upper), local(xi[::-1], lower[::-1])])
    iris = _ellipse_points(cu, cv + 0.1 * shape.iris_r * shape.ptosis, shape.iris_r,
                           shape.iris_r, 0.0, 28)
    pupil = _ellipse_points(cu, cv, shape.iris_r * 0.42, shape.iris_r * 0.42, 0.0, 20)
    window = canvas.window([opening], pad=3.0 + 0.12 * photo.scale_px)
    if window is None:
        return
    x0, y0, x1, y1 = window
    open_fine = canvas.fine([opening], window)
    open_cov = canvas.coverage(open_fine)
    u, v = canvas.u[y0:y1, x0:x1], canvas.v[y0:y1, x0:x1]
    du, dv = u - cu, v - cv
    lxi = (du * ex[0] + dv * ex[1]) / half
    leta = du * ey[0] + dv * ey[1]
    lid_up, _ = _lid_curves(shape, photo, np.clip(lxi, -1.0, 1.0))
    below_lid = np.clip((leta - lid_up) / (0.6 * shape.eye_open + 1e-6), 0.0, 1.0)
    sclera = np.array(shape.sclera) * (1.0 - 0.18 * np.clip(lxi * lxi, 0.0, 1.0))[..., None]
    shadow = (0.55 + 0.45 * below_lid)[..., None]
    _paint(image, window, open_cov, sclera * shadow)
    iris_cov = canvas.coverage(open_fine & canvas.fine([iris], window))
    radial = np.sqrt(du * du + dv * dv) / shape.iris_r
    iris_colour = np.array(app.iris) * (1.15 - 0.45 * np.clip(radial, 0.0, 1.0))[..., None]
    _paint(image, window, iris_cov, iris_colour * shadow)
    pupil_cov = canvas.coverage(open_fine & canvas.fine([pupil], window))
    _paint(image, window, pupil_cov, (12.0, 10.0, 10.0))
    # lash line along the upper lid (thicker outwards), a thin lower lid line
    lashes = local(np.linspace(-1.0, 1.12, 16), np.append(upper, [upper[-1]])[
        np.linspace(0, 25, 16).astype(int)] - 0.005)
    lash_cov = canvas.coverage(canvas.fine([lashes], window, stroke=0.055, closed=False))
    _paint(image, window, lash_cov * 0.9, np.array(app.hair) * 0.35 + 8.0)
    lower_line = local(xi, lower + 0.006)
    lower_cov = canvas.coverage(canvas.fine([lower_line], window, stroke=0.014, closed=False))
    _paint(image, window, lower_cov * 0.55, np.array(app.skin) * 0.62)
    if app.lid_crease and shape.epicanthus < 0.5:
        crease = local(np.linspace(-0.7, 0.95, 12), -shape.eye_open * 1.55
                       * np.sqrt(np.maximum(0.0, 1.0 - np.linspace(-0.7, 0.95, 12) ** 2)) - 0.02)
        crease_cov = canvas.coverage(canvas.fine([crease], window, stroke=0.012, closed=False))
        _paint(image, window, crease_cov * 0.45, np.array(app.skin) * 0.7)
    if shape.epicanthus > 0.05:   # skin fold over the inner canthus
        reach = min(0.55, 0.35 * shape.epicanthus)
        xs = np.linspace(-1.08, -1.0 + 2.0 * reach, 8)
        top_up, _ = _lid_curves(shape, photo, np.clip(xs, -1.0, 1.0))
        _, bottom = _lid_curves(shape, photo, np.clip(xs[::-1], -1.0, 1.0))
        fold = np.vstack([local(xs, top_up - 0.01),
                          local(xs[::-1] * 0.9 - 0.1, bottom * np.linspace(1.0, 0.1, 8) + 0.01)])
        fold_cov = canvas.coverage(canvas.fine([fold], window))
        _paint(image, window, fold_cov, np.array(app.skin) * 0.96)
        edge = local(np.linspace(-1.05, -1.0 + 2.0 * reach, 8),
                     np.linspace(0.6, 0.0, 8) * shape.eye_open * 0.5)
        edge_cov = canvas.coverage(canvas.fine([edge], window, stroke=0.012, closed=False))
        _paint(image, window, edge_cov * 0.4 * min(1.0, shape.epicanthus),
               np.array(app.skin) * 0.72)
    if shape.periorbital > 0.2:   # puffy lower lid: a soft fold under the eye
        xs = np.linspace(-0.8, 0.9, 12)
        bag = local(xs, shape.eye_open * (0.95 + 0.25 * min(shape.periorbital, 1.5))
                    * np.sqrt(np.maximum(0.0, 1.0 - xs * xs)) + 0.03)
        bag_cov = canvas.coverage(canvas.fine([bag], window, stroke=0.018, closed=False))
        _paint(image, window, bag_cov * min(0.5, 0.3 * shape.periorbital), np.array(app.skin) * 0.8)


def _catchlight(image: np.ndarray, canvas: _Canvas, shape: FaceShape, photo: PhotoConditions,
                centre: tuple[float, float]) -> None:
    lx, ly, _ = photo.light
    cu, cv = centre[0] + 0.35 * shape.iris_r * lx, centre[1] + 0.35 * shape.iris_r * ly - 0.02
    dot = _ellipse_points(cu, cv, 0.03, 0.03, 0.0, 12)
    window = canvas.window([dot], pad=1.0)
    if window is None:
        return
    cover = canvas.coverage(canvas.fine([dot], window))
    _paint(image, window, cover * 0.85 * (1.0 - shape.ptosis * 0.5), (250.0, 250.0, 250.0))


def _draw_brows(image, canvas, shape: FaceShape, app: Appearance, placed: _Placed) -> None:
    bu, bv = placed.brows_shift
    colour = np.array(app.hair) * 0.85 + np.array(app.skin) * 0.15 * 0.6
    polygons = []
    for (eu, ev), side in zip(placed.eyes, (-1.0, 1.0)):
        xs = np.linspace(-0.2, 0.27, 12)
        centre_v = shape.brow_v + bv - shape.brow_arch * (1.0 - ((xs - 0.04) / 0.25) ** 2)
        thick = 0.062 * shape.brow_thickness * (1.0 - 0.55 * (xs + 0.2) / 0.47)
        u = eu + bu + side * xs
        top = np.stack([u, centre_v - thick * 0.5], axis=-1)
        bottom = np.stack([u, centre_v + thick * 0.5], axis=-1)
        polygons.append(np.vstack([top, bottom[::-1]]))
    if shape.synophrys > 0.05:
        (lu, _), (ru_, _) = placed.eyes
        inner = shape.brow_v + bv + 0.005
        half = 0.02 * shape.synophrys + 0.01
        polygons.append(np.array([[lu + bu + 0.2, inner - half], [ru_ + bu - 0.2, inner - half],
                                  [ru_ + bu - 0.2, inner + half], [lu + bu + 0.2, inner + half]]))
    window = canvas.window(polygons, pad=2.0)
    if window is None:
        return
    for index, polygon in enumerate(polygons):
        cover = canvas.coverage(canvas.fine([polygon], window))
        density = app.brow_density * (0.8 * shape.synophrys if index == 2 else 1.0)
        _paint(image, window, cover * min(0.95, density), colour)


def _draw_nose(image, canvas, shape: FaceShape, app: Appearance, placed: _Placed) -> None:
    nu, nv = placed.nose
    skin = np.array(app.skin)
    shapes, creases = [], []
    visible = 0.016 * (1.0 + 0.9 * shape.upturn)
    for side in (-1.0, 1.0):
        shapes.append(_ellipse_points(nu + side * shape.nose_half_width * 0.42,
                                      nv + 0.035 - 0.01 * shape.upturn, 0.036, visible,
                                      side * -18.0, 16))
        t = np.linspace(-0.6, 1.0, 9)
        creases.append(np.stack([nu + side * shape.nose_half_width * (1.0 - 0.25 * (t + 0.6)),
                                 nv - 0.03 + 0.055 * t], axis=-1))
    window = canvas.window(shapes + creases, pad=2.0)
    if window is None:
        return
    for crease in creases:
        cover = canvas.coverage(canvas.fine([crease], window, stroke=0.018, closed=False))
        _paint(image, window, cover * 0.55, skin * 0.72)
    for nostril in shapes:
        cover = canvas.coverage(canvas.fine([nostril], window))
        _paint(image, window, cover * 0.9, skin * 0.28)


def _draw_mouth(image, canvas, shape: FaceShape, app: Appearance, placed: _Placed,
                photo: PhotoConditions) -> None:
    (lu, lv), (ru_, rv_) = _mouth_corners(shape, placed, photo)
    mu, mv = placed.mouth
    width = (ru_ - lu) / 2.0
    xs = np.linspace(-1.0, 1.0, 21)
    drop = lv - mv
    stomion = mv + drop * xs * xs
    gap = 0.03 * photo.mouth_open
    up_h = shape.upper_lip * (1.0 - 0.25 * photo.smile)
    # Cupid's bow: two peaks either side of a central dip
    bow = up_h * (1.0 + 0.3 * _bump1(np.abs(xs), 0.3, 0.35) - 0.35 * _bump1(xs, 0.0, 0.18))
    upper_edge = stomion - gap - bow * np.sqrt(np.maximum(0.0, 1.0 - xs * xs))
    lower_edge = stomion + gap + shape.lower_lip * np.sqrt(np.maximum(0.0, 1.0 - (xs * xs) ** 2)) \
        * (1.0 - 0.3 * xs * xs)
    u = mu + width * xs
    upper = np.vstack([np.stack([u, upper_edge], -1),
                       np.stack([u[::-1], (stomion - gap)[::-1]], -1)])
    lower = np.vstack([np.stack([u, stomion + gap], -1), np.stack([u[::-1], lower_edge[::-1]], -1)])
    window = canvas.window([upper, lower], pad=2.0)
    if window is None:
        return
    skin = np.array(app.skin)
    lip = skin * np.array([0.78, 0.45, 0.46]) + np.array([38.0, 4.0, 8.0])
    _paint(image, window, canvas.coverage(canvas.fine([upper], window)), lip * 0.9)
    _paint(image, window, canvas.coverage(canvas.fine([lower], window)), lip)
    if gap > 0.004:
        inside = np.vstack([np.stack([u, stomion - gap], -1),
                            np.stack([u[::-1], (stomion + gap)[::-1]], -1)])
        _paint(image, window, canvas.coverage(canvas.fine([inside], window)), (60.0, 25.0, 28.0))
    line = np.stack([u, stomion], -1)
    line_cov = canvas.coverage(canvas.fine([line], window, stroke=0.022, closed=False))
    _paint(image, window, line_cov * 0.85, skin * 0.28)


def _draw_ear(image, canvas, shape: FaceShape, app: Appearance, placed: _Placed, side: float,
              yaw: float) -> None:
    v = shape.ear_v
    edge = float(half_width(shape, np.array([v]))[0])
    # the ear on the side the face turns away from shows more
    visible = max(0.4, 1.0 + side * yaw * 6.0)
    hw = 0.1 * visible * shape.ear_half_height / 0.3
    cu = side * (edge + hw * 0.6) + placed.ear_shift
    tilt = side * shape.ear_tilt_deg
    outer = _ellipse_points(cu, v, hw, shape.ear_half_height, tilt, 28)
    concha = _ellipse_points(cu - side * hw * 0.05, v + 0.03, hw * 0.55,
                             shape.ear_half_height * 0.55, tilt, 20)
    window = canvas.window([outer], pad=2.0)
    if window is None:
        return
    skin = np.array(app.skin)
    _paint(image, window, canvas.coverage(canvas.fine([outer], window)), skin * 0.92)
    _paint(image, window, canvas.coverage(canvas.fine([concha], window)) * 0.8, skin * 0.66)


def _hair_polygons(shape: FaceShape, app: Appearance, placed: _Placed) -> list[np.ndarray]:
    """Front hair over the cranium down to the hairline (or a fringe); canonical polygons."""
    volume = app.hair_volume if app.hair_style != "sparse" else 0.015
    v_side = 0.02 if app.hair_style != "sparse" else -0.2
    # outer edge: the head outline above the temples pushed out radially by the hair's volume
    outline = head_outline(shape)
    n = len(outline) // 2   # right side crown -> chin, then left side chin -> crown
    right, left = outline[:n], outline[n:]
    # right temple -> crown -> left temple
    upper = np.vstack([right[right[:, 1] < v_side][::-1], left[left[:, 1] < v_side][::-1]])
    centre = np.array([0.0, shape.v_mid])
    radius = np.sqrt(np.sum((upper - centre) ** 2, axis=1))[:, None]
    outer = centre + (upper - centre) * (1.0 + volume / radius)
    hx = placed.yaw * 0.3
    line_v = app.hair_line - 0.05 * (shape.forehead / 0.09 if shape.forehead > 0 else 0.0)
    xs = np.linspace(-1.0, 1.0, 19)
    if app.hair_style == "fringe":
        jag = np.interp(np.linspace(0, 8, 19), np.arange(9), app.fringe_jags)
        inner_v = -0.58 + 0.04 * jag + 0.08 * (xs * xs) ** 2
    else:
        inner_v = line_v + 0.1 * xs * xs
    temple_u = np.array([half_width(shape, np.array([min(iv + 0.35 * abs(x), 0.0)]))[0]
                         for x, iv in zip(xs, inner_v)])
    inner_u = xs * temple_u * 0.93 + hx
    inner_v = np.where(np.abs(xs) > 0.85, inner_v + (np.abs(xs) - 0.85) * 2.0, inner_v)
    inner = np.stack([inner_u, np.minimum(inner_v, v_side)], -1)
    # left temple -> along the hairline -> right temple (outer goes right -> crown -> left)
    return [np.vstack([outer, inner])]


def _draw_hair(image, canvas, shape: FaceShape, app: Appearance, placed: _Placed,
               texture: np.ndarray) -> np.ndarray:
    """Front hair; returns its coverage over the whole image (for shading)."""
    polygons = _hair_polygons(shape, app, placed)
    window = canvas.window(polygons, pad=2.0)
    cover_full = np.zeros((canvas.height, canvas.width))
    if window is None:
        return cover_full
    x0, y0, x1, y1 = window
    cover = canvas.coverage(canvas.fine(polygons, window))
    alpha = 1.0
    if app.hair_style == "sparse":   # thin infant hair: the scalp shows, most near the hairline
        alpha = 0.5 * np.clip((app.hair_line - canvas.v[y0:y1, x0:x1]) / 0.45, 0.0, 1.0)
    colour = np.array(app.hair)[None, None, :] * (1.0 + 0.25 * texture[y0:y1, x0:x1, None])
    _paint(image, window, cover * alpha, colour)
    cover_full[y0:y1, x0:x1] = cover * alpha
    return cover_full


def _back_hair(shape: FaceShape, app: Appearance) -> np.ndarray | None:
    """Long hair falling behind the head and neck to below the chin (a rounded mass)."""
    if app.hair_style != "long":
        return None
    top = shape.v_top - app.hair_volume
    bottom = shape.v_chin + 0.15
    t = np.linspace(0.0, math.pi, 25)
    # an elliptic arc from the crown to the widest level, then down each side to the bottom
    u = 1.18 * np.sin(t)
    v = top + (shape.v_mid - top) * (1.0 - np.cos(t))
    side = np.stack([u, np.minimum(v, shape.v_mid)], axis=-1)
    right = np.vstack([side, [[1.16, bottom - 0.15], [0.9, bottom]]])
    left = right[::-1] * np.array([-1.0, 1.0])
    return np.vstack([right, left])


# ----------------------------------------------------------------------------- rendering


@dataclass
class RenderedPhoto:
    rgb: np.ndarray           # uint8 [H, W, 3]
    landmarks: np.ndarray     # [5, 2] pixels


def _noise_fields(photo: PhotoConditions, width: int, height: int, rng: np.random.Generator):
    """Per-photo random fields (hair strands, sensor noise), drawn the same for both
    renderings of a child so that they differ only where the syndrome changed the face."""
    strands = rng.standard_normal((height, width))
    strands = portable.gaussian_blur(strands, 0.5, max(0.8, photo.scale_px * 0.04))
    strands = strands / max(1e-6, math.sqrt(portable.exact_mean(strands * strands)))
    sensor = rng.standard_normal((height, width, 3)) * photo.noise
    return strands, sensor


def render_photo(shape: FaceShape, app: Appearance, photo: PhotoConditions, width: int,
                 height: int, fields, natural: FaceShape | None = None) -> RenderedPhoto:
    """Render one photo of a face; `fields` from `_noise_fields` (shared by the two renderings
    of a child); `natural`: the same child without its syndrome (default `shape`), whose
    outline the cheeks' turn-away shading follows."""
    strands, sensor = fields
    canvas = _Canvas(width, height, photo)
    placed = _place(shape, photo)
    u, v = canvas.u, canvas.v
    # background: a wall with a soft gradient
    angle = math.radians(photo.background_angle_deg)
    ramp = (u * math.cos(angle) + v * math.sin(angle)) * photo.scale_px / max(width, height)
    ramp = np.clip(ramp + 0.5, 0.0, 1.0)[..., None]
    first, second = (np.array(c) for c in photo.background)
    image = first * (1.0 - ramp) + second * ramp
    back = _back_hair(shape, app)
    if back is not None:
        _layer(image, canvas, back, np.array(app.hair)[None, None, :]
               * (0.8 + 0.2 * strands[..., None]))
    # shoulders and clothes, neck
    sv = shape.shoulder_v
    nk = shape.neck_half_width
    body = np.array([[-nk * 1.1, sv], [-1.5, sv + 0.25], [-2.4, sv + 0.7], [-3.0, sv + 3.0],
                     [3.0, sv + 3.0], [2.4, sv + 0.7], [1.5, sv + 0.25], [nk * 1.1, sv]])
    clothes = np.array(app.clothes) * (1.0 - 0.25 * np.clip((v - sv) / 2.5, 0.0, 1.0))[..., None]
    _layer(image, canvas, body, clothes)
    collar = np.array([[-nk * 1.15, sv - 0.02], [0.0, sv + 0.35], [nk * 1.15, sv - 0.02],
                       [nk * 1.35, sv + 0.08], [0.0, sv + 0.48], [-nk * 1.35, sv + 0.08]])
    _layer(image, canvas, collar, np.array(app.collar) * 0.95)
    neck = np.array([[-nk, shape.v_chin - 0.45], [nk, shape.v_chin - 0.45], [nk * 1.08, sv + 0.06],
                     [0.0, sv + 0.3], [-nk * 1.08, sv + 0.06]])
    skin = np.array(app.skin)
    # the chin's shadow on the neck, placed by the natural chin (the clothes hang from it too)
    under_chin = np.clip((v - shape.natural_chin + 0.05) / 0.35, 0.0, 1.0)
    neck_colour = skin * (0.62 + 0.3 * under_chin)[..., None] * (
        0.9 + 0.1 * np.clip(1.0 - np.abs(u) / nk, 0.0, 1.0))[..., None]
    _layer(image, canvas, neck, neck_colour)
    for side in (-1.0, 1.0):
        _draw_ear(image, canvas, shape, app, placed, side, photo.yaw)
    # the head: albedo layers, then the relief's shading over head and hair
    outline = head_outline(shape)
    albedo = image.copy()
    blush = 0.12 * (_bump(u, v, -0.5, 0.45, 0.3, 0.22) + _bump(u, v, 0.5, 0.45, 0.3, 0.22))
    nu, nv = placed.nose
    mu, mv = placed.mouth
    # what the relief's normals miss: the occluded skin under the nose and the lower lip
    occluded = 0.2 * _bump(u, v, nu, nv + 0.07, 0.16, 0.06) \
        + 0.12 * _bump(u, v, mu, mv + shape.lower_lip + 0.06, 0.18, 0.05)
    skin_field = skin * (1.0 - blush[..., None] * np.array([0.0, 0.25, 0.2])) \
        * (1.0 - occluded)[..., None]
    head_cov = _layer(albedo, canvas, outline, skin_field)
    for centre, side in zip(placed.eyes, (-1.0, 1.0)):
        _draw_eye(albedo, canvas, shape, app, photo, centre, side)
    _draw_brows(albedo, canvas, shape, app, placed)
    _draw_nose(albedo, canvas, shape, app, placed)
    _draw_mouth(albedo, canvas, shape, app, placed, photo)
    hair_cov = _draw_hair(albedo, canvas, shape, app, placed, strands)
    z = _height_field(shape, placed, canvas)
    # hair volume: a slightly larger ellipsoid over the cranium
    crown = np.sqrt(np.maximum(0.0, 1.0 - (u / 1.1) ** 2 - ((v - 0.1) / (0.1 - shape.v_top + 0.1))
                               ** 2)) * 0.95
    z = np.where(hair_cov > 0.5, np.maximum(z, crown), z)
    shade, spec = _shade(z, photo)
    # the cheeks and temples turn away from the camera near the outline: darker there
    # by the NATURAL outline: a wide band, and a syndrome's outline change would reshade it
    outline_width = half_width(natural or shape, v)
    turned = np.clip((np.abs(u) / np.maximum(outline_width, 1e-6) - 0.72) / 0.28, 0.0, 1.0)
    shade = shade * (1.0 - 0.3 * turned * turned)
    group = np.maximum(head_cov, hair_cov)
    shine = (spec * (16.0 * (1.0 - 0.7 * hair_cov)))[..., None]
    shaded = albedo * shade[..., None] + shine
    image = image + (shaded - image) * group[..., None]
    for centre in placed.eyes:
        _catchlight(image, canvas, shape, photo, centre)
    # camera: white balance, exposure, lens blur, noise, vignette
    balance = np.array([1.0 + 0.06 * photo.warmth, 1.0, 1.0 - 0.07 * photo.warmth])
    image = image * (balance * photo.exposure)
    channels = [portable.gaussian_blur(image[..., c], photo.blur_px) for c in range(3)]
    image = np.stack(channels, axis=-1)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (cx * cx + cy * cy)
    image = image * (1.0 - 0.12 * r2)[..., None] + sensor
    return RenderedPhoto(portable.to_uint8(image), landmarks(shape, photo, canvas))


def render_child_photo(child: Child, photo: PhotoConditions, index: int,
                       profile: FacePhantomProfile, seed: int) -> tuple[RenderedPhoto, np.ndarray]:
    """(photo, truth mask uint8 0/255): the child as drawn, and where it differs from the same
    child and photo without the syndrome (dilated by 0.03 head half-widths; all zero when
    healthy)."""
    fields = _noise_fields(photo, profile.width, profile.height, np.random.default_rng(
        [seed, child.planned.number, _STREAM_PHOTO, index, 1]))
    rendered = render_photo(child.shape(True), child.appearance, photo, profile.width,
                            profile.height, fields, child.shape(False))
    mask = np.zeros((profile.height, profile.width), np.uint8)
    if child.traits:
        natural = render_photo(child.shape(False), child.appearance, photo, profile.width,
                               profile.height, fields)
        mask[(rendered.rgb != natural.rgb).any(axis=-1)] = 255
        radius = max(1, int(round(0.03 * photo.scale_px)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.dilate(mask, kernel)
    return rendered, mask


# ----------------------------------------------------------------------------- fake PHI


_GIVEN_NAMES = ("ALICE", "BORIS", "CLARA", "DMITRI", "EDITH", "FELIX", "GRETA", "HUGO", "IRIS",
                "JONAS", "KAREN", "LEON", "MAYA", "NILS", "OLGA", "PAVEL", "QUINN", "ROSA",
                "SVEN", "TESSA", "UMA", "VIKTOR", "WANDA", "XENIA", "YURI", "ZOE")
_FAMILY_NAMES = ("PHANTOM", "FANTOMAS", "MOCKWELL", "DUMMLER", "SYNTHSON", "FAKEBURG")
_CAMERAS = (("PHANTOMCAM", "PC-200"), ("MOCKON", "M-5 MARK II"), ("FAKEFILM", "XF-12"))


@dataclass(frozen=True)
class FacePhi:
    """Made-up identifiers of one child and its photo session (never real people)."""
    child_given: str
    child_family: str
    birth_date: str            # YYYY-MM-DD
    photo_datetime: str        # EXIF "YYYY:MM:DD HH:MM:SS"
    guardian: str              # the camera owner
    camera_make: str
    camera_model: str
    camera_serial: str
    latitude: float            # degrees, +N
    longitude: float           # degrees, +E

    @property
    def child_name(self) -> str:
        return f"{self.child_given} {self.child_family}"


def draw_face_phi(planned: PlannedChild, rng: np.random.Generator) -> FacePhi:
    # Photo dates in Hong's enrolment window (June 2016 - January 2021); birth = photo - age.
    taken = datetime(2016, 6, 1, 8, 0, 0) + timedelta(days=int(rng.integers(0, 1670)),
                                                      seconds=int(rng.integers(0, 9 * 3600)))
    birth = taken.date() - timedelta(days=int(round(planned.age_months * 30.44)))
    family = _FAMILY_NAMES[int(rng.integers(len(_FAMILY_NAMES)))]
    make, model = _CAMERAS[int(rng.integers(len(_CAMERAS)))]
    return FacePhi(
        child_given=_GIVEN_NAMES[int(rng.integers(len(_GIVEN_NAMES)))], child_family=family,
        birth_date=birth.isoformat(), photo_datetime=taken.strftime("%Y:%m:%d %H:%M:%S"),
        guardian=f"{_GIVEN_NAMES[int(rng.integers(len(_GIVEN_NAMES)))]} {family}",
        camera_make=make, camera_model=model,
        camera_serial=f"SN{int(rng.integers(0, 10 ** 8)):08d}",
        latitude=round(float(rng.uniform(-60.0, 60.0)), 5),
        longitude=round(float(rng.uniform(-170.0, 170.0)), 5))


def _dms(value: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Degrees as EXIF rationals (degrees, minutes, seconds x 1000)."""
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = int(round(((value - degrees) * 60 - minutes) * 60 * 1000))
    return (degrees, 1), (minutes, 1), (seconds, 1000)


def exif_bytes(phi: FacePhi, photo_datetime: str) -> bytes:
    """A big-endian TIFF/EXIF block (the payload of a PNG eXIf chunk) with the planted PHI.

    Written here tag by tag (not by a library whose layout could change): IFD0 ImageDescription,
    Make, Model, DateTime, Artist, Copyright, ExifIFD and GPSIFD pointers; Exif IFD
    DateTimeOriginal, CameraOwnerName, BodySerialNumber; GPS IFD version, latitude and
    longitude with their references."""
    ascii_ = 2
    rational = 5
    byte = 1
    long_ = 4
    ifd0 = [(0x010E, ascii_, f"{phi.child_name} {phi.birth_date}"),
            (0x010F, ascii_, phi.camera_make),
            (0x0110, ascii_, phi.camera_model), (0x0132, ascii_, photo_datetime),
            (0x013B, ascii_, phi.guardian), (0x8298, ascii_, f"(c) {phi.guardian}"),
            (0x8769, long_, None), (0x8825, long_, None)]
    exif = [(0x9003, ascii_, photo_datetime), (0xA430, ascii_, phi.guardian),
            (0xA431, ascii_, phi.camera_serial)]
    gps = [(0x0000, byte, bytes([2, 3, 0, 0])), (0x0001, ascii_, "N" if phi.latitude >= 0 else "S"),
           (0x0002, rational, _dms(phi.latitude)),
           (0x0003, ascii_, "E" if phi.longitude >= 0 else "W"),
           (0x0004, rational, _dms(phi.longitude))]

    def encode(tag_type, value) -> tuple[int, bytes]:
        if tag_type == ascii_:
            data = value.encode("ascii") + b"\0"
            return len(data), data
        if tag_type == byte:
            return len(value), bytes(value)
        if tag_type == rational:
            return len(value), b"".join(struct.pack(">II", n, d) for n, d in value)
        return 1, struct.pack(">I", value)

    def ifd_size(entries) -> int:
        return 2 + 12 * len(entries) + 4

    offset0 = 8
    offset_exif = offset0 + ifd_size(ifd0)
    offset_gps = offset_exif + ifd_size(exif)
    data_start = offset_gps + ifd_size(gps)
    pointers = {0x8769: offset_exif, 0x8825: offset_gps}
    blob = bytearray()

    def build(entries) -> bytes:
        out = bytearray(struct.pack(">H", len(entries)))
        for tag, tag_type, value in entries:
            if value is None:
                value = pointers[tag]
            count, data = encode(tag_type, value)
            if len(data) <= 4:
                out += struct.pack(">HHI", tag, tag_type, count) + data.ljust(4, b"\0")
            else:
                out += struct.pack(">HHII", tag, tag_type, count, data_start + len(blob))
                blob.extend(data + (b"\0" if len(data) % 2 else b""))
        return bytes(out + struct.pack(">I", 0))

    ifds = build(ifd0) + build(exif) + build(gps)
    return b"MM\0*" + struct.pack(">I", offset0) + ifds + bytes(blob)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(image: np.ndarray, exif: bytes | None = None, level: int = 6) -> bytes:
    """A PNG (RGB or grey, 8-bit, filter 0 'none' on every row) with an optional eXIf chunk,
    assembled here: the same bytes wherever Python's zlib gives the same deflate stream."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    colour = 2 if image.ndim == 3 else 0
    rows = image.reshape(height, -1)
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
    if exif:
        out += _chunk(b"eXIf", exif)
    return out + _chunk(b"IDAT", zlib.compress(raw, level)) + _chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- output


@dataclass
class RenderedChild:
    tables: dict[str, list[dict]]   # "manifest", "photos": a row per photo; "children": one row
    phi: dict


def _landmark_text(points: np.ndarray) -> str:
    return " ".join(f"{value:.2f}" for value in points.reshape(-1))


def render_child(profile: FacePhantomProfile, planned: PlannedChild, seed: int, out_dir: Path
                 ) -> RenderedChild:
    """Render and write every photo of one child (photos + masks); return its table rows."""
    child = sample_child(planned, profile, seed)
    phi = draw_face_phi(planned, np.random.default_rng([seed, planned.number, _STREAM_PHI]))
    taken = datetime.strptime(phi.photo_datetime, "%Y:%m:%d %H:%M:%S")
    rows, photo_rows, files = [], [], []
    for index in range(planned.photos):
        photo = sample_photo(child, index, profile, seed)
        rendered, mask = render_child_photo(child, photo, index, profile, seed)
        stamp = (taken + timedelta(seconds=17 * index)).strftime("%Y:%m:%d %H:%M:%S")
        name = f"{planned.case_id}_{phi.child_family}_{phi.child_given}_{index + 1}.png"
        image_path, mask_path = f"photos/{name}", f"masks/{planned.case_id}_{index + 1}.png"
        (out_dir / image_path).write_bytes(png_bytes(rendered.rgb, exif_bytes(phi, stamp),
                                                          profile.png_compression))
        (out_dir / mask_path).write_bytes(png_bytes(mask, None, 9))
        rows.append({"image_path": image_path, "case_id": planned.case_id, "label": planned.label,
                     "subtype": planned.subtype, "age_months": f"{planned.age_months:.1f}",
                     "sex": planned.sex, "landmarks": _landmark_text(rendered.landmarks),
                     "mask_path": mask_path})
        conditions = dataclasses.asdict(photo)
        light = conditions.pop("light")
        conditions.pop("background")
        photo_rows.append({"image_path": image_path, "case_id": planned.case_id,
                           **{k: round(v, 4) for k, v in conditions.items()},
                           **{f"light_{axis}": round(c, 4) for axis, c in zip("xyz", light)},
                           "mask_pixels": int((mask > 0).sum())})
        files.append({"image_path": image_path, "file_name": name, "photo_datetime": stamp})
    app = child.appearance
    child_row = {"case_id": planned.case_id, "label": planned.label, "subtype": planned.subtype,
                 "age_months": planned.age_months, "sex": planned.sex,
                 "skin_tone_bin": planned.skin_tone_bin, "skin_tone": app.skin_tone,
                 "hair_style": app.hair_style, "severity": child.severity,
                 **{f"trait_{name}": dict(child.traits).get(name, 0.0) for name in TRAITS}}
    phi_record = {**dataclasses.asdict(phi), "child_name": phi.child_name, "photos": files,
                  "exif": {"ImageDescription": f"{phi.child_name} {phi.birth_date}",
                           "Make": phi.camera_make, "Model": phi.camera_model,
                           "Artist": phi.guardian, "Copyright": f"(c) {phi.guardian}",
                           "CameraOwnerName": phi.guardian, "BodySerialNumber": phi.camera_serial,
                           "GPSLatitude": phi.latitude, "GPSLongitude": phi.longitude,
                           "DateTimeOriginal": [f["photo_datetime"] for f in files]}}
    return RenderedChild({"manifest": rows, "photos": photo_rows, "children": [child_row]},
                         phi_record)


def resolve_profile(profile: str | FacePhantomProfile) -> FacePhantomProfile:
    if isinstance(profile, FacePhantomProfile):
        return profile
    if profile not in PROFILES:
        raise InputError(None, f"unknown phantom profile '{profile}' for study {STUDY} "
                               f"(choose from {', '.join(PROFILES)})")
    return PROFILES[profile]


def generate(profile: str | FacePhantomProfile, out_dir: str | Path, *, seed: int = 0,
             dicom: bool = False, force: bool = False, progress: bool = True,
             study: str = STUDY) -> Path:
    """Render the whole phantom into `out_dir` (built atomically); return the manifest path.
    `study` only names the study in run.json and the messages (phantom_ps_face passes its own
    profiles and key; the pixels depend on the profile and seed alone)."""
    from .phantom_pgds import _check_out_dir
    from .provenance import portable_path, write_run_json

    if dicom:
        raise InputError(None, f"--dicom: the {study} phantom is camera photos (PNG with EXIF), "
                               "not DICOM")
    profile = resolve_profile(profile)
    out_dir = Path(out_dir)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(None, f"--seed must be a non-negative integer, got {seed!r}")
    _check_out_dir(out_dir, force)
    children = plan_children(profile, int(seed))
    started = time.perf_counter()
    with atomic.staged_dir(out_dir, overwrite=True) as stage:
        for folder in ("photos", "masks"):
            (stage / folder).mkdir()
        tables: dict[str, list[dict]] = {"manifest": [], "photos": [], "children": []}
        phi_truth = {}
        for number, planned in enumerate(children, start=1):
            rendered = render_child(profile, planned, int(seed), stage)
            for name, table in rendered.tables.items():
                tables[name].extend(table)
            phi_truth[planned.case_id] = rendered.phi
            if progress and len(children) >= 200 and number % max(1, len(children) // 10) == 0:
                print(f"phantom {study}/{profile.name}: {number}/{len(children)} children "
                      f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        atomic.write_csv(stage / "manifest.csv",
                         pd.DataFrame(tables["manifest"])[list(MANIFEST_COLUMNS)])
        atomic.write_csv(stage / "photos.csv", pd.DataFrame(tables["photos"]))
        atomic.write_csv(stage / "children.csv", pd.DataFrame(tables["children"]))
        atomic.write_json(stage / "phi_truth.json", {
            "note": "synthetic phantom: made-up identifiers (deterministic from the seed), planted "
                    "in each photo's EXIF (PNG eXIf chunk) and file name so that "
                    "de-identification can be tested",
            "landmarks": "x1 y1 ... x5 y5 in pixels: eye with the smaller x, the other eye, nose "
                         "tip, mouth corner with the smaller x, the other corner",
            "cases": phi_truth})
        config = {**profile.as_config(), "study": study}
        write_run_json(stage, config, seed=int(seed), manifest=stage / "manifest.csv",
                       extra={"manifest": portable_path(out_dir / "manifest.csv")}, force=True)
    if progress:
        print(f"phantom {study}/{profile.name}: {len(tables['manifest'])} photos, "
              f"{len(children)} children in {time.perf_counter() - started:.1f} s -> {out_dir}",
              file=sys.stderr)
    return out_dir / "manifest.csv"
