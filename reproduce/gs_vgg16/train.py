"""`python -m reproduce gs_vgg16 train`: train the face VGG-16 on each of the five folds.

`--shard i/n` trains shard i of n of the five runs (round-robin). Finished runs are reused; a
killed run resumes.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from reproduce import config as cfg
from reproduce import study
from reproduce.gs_vgg16 import pipeline


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce gs_vgg16 train",
                                     description="Train the face VGG-16 (Hong 2021) on each of "
                                                 "the five folds (reused when done).")
    pipeline.add_common_args(parser)
    parser.add_argument("--shard", default="0/1",
                        help="i/n: train only shard i (0-based) of n of the five folds")
    return parser


def run(args: argparse.Namespace) -> int:
    index, count = cfg.parse_shard(args.shard)
    ctx = pipeline.context_from_args(args)
    grid = study.folds(ctx)
    mine = grid[index::count]
    pipeline.say(f"{len(grid)} fold(s); shard {index}/{count} trains {len(mine)}")
    for position, fold in enumerate(mine, start=1):
        pipeline.say(f"[{position}/{len(mine)}] fold {fold}")
        study.model_path(ctx, pipeline.ARCH, fold)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return study.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
