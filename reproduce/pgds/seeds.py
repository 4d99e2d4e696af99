"""`python -m reproduce pgds seeds`: the Pgds study over several seeds, and the spread.

    python -m reproduce pgds seeds --profile default --seeds 0,1,2

Each seed is a new phantom, split, initialisation, augmentation stream and bootstrap. The
context's own seed (`--seed`, default 0) is the main run (`--runs`, `--results`: what
./run_all.sh writes); every other seed s runs `pgds all --seed s` into `<runs>/seed<s>` and
`<results>/seeds/seed<s>/` (trained models are reused when present). Then writes
`<results>/seed_spread.csv` and `.md`: every headline number (reproduce/pgds/headline.py) per
seed, their mean, SD and range, the interval another run is expected to fall in
(reproduce/expectation.py), and the issue's targets checked for the mean and the worst seed.
On the default profile each extra seed costs about one ./run_all.sh (about 20 minutes).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from data_prep.errors import InputError
from reproduce import expectation
from reproduce.pgds import all as pgds_all
from reproduce.pgds import headline, pipeline

NAME = "seed_spread"


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(None, f"--seeds must be comma-separated integers such as 0,1,2; "
                               f"got {text!r}") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise InputError(None, f"--seeds needs at least two different seeds >= 0, got {text!r}")
    return seeds


def seed_folders(ctx: pipeline.StudyContext, seed: int) -> tuple[Path, Path]:
    """(runs, results) of one seed: the context's own for its seed, else seed<N> folders."""
    if seed == ctx.seed:
        return ctx.runs_dir, ctx.results_dir
    return ctx.runs_dir / f"seed{seed}", ctx.results_dir / "seeds" / f"seed{seed}"


def _target_lines(spread: pd.DataFrame) -> list[str]:
    lines = []
    for (model, metric), target in headline.TARGETS.items():
        row = spread[(spread["key"] == model) & (spread["metric"] == metric)]
        if row.empty:
            continue
        row = row.iloc[0]
        values = [float(v) for v in str(row["values"]).split(";")]
        worst = min(values)
        verdict = ("holds for the mean and the worst seed" if worst >= target else
                   "holds for the mean, NOT for the worst seed" if row["mean"] >= target else
                   "does NOT hold, not even for the mean")
        lines.append(f"- {model} {metric} >= {target:g}: mean {row['mean']:.3f}, worst seed "
                     f"{worst:.3f} -- {verdict}.")
    return lines


def markdown(ctx: pipeline.StudyContext, spread: pd.DataFrame, seeds: Sequence[int]) -> str:
    shown = pd.DataFrame({
        "model": spread["key"], "metric": spread["metric"],
        **{f"seed {s}": [f"{float(v.split(';')[i]):.3f}" for v in spread["values"]]
           for i, s in enumerate(seeds)},
        "mean ± SD": [f"{m:.3f} ± {s:.3f}" for m, s in zip(spread["mean"], spread["sd"])],
        "expected for another run": [f"{lo:.3f}–{hi:.3f}" for lo, hi in
                                     zip(spread["expect_lo"], spread["expect_hi"])],
    })
    return "\n".join([
        f"# Headline numbers over {len(seeds)} seeds (Pgds study, {ctx.profile} profile)",
        "",
        f"**{pipeline.results_label(ctx)}; each seed a new phantom, split and initialisation.**",
        "",
        pipeline.markdown_table(shown),
        "",
        *_target_lines(spread),
        "",
        "- 'Expected for another run': mean ± t(0.975, n-1) · SD · sqrt(1 + 1/n), at least "
        f"± {expectation.MIN_HALF_WIDTH:g}, within [0, 1] (reproduce/expectation.py). A run on "
        "another CPU differs from the committed one by float noise that 30 epochs of training "
        "turn into another trajectory: judge it with `python -m reproduce compare --expect "
        "results/ YOUR_RESULTS/`, not with the float-noise tolerances of a plain compare.",
        f"- Seed {ctx.seed} is the main run (the tables beside this file); the others are in "
        "seeds/seed<N>/.",
    ]) + "\n"


def run(args: argparse.Namespace) -> int:
    ctx = pipeline.context_from_args(args)
    seeds = parse_seeds(args.seeds)
    pipeline.check_results_dir(ctx)
    headlines = {}
    for position, seed in enumerate(seeds, start=1):
        runs, results = seed_folders(ctx, seed)
        pipeline.say(f"=== seed {seed} ({position}/{len(seeds)}): runs {runs}, results {results} ===")
        argv = pgds_all.common_argv(args)
        argv[argv.index("--seed") + 1] = str(seed)
        argv[argv.index("--runs") + 1] = str(runs)
        argv[argv.index("--results") + 1] = str(results)
        code = pgds_all.main(argv)
        if code:
            return code
        headlines[seed] = headline.build_headline(results)
    spread = expectation.seed_spread(headlines, key="model", table=f"{headline.NAME}.csv")
    if spread.empty:
        raise InputError(ctx.results_dir, "no headline value is finite in two seeds")
    pipeline.write_table(ctx, NAME, spread, markdown(ctx, spread, seeds))
    for line in _target_lines(spread):
        pipeline.say(line[2:])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce pgds seeds",
                                     description=__doc__.split("\n\n")[0])
    pipeline.add_common_args(parser)
    parser.add_argument("--seeds", default="0,1,2",
                        help="comma-separated seeds, at least two (default 0,1,2); --seed is "
                             "the main run's")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return pipeline.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
