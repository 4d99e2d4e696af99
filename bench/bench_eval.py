"""Benchmark: evaluation throughput of the Pgds-ResNet on frame files, batched
(reproduce.study.predict_probabilities: tf.data decode + resize + min-max, batches of 32) versus
the authors' way (a Python loop: cv2.imread, cv2.resize, min-max, model.predict on one image).

The model is models.registry.build("pgds_resnet", ...) with random weights at a reduced size
(default 200x220x1, first-stage width 16, so the run stays short on a CPU); the frames are
speckled ultrasound-like 440x400 grey PNGs written to a temp folder (removed afterwards).
Both ways are warmed once (tracing excluded), then timed in alternating rounds, fastest counts.
They must give the same probabilities (max abs difference <= --atol, 1e-4). The difference is
split in two: the model alone (the loop's own inputs predicted in batches) and the preprocessing
alone (tf.data's inputs against cv2's: TensorFlow's float bilinear resize rounded half to even
versus cv2's fixed-point uint8 resize can differ by one grey level in some pixels).

Run:  .venv/bin/python bench/bench_eval.py [--images 200] [--height 200] [--width 220] [--filters 16]
Expect: batched at least 5x the images/s of the loop; prints both rates, the probability
difference, PASS/FAIL, and the ratio as the last line; exits 1 on FAIL.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

MIN_RATIO, ATOL = 5.0, 1e-4


def write_frames(folder: Path, n: int, size_wh=(440, 400), seed: int = 0) -> list[Path]:
    """Speckled ultrasound-like grey PNG frames (a bright blob on every other one)."""
    width, height = size_wh
    paths = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        base = cv2.resize((rng.random((height // 8, width // 8)) * 160).astype(np.uint8), (width, height))
        image = np.clip(base * rng.rayleigh(0.35, (height, width)) + 20, 0, 255).astype(np.uint8)
        if i % 2:
            cv2.circle(image, (int(rng.integers(60, width - 60)), int(rng.integers(60, height - 60))), 25, 230, -1)
        paths.append(folder / f"frame_{i:05d}.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def authors_loop(model, paths, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One file at a time: read, resize (cv2 bilinear), min-max to [0, 1], predict one image.
    Returns the probabilities and the inputs (N, H, W, 1)."""
    rows, inputs = [], []
    for path in paths:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        gray = cv2.resize(gray, (width, height), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        low, span = gray.min(), gray.max() - gray.min()
        x = ((gray - low) / span if span > 0 else np.zeros_like(gray))[:, :, None]
        inputs.append(x)
        rows.append(model.predict(x[None], verbose=0)[0])
    return np.asarray(rows, dtype=np.float64), np.asarray(inputs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="frames evaluated per round (default 200)")
    parser.add_argument("--height", type=int, default=200, help="model input height in pixels (default 200)")
    parser.add_argument("--width", type=int, default=220, help="model input width in pixels (default 220)")
    parser.add_argument("--filters", type=int, default=16,
                        help="first-stage channels of the ResNet (64 = the published model; default 16)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the batched way (default 32)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each way, alternating (default 2)")
    parser.add_argument("--atol", type=float, default=ATOL,
                        help=f"largest allowed probability difference between the two ways (default {ATOL:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the frames and the model weights")
    args = parser.parse_args()

    from models import registry
    from reproduce.study import inputs_for_shape, predict_probabilities

    shape = (args.height, args.width, 1)
    model = registry.build("pgds_resnet", shape, 2, weights=None, width=args.filters, seed=args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    try:
        paths = write_frames(work, args.images, seed=args.seed)

        def ours():
            return predict_probabilities(model, paths, shape, 2, batch_size=args.batch_size)

        def theirs():
            return authors_loop(model, paths, args.height, args.width)

        ours(), theirs()  # warm-up: tracing, thread pools, file cache
        times = {"ours": [], "theirs": []}
        for _ in range(args.rounds):
            for name, run in (("ours", ours), ("theirs", theirs)):
                start = time.perf_counter()
                probabilities = run()
                times[name].append(time.perf_counter() - start)
                if name == "ours":
                    p_ours = probabilities
                else:
                    p_theirs, x_theirs = probabilities
        p_batched_cv2 = np.asarray(model.predict(x_theirs, batch_size=args.batch_size, verbose=0), np.float64)
        x_ours = inputs_for_shape(paths, shape, 2, batch_size=args.batch_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rate_ours = args.images / min(times["ours"])
    rate_theirs = args.images / min(times["theirs"])
    ratio = rate_ours / rate_theirs
    diff = float(np.max(np.abs(p_ours - p_theirs)))
    diff_model = float(np.max(np.abs(p_batched_cv2 - p_theirs)))
    diff_prep = float(np.max(np.abs(p_ours - p_batched_cv2)))
    x_diff = np.abs(x_ours - x_theirs)
    # The model must agree on the same inputs; the cv2 path's resize rounds differently (printed).
    same = diff_model <= args.atol
    print(f"pgds_resnet {args.height}x{args.width}x1, width {args.filters}, random weights; "
          f"{args.images} PNG frames of 440x400; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"batched predict_probabilities (batch {args.batch_size}): {rate_ours:7.1f} images/s "
          f"(rounds {['%.2f s' % t for t in times['ours']]})")
    print(f"loop, cv2 + model.predict per image:       {rate_theirs:7.1f} images/s "
          f"(rounds {['%.2f s' % t for t in times['theirs']]})")
    print(f"probabilities: max abs difference {diff:.2e} (tolerance {args.atol:g}); "
          f"class-1 range {p_ours[:, 1].min():.3f}-{p_ours[:, 1].max():.3f}")
    print(f"  model alone (cv2 inputs, batch {args.batch_size} vs 1): {diff_model:.2e}; preprocessing alone "
          f"(tf.data vs cv2 inputs, both batched): {diff_prep:.2e}")
    print(f"  inputs in [0, 1]: max abs difference {x_diff.max():.4f}, "
          f"{(x_diff > 1e-6).mean() * 100:.1f} % of pixels differ, "
          f"{np.mean(x_diff.reshape(len(x_diff), -1).max(axis=1) > 1e-6) * 100:.0f} % of images")
    ok = ratio >= MIN_RATIO and same
    print(f"{'PASS' if ok else 'FAIL'}: target >= {MIN_RATIO:.0f}x, same model outputs on the same inputs: {same}")
    print(f"speed-up: {ratio:.1f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
