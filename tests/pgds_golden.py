"""The Pgds `ci` golden: what it holds, how it is made, and which parts are compared how.

    python -m tests.pgds_golden            # regenerate tests/golden/pgds_ci/ (about 2 minutes)

What a fresh `ci` run is compared with (tests/test_pgds_regression.py), and why at that
tolerance. Measured on this kind of machine, the same checkout trained once as it runs and once
under `ONEDNN_MAX_CPU_ISA=AVX2 OPENCV_CPU_DISABLE=AVX512-SKX,AVX2,FP16,AVX` (another CPU):

| stage | compared | tolerance | float noise measured |
|---|---|---|---|
| phantom, de-identification, split | manifest hash (every image), splits file | identical | identical |
| Pgds-ResNet training | test and training scores of every image | 1e-3 | 3.9e-6 (one CPU, two instruction sets); 1.8e-4 (AMD EPYC against Intel Xeon with AVX-512/AMX, either instruction set) |
| every architecture's first epoch | mean training loss of epoch 1 | `EPOCH1_RTOL` | `EPOCH1_NOISE` |
| thresholds, Tables 1-3, bootstrap CIs, readers | recomputed from the golden's own predictions | 1e-9 | none (no CPU-dependent step) |
| heat-map localisation (Pgds-ResNet) | energy inside, pointing-game hit, score | 1e-3 / exact / 1e-3 | (model agrees to 4e-6 on one CPU, 1.5e-4 across CPU models) |

What is NOT compared, and why: the trained ResNet-34, VGG-16 and VGG-19 of the `ci` profile
are chaotic. Two epochs of Adam on 45 images at width 4 amplify a last-bit difference: Adam
moves each weight by about the learning rate whatever the size of its gradient, so a gradient
that is float noise flips the step. Their scores then differ by up to 0.022 between two CPUs,
their epoch-2 validation losses by up to 8 %, and a threshold chosen on near-tied scores moves
(VGG-19 sensitivity 0.6 on one CPU, 0.8 on another, in the failure that prompted this design).
For them the golden pins the first epoch's mean loss (model, initialisation, data and the
first updates) and the tables' LOGIC through the golden's predictions, and their trained
behaviour is judged at the `default` profile against the spread over seeds
(`python -m reproduce compare --expect`).
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

GOLDEN = Path(__file__).resolve().parent / "golden" / "pgds_ci"
TABLES = ("table1", "table2", "table3", "gradcam_localisation")
PREDICTIONS = GOLDEN / "predictions.csv"
TRAINING = GOLDEN / "training.csv"
DATA = GOLDEN / "data.json"
# Two epochs of training on another CPU MODEL move the scores by up to 1.8e-4 (measured: the
# golden made on an AMD EPYC, checked on an Intel Xeon with AVX-512 and AMX, with and without
# the instruction-set cap); 1e-3 is about 5x that, and 100x below what a real change does.
SCORE_ATOL = 1e-3
# Relative tolerance of the first epoch's mean training loss, per architecture: about 20x the
# difference measured between the two instruction sets above (EPOCH1_NOISE).
EPOCH1_NOISE = {"pgds_resnet": 0.0, "resnet34": 2.3e-5, "vgg16": 1.1e-3, "vgg19": 2.6e-3}
EPOCH1_RTOL = {"pgds_resnet": 1e-5, "resnet34": 5e-4, "vgg16": 2e-2, "vgg19": 5e-2}
STABLE_ARCH = "pgds_resnet"
LOCALISATION_TOLERANCES = {"score": SCORE_ATOL, "energy_inside": 1e-3, "*": 0.0}


def prediction_rows(ctx, arch: str) -> pd.DataFrame:
    """The run's predictions of `arch` without machine paths: arch, image_path, split, y_true,
    score (the form the golden keeps)."""
    from reproduce.pgds import pipeline

    frame = pipeline.predictions(ctx, arch)
    return pd.DataFrame({"arch": arch, "image_path": frame["image_path"], "split": frame["split"],
                         "y_true": frame["y_true"], "score": frame["score"]})


def training_rows(ctx) -> pd.DataFrame:
    from reproduce.pgds import pipeline

    rows = []
    for arch in pipeline.ARCHITECTURES:
        log = pd.read_csv(pipeline.run_dir(ctx, arch) / "log.csv")
        rows.append({"arch": arch, "selected_epoch": int(pipeline.selection_record(ctx, arch)["epoch"]),
                     "epoch1_loss": float(log.loc[log["epoch"] == 1, "loss"].iloc[0])})
    return pd.DataFrame(rows)


def data_record(ctx) -> dict:
    from data_prep.provenance import manifest_hash, sha256_file
    from reproduce.pgds import pipeline

    return {"deidentified_manifest_hash": manifest_hash(pipeline.manifest_path(ctx)),
            "splits_sha256": sha256_file(pipeline.splits_path(ctx))}


def regenerate(work: Path) -> None:
    from reproduce.pgds import all as pgds_all
    from reproduce.pgds import pipeline

    runs, results = work / "runs", work / "results"
    code = pgds_all.main(["--profile", "ci", "--runs", str(runs), "--results", str(results),
                          "--seed", "0"])
    if code:
        raise SystemExit(f"pgds all --profile ci failed with exit code {code}")
    ctx = pipeline.StudyContext(profile="ci", seed=0, runs_dir=runs, results_dir=results)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for old in GOLDEN.glob("*"):
        old.unlink()
    for name in TABLES:
        for suffix in (".csv", ".md"):
            shutil.copyfile(results / f"{name}{suffix}", GOLDEN / f"{name}{suffix}")
    pd.concat([prediction_rows(ctx, arch) for arch in pipeline.ARCHITECTURES]).to_csv(
        PREDICTIONS, index=False)
    training_rows(ctx).to_csv(TRAINING, index=False)
    DATA.write_text(json.dumps(data_record(ctx), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")


def main() -> int:
    with tempfile.TemporaryDirectory() as work:
        regenerate(Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
