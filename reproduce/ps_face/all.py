"""`python -m reproduce ps_face all`: Shen 2024 end to end, in dependency order.

Prepares the four-group face phantom (MTCNN detection and alignment, photo de-identification),
runs the pretraining on the phantom's identity set, trains the four models on each of the five
folds once (reused from `runs/` by every later step), then writes the comparison table, the
confusion matrices and the .keras round trip into `results/ps_face/`, and `timings.csv`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from data_prep.errors import InputError
from reproduce import study
from reproduce.ps_face import pipeline, tables
from reproduce.ps_face import train as train_target

TARGETS = ("train", *tables.OUTPUTS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce ps_face all",
                                     description="Regenerate every Shen 2024 output (phantom "
                                                 "data unless --manifest).")
    pipeline.add_common_args(parser)
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of steps, in this order: {', '.join(TARGETS)}")
    return parser


def _body(args: argparse.Namespace, on_step: Callable[[str], None] | None = None) -> int:
    chosen = TARGETS if args.only is None else tuple(t.strip() for t in args.only.split(","))
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown:
        raise InputError(None, f"--only: unknown step '{unknown[0]}' (choose from {', '.join(TARGETS)})")
    study.check_results_dir(pipeline.context_from_args(args))
    shared = pipeline.common_argv(args)
    steps = [(t, (lambda: train_target.main(shared)) if t == "train"
              else (lambda t=t: tables.main([*shared, "--only", t]))) for t in chosen]
    code, timings = study.run_steps(steps, pipeline.STUDY, on_step)
    if not code:
        study.write_timings(args.results, timings, pipeline.STUDY)
    return code


def main(argv: Sequence[str] | None = None, on_step: Callable[[str], None] | None = None) -> int:
    """`on_step(target)` is called as each step starts (reproduce.all's progress line)."""
    return study.run_cli(lambda args: _body(args, on_step), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
