"""Face phantoms for Shen 2024 (`ps_face`): four groups with several photos per child, and a
many-identity face set for pretraining a face-recognition backbone.

Both are drawn by `phantom_face` (the Hong 2021 generator) with their own profiles: the pixels
of a child depend only on the profile and seed, so gs_vgg16's phantom is unchanged.

- `PROFILES` (`python -m data_prep phantom --study ps_face --profile ci|default|paper`): labels
  `williams_beuren`, `noonan`, `alagille`, `none` (subtype = the generator's syndrome name, or
  `none`), 1-4 photos per child (mean ~1.98: Shen 2024 has 3297 photos of 1666 children). The
  `paper` profile has Shen's children per group (174 / 235 / 51 / 1206); `default` and `ci`
  are small and less unbalanced (a CPU budget), said in `run.json`.
- `IDENTITY_PROFILES` (`--study ps_face_identities`): many children WITHOUT any syndrome
  (label `identity`), four or more photos each, for the pretraining ("foundation model") run of
  reproduce.ps_face: each child is a class. The study draws it with another seed than the
  four-group set (reproduce.ps_face.pretrain), so no identity is a four-group child's face.

Output folders as `phantom_face` (manifest.csv, photos/, masks/, children.csv, photos.csv,
phi_truth.json, run.json with "study": "ps_face" or "ps_face_identities").
"""
from __future__ import annotations

from pathlib import Path

from . import phantom_face
from .errors import InputError
from .phantom_face import NO_SYNDROME, FacePhantomProfile

STUDY = "ps_face"
IDENTITY_STUDY = "ps_face_identities"
# Shen 2024's groups: label -> the generator's syndrome (its gestalt, phantom_face.SYNDROMES).
GROUPS = (("williams_beuren", "Williams-Beuren syndrome"), ("noonan", "Noonan syndrome"),
          ("alagille", "Alagille syndrome"), ("none", NO_SYNDROME))
LABELS = tuple(label for label, _ in GROUPS)
IDENTITY_LABEL = "identity"
# Shen 2024: 3297 photos of 1666 children = 1.98 per child: 1-4 photos, mean 1.98.
PHOTOS_PER_CHILD = ((1, 0.34), (2, 0.40), (3, 0.20), (4, 0.06))
MALE_SHARE = 0.535   # not given by Shen 2024; Hong 2021's share, the same in every group


def _profile(name: str, children: tuple[int, int, int, int], size: int,
             photos: tuple[tuple[int, float], ...] = PHOTOS_PER_CHILD) -> FacePhantomProfile:
    groups = tuple((label, subtype, n) for (label, subtype), n in zip(GROUPS, children))
    return FacePhantomProfile(name, groups, photos, size, size,
                              tuple((label, MALE_SHARE) for label in LABELS))


PROFILES: dict[str, FacePhantomProfile] = {
    # Shen 2024: 174 Williams-Beuren, 235 Noonan, 51 Alagille, 1206 without a syndrome.
    "paper": _profile("paper", (174, 235, 51, 1206), 224),
    # CPU budget: 5 folds x 4 models; 'none' is 40 % (Shen: 72 %), Alagille the rarest.
    "default": _profile("default", (36, 40, 24, 66), 128),
    "ci": _profile("ci", (6, 6, 5, 8), 64),
}


def _identities(name: str, children: int, photos: int, size: int) -> FacePhantomProfile:
    return FacePhantomProfile(name, ((IDENTITY_LABEL, NO_SYNDROME, children),),
                              ((photos, 1.0),), size, size, ((IDENTITY_LABEL, MALE_SHARE),))


IDENTITY_PROFILES: dict[str, FacePhantomProfile] = {
    "paper": _identities("paper", 2000, 6, 224),
    "default": _identities("default", 240, 4, 128),
    "ci": _identities("ci", 24, 4, 64),
}


def resolve_profile(profile: str | FacePhantomProfile) -> FacePhantomProfile:
    return _resolve(profile, PROFILES, STUDY)


def _resolve(profile, table: dict[str, FacePhantomProfile], study: str) -> FacePhantomProfile:
    if isinstance(profile, FacePhantomProfile):
        return profile
    if profile not in table:
        raise InputError(None, f"unknown phantom profile '{profile}' for study {study} "
                               f"(choose from {', '.join(table)})")
    return table[profile]


def generate(profile: str | FacePhantomProfile, out_dir: str | Path, *, seed: int = 0,
             dicom: bool = False, force: bool = False, progress: bool = True) -> Path:
    """The four-group Shen 2024 phantom (see the module docstring)."""
    return phantom_face.generate(resolve_profile(profile), out_dir, seed=seed, dicom=dicom,
                                 force=force, progress=progress, study=STUDY)


class _IdentityGenerator:
    """The many-identity pretraining set, with the interface data_prep.phantom dispatches on
    (PROFILES, resolve_profile, generate)."""

    PROFILES = IDENTITY_PROFILES

    @staticmethod
    def resolve_profile(profile: str | FacePhantomProfile) -> FacePhantomProfile:
        return _resolve(profile, IDENTITY_PROFILES, IDENTITY_STUDY)

    @staticmethod
    def generate(profile: str | FacePhantomProfile, out_dir: str | Path, *, seed: int = 0,
                 dicom: bool = False, force: bool = False, progress: bool = True) -> Path:
        return phantom_face.generate(_IdentityGenerator.resolve_profile(profile), out_dir,
                                     seed=seed, dicom=dicom, force=force, progress=progress,
                                     study=IDENTITY_STUDY)


identities = _IdentityGenerator()
