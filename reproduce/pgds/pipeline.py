"""What every Pgds (Tang 2023) table and figure shares: data, models, predictions, writers.

Work folder (git-ignored, default `runs/`), per profile:

    runs/pgds/<profile>/data/phantom_raw/         the phantom as generated (fake burned-in PHI)
    runs/pgds/<profile>/data/deidentified/        the de-identified copy that is trained on,
                                                  blanked outside the scan sector and cropped
                                                  to it with its masks (Tang 2023 s2.2:
                                                  "cropped and masked")
    runs/pgds/<profile>/data/splits.csv           case-level split, stratified by subtype
                                                  (test 0.2, val 0.1 of each subtype's cases)
    runs/pgds/<profile>/data/audit_summary.txt    leakage audit (refused unless clean)
    runs/pgds/<profile>/data/prepared.json        the commit point of the three steps above
    runs/pgds/<profile>/<arch>/fold0/             reproduce.train's run folder (selected.keras,
                                                  log.csv, ...) + threshold.json (this module)
    runs/pgds/<profile>/predictions/<arch>.csv    one row per original image of every split

A user's manifest (`--manifest M`) skips the phantom and de-identification steps; its split and
audit are cached under `data/user-<hash of the manifest file>/`. Models trained on one manifest
are never silently reused for another: a run folder whose `run.json` records another manifest
hash or training config is refused (InputError) unless `--force`, which retrains it.

Everything is built on first use and reused afterwards, under a per-profile file lock, so two
targets started at once wait for each other instead of training the same model twice.
`results/pgds/` receives only small tables (`write_table`), figures (`write_figure`) and
`run.json` (config, versions, commit, manifest hash; refused when another config wrote the
folder, unless `--force`).

Preprocessing for prediction is the training pipeline itself (`reproduce.input_pipeline.
eval_dataset` with the run's `PipelineSpec`): grayscale, bilinear resize, per-image min-max.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_prep import atomic  # noqa: E402
from data_prep.errors import EXIT_BAD_INPUT, InputError  # noqa: E402

STUDY = "pgds"
ARCHITECTURES = ("pgds_resnet", "resnet34", "vgg16", "vgg19")
DISPLAY_NAMES = {"pgds_resnet": "Pgds-ResNet", "resnet34": "ResNet-34", "vgg16": "VGG-16",
                 "vgg19": "VGG-19"}
SUBTYPES = ("T13", "T18", "T21", "rare")      # Table 2 row order after "all"
CLASS_NAMES = ("normal", "genetic_disease")  # class index 1 = genetic disease (positive)
POSITIVE_LABEL = CLASS_NAMES[1]
THRESHOLD_RULES = ("max_f1", "youden")
PROFILE_NAMES = ("ci", "default", "paper")
READER_LEVELS = ("junior", "attending", "senior")
READER_STUDY_IMAGES = 100                     # Tang 2023 s2.6
# Bootstrap replicates of AUROC / F1 CIs per profile (the paper: 1000).
N_BOOT = {"ci": 200, "default": 1000, "paper": 1000}
TEST_SIZE, VAL_SIZE = 0.2, 0.1
PREDICTION_COLUMNS = ("image_path", "abs_path", "case_id", "label", "subtype", "split", "y_true",
                      "score", "gestational_week", "mask_path")
THRESHOLD_FILE = "threshold.json"
# Heat-map per profile: (method, stages before the last conv block whose output is read).
# The paper: Grad-CAM of the last conv layer, a 13x14 map at its 400x440 input. At the
# third-size inputs of ci and default that map is 4x5 or smaller, coarser than the facial
# structures, so they read the outputs of stages 1 and 2 (3 and 2 stages before the last:
# 32x35 and 16x18 at 128x140), averaged. There Grad-CAM's map-wide channel weights spread
# the evidence of one subtype onto every face (a jaw detector lights the jaw of a T21
# frame), so ci/default use LayerCAM, whose weights are per position (reproduce.gradcam;
# chosen on validation images, README "Departures").
HEATMAP_SETTINGS = {"ci": ("layercam", (3, 2)), "default": ("layercam", (3, 2)),
                    "paper": ("gradcam", (0,))}
_PREPARED = "prepared.json"


# ----------------------------------------------------------------------------- context


@dataclass(frozen=True)
class StudyContext:
    """Where and how one invocation works (built from the command line by `context_from_args`)."""

    profile: str = "default"       # ci | default | paper
    seed: int = 0
    runs_dir: Path = Path("runs")  # git-ignored work folder
    results_dir: Path = Path("results/pgds")
    manifest: Path | None = None   # user's manifest, or None = the phantom
    readers: Path | None = None    # user's reader CSV, or None = simulated (phantom only)
    threshold_rule: str = "max_f1"  # "max_f1" (paper) | "youden" (authors' code)
    force: bool = False

    def __post_init__(self) -> None:
        if self.profile not in PROFILE_NAMES:
            raise InputError(None, f"profile must be one of {', '.join(PROFILE_NAMES)}, got {self.profile!r}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise InputError(None, f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}, "
                             f"got {self.threshold_rule!r}")
        object.__setattr__(self, "runs_dir", Path(self.runs_dir))
        object.__setattr__(self, "results_dir", Path(self.results_dir))
        for name in ("manifest", "readers"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))

    @property
    def is_phantom(self) -> bool:
        return self.manifest is None

    @property
    def study_dir(self) -> Path:
        """runs/pgds/<profile>"""
        return self.runs_dir / STUDY / self.profile

    @property
    def n_boot(self) -> int:
        return N_BOOT[self.profile]


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The flags every Pgds target takes."""
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="default",
                        help="ci: tiny, for tests (minutes); default: laptop CPU; paper: Tang "
                             "2023 settings for a GPU (default: default)")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="your manifest CSV (image_path, case_id, label normal/"
                             "genetic_disease, optional subtype T21/T18/T13/rare/normal); "
                             "default: the synthetic phantom of the profile")
    parser.add_argument("--readers", type=Path, default=None,
                        help="reader-study CSV (case_id or image_path, reader, reader_level, "
                             "call 0/1 or normal/genetic_disease); default: simulated readers "
                             "on the phantom")
    parser.add_argument("--runs", type=Path, default=Path("runs"),
                        help="git-ignored work folder for data, models and predictions "
                             "(default: runs)")
    parser.add_argument("--results", type=Path, default=Path("results/pgds"),
                        help="folder for tables, figures and run.json (default: results/pgds)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the phantom, split, training, bootstrap and simulated "
                             "readers (default: 0)")
    parser.add_argument("--threshold-rule", choices=THRESHOLD_RULES, default="max_f1",
                        help="operating threshold chosen on the training split: max_f1 (the "
                             "paper's best F1, default) or youden (the authors' test script)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite results and retrain models made with another config or "
                             "manifest; accept near-duplicate flags of the leakage audit on a "
                             "user manifest")


def context_from_args(args: argparse.Namespace) -> StudyContext:
    if args.seed < 0:
        raise InputError(None, f"--seed must be >= 0, got {args.seed}")
    return StudyContext(profile=args.profile, seed=int(args.seed), runs_dir=Path(args.runs),
                        results_dir=Path(args.results), manifest=args.manifest,
                        readers=args.readers, threshold_rule=args.threshold_rule,
                        force=bool(args.force))


def run_cli(main_body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
            argv: Sequence[str] | None) -> int:
    """Parse `argv`, run `main_body(args)`; bad input -> one stderr line and exit 2."""
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return int(main_body(args) or 0)
    except InputError as err:
        print(f"error: {err.one_line()}", file=sys.stderr)
        return EXIT_BAD_INPUT


def say(message: str) -> None:
    print(f"[pgds] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- locking

_LOCK_DEPTH: dict[str, int] = {}
_LOCK_HANDLES: dict[str, Any] = {}
_LOCK_GUARD = threading.RLock()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on `path` across processes (fcntl.flock), re-entrant within a process."""
    key = os.path.realpath(path)
    with _LOCK_GUARD:
        if _LOCK_DEPTH.get(key, 0):
            _LOCK_DEPTH[key] += 1
            try:
                yield
            finally:
                _LOCK_DEPTH[key] -= 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say(f"waiting for another process that holds {path} ...")
                fcntl.flock(handle, fcntl.LOCK_EX)
        _LOCK_DEPTH[key], _LOCK_HANDLES[key] = 1, handle
        try:
            yield
        finally:
            _LOCK_DEPTH[key] = 0
            _LOCK_HANDLES.pop(key, None)
            handle.close()  # releases the flock


def _study_lock(ctx: StudyContext):
    """runs/pgds/<profile>/.lock: data preparation, training and prediction of one profile."""
    return _file_lock(ctx.study_dir / ".lock")


# ----------------------------------------------------------------------------- data


def _file_sha256(path: Path) -> str:
    from data_prep.provenance import sha256_file

    return sha256_file(path)


def data_dir(ctx: StudyContext) -> Path:
    """runs/pgds/<profile>/data (phantom) or .../data/user-<manifest file hash> (user data)."""
    base = ctx.study_dir / "data"
    if ctx.is_phantom:
        return base
    if not ctx.manifest.is_file():
        raise InputError(ctx.manifest, "manifest not found")
    return base / f"user-{_file_sha256(ctx.manifest)[:12]}"


def manifest_path(ctx: StudyContext) -> Path:
    """The manifest that is trained on: the de-identified phantom's, or the user's."""
    if ctx.is_phantom:
        return data_dir(ctx) / "deidentified" / "manifest.csv"
    return ctx.manifest


def splits_path(ctx: StudyContext) -> Path:
    return data_dir(ctx) / "splits.csv"


def _prepare(ctx: StudyContext) -> None:
    """Phantom -> de-identified copy -> case-level split -> leakage audit, once per profile."""
    from data_prep import audit as audit_mod
    from data_prep.manifest import load_manifest
    from data_prep.splits import case_level_split

    folder = data_dir(ctx)
    if ctx.is_phantom:
        raw, deid = folder / "phantom_raw", folder / "deidentified"
        if _phantom_seed(raw) != ctx.seed or not _phantom_matches_profile(raw, ctx.profile):
            from data_prep import phantom

            say(f"generating the {ctx.profile} phantom (seed {ctx.seed}) in {raw}")
            phantom.generate_phantom(STUDY, ctx.profile, raw, seed=ctx.seed, force=True)
            shutil.rmtree(deid, ignore_errors=True)
        if not _deidentified_cropped(deid):
            from data_prep.deidentify import deidentify_folder

            say(f"de-identifying the phantom into {deid}")
            deidentify_folder(None, deid, manifest=raw / "manifest.csv", force=True, crop=True,
                              progress_every=200, progress=say)
    source = manifest_path(ctx)
    manifest = load_manifest(source, labels=CLASS_NAMES)
    stratify = "subtype" if "subtype" in manifest.columns else "label"
    splits = case_level_split(manifest, test_size=TEST_SIZE, val_size=VAL_SIZE,
                              stratify=stratify, seed=ctx.seed)
    atomic.write_csv(splits_path(ctx), splits)
    say(f"leakage audit of {splits_path(ctx)}")
    report = audit_mod.audit(source, splits_path(ctx), progress=False)
    atomic.write_text(folder / "audit_summary.txt", report.summary() + "\n")
    if report.case_leaks:
        leak = report.case_leaks[0]
        raise InputError(splits_path(ctx), leak.one_line(str(splits_path(ctx))))
    near_note = None
    if report.exact_pairs:
        first = report.exact_pairs[0]
        audit_mod.write_report(report, folder)
        raise InputError(source, f"leakage audit: {len(report.exact_pairs)} identical image "
                         f"pair(s) sit on both sides of the split, e.g. '{first.image_a}' "
                         f"({first.split_a}) and '{first.image_b}' ({first.split_b}); see "
                         f"{folder / 'duplicate_pairs.csv'}. Give such images one case_id")
    if report.near_pairs:
        audit_mod.write_report(report, folder)
        if ctx.is_phantom:
            # Every phantom case is rendered from its own random stream (no frame is shared
            # between cases), but all frames share the sector, pose and head template, so
            # 64-bit perceptual hashes of different cases fall within a few bits. These flags
            # are false positives by construction; the case-level and exact checks stand.
            near_note = (f"{len(report.near_pairs)} near-duplicate flag(s) (phash and dhash <= "
                         f"{report.hash_distance} bits) between DIFFERENT phantom cases: false "
                         "positives (each case is rendered from its own random stream; the "
                         "frames share sector, pose and head template); not refused")
            say(f"audit note: {near_note}")
        elif not ctx.force:
            first = report.near_pairs[0]
            raise InputError(source, f"leakage audit: {len(report.near_pairs)} near-duplicate "
                             f"image pair(s) sit on both sides of the split, e.g. "
                             f"'{first.image_a}' ({first.split_a}) and '{first.image_b}' "
                             f"({first.split_b}); see {folder / 'duplicate_pairs.csv'}. Give "
                             "copies of one picture one case_id, or use --force after checking "
                             "that the flagged pairs are different pictures")
        else:
            near_note = (f"{len(report.near_pairs)} near-duplicate pair(s) across splits "
                         "accepted with --force")
    atomic.write_json(folder / _PREPARED, {
        "manifest": str(source), "manifest_file_sha256": _file_sha256(source),
        "splits_sha256": _file_sha256(splits_path(ctx)), "stratify": stratify,
        "test_size": TEST_SIZE, "val_size": VAL_SIZE, "seed": ctx.seed,
        "audit": "no case in two splits, no identical images across splits",
        "audit_near_duplicates": len(report.near_pairs), "audit_near_duplicate_note": near_note,
        "audit_summary": report.summary()})


def _phantom_seed(raw: Path) -> int | None:
    """The seed of the phantom in `raw` (its run.json), None when there is none."""
    try:
        record = json.loads((raw / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("seed") if (raw / "manifest.csv").is_file() else None


def _phantom_matches_profile(raw: Path, profile: str) -> bool:
    """Whether the phantom in `raw` was generated with the current counts and layout of
    `profile` (an older checkout's phantom of another size is regenerated, not reused)."""
    from data_prep import phantom_pgds

    try:
        config = json.loads((raw / "run.json").read_text(encoding="utf-8")).get("config", {})
    except (OSError, ValueError):
        return False
    expected = json.loads(json.dumps(phantom_pgds.resolve_profile(profile).as_config()))
    return all(config.get(key) == value for key, value in expected.items())


def _deidentified_cropped(deid: Path) -> bool:
    """Whether `deid` holds a complete de-identified copy cropped to the scan sector."""
    from data_prep.deidentify import REPORT_CSV

    try:
        report = pd.read_csv(deid / REPORT_CSV)
    except (OSError, ValueError):
        return False
    return ((deid / "manifest.csv").is_file() and "cropped" in report.columns
            and bool(report["cropped"].all()))


def _prepared_ok(ctx: StudyContext) -> bool:
    record_path = data_dir(ctx) / _PREPARED
    if ctx.is_phantom and not (_phantom_matches_profile(data_dir(ctx) / "phantom_raw", ctx.profile)
                               and _deidentified_cropped(data_dir(ctx) / "deidentified")):
        return False
    if not (record_path.is_file() and splits_path(ctx).is_file() and manifest_path(ctx).is_file()):
        return False
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (record.get("seed") == ctx.seed
            and record.get("manifest_file_sha256") == _file_sha256(manifest_path(ctx))
            and record.get("splits_sha256") == _file_sha256(splits_path(ctx)))


_MANIFEST_CACHE: dict[tuple, tuple[pd.DataFrame, pd.DataFrame]] = {}


def prepared_data(ctx: StudyContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest with abs_path, splits with image_path, case_id, split): built once, cached.

    Phantom (raw, with fake PHI) -> de-identified copy (what is trained on) -> case-level split
    stratified by subtype (test 0.2, val 0.1, seed) -> leakage audit (InputError when a case
    sits in two splits or a picture is duplicated across splits). A user manifest skips the
    phantom and de-identification steps (de-identify your images first:
    `python -m data_prep deidentify`).
    """
    from data_prep.manifest import load_manifest
    from data_prep.splits import load_splits

    with _study_lock(ctx):
        if not _prepared_ok(ctx):
            _prepare(ctx)
        elif not ctx.is_phantom and not ctx.force:
            record = json.loads((data_dir(ctx) / _PREPARED).read_text(encoding="utf-8"))
            if record.get("audit_near_duplicates"):
                # accepted once with --force; the same data needs --force every time
                raise InputError(manifest_path(ctx), f"leakage audit: "
                                 f"{record['audit_near_duplicates']} near-duplicate image pair(s) "
                                 f"sit on both sides of the split; see "
                                 f"{data_dir(ctx) / 'duplicate_pairs.csv'}. Give copies of one "
                                 "picture one case_id, or use --force after checking that the "
                                 "flagged pairs are different pictures")
        key = (str(manifest_path(ctx).resolve()), _file_sha256(manifest_path(ctx)),
               _file_sha256(splits_path(ctx)))
        if key not in _MANIFEST_CACHE:
            manifest = load_manifest(manifest_path(ctx), labels=CLASS_NAMES)
            _MANIFEST_CACHE[key] = (manifest, load_splits(splits_path(ctx)))
        manifest, splits = _MANIFEST_CACHE[key]
        return manifest.copy(), splits.copy()


# ----------------------------------------------------------------------------- models


def train_config(ctx: StudyContext, arch: str):
    """The reproduce.config TrainConfig of `arch` under the context's profile and seed."""
    from reproduce import config as cfg

    if arch not in ARCHITECTURES:
        raise InputError(None, f"architecture must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    return cfg.make_config(STUDY, arch, ctx.profile, seed=ctx.seed)


def gradcam_layer(profile: str, arch: str) -> str:
    """The layer(s) the heat-maps read for `arch` trained under `profile` (HEATMAP_SETTINGS;
    several are joined by '+', as reproduce.gradcam.layer_names reads them)."""
    from models.registry import gradcam_layer as registry_layer

    stages = HEATMAP_SETTINGS.get(profile, HEATMAP_SETTINGS["paper"])[1]
    return "+".join(registry_layer(arch, stages_before_last=k) for k in stages)


def heatmap_method(profile: str) -> str:
    """The heat-map method (reproduce.gradcam.METHODS) of `profile` (HEATMAP_SETTINGS)."""
    return HEATMAP_SETTINGS.get(profile, HEATMAP_SETTINGS["paper"])[0]


def run_dir(ctx: StudyContext, arch: str) -> Path:
    """runs/pgds/<profile>/<arch>/fold0"""
    from reproduce.train import run_dir_for

    return run_dir_for(ctx.runs_dir, STUDY, ctx.profile, arch, 0)


_MANIFEST_HASH_CACHE: dict[tuple, str] = {}


def _manifest_hash(path: Path) -> str:
    """data_prep.provenance.manifest_hash (manifest text and every image), cached per file state."""
    from data_prep.provenance import manifest_hash

    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _MANIFEST_HASH_CACHE:
        _MANIFEST_HASH_CACHE[key] = manifest_hash(path)
    return _MANIFEST_HASH_CACHE[key]


def _run_matches(ctx: StudyContext, arch: str) -> tuple[bool, str]:
    """(complete and made by this config and manifest, why not)."""
    from data_prep.provenance import json_dumps
    from reproduce.train import SELECTED_MODEL, SELECTION_FILE

    folder = run_dir(ctx, arch)
    record_path = folder / "run.json"
    if not record_path.is_file():
        return False, "absent"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, "unreadable run.json"
    if json.loads(json_dumps(train_config(ctx, arch).to_dict())) != record.get("config"):
        return False, "config"
    if record.get("manifest_sha256") != _manifest_hash(manifest_path(ctx)):
        return False, "manifest"
    if not ((folder / SELECTION_FILE).is_file() and (folder / SELECTED_MODEL).is_file()):
        return False, "incomplete"
    return True, ""


def model_path(ctx: StudyContext, arch: str) -> Path:
    """runs/pgds/<profile>/<arch>/fold0/selected.keras, trained (or resumed) when absent."""
    from reproduce import train

    folder = run_dir(ctx, arch)
    with _study_lock(ctx):
        manifest, splits = prepared_data(ctx)
        ok, why = _run_matches(ctx, arch)
        if ok:
            return folder / train.SELECTED_MODEL
        force = False
        if why in ("config", "manifest"):
            what = "training config" if why == "config" else "manifest (or its images)"
            if not ctx.force:
                raise InputError(folder / "run.json", f"this model was trained with another "
                                 f"{what}; use --force to retrain it, or another --runs folder")
            force = True
        config = train_config(ctx, arch)
        tables = train.fold_tables(manifest, splits, CLASS_NAMES, str(splits_path(ctx)))
        train_table, val_table = tables[0]
        if config.augment == "offline":
            train_table = train.offline_training_table(manifest, manifest_path(ctx), splits,
                                                       config, CLASS_NAMES, ctx.runs_dir)
        say(f"training {DISPLAY_NAMES[arch]} ({arch}, {ctx.profile} profile: epochs "
            f"{config.epoch_grid}, {len(train_table)} training / {len(val_table)} validation "
            f"images) in {folder}")
        started = time.perf_counter()
        result = train.train_run(config, train_table, val_table, CLASS_NAMES, folder,
                                 manifest=manifest_path(ctx), force=force,
                                 verbose=2 if ctx.profile != "ci" else 0)
        (folder / THRESHOLD_FILE).unlink(missing_ok=True)
        say(f"{DISPLAY_NAMES[arch]}: selected epoch {result.selected_epoch} (val_loss "
            f"{result.selected_val_loss:.4f}) in {time.perf_counter() - started:.1f} s")
        return result.selected_model


def load_keras_model(path: str | Path):
    """A saved .keras model, uncompiled (prediction and Grad-CAM only)."""
    import keras

    return keras.saving.load_model(str(path), compile=False)


_MODEL_CACHE: dict[tuple, Any] = {}


def load_model(ctx: StudyContext, arch: str):
    """The selected (smallest validation loss) model of `arch`, trained on first use."""
    path = model_path(ctx, arch)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_keras_model(path)
    return _MODEL_CACHE[key]


def input_spec(input_shape_hwc: Sequence[int]):
    """reproduce.input_pipeline.PipelineSpec for a model input shape (H, W, C)."""
    from reproduce.input_pipeline import PipelineSpec

    height, width, channels = (int(v) for v in input_shape_hwc)
    return PipelineSpec(size_wh=(width, height), channels=channels, num_classes=len(CLASS_NAMES))


def inputs_for_shape(image_paths: Sequence[str | Path], input_shape_hwc: Sequence[int],
                     batch_size: int = 32) -> np.ndarray:
    """(N, H, W, C) float32 model inputs made by the training pipeline's own preprocessing
    (reproduce.input_pipeline.eval_dataset: grayscale, bilinear resize, per-image min-max)."""
    from reproduce.input_pipeline import ImageTable, eval_dataset

    paths = tuple(str(p) for p in image_paths)
    height, width, channels = (int(v) for v in input_shape_hwc)
    if not paths:
        return np.zeros((0, height, width, channels), dtype=np.float32)
    table = ImageTable(paths, np.zeros(len(paths), dtype=np.int64))
    dataset = eval_dataset(table, input_spec(input_shape_hwc), batch_size=batch_size,
                           with_labels=False)
    return np.concatenate(list(dataset.as_numpy_iterator()), axis=0).astype(np.float32)


def model_input_shape(ctx: StudyContext, arch: str) -> tuple[int, int, int]:
    """(H, W, C) the architecture is trained at under the profile."""
    from reproduce.train import input_shape_for

    return tuple(int(v) for v in input_shape_for(train_config(ctx, arch)))


def model_inputs(ctx: StudyContext, arch: str, image_paths: Sequence[str | Path]) -> np.ndarray:
    """(N, H, W, C) float32: exactly the preprocessing used in training for this architecture."""
    return inputs_for_shape(image_paths, model_input_shape(ctx, arch))


def predict_scores(model, image_paths: Sequence[str | Path], input_shape_hwc: Sequence[int],
                   batch_size: int = 32) -> np.ndarray:
    """P(genetic_disease) of each image: the model's class-1 softmax output."""
    from reproduce.input_pipeline import ImageTable, eval_dataset

    paths = tuple(str(p) for p in image_paths)
    if not paths:
        return np.zeros(0, dtype=np.float64)
    table = ImageTable(paths, np.zeros(len(paths), dtype=np.int64))
    dataset = eval_dataset(table, input_spec(input_shape_hwc), batch_size=batch_size,
                           with_labels=False)
    probabilities = model.predict(dataset, verbose=0)
    return np.asarray(probabilities, dtype=np.float64)[:, 1]


def _predictions_dir(ctx: StudyContext) -> Path:
    return ctx.study_dir / "predictions" if ctx.is_phantom else data_dir(ctx) / "predictions"


def predictions(ctx: StudyContext, arch: str) -> pd.DataFrame:
    """One row per ORIGINAL image of every split (manifest order).

    Columns: image_path, abs_path, case_id, label, subtype, split, y_true (1 = genetic_disease),
    score (P(genetic_disease)), gestational_week, mask_path (absolute, or "" when none).
    Cached as runs/pgds/<profile>/predictions/<arch>.csv, keyed on the model file's hash.
    """
    with _study_lock(ctx):
        path = model_path(ctx, arch)
        manifest, splits = prepared_data(ctx)
        out = _predictions_dir(ctx) / f"{arch}.csv"
        key_path = out.with_suffix(".json")
        key = {"model_sha256": _file_sha256(path), "splits_sha256": _file_sha256(splits_path(ctx)),
               "manifest_sha256": _manifest_hash(manifest_path(ctx))}
        if out.is_file() and key_path.is_file():
            try:
                if json.loads(key_path.read_text(encoding="utf-8")) == key:
                    return _read_predictions(out)
            except (OSError, ValueError):
                pass
        frame = _prediction_frame(manifest, splits)
        model = load_model(ctx, arch)
        say(f"predicting {len(frame)} images with {DISPLAY_NAMES[arch]}")
        frame["score"] = predict_scores(model, frame["abs_path"], model_input_shape(ctx, arch))
        frame = frame[list(PREDICTION_COLUMNS)]
        atomic.write_csv(out, frame)
        atomic.write_json(key_path, key)
        return _read_predictions(out)


def _prediction_frame(manifest: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    split_of = dict(zip(splits["image_path"].astype(str), splits["split"].astype(str)))
    root = Path(manifest.attrs.get("path", ".")).resolve().parent
    frame = pd.DataFrame({
        "image_path": manifest["image_path"].astype(str).to_numpy(),
        "abs_path": manifest["abs_path"].astype(str).to_numpy(),
        "case_id": manifest["case_id"].astype(str).to_numpy(),
        "label": manifest["label"].astype(str).to_numpy(),
    })
    if "subtype" in manifest.columns:
        subtype = manifest["subtype"].astype(str).to_numpy()
    else:
        subtype = np.where(frame["label"] == POSITIVE_LABEL, "unspecified", "normal")
    frame["subtype"] = subtype
    frame["split"] = frame["image_path"].map(split_of)
    missing = frame["split"].isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0]) + 1
        raise InputError(manifest.attrs.get("path"), "image is not in the splits", row=row,
                         column="image_path")
    frame["y_true"] = (frame["label"] == POSITIVE_LABEL).astype(int)
    frame["gestational_week"] = (manifest["gestational_week"].to_numpy()
                                 if "gestational_week" in manifest.columns else np.nan)
    if "mask_path" in manifest.columns:
        frame["mask_path"] = [str(root / value) if value else ""
                              for value in manifest["mask_path"].fillna("").astype(str)]
    else:
        frame["mask_path"] = ""
    return frame


def _read_predictions(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"image_path": str, "abs_path": str, "case_id": str,
                                     "label": str, "subtype": str, "split": str, "mask_path": str},
                        keep_default_na=False, na_values={"gestational_week": [""]})
    frame["mask_path"] = frame["mask_path"].fillna("").astype(str)
    frame["y_true"] = frame["y_true"].astype(int)
    frame["score"] = frame["score"].astype(float)
    frame["gestational_week"] = pd.to_numeric(frame["gestational_week"], errors="coerce")
    return frame


# ----------------------------------------------------------------------------- threshold


def thresholds_on_train(ctx: StudyContext, arch: str) -> dict[str, float]:
    """{'max_f1': t, 'youden': t} on the TRAINING split's predictions."""
    from reproduce import stats

    frame = predictions(ctx, arch)
    train_rows = frame[frame["split"] == "train"]
    y_true, score = train_rows["y_true"].to_numpy(), train_rows["score"].to_numpy()
    try:
        return {"max_f1": float(stats.threshold_max_f1(y_true, score)),
                "youden": float(stats.threshold_youden(y_true, score))}
    except ValueError as err:
        raise InputError(manifest_path(ctx), f"cannot choose a threshold on the training "
                         f"split: {err}") from None


def operating_threshold(ctx: StudyContext, arch: str) -> float:
    """Threshold chosen on the TRAINING split's predictions by ctx.threshold_rule (max_f1:
    stats.threshold_max_f1, the paper's; youden: stats.threshold_youden); also written to
    runs/.../<arch>/fold0/threshold.json for `reproduce.pgds.predict`. A call is
    "genetic disease" when score >= threshold. Youden's J can give +inf (no cut-off beats
    chance): every image is then called normal."""
    with _study_lock(ctx):
        values = thresholds_on_train(ctx, arch)
        path = model_path(ctx, arch)
        record = {"threshold": values[ctx.threshold_rule], "rule": ctx.threshold_rule,
                  "thresholds": values, "chosen_on": "training split predictions",
                  "call": "genetic_disease when P(genetic_disease) >= threshold",
                  "model": path.name, "model_sha256": _file_sha256(path)}
        atomic.write_json(path.parent / THRESHOLD_FILE, record)
        return float(values[ctx.threshold_rule])


# ----------------------------------------------------------------------------- readers


def reader_study_images(ctx: StudyContext) -> pd.DataFrame:
    """The reader-study images: READER_STUDY_IMAGES (100) randomly drawn test images (seeded),
    or every test image when there are fewer. Columns image_path, case_id, label, subtype,
    y_true (manifest order)."""
    from reproduce.pgds import readers

    manifest, splits = prepared_data(ctx)
    frame = _prediction_frame(manifest, splits)
    test = frame[frame["split"] == "test"]
    return readers.draw_reader_images(test, READER_STUDY_IMAGES, ctx.seed)


def reader_calls(ctx: StudyContext) -> pd.DataFrame:
    """Columns image_path, case_id, reader, reader_level, call (0/1), simulated (bool).

    From ctx.readers (validated; InputError naming file, row, column), or simulated by
    reproduce.pgds.readers on the reader-study images (phantom only)."""
    from reproduce.pgds import readers

    manifest, splits = prepared_data(ctx)
    frame = _prediction_frame(manifest, splits)
    if ctx.readers is not None:
        return readers.load_reader_csv(ctx.readers, frame)
    if not ctx.is_phantom:
        raise InputError(ctx.manifest, "Table 3 needs reader calls on your images: give "
                         "--readers R (columns case_id or image_path, reader, reader_level, call); "
                         "readers are simulated only on the phantom")
    return readers.simulate_readers(reader_study_images(ctx), ctx.seed)


# ----------------------------------------------------------------------------- results


def results_label(ctx: StudyContext) -> str:
    if ctx.is_phantom:
        return f"PHANTOM (synthetic) data, {ctx.profile} profile -- not the paper's data"
    from data_prep.provenance import portable_path

    return f"user data: {portable_path(ctx.manifest)}"


def results_config(ctx: StudyContext) -> dict[str, Any]:
    """What results_dir/run.json records as `config` (compared before overwriting)."""
    from data_prep.provenance import portable_path

    return {
        "study": STUDY, "profile": ctx.profile, "seed": ctx.seed,
        "manifest": None if ctx.is_phantom else portable_path(ctx.manifest),
        "data": "phantom (de-identified copy)" if ctx.is_phantom else "user manifest",
        "readers": portable_path(ctx.readers),
        "threshold_rule": ctx.threshold_rule, "bootstrap_replicates": ctx.n_boot,
        "training": {arch: train_config(ctx, arch).to_dict() for arch in ARCHITECTURES},
    }


def _update_run_json(ctx: StudyContext, name: str, written: Sequence[Path]) -> Path:
    from data_prep.provenance import check_same_config, json_dumps, write_run_json

    config = results_config(ctx)
    run_json = ctx.results_dir / "run.json"
    check_same_config(ctx.results_dir, config, force=ctx.force)
    outputs: dict[str, Any] = {}
    if run_json.is_file():
        try:
            previous = json.loads(run_json.read_text(encoding="utf-8"))
            if previous.get("config") == json.loads(json_dumps(config)):
                outputs = dict(previous.get("outputs") or {})
        except (OSError, ValueError):
            outputs = {}
    outputs[name] = {"files": [p.name for p in written],
                     "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manifest = manifest_path(ctx) if manifest_path(ctx).is_file() else None
    return write_run_json(ctx.results_dir, config, seed=ctx.seed, manifest=manifest,
                          extra={"results_label": results_label(ctx), "outputs": outputs},
                          force=True)


def _results_lock(ctx: StudyContext):
    """The results folder's run.json is shared by every target: serialise its updates (the
    lock file lives in the runs folder, so results/ holds only results)."""
    digest = hashlib.sha256(str(ctx.results_dir.absolute()).encode()).hexdigest()[:12]
    return _file_lock(ctx.runs_dir / STUDY / f".results-{digest}.lock")


def check_results_dir(ctx: StudyContext) -> None:
    """Refuse early (before any training) when results_dir holds another config's results."""
    from data_prep.provenance import check_same_config

    check_same_config(ctx.results_dir, results_config(ctx), force=ctx.force)


def write_table(ctx: StudyContext, name: str, table: pd.DataFrame, markdown: str) -> tuple[Path, Path]:
    """results_dir/<name>.csv and .md, atomic; updates results_dir/run.json."""
    check_results_dir(ctx)
    csv_path, md_path = ctx.results_dir / f"{name}.csv", ctx.results_dir / f"{name}.md"
    atomic.write_csv(csv_path, table)
    atomic.write_text(md_path, markdown if markdown.endswith("\n") else markdown + "\n")
    with _results_lock(ctx):
        _update_run_json(ctx, name, [csv_path, md_path])
    say(f"wrote {csv_path} and {md_path.name}")
    return csv_path, md_path


def write_figure(ctx: StudyContext, name: str, fig) -> Path:
    """results_dir/<name>.png (atomic, dpi 150); updates results_dir/run.json."""
    check_results_dir(ctx)
    path = ctx.results_dir / f"{name}.png"
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    with _results_lock(ctx):
        _update_run_json(ctx, name, [path])
    say(f"wrote {path}")
    return path


# ----------------------------------------------------------------------------- markdown helpers


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame of strings as a GitHub markdown table (no tabulate dependency)."""
    columns = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for values in frame.astype(str).itertuples(index=False, name=None):
        lines.append("| " + " | ".join(v.replace("|", "/") for v in values) + " |")
    return "\n".join(lines)


def ci_text(value: float, lo: float, hi: float, digits: int = 2) -> str:
    """'0.89 (0.80–0.95)', 'n/a' when undefined."""
    from reproduce.paper_values import format_ci

    if value is None or not np.isfinite(value):
        return "n/a"
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return format_ci(value, digits=digits)
    return format_ci(value, lo, hi, digits=digits)


def selection_record(ctx: StudyContext, arch: str) -> dict[str, Any]:
    """reproduce.train's selection.json of the architecture's run (epoch chosen by val loss)."""
    from reproduce.train import SELECTION_FILE

    path = model_path(ctx, arch).parent / SELECTION_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def test_rows(ctx: StudyContext, arch: str) -> pd.DataFrame:
    """predictions(ctx, arch) of the test split only, with both classes required."""
    frame = predictions(ctx, arch)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    counts = test["y_true"].value_counts()
    if counts.get(0, 0) == 0 or counts.get(1, 0) == 0:
        raise InputError(manifest_path(ctx), f"the test split holds {counts.get(1, 0)} diseased "
                         f"and {counts.get(0, 0)} normal images; the tables need both classes")
    return test


def common_notes(ctx: StudyContext) -> list[str]:
    """Lines every table's markdown ends with: data label, CI methods, bootstrap replicates."""
    from reproduce import stats

    fewer = " (fewer than the paper's 1000: ci profile)" if ctx.n_boot < 1000 else ""
    return [
        f"- Data: {results_label(ctx)}.",
        f"- Proportion CIs (sensitivity, specificity, accuracy): {stats.PGDS_PROPORTION_CI} = "
        "Wilson score interval with continuity correction (R's prop.test), which regenerates "
        "Tang 2023 Table 2's CIs (the paper calls them Wald/bootstrap).",
        f"- AUROC and F1 CIs: stratified bootstrap percentile intervals, {ctx.n_boot} replicates "
        f"(seed {ctx.seed}){fewer}.",
    ]


def threshold_text(threshold: float) -> str:
    """A threshold as printed in tables: 0.163, 2.4e-06, inf."""
    if not np.isfinite(threshold):
        return str(threshold)
    return f"{threshold:.3f}" if abs(threshold) >= 0.001 or threshold == 0 else f"{threshold:.2e}"
