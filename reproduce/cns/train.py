"""`python -m reproduce cns train`: train ResNet-34 for both tasks over every fold.

The run grid is task x fold (2 x 5 under the default grouped 5-fold; 2 x patients under
`--cv lopo`); `--shard i/n` trains shard i of n of it (round-robin), so machines can split a
leave-one-patient-out grid. Finished runs are reused; a killed run resumes.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from reproduce import config as cfg
from reproduce import study
from reproduce.cns import pipeline


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce cns train",
                                     description="Train ResNet-34 for the 4-class and 5-class "
                                                 "tasks over every fold (reused when done).")
    pipeline.add_common_args(parser)
    parser.add_argument("--tasks", default=",".join(pipeline.TASK_NAMES),
                        help=f"comma-separated tasks to train (default: "
                             f"{','.join(pipeline.TASK_NAMES)})")
    parser.add_argument("--shard", default="0/1",
                        help="i/n: train only shard i (0-based) of n of the task x fold grid")
    return parser


def run_grid(args: argparse.Namespace) -> list[tuple[str, int]]:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for task in tasks:
        pipeline.task_context(pipeline.context_from_args(args), task)  # refuses an unknown task
    return [(task, fold) for task in tasks
            for fold in study.folds(pipeline.context_from_args(args, task))]


def run(args: argparse.Namespace) -> int:
    index, count = cfg.parse_shard(args.shard)
    grid = run_grid(args)
    mine = grid[index::count]
    pipeline.say(f"{len(grid)} run(s) in the task x fold grid; shard {index}/{count} trains "
                 f"{len(mine)}")
    for position, (task, fold) in enumerate(mine, start=1):
        ctx = pipeline.context_from_args(args, task)
        pipeline.say(f"[{position}/{len(mine)}] {pipeline.TASK_TITLES[task]}, fold {fold}")
        study.model_path(ctx, pipeline.ARCH, fold)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return study.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
