"""What every run records beside its results (`run.json`): config, seed, versions, commit, data.

A reviewer can tell from `run.json` exactly which code, libraries, settings and images
produced a result folder; `check_same_config` lets a run refuse to overwrite results made
with another config unless told `--force`.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from . import atomic
from .errors import InputError

_TRACKED_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "tf-keras-vis", "numpy", "scipy",
                     "scikit-learn", "statsmodels", "pandas", "opencv-python-headless",
                     "pillow", "pydicom", "matplotlib", "imagehash", "mtcnn", "scikit-image")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(repo: str | Path | None = None) -> str:
    """The commit of the code that ran, with '+dirty' when the work tree had changes outside
    results/ (a run rewrites the committed results it regenerates; that is its output, not
    a change of the code that ran)."""
    repo = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)results"],
                               cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_hash(manifest_path: str | Path) -> str:
    """Hash of the manifest text and of every image it lists (so edited pixels change it).

    Image paths are read from the `image_path` column relative to the manifest's folder.
    """
    import pandas as pd

    manifest_path = Path(manifest_path)
    frame = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    digest = hashlib.sha256(manifest_path.read_bytes())
    for rel in frame.get("image_path", []):
        digest.update(rel.encode())
        digest.update(sha256_file(manifest_path.parent / rel).encode())
    return digest.hexdigest()


def portable_path(path: str | Path | None) -> str | None:
    """A path as a run record may keep it: relative to the working folder when inside it,
    else '.../<file name>'. Run records are committed and shared: an absolute path names the
    machine, its user and, on hospital data, folders that may hold patient names."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return f".../{path.name}"


def command_line(argv: list[str] | None = None) -> str:
    """sys.argv without machine paths: 'python -m reproduce all --force' for a module run."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    first = Path(argv[0])
    if first.name == "__main__.py":
        head = f"python -m {first.parent.name}"
    elif first.name in ("-c", ""):
        head = "python -c ..."
    else:
        head = first.name
    return " ".join([head] + [portable_path(a) if a.startswith("/") else a for a in argv[1:]])


def run_record(config: Mapping[str, Any], *, seed: int | None, manifest: str | Path | None = None,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "config": dict(config),
        "seed": seed,
        "versions": library_versions(),
        "git_commit": git_commit(),
        "command": command_line(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "manifest": portable_path(manifest),
        "manifest_sha256": None if manifest is None else manifest_hash(manifest),
    }
    if extra:
        record.update(extra)
    return record


def write_run_json(out_dir: str | Path, config: Mapping[str, Any], *, seed: int | None,
                   manifest: str | Path | None = None, extra: Mapping[str, Any] | None = None,
                   force: bool = False) -> Path:
    """Write `out_dir/run.json`, refusing (InputError) when it holds another config, or the
    same config run on another manifest (its text or any image differs: what is in
    `out_dir` was made from other data, and rewriting run.json would claim otherwise)."""
    out_dir = Path(out_dir)
    check_same_config(out_dir, config, force=force)
    record = run_record(config, seed=seed, manifest=manifest, extra=extra)
    if not force and manifest is not None:
        check_same_manifest(out_dir, record["manifest_sha256"])
    return atomic.write_json(out_dir / "run.json", record)


def check_same_manifest(out_dir: str | Path, sha256: str) -> None:
    """Raise InputError when out_dir/run.json records another manifest hash."""
    import json

    path = Path(out_dir) / "run.json"
    try:
        previous = json.loads(path.read_text(encoding="utf-8")).get("manifest_sha256")
    except (OSError, ValueError, AttributeError):
        return
    if previous and previous != sha256:
        raise InputError(path, f"what is here was made from another manifest (sha256 "
                               f"{previous[:12]}..., this one {sha256[:12]}...: its text or an "
                               f"image differs); use --force to redo it, or choose another folder")


def check_same_config(out_dir: str | Path, config: Mapping[str, Any], *, force: bool = False) -> None:
    """Raise InputError when out_dir/run.json was written by a different config (unless force)."""
    import json

    path = Path(out_dir) / "run.json"
    if force or not path.exists():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8")).get("config")
    except (OSError, ValueError):
        return
    current = json.loads(json_dumps(dict(config)))
    if previous != current:
        changed = sorted(k for k in set(previous or {}) | set(current)
                         if (previous or {}).get(k) != current.get(k))
        raise InputError(path, "results here come from another config (differs in: "
                         f"{', '.join(changed)}); use --force to overwrite or choose another --out")


def json_dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True, default=str)
