"""Results and run records carry no absolute path of the machine they ran on (issue "Trust",
part 1): a results folder is shared, committed and compared across machines, and a path like
/home/<user>/... or the temporary folder of one run says who ran it where and makes two
otherwise identical runs differ byte for byte.

The ci-profile Pgds study (`pgds_ci_context`: runs/ and results/ under a session temporary
folder) writes its tables; every byte of the results folder, and every record of the runs
folder (run.json, state.json, selection.json, prepared.json, logs, CSV, Markdown, text), is
searched for that temporary folder, $HOME, the repository's folder and the working folder
(the predictions caches of runs/ excepted: WORK_CACHES).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from reproduce.pgds import table1, table2, table3

REPO = Path(__file__).resolve().parent.parent
RECORD_SUFFIXES = {".json", ".csv", ".md", ".txt", ".log"}
# Work caches of runs/, not records: the predictions keep each image's abs_path/mask_path so
# Grad-CAM finds the frames; they never leave the machine (runs/ is git-ignored).
WORK_CACHES = ("predictions",)


def machine_paths(*roots: Path) -> set[str]:
    """The absolute paths a record must not hold: the run's folders, $HOME, repo, cwd."""
    paths = {str(REPO), str(REPO.resolve()), os.getcwd()}
    home = os.environ.get("HOME")
    if home and home != "/":
        paths.add(home)
    for root in roots:
        paths |= {str(root), str(root.resolve())}
    return {p for p in paths if len(p) > 1}


def files_holding(folder: Path, needles: set[str], suffixes: set[str] | None = None,
                  skip: tuple[str, ...] = ()) -> list[str]:
    """'file: path' for each file under `folder` whose bytes hold one of `needles`."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if suffixes is not None and path.suffix not in suffixes:
            continue
        if set(path.relative_to(folder).parts) & set(skip):
            continue
        data = path.read_bytes()
        found += [f"{path.relative_to(folder)}: {needle}" for needle in sorted(needles)
                  if needle.encode() in data]
    return found


def test_files_holding_finds_a_path(tmp_path):
    """The search itself can fail: a record naming the folder is found, a clean one is not."""
    (tmp_path / "run.json").write_text(f'{{"manifest": "{tmp_path}/m.csv"}}')
    (tmp_path / "clean.json").write_text('{"manifest": "m.csv"}')
    found = files_holding(tmp_path, machine_paths(tmp_path))
    assert f"run.json: {tmp_path}" in found and not [f for f in found if f.startswith("clean")]
    assert not files_holding(tmp_path, {str(tmp_path)}, {".md"})


@pytest.mark.parametrize("module", [table1, table2, table3], ids=["table1", "table2", "table3"])
def test_ci_results_and_records_hold_no_machine_path(pgds_ci_context, module):
    ctx = pgds_ci_context
    argv = ["--profile", ctx.profile, "--runs", str(ctx.runs_dir), "--results",
            str(ctx.results_dir), "--seed", str(ctx.seed)]
    assert module.main(argv) == 0
    base = ctx.results_dir.parent.parent
    needles = machine_paths(base, ctx.runs_dir, ctx.results_dir)
    leaks = files_holding(ctx.results_dir, needles) \
        + files_holding(ctx.runs_dir, needles, RECORD_SUFFIXES, WORK_CACHES)
    assert not leaks, "absolute paths in results or run records:\n" + "\n".join(leaks[:30])
