"""The study pipeline every study shares: prepare -> folds -> train-or-reuse -> predictions ->
thresholds -> writers.

A study is a `StudySpec` (its classes, architectures, split, phantom and heat-map settings);
one invocation is a `StudyContext` (profile, seed, folders, the user's manifest) that carries
its spec, so every function here takes just the context. A study package
(`reproduce/pgds/`, ...) holds only its spec, its tables and figures.

Work folder (git-ignored, default `runs/`), per study and profile:

    runs/<study>/<profile>/data/phantom_raw/       the phantom as generated (fake burned-in PHI)
    runs/<study>/<profile>/data/deidentified/      the de-identified copy that is trained on
                                                   (blanked outside the scan sector, cropped
                                                   to it with its masks when the spec says so)
    runs/<study>/<profile>/data/splits.csv         case-level folds (a hold-out is fold 0)
    runs/<study>/<profile>/data/audit_summary.txt  leakage audit (refused unless clean)
    runs/<study>/<profile>/data/prepared.json      the commit point of the three steps above
    runs/<study>/<profile>/<arch>/fold<k>/         reproduce.train's run folder (selected.keras,
                                                   log.csv, ...) + threshold.json
    runs/<study>/<profile>/predictions/<arch>.csv  one row per image and fold

A user's manifest (`--manifest M`) skips the phantom and de-identification steps; its split and
audit are cached under `data/user-<hash of the manifest file>/`. Models trained on one manifest
are never silently reused for another: a run folder whose `run.json` records another manifest
hash or training config is refused (InputError) unless `--force`, which retrains it.

Folds are first-class: `splits.csv` holds one fold (hold-out) or many (k-fold, leave one group
out; data_prep.splits). Each fold trains its own model; predictions hold every image of every
fold with its split, and `test_rows` pools the test rows of all folds (out-of-fold predictions).

Everything is built on first use and reused afterwards, under a per-profile file lock, so two
targets started at once wait for each other instead of training the same model twice.
The results folder receives only small tables (`write_table`), figures (`write_figure`) and
`run.json` (config, versions, commit, manifest hash; refused when another config wrote the
folder, unless `--force`).
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
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_prep import atomic  # noqa: E402
from data_prep.errors import InputError, report_bad_input  # noqa: E402

PROFILE_NAMES = ("ci", "default", "paper")
THRESHOLD_RULES = ("max_f1", "youden")
THRESHOLD_FILE = "threshold.json"
_PREPARED = "prepared.json"


# ----------------------------------------------------------------------------- spec, context


@dataclass(frozen=True)
class StudySpec:
    """What one study is, for the shared pipeline.

    `class_names` fixes the class index order; `positive_label` names the positive class of a
    binary study (its probability is the prediction's `score`), None for a multi-class one.
    `splitter(ctx, manifest)` returns (splits frame in data_prep.splits format, one fold or
    many; a dict saying how they were made, kept in prepared.json); `split_key(ctx)` names the
    choices that make the splits (a change re-splits); `heatmaps[profile]` is (method, stages before the last block whose outputs are read[,
    score]), score one of reproduce.gradcam.SCORES ("logit" when not given).
    """

    key: str
    architectures: tuple[str, ...]
    display_names: Mapping[str, str]
    class_names: tuple[str, ...]
    positive_label: str | None
    splitter: Callable[["StudyContext", pd.DataFrame], tuple[pd.DataFrame, dict]]
    n_boot: Mapping[str, int]
    heatmaps: Mapping[str, tuple]
    prediction_columns: tuple[str, ...]
    phantom: str | None = None           # data_prep phantom study key; None: user data only
    crop_to_sector: bool = True          # de-identification crops to the scan sector
    split_key: Callable[["StudyContext"], dict] = lambda ctx: {}
    results_dir: str = ""                # default results folder, e.g. results/pgds
    extra: Mapping[str, Any] = field(default_factory=dict)
    # A task of a study trains on the manifest rows whose label is one of its class_names
    # (e.g. Qi 2025's 4-anomaly task leaves out the normal patients); the data, its folds and
    # the leakage audit are the study's (over `data_labels`), its runs and predictions live in
    # runs/<study>/<profile>/<task>/. "" = the study has one task.
    task: str = ""
    data_labels: tuple[str, ...] | None = None   # labels the manifest may hold (None: class_names)
    # Also predict each fold's TEST images after every epoch (label-free; runs/.../monitor.csv)
    # so a test-fold selection (the CNS authors' protocol) can be shown beside the honest one
    # from the same training runs. Nothing in training or in its selection reads them.
    monitor_test_fold: bool = False
    # What the images are: "ultrasound" (de-identified by blanking outside the scan sector,
    # data_prep.deidentify) or "face" (photos: MTCNN detection and alignment to the ArcFace
    # template at `aligned_size[profile]`, pixels only, data_prep.faces; the phantom's drawn
    # landmarks stand in where MTCNN finds no usable face, and the report says how often).
    images: str = "ultrasound"
    aligned_size: Mapping[str, int] = field(default_factory=dict)

    @property
    def manifest_labels(self) -> tuple[str, ...]:
        return tuple(self.data_labels or self.class_names)


@dataclass(frozen=True)
class StudyContext:
    """Where and how one invocation works (built from the command line by `context_from_args`)."""

    spec: StudySpec | None = None
    profile: str = "default"       # ci | default | paper
    seed: int = 0
    runs_dir: Path = Path("runs")  # git-ignored work folder
    results_dir: Path = Path("results")
    manifest: Path | None = None   # user's manifest, or None = the phantom
    readers: Path | None = None    # user's reader CSV, or None = simulated (phantom only)
    threshold_rule: str = "max_f1"  # "max_f1" (paper) | "youden" (authors' code)
    force: bool = False

    def __post_init__(self) -> None:
        if self.spec is None:
            raise TypeError("StudyContext needs its study's spec")
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
    def study(self) -> str:
        return self.spec.key

    @property
    def is_phantom(self) -> bool:
        return self.manifest is None

    @property
    def study_dir(self) -> Path:
        """runs/<study>/<profile>"""
        return self.runs_dir / self.study / self.profile

    @property
    def n_boot(self) -> int:
        return self.spec.n_boot[self.profile]


def add_common_args(parser: argparse.ArgumentParser, spec: StudySpec, *, paper: str,
                    manifest_help: str, readers_help: str) -> None:
    """The flags every target of a study takes."""
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="default",
                        help=f"ci: tiny, for tests (minutes); default: laptop CPU; paper: "
                             f"{paper} settings for a GPU (default: default)")
    parser.add_argument("--manifest", type=Path, default=None, help=manifest_help)
    parser.add_argument("--readers", type=Path, default=None, help=readers_help)
    parser.add_argument("--runs", type=Path, default=Path("runs"),
                        help="git-ignored work folder for data, models and predictions "
                             "(default: runs)")
    parser.add_argument("--results", type=Path, default=Path(spec.results_dir),
                        help=f"folder for tables, figures and run.json (default: {spec.results_dir})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the phantom, split, training, bootstrap and simulated "
                             "readers (default: 0)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite results and retrain models made with another config or "
                             "manifest; accept near-duplicate flags of the leakage audit on a "
                             "user manifest")


def context_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The StudyContext fields the common flags give."""
    if args.seed < 0:
        raise InputError(None, f"--seed must be >= 0, got {args.seed}")
    runs_dir = atomic.check_folder_target(args.runs, "--runs")
    results_dir = atomic.check_folder_target(args.results, "--results")
    return dict(profile=args.profile, seed=int(args.seed), runs_dir=runs_dir,
                results_dir=results_dir, manifest=args.manifest, readers=args.readers,
                force=bool(args.force))


def run_cli(main_body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
            argv: Sequence[str] | None) -> int:
    """Parse `argv`, run `main_body(args)` holding the lock of its results folder (a second
    command writing the same results is refused); bad input -> one stderr line and exit 2."""
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    def locked() -> int:
        results = getattr(args, "results", None)
        if results is None:
            return main_body(args)
        if getattr(args, "runs", None) is not None:   # refused before the lock makes a folder
            atomic.check_folder_target(args.runs, "--runs")
        with atomic.folder_lock(atomic.check_folder_target(results, "--results"), "results"):
            return main_body(args)

    return report_bad_input(locked)


def run_steps(steps: Sequence[tuple[str, Callable[[], int]]], key: str,
              on_step: Callable[[str], None] | None = None) -> tuple[int, list[tuple[str, float]]]:
    """Run a study's `all` steps in order: (exit code of the first failing step or 0,
    [(step, seconds)..., ("total", seconds)]). `on_step(name)` is called as each starts."""
    timings: list[tuple[str, float]] = []
    started = time.perf_counter()
    for name, run in steps:
        say(key, f"=== {name} ===")
        if on_step is not None:
            on_step(name)
        t0 = time.perf_counter()
        code = int(run() or 0)
        timings.append((name, time.perf_counter() - t0))
        if code != 0:
            say(key, f"{name} failed with exit code {code}; stopping")
            return code, timings
    timings.append(("total", time.perf_counter() - started))
    return 0, timings


def common_argv(args: argparse.Namespace, optional: Mapping[str, str] = {}) -> list[str]:
    """The common flags of `args` to pass on to another target unchanged: profile, runs,
    results, seed, force, and each `optional` flag ("--manifest": "manifest", ...) when set."""
    argv = ["--profile", args.profile, "--runs", str(args.runs), "--results", str(args.results),
            "--seed", str(args.seed)]
    for flag, name in optional.items():
        if getattr(args, name) is not None:
            argv += [flag, str(getattr(args, name))]
    return argv + (["--force"] if args.force else [])


def write_timings(results: Path, timings: Sequence[tuple[str, float]], key: str) -> None:
    """results/timings.csv (seconds per `all` step, run_steps' list) and the closing line."""
    atomic.write_csv(Path(results) / "timings.csv", pd.DataFrame(timings, columns=["target", "seconds"]))
    say(key, f"all done in {timings[-1][1] / 60:.1f} min; results in {results}")


def read_user_csv(path: str | Path, what: str) -> pd.DataFrame:
    """A user's CSV as text cells with stripped headers; InputError naming it when it is
    absent or unreadable (`what` names it in the message, e.g. "reader CSV")."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True,
                            encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable CSV: {str(err).splitlines()[0]}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def say(ctx_or_key, message: str) -> None:
    key = ctx_or_key if isinstance(ctx_or_key, str) else ctx_or_key.study
    print(f"[{key}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- locking

def _waiting_lock(folder: Path, what: str, study: str):
    """folder_lock that waits for another process (saying so) instead of refusing."""
    return atomic.folder_lock(folder, what, wait=True, on_wait=lambda: say(
        study, f"waiting for another process that holds the {what} folder {folder} ..."))


def study_lock(ctx: StudyContext):
    """runs/<study>/<profile>/: data preparation, training and prediction of one profile."""
    return _waiting_lock(ctx.study_dir, "study work", ctx.study)


# ----------------------------------------------------------------------------- data


def file_sha256(path: Path) -> str:
    from data_prep.provenance import sha256_file

    return sha256_file(path)


def data_dir(ctx: StudyContext) -> Path:
    """runs/<study>/<profile>/data (phantom) or .../data/user-<manifest file hash> (user data)."""
    base = ctx.study_dir / "data"
    if ctx.is_phantom:
        return base
    if not ctx.manifest.is_file():
        raise InputError(ctx.manifest, "manifest not found")
    return base / f"user-{file_sha256(ctx.manifest)[:12]}"


def manifest_path(ctx: StudyContext) -> Path:
    """The manifest that is trained on: the de-identified phantom's, or the user's."""
    if ctx.is_phantom:
        return data_dir(ctx) / "deidentified" / "manifest.csv"
    return ctx.manifest


def splits_path(ctx: StudyContext) -> Path:
    return data_dir(ctx) / "splits.csv"


def _load_manifest(ctx: StudyContext, path: Path) -> pd.DataFrame:
    """The whole manifest (every label of the study's data), checked."""
    from data_prep.manifest import load_manifest

    return load_manifest(path, labels=ctx.spec.manifest_labels)


def task_rows(spec: StudySpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a manifest (or a splits frame joined to it) that the spec's task trains on."""
    if tuple(spec.class_names) == spec.manifest_labels:
        return frame
    kept = frame[frame["label"].astype(str).isin(spec.class_names)].reset_index(drop=True)
    kept.attrs = dict(frame.attrs)
    return kept


def _prepare(ctx: StudyContext) -> None:
    """Phantom -> de-identified copy -> folds -> leakage audit, once per profile."""
    from data_prep import audit as audit_mod

    folder = data_dir(ctx)
    if ctx.is_phantom:
        if ctx.spec.phantom is None:
            raise InputError(None, f"study {ctx.study} has no phantom; give --manifest")
        raw, deid = folder / "phantom_raw", folder / "deidentified"
        if _phantom_seed(raw) != ctx.seed or not _phantom_matches_profile(ctx, raw):
            from data_prep import phantom

            say(ctx, f"generating the {ctx.profile} phantom (seed {ctx.seed}) in {raw}")
            phantom.generate_phantom(ctx.spec.phantom, ctx.profile, raw, seed=ctx.seed, force=True)
            shutil.rmtree(deid, ignore_errors=True)
        if not _deidentified_complete(ctx, deid):
            _deidentify_phantom(ctx, raw, deid)
    source = manifest_path(ctx)
    manifest = _load_manifest(ctx, source)
    splits, split_info = ctx.spec.splitter(ctx, manifest)
    atomic.write_csv(splits_path(ctx), splits)
    say(ctx, f"leakage audit of {splits_path(ctx)}")
    report = audit_mod.audit(source, splits_path(ctx), progress=False)
    from dataclasses import replace

    from data_prep.provenance import portable_path

    # Records name no machine path (tests/test_no_machine_paths.py).
    report = replace(report, manifest_path=portable_path(source),
                     splits_path=portable_path(splits_path(ctx)))
    summary = report.summary()
    atomic.write_text(folder / "audit_summary.txt", summary + "\n")
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
                         "frames share the generator's layout: scan sector and head template, "
                         "or the face template); not refused")
            say(ctx, f"audit note: {near_note}")
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
        "manifest": portable_path(source), "manifest_file_sha256": file_sha256(source),
        "splits_sha256": file_sha256(splits_path(ctx)), **split_info,
        "split_key": ctx.spec.split_key(ctx), "seed": ctx.seed,
        "audit": "no case in two splits, no identical images across splits",
        "audit_near_duplicates": len(report.near_pairs), "audit_near_duplicate_note": near_note,
        "audit_summary": summary})


def _deidentify_phantom(ctx: StudyContext, raw: Path, deid: Path) -> None:
    """The raw phantom (fake PHI) -> the de-identified copy that is trained on."""
    if ctx.spec.images == "face":
        from data_prep.faces import faces_from_manifest

        size = ctx.spec.aligned_size[ctx.profile]
        say(ctx, f"detecting, aligning ({size}x{size}) and de-identifying the phantom's faces "
                 f"into {deid}")
        detections = faces_from_manifest(raw / "manifest.csv", deid, size=size,
                                         landmarks="fallback", force=True, progress_every=100,
                                         progress=lambda message: say(ctx, message))
        counts = detections["status"].value_counts().to_dict()
        say(ctx, f"MTCNN found the face in {counts.get('ok', 0)}/{len(detections)} phantom "
                 f"photos; the drawn landmarks stood in for {counts.get('landmarks_fallback', 0)}")
        return
    from data_prep.deidentify import deidentify_folder

    say(ctx, f"de-identifying the phantom into {deid}")
    deidentify_folder(None, deid, manifest=raw / "manifest.csv", force=True,
                      crop=ctx.spec.crop_to_sector, progress_every=200,
                      progress=lambda message: say(ctx, message),
                      pseudonymise=False, unknown_columns="keep")  # synthetic IDs, no PHI


def _phantom_seed(raw: Path) -> int | None:
    """The seed of the phantom in `raw` (its run.json), None when there is none."""
    try:
        record = json.loads((raw / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("seed") if (raw / "manifest.csv").is_file() else None


def _phantom_matches_profile(ctx: StudyContext, raw: Path) -> bool:
    """Whether the phantom in `raw` was generated with the current counts and layout of the
    profile (an older checkout's phantom of another size or version is regenerated)."""
    from data_prep import phantom

    try:
        config = json.loads((raw / "run.json").read_text(encoding="utf-8")).get("config", {})
    except (OSError, ValueError):
        return False
    module = phantom.STUDY_GENERATORS[ctx.spec.phantom]
    expected = json.loads(json.dumps(module.resolve_profile(ctx.profile).as_config()))
    return all(config.get(key) == value for key, value in expected.items())


def _deidentified_complete(ctx: StudyContext, deid: Path) -> bool:
    """Whether `deid` holds a complete de-identified copy (cropped, when the spec crops)."""
    from data_prep.deidentify import REPORT_CSV

    if ctx.spec.images == "face":
        from data_prep.faces import REPORT_JSON

        try:
            report = json.loads((deid / REPORT_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return ((deid / "manifest.csv").is_file()
                and report.get("size") == ctx.spec.aligned_size[ctx.profile]
                and report.get("n_aligned") == report.get("n_photos"))

    try:
        report = pd.read_csv(deid / REPORT_CSV)
    except (OSError, ValueError):
        return False
    if not (deid / "manifest.csv").is_file():
        return False
    if not ctx.spec.crop_to_sector:
        return True
    return "cropped" in report.columns and bool(report["cropped"].all())


def _prepared_ok(ctx: StudyContext) -> bool:
    record_path = data_dir(ctx) / _PREPARED
    if ctx.is_phantom and not (_phantom_matches_profile(ctx, data_dir(ctx) / "phantom_raw")
                               and _deidentified_complete(ctx, data_dir(ctx) / "deidentified")):
        return False
    if not (record_path.is_file() and splits_path(ctx).is_file() and manifest_path(ctx).is_file()):
        return False
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (record.get("seed") == ctx.seed
            and record.get("manifest_file_sha256") == file_sha256(manifest_path(ctx))
            and record.get("splits_sha256") == file_sha256(splits_path(ctx))
            and record.get("split_key") == json.loads(json.dumps(ctx.spec.split_key(ctx))))


_MANIFEST_CACHE: dict[tuple, tuple[pd.DataFrame, pd.DataFrame]] = {}


def prepared_data(ctx: StudyContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest with abs_path, splits with image_path, case_id, split[, fold]): built once.

    Phantom (raw, with fake PHI) -> de-identified copy (what is trained on) -> the spec's
    folds -> leakage audit (InputError when a case sits in two splits of a fold or a picture
    is duplicated across splits). A user manifest skips the phantom and de-identification
    steps (de-identify your images first: `python -m data_prep deidentify`).
    """
    from data_prep.splits import load_splits

    with study_lock(ctx):
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
        key = (str(manifest_path(ctx).resolve()), file_sha256(manifest_path(ctx)),
               file_sha256(splits_path(ctx)), ctx.spec.class_names, ctx.spec.manifest_labels)
        if key not in _MANIFEST_CACHE:
            manifest = task_rows(ctx.spec, _load_manifest(ctx, manifest_path(ctx)))
            splits = load_splits(splits_path(ctx))
            splits = splits[splits["image_path"].astype(str).isin(
                set(manifest["image_path"].astype(str)))].reset_index(drop=True)
            _MANIFEST_CACHE[key] = (manifest, splits)
        manifest, splits = _MANIFEST_CACHE[key]
        return manifest.copy(), splits.copy()


def folds(ctx: StudyContext) -> list[int]:
    """The fold numbers of the prepared splits that test at least one of the task's images (a
    hold-out: [0]; a leave-one-patient-out fold of a normal patient tests nothing of a task
    without the normal class, so it trains nothing there)."""
    _, splits = prepared_data(ctx)
    if "fold" not in splits.columns:
        return [0]
    tested = splits.loc[splits["split"].astype(str) == "test", "fold"]
    return sorted(int(f) for f in tested.unique())


# ----------------------------------------------------------------------------- models


def train_config(ctx: StudyContext, arch: str, fold: int = 0):
    """The reproduce.config TrainConfig of `arch` under the context's profile and seed."""
    from reproduce import config as cfg

    if arch not in ctx.spec.architectures:
        raise InputError(None, f"architecture must be one of {', '.join(ctx.spec.architectures)}, "
                               f"got {arch!r}")
    extra: dict[str, Any] = {"fold": fold} if fold else {}
    if ctx.spec.task:
        extra["labels"] = tuple(ctx.spec.class_names)
    extra.update(ctx.spec.extra.get("train_overrides", lambda ctx: {})(ctx))
    return cfg.make_config(ctx.study, arch, ctx.profile, seed=ctx.seed, **extra)


def gradcam_layer(ctx_or_spec, profile: str, arch: str) -> str:
    """The layer(s) the heat-maps read for `arch` trained under `profile` (the spec's heatmaps;
    several are joined by '+', as reproduce.gradcam.layer_names reads them)."""
    from models.registry import gradcam_layer as registry_layer

    spec = ctx_or_spec.spec if isinstance(ctx_or_spec, StudyContext) else ctx_or_spec
    options = (dict(train_config(ctx_or_spec, arch).model_options)
               if isinstance(ctx_or_spec, StudyContext) else {})
    stages = spec.heatmaps.get(profile, spec.heatmaps["paper"])[1]
    return "+".join(registry_layer(arch, stages_before_last=k, **options) for k in stages)


def heatmap_method(ctx_or_spec, profile: str) -> str:
    """The heat-map method (reproduce.gradcam.METHODS) of `profile` (the spec's heatmaps)."""
    spec = ctx_or_spec.spec if isinstance(ctx_or_spec, StudyContext) else ctx_or_spec
    return spec.heatmaps.get(profile, spec.heatmaps["paper"])[0]


def heatmap_score(ctx_or_spec, profile: str) -> str:
    """What the heat-maps of `profile` differentiate (reproduce.gradcam.SCORES; the spec's
    heatmaps, "logit" where it names none)."""
    spec = ctx_or_spec.spec if isinstance(ctx_or_spec, StudyContext) else ctx_or_spec
    setting = spec.heatmaps.get(profile, spec.heatmaps["paper"])
    return setting[2] if len(setting) > 2 else "logit"


def run_dir(ctx: StudyContext, arch: str, fold: int = 0) -> Path:
    """runs/<study>/<profile>/<arch>/fold<k>"""
    from reproduce.train import run_dir_for

    if ctx.spec.task:
        return ctx.study_dir / ctx.spec.task / arch / f"fold{int(fold)}"
    return run_dir_for(ctx.runs_dir, ctx.study, ctx.profile, arch, fold)


_MANIFEST_HASH_CACHE: dict[tuple, str] = {}


def manifest_hash(path: Path) -> str:
    """data_prep.provenance.manifest_hash (manifest text and every image), cached per file state."""
    from data_prep.provenance import manifest_hash as compute

    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _MANIFEST_HASH_CACHE:
        _MANIFEST_HASH_CACHE[key] = compute(path)
    return _MANIFEST_HASH_CACHE[key]


def run_matches(ctx: StudyContext, arch: str, fold: int = 0) -> tuple[bool, str]:
    """(complete and made by this config and manifest, why not)."""
    from data_prep.provenance import json_dumps
    from reproduce.train import SELECTED_MODEL, SELECTION_FILE

    folder = run_dir(ctx, arch, fold)
    record_path = folder / "run.json"
    if not record_path.is_file():
        return False, "absent"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, "unreadable run.json"
    if json.loads(json_dumps(train_config(ctx, arch, fold).to_dict())) != record.get("config"):
        return False, "config"
    if record.get("manifest_sha256") != manifest_hash(manifest_path(ctx)):
        return False, "manifest"
    if record.get("fold_images_sha256") != fold_images_hash(ctx, fold):
        return False, "splits"
    if not ((folder / SELECTION_FILE).is_file() and (folder / SELECTED_MODEL).is_file()):
        return False, "incomplete"
    return True, ""


def fold_images_hash(ctx: StudyContext, fold: int = 0) -> str:
    """sha256 of the fold's (split, image) pairs: a model is reused only for the very images it
    was trained, validated and tested on (another --cv, k or seed gives other folds)."""
    _, splits = prepared_data(ctx)
    part = splits if "fold" not in splits.columns else splits[splits["fold"].astype(int) == fold]
    lines = sorted(f"{split}\t{path}" for split, path in
                   zip(part["split"].astype(str), part["image_path"].astype(str)))
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def model_path(ctx: StudyContext, arch: str, fold: int = 0) -> Path:
    """runs/<study>/<profile>/<arch>/fold<k>/selected.keras, trained (or resumed) when absent."""
    from reproduce import train

    folder = run_dir(ctx, arch, fold)
    with study_lock(ctx):
        manifest, splits = prepared_data(ctx)
        ok, why = run_matches(ctx, arch, fold)
        if ok:
            return folder / train.SELECTED_MODEL
        force = False
        if why in ("config", "manifest", "splits"):
            what = {"config": "training config", "manifest": "manifest (or its images)",
                    "splits": "split (other training, validation or test images in this fold)"
                    }[why]
            if not ctx.force:
                raise InputError(folder / "run.json", f"this model was trained with another "
                                 f"{what}; use --force to retrain it, or another --runs folder")
            force = True
        config = train_config(ctx, arch, fold)
        tables = train.fold_tables(manifest, splits, ctx.spec.class_names, str(splits_path(ctx)),
                                   validation=config.selection_split)
        if fold not in tables:
            raise InputError(splits_path(ctx), f"fold {fold} is not in the splits", column="fold")
        train_table, val_table = tables[fold]
        monitor_table = None
        if ctx.spec.monitor_test_fold:
            test_tables = (tables if config.selection_split == "test_fold" else
                           train.fold_tables(manifest, splits, ctx.spec.class_names,
                                             str(splits_path(ctx)), validation="test_fold"))
            monitor_table = test_tables[fold][1]
        if config.augment == "offline":
            fold_split = splits if "fold" not in splits.columns else splits[splits["fold"] == fold]
            train_table = train.offline_training_table(manifest, manifest_path(ctx), fold_split,
                                                       config, ctx.spec.class_names, ctx.runs_dir)
        name = ctx.spec.display_names.get(arch, arch)
        fold_text = f" fold {fold}," if len(folds(ctx)) > 1 else ""
        say(ctx, f"training {name} ({arch},{fold_text} {ctx.profile} profile: epochs "
            f"{config.epoch_grid}, {len(train_table)} training / {len(val_table)} validation "
            f"images) in {folder}")
        started = time.perf_counter()
        result = train.train_run(config, train_table, val_table, ctx.spec.class_names, folder,
                                 manifest=manifest_path(ctx), force=force,
                                 verbose=2 if ctx.profile != "ci" else 0,
                                 monitor_table=monitor_table,
                                 extra_record={"fold_images_sha256": fold_images_hash(ctx, fold)})
        (folder / THRESHOLD_FILE).unlink(missing_ok=True)
        say(ctx, f"{name}: selected epoch {result.selected_epoch} (val_loss "
            f"{result.selected_val_loss:.4f}) in {time.perf_counter() - started:.1f} s")
        return result.selected_model


def load_keras_model(path: str | Path):
    """A saved .keras model, uncompiled (prediction and Grad-CAM only). A file whose bytes
    are no .keras model is a WeightsMismatchError saying what they are (Keras would call it
    "File not found")."""
    import keras

    from models.weights import check_weights_content

    check_weights_content(path)
    return keras.saving.load_model(str(path), compile=False)


_MODEL_CACHE: dict[tuple, Any] = {}


def load_model(ctx: StudyContext, arch: str, fold: int = 0):
    """The selected model of `arch` (fold), trained on first use (a margin head's training
    model is returned as its image -> probabilities inference model)."""
    path = model_path(ctx, arch, fold)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _MODEL_CACHE:
        model = load_keras_model(path)
        if len(model.inputs) == 2 and any(layer.name == "margin_head" for layer in model.layers):
            # an ArcFace/CosFace [image, labels] training model -> image -> probabilities
            from models.margins import build_margin_inference_model

            model = build_margin_inference_model(model)
        _MODEL_CACHE[key] = model
    return _MODEL_CACHE[key]


def input_spec(input_shape_hwc: Sequence[int], num_classes: int, transform: str = "minmax"):
    """reproduce.input_pipeline.PipelineSpec for a model input shape (H, W, C)."""
    from reproduce.input_pipeline import PipelineSpec

    height, width, channels = (int(v) for v in input_shape_hwc)
    return PipelineSpec(size_wh=(width, height), channels=channels, num_classes=num_classes,
                        transform=transform)


def _eval_batches(image_paths: Sequence[str | Path], input_shape_hwc: Sequence[int],
                  num_classes: int, batch_size: int, transform: str):
    from reproduce.input_pipeline import ImageTable, eval_dataset

    paths = tuple(str(p) for p in image_paths)
    table = ImageTable(paths, np.zeros(len(paths), dtype=np.int64))
    return eval_dataset(table, input_spec(input_shape_hwc, num_classes, transform),
                        batch_size=batch_size, with_labels=False)


def inputs_for_shape(image_paths: Sequence[str | Path], input_shape_hwc: Sequence[int],
                     num_classes: int, batch_size: int = 32, transform: str = "minmax") -> np.ndarray:
    """(N, H, W, C) float32 model inputs made by the training pipeline's own evaluation
    preprocessing (reproduce.input_pipeline.eval_dataset; minmax: grayscale, bilinear resize,
    per-image min-max; imagenet: resize + centre crop, ImageNet mean/SD)."""
    height, width, channels = (int(v) for v in input_shape_hwc)
    if not len(image_paths):
        return np.zeros((0, height, width, channels), dtype=np.float32)
    dataset = _eval_batches(image_paths, input_shape_hwc, num_classes, batch_size, transform)
    return np.concatenate(list(dataset.as_numpy_iterator()), axis=0).astype(np.float32)


def model_input_shape(ctx: StudyContext, arch: str) -> tuple[int, int, int]:
    """(H, W, C) the architecture is trained at under the profile."""
    from reproduce.train import input_shape_for

    return tuple(int(v) for v in input_shape_for(train_config(ctx, arch)))


def model_transform(ctx: StudyContext, arch: str) -> str:
    """The input transform (reproduce.input_pipeline.TRANSFORMS) the architecture trains with."""
    return train_config(ctx, arch).transform


def model_inputs(ctx: StudyContext, arch: str, image_paths: Sequence[str | Path]) -> np.ndarray:
    """(N, H, W, C) float32: exactly the preprocessing used in training for this architecture."""
    return inputs_for_shape(image_paths, model_input_shape(ctx, arch), len(ctx.spec.class_names),
                            transform=model_transform(ctx, arch))


def predict_probabilities(model, image_paths: Sequence[str | Path], input_shape_hwc: Sequence[int],
                          num_classes: int, batch_size: int = 32,
                          transform: str = "minmax") -> np.ndarray:
    """(N, classes) softmax outputs of the model, float64."""
    if not len(image_paths):
        return np.zeros((0, num_classes), dtype=np.float64)
    dataset = _eval_batches(image_paths, input_shape_hwc, num_classes, batch_size, transform)
    return np.asarray(model.predict(dataset, verbose=0), dtype=np.float64)


def predictions_dir(ctx: StudyContext) -> Path:
    base = ctx.study_dir / "predictions" if ctx.is_phantom else data_dir(ctx) / "predictions"
    return base / ctx.spec.task if ctx.spec.task else base


def probability_columns(ctx: StudyContext) -> list[str]:
    return [f"p_{name}" for name in ctx.spec.class_names]


def predictions(ctx: StudyContext, arch: str) -> pd.DataFrame:
    """One row per image and fold (manifest order within a fold, folds in order).

    Columns: the spec's prediction_columns from image_path, abs_path, case_id, label, subtype,
    split, fold, y_true (the positive class indicator of a binary study, else the class index),
    score (P(positive) of a binary study, else the probability of the predicted class),
    p_<class> for every class, gestational_week, center, mask_path (absolute, or "" when
    none). Cached as runs/<study>/<profile>/predictions/<arch>.csv, keyed on the models' hashes.
    """
    with study_lock(ctx):
        fold_numbers = folds(ctx)
        paths = {fold: model_path(ctx, arch, fold) for fold in fold_numbers}
        manifest, splits = prepared_data(ctx)
        out = predictions_dir(ctx) / f"{arch}.csv"
        key_path = out.with_suffix(".json")
        key = {"model_sha256": (file_sha256(paths[0]) if fold_numbers == [0] else
                                {str(f): file_sha256(p) for f, p in paths.items()}),
               "splits_sha256": file_sha256(splits_path(ctx)),
               "manifest_sha256": manifest_hash(manifest_path(ctx))}
        if out.is_file() and key_path.is_file():
            try:
                if json.loads(key_path.read_text(encoding="utf-8")) == key:
                    return read_predictions(ctx, out)
            except (OSError, ValueError):
                pass
        frames = []
        for fold in fold_numbers:
            part = splits if "fold" not in splits.columns else splits[splits["fold"] == fold]
            frame = prediction_frame(ctx.spec, manifest, part)
            frame["fold"] = fold
            model = load_model(ctx, arch, fold)
            say(ctx, f"predicting {len(frame)} images with {ctx.spec.display_names.get(arch, arch)}"
                + (f" (fold {fold})" if len(fold_numbers) > 1 else ""))
            probabilities = predict_probabilities(model, frame["abs_path"],
                                                  model_input_shape(ctx, arch),
                                                  len(ctx.spec.class_names),
                                                  transform=model_transform(ctx, arch))
            for index, column in enumerate(probability_columns(ctx)):
                frame[column] = probabilities[:, index]
            if ctx.spec.positive_label is not None:
                frame["score"] = probabilities[:, ctx.spec.class_names.index(ctx.spec.positive_label)]
            else:
                frame["score"] = probabilities.max(axis=1) if len(frame) else []
            frames.append(frame)
        frame = pd.concat(frames, ignore_index=True)[list(ctx.spec.prediction_columns)]
        atomic.write_csv(out, frame)
        atomic.write_json(key_path, key)
        return read_predictions(ctx, out)


def prediction_frame(spec: StudySpec, manifest: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """The manifest's rows with their split (no scores yet)."""
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
    elif spec.positive_label is not None:
        subtype = np.where(frame["label"] == spec.positive_label, "unspecified", "normal")
    else:
        subtype = frame["label"].to_numpy()
    frame["subtype"] = subtype
    frame["split"] = frame["image_path"].map(split_of)
    missing = frame["split"].isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0]) + 1
        raise InputError(manifest.attrs.get("path"), "image is not in the splits", row=row,
                         column="image_path")
    if spec.positive_label is not None:
        frame["y_true"] = (frame["label"] == spec.positive_label).astype(int)
    else:
        frame["y_true"] = frame["label"].map({n: i for i, n in enumerate(spec.class_names)}).astype(int)
    frame["gestational_week"] = (manifest["gestational_week"].to_numpy()
                                 if "gestational_week" in manifest.columns else np.nan)
    frame["center"] = (manifest["center"].astype(str).to_numpy()
                       if "center" in manifest.columns else "")
    frame["plane"] = (manifest["plane"].astype(str).to_numpy()
                      if "plane" in manifest.columns else "")
    frame["age_months"] = (manifest["age_months"].to_numpy()
                           if "age_months" in manifest.columns else np.nan)
    frame["sex"] = manifest["sex"].astype(str).to_numpy() if "sex" in manifest.columns else ""
    if "mask_path" in manifest.columns:
        frame["mask_path"] = [str(root / value) if value else ""
                              for value in manifest["mask_path"].fillna("").astype(str)]
    else:
        frame["mask_path"] = ""
    return frame


def read_predictions(ctx: StudyContext, path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"image_path": str, "abs_path": str, "case_id": str,
                                     "label": str, "subtype": str, "split": str, "mask_path": str,
                                     "center": str, "plane": str, "sex": str},
                        keep_default_na=False,
                        na_values={"gestational_week": [""], "age_months": [""]})
    frame["mask_path"] = frame["mask_path"].fillna("").astype(str)
    frame["y_true"] = frame["y_true"].astype(int)
    frame["score"] = frame["score"].astype(float)
    for column in ("gestational_week", "age_months"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def test_rows(ctx: StudyContext, arch: str) -> pd.DataFrame:
    """predictions(ctx, arch) of the test split(s): pooled out-of-fold over every fold; a
    binary study needs both classes."""
    frame = predictions(ctx, arch)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    if ctx.spec.positive_label is not None:
        counts = test["y_true"].value_counts()
        if counts.get(0, 0) == 0 or counts.get(1, 0) == 0:
            raise InputError(manifest_path(ctx), f"the test split holds {counts.get(1, 0)} "
                             f"{ctx.spec.positive_label} and {counts.get(0, 0)} other images; "
                             "the tables need both classes")
    return test


# ----------------------------------------------------------------------------- threshold


def thresholds_on_train(ctx: StudyContext, arch: str, fold: int = 0) -> dict[str, float]:
    """{'max_f1': t, 'youden': t} on the fold's TRAINING split predictions (binary studies)."""
    from reproduce import stats

    frame = predictions(ctx, arch)
    if "fold" in frame.columns:
        frame = frame[frame["fold"] == fold]
    train_rows = frame[frame["split"] == "train"]
    y_true, score = train_rows["y_true"].to_numpy(), train_rows["score"].to_numpy()
    try:
        return {"max_f1": float(stats.threshold_max_f1(y_true, score)),
                "youden": float(stats.threshold_youden(y_true, score))}
    except ValueError as err:
        raise InputError(manifest_path(ctx), f"cannot choose a threshold on the training "
                         f"split: {err}") from None


def operating_threshold(ctx: StudyContext, arch: str, fold: int = 0) -> float:
    """Threshold chosen on the fold's TRAINING split predictions by ctx.threshold_rule (max_f1:
    stats.threshold_max_f1, the paper's; youden: stats.threshold_youden); also written to
    runs/.../<arch>/fold<k>/threshold.json for the predict targets. A call is positive when
    score >= threshold. Youden's J can give +inf (no cut-off beats chance): every image is then
    called negative."""
    with study_lock(ctx):
        values = thresholds_on_train(ctx, arch, fold)
        path = model_path(ctx, arch, fold)
        record = {"threshold": values[ctx.threshold_rule], "rule": ctx.threshold_rule,
                  "thresholds": values, "chosen_on": "training split predictions",
                  "call": f"{ctx.spec.positive_label} when P({ctx.spec.positive_label}) >= threshold",
                  "model": path.name, "model_sha256": file_sha256(path)}
        atomic.write_json(path.parent / THRESHOLD_FILE, record)
        return float(values[ctx.threshold_rule])


def selection_record(ctx: StudyContext, arch: str, fold: int = 0) -> dict[str, Any]:
    """reproduce.train's selection.json of the architecture's run."""
    from reproduce.train import SELECTION_FILE

    path = model_path(ctx, arch, fold).parent / SELECTION_FILE
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- results


def results_label(ctx: StudyContext) -> str:
    from data_prep.provenance import portable_path

    if ctx.is_phantom:
        return f"PHANTOM (synthetic) data, {ctx.profile} profile -- not the paper's data"
    return f"user data: {portable_path(ctx.manifest)}"


def results_config(ctx: StudyContext, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What results_dir/run.json records as `config` (compared before overwriting)."""
    from data_prep.provenance import portable_path

    return {
        "study": ctx.study, "profile": ctx.profile, "seed": ctx.seed,
        "manifest": None if ctx.is_phantom else portable_path(ctx.manifest),
        "data": "phantom (de-identified copy)" if ctx.is_phantom else "user manifest",
        "readers": portable_path(ctx.readers),
        **dict(extra or {}),
        "bootstrap_replicates": ctx.n_boot,
        "training": {arch: train_config(ctx, arch).to_dict() for arch in ctx.spec.architectures},
    }


def _results_config(ctx: StudyContext) -> dict[str, Any]:
    hook = ctx.spec.extra.get("results_config")
    return hook(ctx) if hook else results_config(ctx)


def _update_run_json(ctx: StudyContext, name: str, written: Sequence[Path]) -> Path:
    from data_prep.provenance import check_same_config, json_dumps, write_run_json

    config = _results_config(ctx)
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
    """The results folder's run.json is shared by every target: serialise its updates (an
    flock on the folder itself, so results/ holds only results)."""
    return _waiting_lock(ctx.results_dir, "results", ctx.study)


def check_results_dir(ctx: StudyContext) -> None:
    """Refuse early (before any training) when results_dir holds another config's results."""
    from data_prep.provenance import check_same_config

    check_same_config(ctx.results_dir, _results_config(ctx), force=ctx.force)


def write_table(ctx: StudyContext, name: str, table: pd.DataFrame, markdown: str) -> tuple[Path, Path]:
    """results_dir/<name>.csv and .md, atomic; updates results_dir/run.json."""
    check_results_dir(ctx)
    csv_path, md_path = ctx.results_dir / f"{name}.csv", ctx.results_dir / f"{name}.md"
    atomic.write_csv(csv_path, table)
    atomic.write_text(md_path, markdown if markdown.endswith("\n") else markdown + "\n")
    with _results_lock(ctx):
        _update_run_json(ctx, name, [csv_path, md_path])
    say(ctx, f"wrote {csv_path} and {md_path.name}")
    return csv_path, md_path


def write_figure(ctx: StudyContext, name: str, fig) -> Path:
    """results_dir/<name>.png (atomic, dpi 150); updates results_dir/run.json."""
    check_results_dir(ctx)
    path = ctx.results_dir / f"{name}.png"
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    with _results_lock(ctx):
        _update_run_json(ctx, name, [path])
    say(ctx, f"wrote {path}")
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


def threshold_text(threshold: float) -> str:
    """A threshold as printed in tables: 0.163, 2.4e-06, inf."""
    if not np.isfinite(threshold):
        return str(threshold)
    return f"{threshold:.3f}" if abs(threshold) >= 0.001 or threshold == 0 else f"{threshold:.2e}"


# ----------------------------------------------------------------------------- cross-validation

CV_KINDS = ("holdout", "kfold", "lopo", "loco")


def cross_validation_splits(manifest: pd.DataFrame, cv: str, *, k: int = 5, val_size: float = 0.1,
                            test_size: float = 0.2, stratify: str = "label",
                            seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """(splits, how they were made) for a study's `--cv` choice; no fold ever splits a patient.

    holdout: one case-level train/val/test split (fold 0); kfold: stratified group k-fold over
    cases; lopo: leave one patient (case) out per fold; loco: leave one centre out per fold.
    In every kind the validation images of a fold come from its TRAINING cases (`val_size` of
    them, per class), so model selection never reads the test fold.
    """
    from data_prep import splits as split_mod

    if cv == "holdout":
        splits = split_mod.case_level_split(manifest, test_size=test_size, val_size=val_size,
                                            stratify=stratify, seed=seed)
    elif cv == "kfold":
        splits = split_mod.stratified_group_kfold(manifest, k=k, stratify=stratify, seed=seed,
                                                  val_size=val_size)
    elif cv in ("lopo", "loco"):
        group = "case_id" if cv == "lopo" else "center"
        if group not in manifest.columns:
            raise InputError(manifest.attrs.get("path"), f"--cv {cv} needs a '{group}' column",
                             column=group)
        splits = split_mod.leave_one_group_out(manifest, group=group, val_size=val_size,
                                               stratify=stratify, seed=seed)
    else:
        raise InputError(None, f"--cv must be one of {', '.join(CV_KINDS)}, got {cv!r}")
    info = {"cv": cv, "stratify": stratify, "val_size": val_size,
            **({"k": k} if cv == "kfold" else {}),
            **({"test_size": test_size} if cv == "holdout" else {}),
            "validation": "from each fold's training cases (never the test fold)"}
    return splits, info
