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
    ("pgds", "table1"): Target("reproduce.pgds.table1", (), "Tang 2023 Table 1: four architectures, "
                               "AUROC/sensitivity/specificity with CIs, F1, ANOVA vs gold standard"),
    ("pgds", "table2"): Target("reproduce.pgds.table2", (), "Tang 2023 Table 2: Pgds-ResNet per "
                               "subtype (T13, T18, T21, rare) at the training-set threshold"),
    ("pgds", "table3"): Target("reproduce.pgds.table3", (), "Tang 2023 Table 3: Pgds-ResNet vs "
                               "junior/attending/senior readers, McNemar and kappa"),
    ("pgds", "figure3"): Target("reproduce.pgds.figure3", (), "Tang 2023 Figure 3: ROC curves, "
                                "confusion matrices, model vs readers"),
    ("pgds", "figure4"): Target("reproduce.pgds.figure4", (), "Tang 2023 Figure 4: Grad-CAM per "
                                "subtype, plus gradcam_localisation.csv against truth masks"),
    ("pgds", "figures1"): Target("reproduce.pgds.figures1", (), "Figure S1: gestational weeks by "
                                 "class (violin)"),
    ("pgds", "figures2"): Target("reproduce.pgds.figures2", (), "Figure S2: the augmentations"),
    ("pgds", "predict"): Target("reproduce.pgds.predict", (), "probability, call and Grad-CAM "
                                "overlay for each frame of a folder (--images DIR --weights W.keras)"),
    ("pgds", "headline"): Target("reproduce.pgds.headline", (), "headline numbers per model "
                                 "(headline.csv), what seeds and compare --expect use"),
    ("pgds", "seeds"): Target("reproduce.pgds.seeds", (), "the study over several seeds "
                              "(--seeds 0,1,2) and seed_spread.csv: mean, SD, expected range"),
    ("pgds", "all"): Target("reproduce.pgds.all", (), "train once, then every table and figure"),
    ("cns", "train"): Target("reproduce.cns.train", (), "train ResNet-34 (Qi 2025) for the 4-class "
                             "and 5-class tasks over every fold (--cv, --shard i/n)"),
    ("cns", "tables"): Target("reproduce.cns.tables", (), "Qi 2025 accuracy, per-class, confusion, "
                              "subgroup tables, Figures 2-5, honest vs test-fold selection"),
    ("cns", "heatmaps"): Target("reproduce.cns.heatmaps", (), "Grad-CAM per class and its "
                                "localisation against the truth masks (pointing game, energy)"),
    ("cns", "readers"): Target("reproduce.cns.readers", (), "reader study with and without the "
                               "model's help (reader CSV, or simulated on the phantom)"),
    ("cns", "predict"): Target("reproduce.cns.predict", (), "class probabilities, call and heat-map "
                               "per frame of a folder (--images DIR --weights W.keras)"),
    ("cns", "headline"): Target("reproduce.cns.headline", (), "headline numbers per task "
                                "(headline.csv), what seeds and compare --expect use"),
    ("cns", "seeds"): Target("reproduce.cns.seeds", (), "the study over several seeds "
                             "(--seeds 0,1,2) and seed_spread.csv: mean, SD, expected range"),
    ("cns", "all"): Target("reproduce.cns.all", (), "train once, then every CNS table and figure"),
    ("gs_vgg16", "train"): Target("reproduce.gs_vgg16.train", (), "train the face VGG-16 (Hong "
                                  "2021) on each of the five folds (--shard i/n)"),
    ("gs_vgg16", "tables"): Target("reproduce.gs_vgg16.tables", (), "Hong 2021 Table 2 (mean +- "
                                   "SD over folds, paediatricians) and Figure 4 (ROC, CI band)"),
    ("gs_vgg16", "heatmaps"): Target("reproduce.gs_vgg16.heatmaps", (), "Hong 2021 Figure 3: "
                                     "Grad-CAM per syndrome, pointing game and energy inside "
                                     "the truth masks"),
    ("gs_vgg16", "predict"): Target("reproduce.gs_vgg16.predict", (), "detect and align each face "
                                    "photo of a folder, then P(syndrome), call and heat-map "
                                    "(--images DIR --weights W.keras)"),
    ("gs_vgg16", "headline"): Target("reproduce.gs_vgg16.headline", (), "headline numbers "
                                     "(headline.csv), what seeds and compare --expect use"),
    ("gs_vgg16", "seeds"): Target("reproduce.gs_vgg16.seeds", (), "the study over several seeds "
                                  "(--seeds 0,1,2) and seed_spread.csv: mean, SD, expected range"),
    ("gs_vgg16", "all"): Target("reproduce.gs_vgg16.all", (), "train once, then every Hong 2021 "
                                "table and figure"),
    ("ps_face", "train"): Target("reproduce.ps_face.train", (), "pretrain on the phantom's "
                                 "identities, then IResNet + ArcFace / CosFace with and without "
                                 "pretraining (Shen 2024) on five child-level folds"),
    ("ps_face", "tables"): Target("reproduce.ps_face.tables", (), "Shen 2024 comparison (mean +- "
                                  "SD over folds, paediatricians), confusion, .keras round trip"),
    ("ps_face", "all"): Target("reproduce.ps_face.all", (), "train once, then every Shen 2024 "
                               "output"),
}

# Jobs that are not one study's target: `python -m reproduce all` (what ./run_all.sh runs) and
# `python -m reproduce compare DIR_A DIR_B`.
JOBS: dict[str, Target] = {
    "all": Target("reproduce.all", (), "every study's tables and figures with progress and "
                  "ETA, then results/README.md (what ./run_all.sh runs: pgds, cns, gs_vgg16; --studies "
                  "chooses)"),
    "compare": Target("reproduce.compare", (), "compare two results folders metric by metric; "
                      "exit 1 where a difference exceeds its tolerance; --expect: judge a fresh "
                      "run against the committed spread over seeds"),
}


def _listing() -> str:
    width = max(len(f"{s} {t}") for s, t in TARGETS)
    lines = [f"  {f'{s} {t}':<{width}}  {target.help}" for (s, t), target in sorted(TARGETS.items())]
    jobs = [f"  {name:<{width}}  {job.help}" for name, job in JOBS.items()]
    return ("targets (study target):\n" + "\n".join(lines) + "\n\njobs:\n" + "\n".join(jobs))


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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in JOBS:
        job = JOBS[argv[0]]
        return int(importlib.import_module(job.module).main([*job.fixed_args, *argv[1:]]) or 0)
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
