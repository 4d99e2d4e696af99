"""`python -m reproduce ps_face train`: the pretraining run (unless --pretrained-weights), then
the four models (ArcFace / CosFace, with and without pretraining) on each of the five folds.

`--shard i/n` trains shard i of n of the model x fold runs (round-robin; every shard runs the
pretraining first, or reuses it). Finished runs are reused; a killed run resumes.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from reproduce import config as cfg
from reproduce import study
from reproduce.ps_face import pipeline


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce ps_face train",
                                     description="Pretrain (phantom identities), then train the "
                                                 "four Shen 2024 models on each of the five "
                                                 "folds (reused when done).")
    pipeline.add_common_args(parser)
    parser.add_argument("--models", default=",".join(pipeline.MODELS),
                        help=f"comma-separated subset of {', '.join(pipeline.MODELS)} (default: all)")
    parser.add_argument("--shard", default="0/1",
                        help="i/n: train only shard i (0-based) of n of the model x fold runs")
    return parser


def run(args: argparse.Namespace) -> int:
    from data_prep.errors import InputError

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown = [m for m in models if m not in pipeline.MODELS]
    if unknown or not models:
        raise InputError(None, f"--models: unknown model '{(unknown or [''])[0]}' (choose from "
                         f"{', '.join(pipeline.MODELS)})")
    ctx = pipeline.context_from_args(args)
    pipeline.say(pipeline.narrowing_text(ctx))
    pipeline.ensure_models(ctx, models, cfg.parse_shard(args.shard))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return study.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
