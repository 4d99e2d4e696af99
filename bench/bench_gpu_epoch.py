"""One training epoch of Pgds-ResNet at the paper's 400x440x1 input, float32 vs mixed precision
+ XLA, fed by the real tf.data pipeline from phantom frames on disk. Meant for a GPU machine:

    .venv/bin/python bench/bench_gpu_epoch.py                 # 1120 paper-profile phantom frames
    .venv/bin/python bench/bench_gpu_epoch.py --frames 64 --width 8 --epochs 2   # CPU smoke run

For each mode it trains `--epochs` epochs (default 3, batch 32) with reproduce.train's own
model building, compile and input pipeline, and prints images/s of the first epoch (XLA/graph
compilation included) and the median of the later ones (steady state), then the speed-up of
mixed precision + XLA. Each mode runs in a fresh subprocess (dtype policy, XLA and op
determinism are process-wide). Expect on an H100 a speed-up of roughly 1.5-3x.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CLASSES = ("normal", "genetic_disease")


def phantom_frames(folder: Path, frames: int) -> list[tuple[str, str]]:
    """(path, label) of up to `frames` Pgds phantom frames (paper profile: 1120 frames)."""
    from data_prep import phantom
    from data_prep.manifest import load_manifest

    manifest = folder / "manifest.csv"
    if not manifest.exists():
        phantom.generate_phantom("pgds", "paper" if frames > 200 else "ci", folder, seed=0, progress=False)
    rows = load_manifest(manifest, labels=CLASSES)
    if len(rows) < frames:
        reps = -(-frames // len(rows))
        rows = rows.loc[list(rows.index) * reps]
    rows = rows.iloc[:frames]
    return list(zip(rows["abs_path"].astype(str), rows["label"].astype(str)))


def child(folder: Path, frames: int, epochs: int, width: int | None, fast: bool) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from reproduce import config as cfg
    from reproduce import input_pipeline as pipe
    from reproduce import train

    rows = phantom_frames(folder, frames)
    table = pipe.ImageTable(tuple(p for p, _ in rows), np.array([CLASSES.index(lab) for _, lab in rows]))
    config = cfg.make_config("pgds", "pgds_resnet", "paper", width=width, epoch_grid=(epochs,),
                             augment="none", mixed_precision=fast, xla=fast)
    height, width_px, channels = train.input_shape_for(config)
    spec = pipe.PipelineSpec(size_wh=(width_px, height), channels=channels, num_classes=2)

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    with train.numerics(config):
        model = train.build_and_compile(config, 2)
        dataset, steps = pipe.train_dataset(table, spec, batch_size=config.batch_size, seed=0,
                                            start_epoch=0, end_epoch=epochs)
        timer = EpochTimer()
        model.fit(dataset, steps_per_epoch=steps, epochs=epochs, verbose=2, callbacks=[timer], shuffle=False)
    rates = [len(table) / s for s in timer.seconds]
    print(json.dumps({"mode": "mixed_float16+xla" if fast else "float32", "first_epoch": rates[0],
                      "steady": statistics.median(rates[1:]) if len(rates) > 1 else rates[0],
                      "devices": [d.name for d in tf.config.list_logical_devices("GPU")] or ["CPU"],
                      "jit_compile": bool(model.jit_compile),
                      "optimizer": type(model.optimizer).__name__}))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
              None if sys.argv[5] == "none" else int(sys.argv[5]), sys.argv[6] == "1")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1120, help="frames per epoch (default 1120)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per mode; the first includes compilation")
    parser.add_argument("--width", type=int, default=None, help="model base width (default: the paper's 64)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the phantom (default: temp)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    folder = work / f"phantom_{'paper' if args.frames > 200 else 'ci'}"
    phantom_frames(folder, args.frames)  # generate once, outside the timed children
    results = {}
    for fast in (False, True):
        out = subprocess.run([sys.executable, __file__, "--child", str(folder), str(args.frames), str(args.epochs),
                              str(args.width or "none"), "1" if fast else "0"],
                             cwd=REPO, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stdout[-3000:], out.stderr[-5000:])
            return 1
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results[fast] = result
        print(f"{result['mode']:>18}: first epoch {result['first_epoch']:.1f} img/s, steady "
              f"{result['steady']:.1f} img/s on {result['devices']} (jit_compile={result['jit_compile']}, "
              f"optimizer {result['optimizer']})", flush=True)
    print(f"mixed precision + XLA speed-up (steady state): {results[True]['steady'] / results[False]['steady']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
