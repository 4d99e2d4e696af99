"""`python -m data_prep phantom`: synthetic phantom images with known ground truth, per study.

Each study's generator lives in its own module (`phantom_pgds` for Tang 2023's fetal profiles,
`phantom_cns` for Qi 2025's fetal head and spine planes, `phantom_face` for Hong 2021's
children's face photos); this module dispatches on `--study`
and holds the command line. A pgds phantom folder holds
`manifest.csv` (image_path, case_id, label, subtype, gestational_week, view, mask_path,
phi_mask_path, center), the frames, truth masks of the abnormal structures, fake-PHI pixel
masks, `phi_truth.json`, `sector_mask.png`, `markers.csv`, `geometry.csv` and `run.json`; with
`--dicom` also DICOM copies of the frames carrying the fake PHI in their tags
(`manifest_dicom.csv`). `PHANTOM_PROFILES[study][profile]` holds each profile's counts and
frame layout. A cns phantom folder holds `manifest.csv` (image_path, case_id, label, plane,
gestational_week, center, mask_path, phi_mask_path), the same image and mask folders,
`sector_masks/<center>.png`, `findings.csv`, `geometry.csv`, `phi_truth.json` and `run.json`
(see `phantom_cns`). A gs_vgg16 phantom folder (`phantom_face`: children's frontal face photos,
Hong 2021) holds `manifest.csv` (image_path, case_id, label, subtype, age_months, sex,
landmarks, mask_path), `photos/` (PNG with fake-PHI EXIF, the fake name in the file name),
`masks/`, `children.csv`, `photos.csv`, `phi_truth.json` and `run.json`; it has no `--dicom`.

    python -m data_prep phantom --study pgds --profile ci --out runs/phantom_ci [--seed 0]
        [--dicom] [--force]

Same seed -> byte-identical files (run.json's timestamp aside). `--out` must be absent or
empty unless `--force`, and even then only an earlier phantom folder is replaced.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

from . import phantom_cns, phantom_face, phantom_pgds, phantom_ps_face
from .errors import InputError

STUDY_GENERATORS: dict[str, ModuleType] = {"pgds": phantom_pgds, "cns": phantom_cns,
                                           "gs_vgg16": phantom_face}
# Shen 2024 (phantom_ps_face): the four groups, and the many-identity pretraining set.
STUDY_GENERATORS.update({"ps_face": phantom_ps_face,
                         "ps_face_identities": phantom_ps_face.identities})
# study -> profile name -> that study's profile dataclass (counts, frame layout, ...).
PHANTOM_PROFILES = {study: module.PROFILES for study, module in STUDY_GENERATORS.items()}
PROFILE_NAMES = ("ci", "default", "paper")


def generate_phantom(study: str, profile, out_dir: str | Path, seed: int = 0,
                     dicom: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Write the phantom of `study` at `profile` (a name or a profile object) into `out_dir`.

    Returns the path of the written `manifest.csv`.
    """
    if study not in STUDY_GENERATORS:
        raise InputError(None, f"no phantom for study '{study}' (available: "
                               f"{', '.join(STUDY_GENERATORS)})")
    return STUDY_GENERATORS[study].generate(profile, out_dir, seed=seed, dicom=dicom,
                                            force=force, progress=progress)


def run(args: argparse.Namespace) -> int:
    manifest = generate_phantom(args.study, args.profile, args.out, seed=args.seed,
                                dicom=args.dicom, force=args.force)
    print(manifest)
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "phantom", help="generate synthetic phantom images with known ground truth",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", choices=tuple(STUDY_GENERATORS), default="pgds",
                        help="which study's phantom to generate (default: pgds)")
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="default",
                        help="size: ci (tiny, seconds), default (laptop CPU), paper (the "
                             "paper's image counts); default: default")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (must be absent or empty unless --force)")
    parser.add_argument("--seed", type=_non_negative_int, default=0,
                        help="random seed; the same seed gives byte-identical files (default 0)")
    parser.add_argument("--dicom", action="store_true",
                        help="also write each frame as an ultrasound DICOM file carrying the "
                             "fake PHI in its tags (dicom/, manifest_dicom.csv)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing phantom folder at --out")
    parser.set_defaults(func=run)
    return parser


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
