"""Tang 2023 Figure S1: gestational age by class (violin plot).

    python -m reproduce.pgds.figures1 --profile default [--manifest M]

Writes `<results>/figures1.png`: violins of `gestational_week` for normal and genetic-disease
images and for each subtype (T13, T18, T21, rare), with n and mean ± SD (sample SD) over each,
over every image of the study's manifest (all splits; the de-identified phantom or the user's
manifest). The caption states the paper's 14.8 ± 2.6 weeks, range 11-27
(`paper_values.TANG2023_DATASET`) beside ours. Needs no trained model. A user manifest
without a `gestational_week` column gets no figure: the script says so and exits 0.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import pandas as pd

from reproduce.paper_values import TANG2023_DATASET
from reproduce.pgds import pipeline, plots

FIGURE_NAME = "figures1"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce.pgds.figures1",
        description="Tang 2023 Figure S1: violin plot of gestational weeks by class and subtype.")
    pipeline.add_common_args(parser)
    return parser


def caption(table: pd.DataFrame) -> str:
    """The paper's gestational-age summary beside this data set's."""
    weeks = pd.to_numeric(table["gestational_week"], errors="coerce")
    paper = TANG2023_DATASET
    cases = f" / {table['case_id'].nunique()} cases" if "case_id" in table.columns else ""
    return (f"This data set: {weeks.mean():.1f} \u00b1 {weeks.std(ddof=1):.1f} weeks, range "
            f"{weeks.min():.1f}\u2013{weeks.max():.1f} ({len(table)} images{cases}).\n"
            f"Tang 2023 report {paper.gestational_week_mean} \u00b1 {paper.gestational_week_sd} "
            f"weeks, range {paper.gestational_week_min}\u2013{paper.gestational_week_max} "
            f"({paper.normal_images + paper.abnormal_images} images; printed as 'years').")


def make_figure(ctx: pipeline.StudyContext):
    """The Figure S1 of the context, or None when the manifest has no gestational week."""
    manifest, _ = pipeline.prepared_data(ctx)
    if "gestational_week" not in manifest.columns:
        return None
    weeks = pd.to_numeric(manifest["gestational_week"], errors="coerce")
    known = manifest.assign(gestational_week=weeks)[weeks.notna()]
    if known.empty:
        return None
    text = caption(known)
    if len(known) < len(manifest):
        text += f"\n{len(manifest) - len(known)} image(s) without a gestational week are left out."
    title = (f"Figure S1  Gestational age by class and subtype -- "
             f"{pipeline.results_label(ctx)}")
    paper = TANG2023_DATASET
    return plots.figure_s1(known, title=title, caption=text,
                           reference=(paper.gestational_week_mean,
                                      f"Tang 2023 mean ({paper.gestational_week_mean} weeks)"))


def run(args: argparse.Namespace) -> int:
    ctx = pipeline.context_from_args(args)
    pipeline.check_results_dir(ctx)
    started = time.perf_counter()
    figure = make_figure(ctx)
    if figure is None:
        pipeline.say(f"{FIGURE_NAME}: skipped -- the manifest {pipeline.manifest_path(ctx)} has "
                     "no gestational_week values")
        return 0
    path = pipeline.write_figure(ctx, FIGURE_NAME, figure)
    pipeline.say(f"{FIGURE_NAME}: {path} ({path.stat().st_size / 1024:.0f} kB) in "
                 f"{time.perf_counter() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return pipeline.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
