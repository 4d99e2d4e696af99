"""`python -m reproduce cns all`: Qi 2025 end to end, in dependency order.

Trains ResNet-34 for both tasks over every fold once (reused from `runs/` by every later
step), then writes the accuracy, per-class, confusion and subgroup tables, Figures 2-5, the
honest-versus-test-fold-selection comparison, the Grad-CAM heat-maps with their localisation
scores, the reader study and the headline numbers (headline.csv, what `cns seeds` spreads)
into `results/cns/`, and `timings.csv` (seconds per step, and per task the training time its
runs' log.csv recorded). The `default` profile takes about 15 minutes on a 2-core CPU (the
machine's speed varies by a quarter from run to run); `ci` about 3.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from data_prep import atomic
from data_prep.errors import InputError
from reproduce import study
from reproduce.cns import pipeline, tables

# (step, what runs it): the tables module's outputs are steps of their own for the progress line.
TARGETS = ("train", *tables.OUTPUTS, "heatmaps", "readers", "headline")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce cns all",
                                     description="Regenerate every Qi 2025 table and figure "
                                                 "(phantom data unless --manifest).")
    pipeline.add_common_args(parser)
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of steps, in this order: {', '.join(TARGETS)}")
    return parser


def training_seconds(args: argparse.Namespace) -> list[tuple[str, float]]:
    """("trained <task>", seconds): the epochs' wall time as the runs' log.csv recorded it."""
    import pandas as pd

    rows = []
    for task in pipeline.TASK_NAMES:
        ctx = pipeline.context_from_args(args, task)
        total = 0.0
        for fold in study.folds(ctx):
            try:
                total += float(pd.read_csv(study.run_dir(ctx, pipeline.ARCH, fold) / "log.csv")["seconds"].sum())
            except (OSError, ValueError, KeyError):
                continue
        rows.append((f"trained {task}", total))
    return rows


def step_runner(args: argparse.Namespace, target: str) -> Callable[[], int]:
    shared = pipeline.common_argv(args)
    if target == "train":
        return lambda: importlib.import_module("reproduce.cns.train").main(shared)
    if target in tables.OUTPUTS:
        return lambda: tables.main([*shared, "--only", target])
    return lambda: importlib.import_module(f"reproduce.cns.{target}").main(shared)


def _body(args: argparse.Namespace, on_step: Callable[[str], None] | None = None) -> int:
    chosen = TARGETS if args.only is None else tuple(t.strip() for t in args.only.split(","))
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown:
        raise InputError(None, f"--only: unknown step '{unknown[0]}' (choose from {', '.join(TARGETS)})")
    study.check_results_dir(pipeline.context_from_args(args))
    code, timings = study.run_steps([(t, step_runner(args, t)) for t in chosen], pipeline.STUDY,
                                    on_step)
    if code:
        return code
    import pandas as pd

    frame = pd.DataFrame(timings + training_seconds(args), columns=["target", "seconds"])
    atomic.write_csv(args.results / "timings.csv", frame)
    pipeline.say(f"all done in {timings[-1][1] / 60:.1f} min; results in {args.results}")
    return 0


def main(argv: Sequence[str] | None = None, on_step: Callable[[str], None] | None = None) -> int:
    """`on_step(target)` is called as each step starts (reproduce.all's progress line)."""
    return study.run_cli(lambda args: _body(args, on_step), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
