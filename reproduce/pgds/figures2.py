"""Tang 2023 Figure S2: the training augmentations on one fetal-profile frame.

    python -m reproduce.pgds.figures2 --profile default [--manifest M] [--frame IMAGE]

Writes `<results>/figures2.png`: the original frame and one panel per augmentation method of
`data_prep.augment` (distortion, zoom-in, tilt, zoom-out, crop, combination), with the same
transforms `data_prep.augment.figure_s2` draws for the seed. The frame is, in this order of
preference: `--frame`; a real frame of `../shared/data/pgds_sample` (the authors' public
sample, Apache-2.0) when that folder sits beside the project; otherwise the first normal
frame of the study's own manifest (the de-identified phantom, or the user's). The title says
which. Needs no trained model.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from data_prep.errors import InputError
from reproduce.pgds import pipeline, plots

FIGURE_NAME = "figures2"
#: The authors' public sample frames, beside the project (never copied into it).
SHARED_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pgds_sample"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reproduce.pgds.figures2",
        description="Tang 2023 Figure S2: the augmentation methods on one frame.")
    pipeline.add_common_args(parser)
    parser.add_argument("--frame", type=Path, default=None,
                        help="image to augment (default: a real frame of "
                             "../shared/data/pgds_sample when present, else a frame of the "
                             "study's manifest)")
    return parser


def sample_frame(folder: Path = SHARED_SAMPLE) -> Path | None:
    """The first frame (sorted) of folder/normal, else of folder, or None when absent."""
    for where in (folder / "normal", folder):
        if where.is_dir():
            frames = sorted(p for p in where.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if frames:
                return frames[0]
    return None


def choose_frame(ctx: pipeline.StudyContext, frame: Path | None) -> tuple[Path, str]:
    """(image path, how the title describes it)."""
    if frame is not None:
        if not frame.is_file():
            raise InputError(frame, "image not found")
        return frame, f"frame {frame.name}"
    real = sample_frame()
    if real is not None:
        return real, (f"real frame ({real.parent.name}/{real.name}) of the authors' public "
                      "sample\n(../shared/data/pgds_sample, Apache-2.0)")
    manifest, splits = pipeline.prepared_data(ctx)
    train = set(splits.loc[splits["split"] == "train", "image_path"].astype(str))
    rows = manifest[manifest["image_path"].astype(str).isin(train)]
    normal = rows[rows["label"] == "normal"]
    row = (normal if not normal.empty else rows if not rows.empty else manifest).iloc[0]
    what = "phantom (synthetic) frame" if ctx.is_phantom else "frame of your manifest"
    return Path(row["abs_path"]), (f"{what} ({row['image_path']});\n"
                                   "../shared/data/pgds_sample is absent")


def augmentation_note(ctx: pipeline.StudyContext) -> str:
    """How the profile's training uses these augmentations (from its TrainConfig)."""
    config = pipeline.train_config(ctx, "pgds_resnet")
    if config.augment == "none" or not config.multiplicity:
        return f"the {ctx.profile} profile trains without augmentation"
    counts = " or ".join(f"{n} ({label.replace('_', ' ')})"
                         for label, n in config.multiplicity.items())
    when = "redrawn every epoch" if config.augment == "on_the_fly" else "written once, offline"
    return (f"{ctx.profile} profile: each training original yields {counts} images in total "
            f"(itself included), each copy by a method drawn at random, {when}")


def make_figure(ctx: pipeline.StudyContext, frame: Path | None = None):
    from data_prep.io import read_grayscale

    path, described = choose_frame(ctx, frame)
    image = read_grayscale(path)
    title = f"Figure S2  Augmentation methods (Tang 2023), seed {ctx.seed}, on a {described}"
    note = (f"Training of this study\n({pipeline.results_label(ctx)}):\n"
            f"{augmentation_note(ctx)}.")
    return plots.figure_s2(image, seed=ctx.seed, title=title, note=note)


def run(args: argparse.Namespace) -> int:
    ctx = pipeline.context_from_args(args)
    pipeline.check_results_dir(ctx)
    started = time.perf_counter()
    figure = make_figure(ctx, args.frame)
    path = pipeline.write_figure(ctx, FIGURE_NAME, figure)
    pipeline.say(f"{FIGURE_NAME}: {path} ({path.stat().st_size / 1024:.0f} kB) in "
                 f"{time.perf_counter() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return pipeline.run_cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
