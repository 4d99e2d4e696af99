"""The CNS study's `ci` golden: what tests/test_cns_study.py compares, and how to regenerate it.

    python -m tests.cns_golden        # trains the ci study in a temporary folder, writes GOLDEN

Compared (the same design as tests/pgds_golden.py, for the same reasons: the ci models are
tiny and chaotic, so their scores move on another CPU while the data and the code paths
that turn predictions into tables do not):
- exactly: the de-identified manifest's hash, the folds (splits.csv sha256) and the image
  counts of every task and fold;
- each run's first-epoch training loss within EPOCH1_RTOL (a change of learning rate, loss,
  class weights, transform or architecture moves it by far more);
- the accuracy, per-class and selection tables recomputed from the golden's OWN predictions
  (predictions_<task>.csv, monitor_<task>.csv) within 1e-9: the table code, exactly.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

GOLDEN = Path(__file__).resolve().parent / "golden" / "cns_ci"
EPOCH1_RTOL = 0.1
TASKS = ("4class", "5class")


def context(runs: Path, results: Path):
    from reproduce.cns import pipeline

    return pipeline.StudyContext(profile="ci", runs_dir=runs, results_dir=results)


def snapshot(ctx) -> dict:
    """What the golden holds of a trained ci study (data.json) plus the prediction frames."""
    from data_prep.provenance import sha256_file
    from reproduce import study
    from reproduce.cns import pipeline

    data = {"splits_sha256": sha256_file(study.splits_path(ctx)),
            "manifest_sha256": study.manifest_hash(study.manifest_path(ctx)), "tasks": {}}
    frames = {}
    for task in TASKS:
        tctx = pipeline.task_context(ctx, task)
        predictions = study.predictions(tctx, pipeline.ARCH)
        counts = predictions.groupby(["fold", "split"]).size()
        epoch1 = {}
        for fold in study.folds(tctx):
            log = pd.read_csv(study.run_dir(tctx, pipeline.ARCH, fold) / "log.csv")
            epoch1[str(fold)] = float(log["loss"].iloc[0])
        data["tasks"][task] = {"counts": {f"{f}/{s}": int(n) for (f, s), n in counts.items()},
                               "epoch1_loss": epoch1}
        frames[task] = predictions
    return {"data": data, "predictions": frames}


def monitor_frame(ctx, task: str) -> pd.DataFrame:
    from reproduce import study
    from reproduce.cns import pipeline
    from reproduce.train import read_monitor

    tctx = pipeline.task_context(ctx, task)
    order = pipeline.fold_test_paths(tctx)
    parts = []
    for fold in study.folds(tctx):
        frame = read_monitor(study.run_dir(tctx, pipeline.ARCH, fold))
        frame.insert(0, "image_path", [order[fold][i] for i in frame["index"]])
        frame.insert(0, "fold", fold)
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def main() -> int:
    from reproduce.cns import tables

    work = Path(tempfile.mkdtemp(prefix="cns_golden_"))
    try:
        ctx = context(work / "runs", work / "results")
        tables.write_outputs(ctx, ["accuracy", "per_class", "selection"])
        shot = snapshot(ctx)
        GOLDEN.mkdir(parents=True, exist_ok=True)
        (GOLDEN / "data.json").write_text(json.dumps(shot["data"], indent=1, sort_keys=True) + "\n")
        for task, frame in shot["predictions"].items():
            frame.drop(columns=["abs_path", "mask_path"]).to_csv(GOLDEN / f"predictions_{task}.csv",
                                                                 index=False)
            monitor_frame(ctx, task).to_csv(GOLDEN / f"monitor_{task}.csv", index=False)
        for name in ("accuracy", "per_class_4class", "per_class_5class", "selection"):
            shutil.copy(work / "results" / f"{name}.csv", GOLDEN / f"{name}.csv")
        print(f"wrote {GOLDEN}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
