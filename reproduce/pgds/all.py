"""`python -m reproduce pgds all`: every table and figure of Tang 2023, in dependency order.

Trains the four architectures once (reused from `runs/` by every later target), then writes
Tables 1-3, Figures 3, 4, S1, S2, the Grad-CAM localisation scores and the headline numbers
(headline.csv) into `results/pgds/`, and `timings.csv` (seconds per target of this
invocation, and per architecture the training time its log.csv recorded). On the `default` profile this takes about 25 minutes
on a 2-core CPU; on the `ci` profile a few minutes.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from data_prep import atomic
from data_prep.errors import InputError
from reproduce import study
from reproduce.pgds import pipeline

# Order matters only for speed: `train` first so every later target finds its models.
TARGETS = ("train", "table1", "table2", "table3", "figure3", "figure4", "figures1", "figures2",
           "headline")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce pgds all",
        description="Regenerate every Tang 2023 table and figure (phantom data unless --manifest).")
    pipeline.add_common_args(parser)
    parser.add_argument("--only", default=None,
                        help=f"comma-separated subset of targets to run, in this order: {', '.join(TARGETS)}")
    return parser


def common_argv(args: argparse.Namespace) -> list[str]:
    """The shared flags, passed on to every target unchanged."""
    argv = ["--profile", args.profile, "--runs", str(args.runs), "--results", str(args.results),
            "--seed", str(args.seed), "--threshold-rule", args.threshold_rule]
    if args.manifest is not None:
        argv += ["--manifest", str(args.manifest)]
    if args.readers is not None:
        argv += ["--readers", str(args.readers)]
    if args.force:
        argv.append("--force")
    return argv


def _train(args: argparse.Namespace) -> int:
    ctx = pipeline.context_from_args(args)
    for position, arch in enumerate(pipeline.ARCHITECTURES, start=1):
        pipeline.say(f"[{position}/{len(pipeline.ARCHITECTURES)}] {pipeline.DISPLAY_NAMES[arch]}")
        pipeline.model_path(ctx, arch)
    return 0


def training_seconds(args: argparse.Namespace) -> list[tuple[str, float]]:
    """("trained <arch>", seconds) per architecture: the wall time of its training epochs as
    its log.csv recorded them when it was trained. A later `all` that reuses the models spends
    about 0 s on `train`; these rows keep what training cost."""
    import pandas as pd

    ctx = pipeline.context_from_args(args)
    rows = []
    for arch in pipeline.ARCHITECTURES:
        log = pipeline.run_dir(ctx, arch) / "log.csv"
        try:
            rows.append((f"trained {arch}", float(pd.read_csv(log)["seconds"].sum())))
        except (OSError, ValueError, KeyError):
            continue
    return rows


def _body(args: argparse.Namespace, on_step: Callable[[str], None] | None = None) -> int:
    chosen = TARGETS if args.only is None else tuple(t.strip() for t in args.only.split(","))
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown:
        raise InputError(None, f"--only: unknown target '{unknown[0]}' (choose from "
                                  f"{', '.join(TARGETS)})")
    shared = common_argv(args)
    # Refuse before hours of training, not at the first table, when --results holds another
    # config's results (each target checks again for itself).
    pipeline.check_results_dir(pipeline.context_from_args(args))

    def runner(target: str):
        if target == "train":
            return lambda: _train(args)
        return lambda: importlib.import_module(f"reproduce.pgds.{target}").main(shared)

    code, timings = study.run_steps([(t, runner(t)) for t in chosen], pipeline.STUDY, on_step)
    if code != 0:
        return code
    total = timings[-1][1]
    import pandas as pd

    frame = pd.DataFrame(timings + training_seconds(args), columns=["target", "seconds"])
    atomic.write_csv(args.results / "timings.csv", frame)
    pipeline.say(f"all done in {total / 60:.1f} min; results in {args.results}")
    return 0


def main(argv: Sequence[str] | None = None, on_step: Callable[[str], None] | None = None) -> int:
    """`on_step(target)` is called as each target starts (reproduce.all's progress line)."""
    return pipeline.run_cli(lambda args: _body(args, on_step), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
