"""A study over several seeds, and the spread of its headline numbers (every study's `seeds`).

    python -m reproduce <study> seeds --profile default --seeds 0,1,2

Each seed is a new phantom, split, initialisation, augmentation stream and bootstrap. The
context's own seed (`--seed`, default 0) is the main run (`--runs`, `--results`: what
./run_all.sh writes); every other seed s runs `<study> all --seed s` into `<runs>/seed<s>` and
`<results>/seeds/seed<s>/` (trained models are reused when present; the main run is not
re-run when its results folder records a finished `all` of this config, so its timings stay
those of the run that trained). Then writes
`<results>/seed_spread.csv` and `.md`: every headline number per seed (the study's
`headline.build_headline`), their mean, SD and range, the interval another run is expected to
fall in (reproduce/expectation.py), and the study's targets checked for the mean and the worst
seed. A study supplies a `SeedStudy`: how to run its `all` for one seed, its headline table and
its targets.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from data_prep.errors import InputError
from reproduce import expectation, study

NAME = "seed_spread"


@dataclass(frozen=True)
class SeedStudy:
    """What `seeds` needs of a study. `run_all(argv)` is its `all` target's main; `argv` its
    shared flags (with --seed, --runs and --results); `build_headline(results_dir)` reads one
    seed's headline table from its written tables; `key` names the headline's row column
    ("model", "task") and `key_title` its column title; `targets[(key, metric)]` is a
    lower bound that the issue set on the default phantom; `architecture` the model whose
    training length the markdown states."""

    title: str
    run_all: Callable[[list[str]], int]
    build_headline: Callable[[Path], pd.DataFrame]
    key: str
    key_title: str
    targets: Mapping[tuple[str, str], float]
    say: Callable[[str], None]
    # The architecture whose epochs the note on float noise counts (reproduce/config.py).
    architecture: str


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(None, f"--seeds must be comma-separated integers such as 0,1,2; "
                               f"got {text!r}") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise InputError(None, f"--seeds needs at least two different seeds >= 0, got {text!r}")
    return seeds


def seed_folders(ctx: study.StudyContext, seed: int) -> tuple[Path, Path]:
    """(runs, results) of one seed: the context's own for its seed, else seed<N> folders."""
    if seed == ctx.seed:
        return ctx.runs_dir, ctx.results_dir
    return ctx.runs_dir / f"seed{seed}", ctx.results_dir / "seeds" / f"seed{seed}"


def target_lines(spread: pd.DataFrame, targets: Mapping[tuple[str, str], float]) -> list[str]:
    lines = []
    for (key, metric), target in targets.items():
        row = spread[(spread["key"] == key) & (spread["metric"] == metric)]
        if row.empty:
            continue
        row = row.iloc[0]
        values = [float(v) for v in str(row["values"]).split(";")]
        worst = min(values)
        verdict = ("holds for the mean and the worst seed" if worst >= target else
                   "holds for the mean, NOT for the worst seed" if row["mean"] >= target else
                   "does NOT hold, not even for the mean")
        lines.append(f"- {key} {metric} >= {target:g}: mean {row['mean']:.3f}, worst seed "
                     f"{worst:.3f} -- {verdict}.")
    return lines


def markdown(ctx: study.StudyContext, spec: SeedStudy, spread: pd.DataFrame,
             seeds: Sequence[int]) -> str:
    from reproduce import config as cfg

    epochs = cfg.make_config(ctx.study, spec.architecture, ctx.profile).max_epochs
    shown = pd.DataFrame({
        spec.key_title: spread["key"], "metric": spread["metric"],
        **{f"seed {s}": [f"{float(v.split(';')[i]):.3f}" for v in spread["values"]]
           for i, s in enumerate(seeds)},
        "mean ± SD": [f"{m:.3f} ± {s:.3f}" for m, s in zip(spread["mean"], spread["sd"])],
        "expected for another run": [f"{lo:.3f}–{hi:.3f}" for lo, hi in
                                     zip(spread["expect_lo"], spread["expect_hi"])],
    })
    return "\n".join([
        f"# Headline numbers over {len(seeds)} seeds ({spec.title}, {ctx.profile} profile)",
        "",
        f"**{study.results_label(ctx)}; each seed a new phantom, split and initialisation.**",
        "",
        study.markdown_table(shown),
        "",
        *target_lines(spread, spec.targets),
        "",
        "- 'Expected for another run': mean ± t(0.975, n-1) · SD · sqrt(1 + 1/n), at least "
        f"± {expectation.MIN_HALF_WIDTH:g}, within [0, 1] (reproduce/expectation.py). A run on "
        f"another CPU differs from the committed one by float noise that {epochs} epochs of "
        "training "
        "turn into another trajectory: judge it with `python -m reproduce compare --expect "
        "results/ YOUR_RESULTS/`, not with the float-noise tolerances of a plain compare.",
        f"- Seed {ctx.seed} is the main run (the tables beside this file); the others are in "
        "seeds/seed<N>/.",
    ]) + "\n"


def finished(results_dir: Path) -> bool:
    """The results folder records a finished `all`: its run.json lists the headline, the last
    step of every study's `all` (its config was checked against the context's before)."""
    import json

    try:
        record = json.loads((results_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return "headline" in (record.get("outputs") or {})


def run(ctx: study.StudyContext, spec: SeedStudy, seeds: Sequence[int],
        shared_argv: list[str]) -> int:
    """Run `all` for every seed (reusing finished work), then write seed_spread.csv / .md."""
    study.check_results_dir(ctx)
    headlines = {}
    for position, seed in enumerate(seeds, start=1):
        runs, results = seed_folders(ctx, seed)
        spec.say(f"=== seed {seed} ({position}/{len(seeds)}): runs {runs}, results {results} ===")
        argv = list(shared_argv)
        for flag, value in (("--seed", seed), ("--runs", runs), ("--results", results)):
            argv[argv.index(flag) + 1] = str(value)
        if seed == ctx.seed and not ctx.force and finished(Path(results)):
            spec.say(f"seed {seed}: {results} holds a finished run of this config (its "
                     f"headline is written); not re-run (--force re-runs it)")
        else:
            code = spec.run_all(argv)
            if code:
                return code
        headlines[seed] = spec.build_headline(Path(results))
    spread = expectation.seed_spread(headlines, key=spec.key, table="headline.csv")
    if spread.empty:
        raise InputError(ctx.results_dir, "no headline value is finite in two seeds")
    study.write_table(ctx, NAME, spread, markdown(ctx, spec, spread, seeds))
    for line in target_lines(spread, spec.targets):
        spec.say(line[2:])
    return 0


def add_seeds_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", default="0,1,2",
                        help="comma-separated seeds, at least two (default 0,1,2); --seed is "
                             "the main run's")


def command(spec: SeedStudy, prog: str, description: str,
            add_common_args: Callable[[argparse.ArgumentParser], None],
            context_from_args: Callable[[argparse.Namespace], study.StudyContext],
            common_argv: Callable[[argparse.Namespace], list[str]]):
    """(build_parser, main) of a study's `seeds` target, from its shared-flag helpers."""
    def build_parser() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=prog, description=description)
        add_common_args(parser)
        add_seeds_arg(parser)
        return parser

    def body(args: argparse.Namespace) -> int:
        return run(context_from_args(args), spec, parse_seeds(args.seeds), common_argv(args))

    def main(argv: Sequence[str] | None = None) -> int:
        return study.run_cli(body, build_parser(), argv)

    return build_parser, main


def headline_command(build_headline: Callable[[Path], pd.DataFrame],
                     markdown: Callable[[study.StudyContext, pd.DataFrame], str], prog: str,
                     description: str,
                     add_common_args: Callable[[argparse.ArgumentParser], None],
                     context_from_args: Callable[[argparse.Namespace], study.StudyContext]):
    """(run, build_parser, main) of a study's `headline` target: build the headline from the
    tables in the results folder and write headline.csv / .md."""
    def run(ctx: study.StudyContext) -> tuple:
        table = build_headline(ctx.results_dir)
        return study.write_table(ctx, "headline", table, markdown(ctx, table))

    def build_parser() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=prog, description=description)
        add_common_args(parser)
        return parser

    def main(argv: Sequence[str] | None = None) -> int:
        def body(args: argparse.Namespace) -> int:
            run(context_from_args(args))
            return 0

        return study.run_cli(body, build_parser(), argv)

    return run, build_parser, main
