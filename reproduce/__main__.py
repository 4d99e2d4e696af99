"""`python -m reproduce <study> <target> [--profile P] [--manifest M] ...`: every entry point.

`TARGETS` maps (study, target) to the module that does the work and the arguments it is
given first; the module exposes `main(argv: list[str]) -> int`. A new table, figure or job
plugs in by adding one entry. `python -m reproduce --help` lists them all;
`python -m reproduce <study> <target> --help` shows that target's flags.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple, Sequence


class Target(NamedTuple):
    module: str                  # imported lazily: `--help` stays instant
    fixed_args: tuple[str, ...]  # given to module.main before the user's arguments
    help: str


TARGETS: dict[tuple[str, str], Target] = {
    ("pgds", "train"): Target("reproduce.train", ("--study", "pgds"),
                              "train Pgds-ResNet, ResNet-34, VGG-16, VGG-19 over the epoch grid "
                              "(Tang 2023 s2.3), select by validation loss, resume"),
}


def _listing() -> str:
    width = max(len(f"{s} {t}") for s, t in TARGETS)
    lines = [f"  {f'{s} {t}':<{width}}  {target.help}" for (s, t), target in sorted(TARGETS.items())]
    return "targets (study target):\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    studies = sorted({study for study, _ in TARGETS})
    targets = sorted({target for _, target in TARGETS})
    parser = argparse.ArgumentParser(
        prog="python -m reproduce",
        description="Reproduce the studies' tables, figures and models: "
                    "python -m reproduce <study> <target> [target flags]",
        epilog=_listing(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=studies, help="study key")
    parser.add_argument("target", choices=targets, help="what to produce (see the list below)")
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="the target's own flags (--profile, --manifest, ...; see "
                             "`python -m reproduce <study> <target> --help`)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    key = (args.study, args.target)
    if key not in TARGETS:
        parser.error(f"no target '{args.target}' for study '{args.study}'\n{_listing()}")
    target = TARGETS[key]
    module = importlib.import_module(target.module)
    return int(module.main([*target.fixed_args, *args.args]) or 0)


if __name__ == "__main__":
    sys.exit(main())
