"""`python -m reproduce gs_vgg16 all`: Hong 2021 end to end, in dependency order.

Prepares the face phantom (MTCNN detection and alignment, photo de-identification), trains the
face VGG-16 on each of the five folds once (reused from `runs/` by every later step), then
writes Table 2, Figure 4, MTCNN's detection rates, the Figure 3 heat-maps with their
localisation scores and the headline numbers (what `gs_vgg16 seeds` spreads) into
`results/gs_vgg16/`, and `timings.csv` (seconds per step).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from data_prep import atomic
from data_prep.errors import InputError
from reproduce import study
from reproduce.gs_vgg16 import pipeline, tables

TARGETS = ("train", *tables.OUTPUTS, "heatmaps", "headline")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reproduce gs_vgg16 all",
                                     description="Regenerate every Hong 2021 table and figure "
                                                 "(phantom data unless --manifest).")
    pipeline.add_common_args(parser)
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of steps, in this order: {', '.join(TARGETS)}")
    return parser


def step_runner(args: argparse.Namespace, target: str) -> Callable[[], int]:
    shared = pipeline.common_argv(args)
    if target in tables.OUTPUTS:
        return lambda: tables.main([*shared, "--only", target])
    return lambda: importlib.import_module(f"reproduce.gs_vgg16.{target}").main(shared)


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

    atomic.write_csv(args.results / "timings.csv", pd.DataFrame(timings, columns=["target", "seconds"]))
    pipeline.say(f"all done in {timings[-1][1] / 60:.1f} min; results in {args.results}")
    return 0


def main(argv: Sequence[str] | None = None, on_step: Callable[[str], None] | None = None) -> int:
    """`on_step(target)` is called as each step starts (reproduce.all's progress line)."""
    return study.run_cli(lambda args: _body(args, on_step), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
