"""`python -m reproduce all` (what ./run_all.sh runs): every study's tables and figures, one
progress line per step with the overall elapsed time and ETA, then `results/README.md`.

    python -m reproduce all [--profile ci|default|paper] [--studies pgds] [--runs runs]
        [--results results] [--seed 0] [--force]

Each study runs its own `all` target (reproduce/<study>/all.py) into `<results>/<study>/`.
The ETA adds up the expected seconds of the steps still to come: each step's time in the
previous run of the same profile (`<results>/<study>/timings.csv`), else `EXPECTED_SECONDS`
(measured on this project's 2-core CPU). `results/README.md` puts every study's headline
table (the paper beside the reproduced numbers) and figures on one page, each labelled with
its data (PHANTOM or the user's).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from data_prep import atomic
from data_prep.errors import InputError, report_bad_input

PROFILE_NAMES = ("ci", "default", "paper")
# study -> (module with TARGETS and run_targets, the results table that leads its section)
STUDIES: dict[str, tuple[str, str]] = {"pgds": ("reproduce.pgds.all", "table1"),
                                       "cns": ("reproduce.cns.all", "accuracy"),
                                       "gs_vgg16": ("reproduce.gs_vgg16.all", "table2"),
                                       "ps_face": ("reproduce.ps_face.all", "table")}
# Seconds per step measured on the 2-core CPU (fresh clone, nothing else running), used for the
# ETA when no earlier timings.csv of the same profile exists.
EXPECTED_SECONDS = {
    ("pgds", "ci"): {"train": 60, "table1": 6, "figure3": 2, "figure4": 3},
    ("pgds", "default"): {"train": 1300, "table1": 30, "figure3": 3, "figure4": 5},
    ("pgds", "paper"): {"train": 36000, "table1": 60, "figure4": 30},
    ("cns", "ci"): {"train": 100, "accuracy": 8, "selection": 8, "heatmaps": 15},
    ("cns", "default"): {"train": 875, "accuracy": 21, "selection": 2, "heatmaps": 38},
    ("cns", "paper"): {"train": 20000, "heatmaps": 120},
    ("gs_vgg16", "ci"): {"train": 40, "table2": 5, "figure4": 2, "heatmaps": 5},
    ("gs_vgg16", "default"): {"train": 400, "table2": 10, "figure4": 2, "heatmaps": 15},
    ("gs_vgg16", "paper"): {"train": 7200, "heatmaps": 60},
    ("ps_face", "ci"): {"train": 90, "table": 5, "confusion": 2, "roundtrip": 10},
}
DEFAULT_STEP_SECONDS = 1.0
# What `all` (./run_all.sh) runs unless --studies says otherwise: every study that exists.
DEFAULT_STUDIES = ("pgds", "cns", "gs_vgg16")   # ps_face: --studies ps_face (budget not checked yet)


def say(message: str) -> None:
    print(f"[all] {message}", file=sys.stderr, flush=True)


def expected_steps(study: str, profile: str, targets: Sequence[str],
                   results_dir: Path) -> dict[str, float]:
    """Expected seconds per target: the previous run's timings.csv of this profile, else the
    measured defaults."""
    expected = {t: float(EXPECTED_SECONDS.get((study, profile), {}).get(t, DEFAULT_STEP_SECONDS))
                for t in targets}
    timings, record = results_dir / "timings.csv", results_dir / "run.json"
    try:
        same_profile = json.loads(record.read_text(encoding="utf-8"))["config"]["profile"] == profile
        previous = pd.read_csv(timings).set_index("target")["seconds"].to_dict() if same_profile else {}
    except (OSError, ValueError, KeyError, TypeError):
        previous = {}
    for target in targets:
        if target in previous and pd.notna(previous[target]):
            expected[target] = float(previous[target])
    # A run that reused its models spent ~0 s on `train`; its "trained <arch>" rows keep what
    # training cost, which is what a fresh run will spend.
    trained = sum(float(v) for k, v in previous.items() if str(k).startswith("trained "))
    if "train" in expected and trained > expected["train"]:
        expected["train"] = trained
    return expected


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


class Progress:
    """One line per step: `[k/N] study target -- elapsed E, ETA R`."""

    def __init__(self, plan: Sequence[tuple[str, str, float]]):
        self.plan = list(plan)            # (study, target, expected seconds)
        self.started = time.perf_counter()
        self.done = 0

    def step(self, study: str, target: str) -> None:
        position = next(i for i, (s, t, _) in enumerate(self.plan) if (s, t) == (study, target))
        remaining = sum(seconds for _, _, seconds in self.plan[position:])
        elapsed = time.perf_counter() - self.started
        say(f"[{position + 1}/{len(self.plan)}] {study} {target} -- elapsed "
            f"{duration_text(elapsed)}, ETA {duration_text(remaining)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce all",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="default",
                        help="ci: tiny (tests); default: laptop CPU (./run_all.sh); paper: the "
                             "papers' settings for a GPU (default: default)")
    parser.add_argument("--studies", default=",".join(DEFAULT_STUDIES),
                        help=f"comma-separated studies to run, of {', '.join(STUDIES)} "
                             f"(default: {','.join(DEFAULT_STUDIES)})")
    parser.add_argument("--runs", type=Path, default=Path("runs"),
                        help="git-ignored work folder (default: runs)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="results root; each study writes <results>/<study>/ (default: results)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every study (default: 0)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite results and retrain models made with another config")
    return parser


def _studies(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STUDIES]
    if unknown or not chosen:
        raise InputError(None, f"--studies: unknown study '{(unknown or [text])[0]}' (choose from "
                               f"{', '.join(STUDIES)})")
    return chosen


def run(args: argparse.Namespace) -> int:
    studies = _studies(args.studies)
    modules = {study: importlib.import_module(STUDIES[study][0]) for study in studies}
    plan = []
    for study in studies:
        targets = modules[study].TARGETS
        expected = expected_steps(study, args.profile, targets, args.results / study)
        plan += [(study, target, expected[target]) for target in targets]
    say(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}, {len(plan)} steps, "
        f"expected about {duration_text(sum(s for _, _, s in plan))} ({args.profile} profile)")
    progress = Progress(plan)
    for study in studies:
        argv = ["--profile", args.profile, "--runs", str(args.runs),
                "--results", str(args.results / study), "--seed", str(args.seed)]
        if args.force:
            argv.append("--force")
        code = modules[study].main(argv, on_step=lambda target, s=study: progress.step(s, target))
        if code:
            say(f"{study} failed with exit code {code}; stopping")
            return code
    index = write_results_index(args.results, studies)
    say(f"all done in {duration_text(time.perf_counter() - progress.started)}; {index}")
    return 0


# ----------------------------------------------------------------------------- results/README.md


def _table_lines(markdown: str) -> list[str]:
    """The first markdown table of a results .md file."""
    lines = markdown.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| ")), None)
    if start is None:
        return []
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def study_section(results: Path, study: str) -> list[str]:
    folder = results / study
    record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    lead = STUDIES.get(study, ("", "table1"))[1]
    lines = [f"## {study}", "", f"**{record.get('results_label', 'unlabelled data')}** "
             f"(commit {str(record.get('git_commit', 'unknown'))[:10]}, seed {record.get('seed')})", ""]
    lead_md = folder / f"{lead}.md"
    if lead_md.is_file():
        text = lead_md.read_text(encoding="utf-8")
        title = text.splitlines()[0].lstrip("# ").strip() if text else lead
        lines += [f"{title} ([full table]({study}/{lead}.md))", "", *_table_lines(text), ""]
    spread = folder / "seed_spread.md"
    if spread.is_file():
        lines += [f"Spread over seeds ([seed_spread.md]({study}/seed_spread.md)):", "",
                  *[line for line in spread.read_text(encoding="utf-8").splitlines()
                    if line.startswith("- ") and ">=" in line], ""]
    others = sorted(p.name for p in folder.glob("*.md") if p.name not in (f"{lead}.md",))
    if others:
        lines += ["Tables: " + ", ".join(f"[{name[:-3]}]({study}/{name})" for name in others), ""]
    for figure in sorted(folder.glob("*.png")):
        lines += [f"![{study} {figure.stem}]({study}/{figure.name})", ""]
    return lines


def write_results_index(results: Path, studies: Sequence[str]) -> Path:
    """results/README.md: every study with results (run.json) on one page."""
    present = [s for s in STUDIES if (results / s / "run.json").is_file()]
    lines = ["# Results", "",
             "Written by `./run_all.sh` (`python -m reproduce all`). Every number below was "
             "produced by the code; PHANTOM results come from synthetic images with known "
             "ground truth and are not the papers' numbers.", ""]
    for study in present:
        lines += study_section(results, study)
    path = results / "README.md"
    atomic.write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return report_bad_input(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
