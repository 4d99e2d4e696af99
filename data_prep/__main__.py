"""`python -m data_prep <subcommand>`: the data layer's command line.

Each subcommand lives in its own module, which exposes `add_cli(subparsers)` registering a
parser whose `func(args) -> int` does the work. Bad input exits 2 with one line naming the
file, row and column (see data_prep.errors).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import report_bad_input

# Order is the order `--help` lists them in.
SUBCOMMAND_MODULES = ("manifest", "deidentify", "deidentify_photo", "faces", "splits", "audit",
                      "augment", "phantom")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Data layer: manifests, readers, de-identification, face detection and "
                    "alignment, splits, leakage audit, augmentation and synthetic phantoms.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"data_prep.{name}").add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_bad_input(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
