"""Atomic writes: nothing half-written is ever left where a result belongs.

Each writer goes to a temporary file in the destination's folder and is renamed into place
(`os.replace` is atomic on one file system). `staged_dir` does the same for a whole output
folder: it is built beside the destination and moved in only when complete. `folder_lock`
keeps two processes out of one run or results folder at a time.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success rename it onto `dest`, else delete it.

    `suffix` defaults to dest's own suffix so libraries that infer the format from the
    file name (cv2.imwrite, matplotlib, keras) still work.
    """
    dest = Path(dest)
    if dest.is_dir():   # os.replace would fail late (EBUSY for '.', EISDIR) after the work
        from .errors import InputError

        raise InputError(dest, "is a folder; give a file name")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix if suffix is not None else dest.suffix,
                               dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_folder_target(path: str | Path, flag: str) -> Path:
    """Refuse, before any work, an output folder that cannot be one: `path` or the first of
    its ancestors that exists is a file. Returns `path`."""
    from .errors import InputError

    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise InputError(candidate, f"exists and is not a folder; choose another {flag}")
            break
    return path


# Folders this process holds a lock on (resolved path -> depth): a lock is re-entrant within a
# process (flock on a second descriptor of the same folder would refuse its own holder).
_HELD_LOCKS: dict[Path, int] = {}


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str, *, wait: bool = False,
                on_wait: Callable[[], None] | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if absent) while the block runs. Another
    process holding it: refused at once with one line (InputError, exit 2), or with `wait`
    waited for (`on_wait()` called first, to say so). An flock on the folder itself: no lock
    file to leave behind or commit, and the kernel releases it when the holder dies, SIGKILL
    included. Re-entrant within a process."""
    import fcntl

    from .errors import InputError

    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]   # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _HELD_LOCKS:
        _HELD_LOCKS[key] += 1
        try:
            yield folder
        finally:
            _HELD_LOCKS[key] -= 1
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise InputError(folder, f"this {what} folder is in use by another running "
                                 "command; wait for it to finish, or choose another folder") from None
            if on_wait is not None:
                on_wait()
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        _HELD_LOCKS[key] = 1
        try:
            yield folder
        finally:
            del _HELD_LOCKS[key]
    finally:
        os.close(descriptor)   # releases the lock
        for made in created:   # nothing was written: leave no empty folder behind
            if made.is_dir() and not any(made.iterdir()):
                made.rmdir()


def write_bytes(dest: str | Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: str | Path, text: str) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(dest)


def write_json(dest: str | Path, obj: Any) -> Path:
    return write_text(dest, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(dest: str | Path, frame) -> Path:
    """Write a pandas DataFrame as CSV without the index."""
    with atomic_path(dest) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(dest)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, another user's
        return True
    return True


def remove_stale_stages(dest: str | Path) -> list[Path]:
    """Remove the `.<name>.staging.<pid>.*` and `.<name>.old.<pid>.*` folders that a killed
    `staged_dir` left beside `dest` (those of live processes are another run's, kept; names
    without a PID are from before PIDs were recorded, removed). A kill between moving the old
    `dest` aside and moving the new one in leaves no `dest`: the old one is put back first.
    Returns what was removed."""
    dest = Path(dest)
    removed = []
    if not dest.parent.is_dir():
        return removed
    for kind in ("old", "staging"):   # old first: it may hold the only copy of dest
        for folder in sorted(dest.parent.glob(f".{dest.name}.{kind}.*")):
            parts = folder.name[len(dest.name) + 2:].split(".")
            pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None
            if not folder.is_dir() or (pid is not None and (pid == os.getpid() or _process_alive(pid))):
                continue
            previous = folder / dest.name
            if kind == "old" and previous.is_dir() and not dest.exists():
                os.replace(previous, dest)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def staged_dir(dest: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a sibling temp folder and move it onto `dest` only on success.

    If `dest` exists and `overwrite` is False, files from the staged folder are merged into it
    (each file replaced atomically); with `overwrite` the old folder is replaced whole.
    On any exception the staged folder is removed and `dest` is left as it was. A process
    killed inside (SIGKILL runs no `finally`) leaves its folders behind, named with its PID:
    the next call for the same `dest` removes those of dead processes (`remove_stale_stages`).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(dest)
    pid = os.getpid()
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging.{pid}.", dir=dest.parent))
    try:
        yield stage
        if not dest.exists():
            os.replace(stage, dest)
        elif overwrite:
            trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.{pid}.", dir=dest.parent))
            os.replace(dest, trash / dest.name)
            os.replace(stage, dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            for src in sorted(stage.rglob("*")):
                if src.is_file():
                    target = dest / src.relative_to(stage)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, target)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
