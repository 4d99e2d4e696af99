"""Benchmark: Grad-CAM throughput of reproduce.gradcam.heatmaps on the Pgds-ResNet, 64 images in
one call (batch_size=64) versus 64 calls of one image each (the same function, batch of 1).

The model is models.registry.build("pgds_resnet", ...) with random weights at a reduced size
(default 128x140x1, first-stage width 16, so the run stays short on a CPU), read at
registry.gradcam_layer("pgds_resnet") (post_relu) for class 1. The images are speckled
ultrasound-like frames made in memory and min-max scaled to [0, 1] (no files). Both ways are
warmed once (excluded), then timed in alternating rounds, fastest counts; the maps must agree
(max abs difference <= --atol, 1e-4).

Run:  .venv/bin/python bench/bench_heatmaps.py [--images 64] [--height 128] [--width 140] [--filters 16]
Expect: the batched call at least 3x the maps/s of the per-image calls; prints both rates, the
largest map difference, PASS/FAIL, and the ratio as the last line; exits 1 on FAIL.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

MIN_RATIO, ATOL = 3.0, 1e-4


def make_images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(n, H, W, 1) float32 in [0, 1]: smooth speckled texture, a bright blob on every other one."""
    images = np.empty((n, height, width, 1), dtype=np.float32)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        base = cv2.resize(rng.random((height // 8, width // 8)).astype(np.float32), (width, height))
        image = base * rng.rayleigh(0.35, (height, width)).astype(np.float32)
        if i % 2:
            cv2.circle(image, (int(rng.integers(20, width - 20)), int(rng.integers(20, height - 20))),
                       height // 16, float(image.max()), -1)
        images[i, :, :, 0] = (image - image.min()) / (image.max() - image.min())
    return images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="maps per round (default 64)")
    parser.add_argument("--height", type=int, default=128, help="model input height in pixels (default 128)")
    parser.add_argument("--width", type=int, default=140, help="model input width in pixels (default 140)")
    parser.add_argument("--filters", type=int, default=16,
                        help="first-stage channels of the ResNet (64 = the published model; default 16)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each way, alternating (default 2)")
    parser.add_argument("--atol", type=float, default=ATOL,
                        help=f"largest allowed difference between the two ways' maps (default {ATOL:g})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images and the model weights")
    args = parser.parse_args()

    from models import registry
    from reproduce import gradcam

    model = registry.build("pgds_resnet", (args.height, args.width, 1), 2, weights=None,
                           width=args.filters, seed=args.seed)
    layer = registry.gradcam_layer("pgds_resnet", width=args.filters)
    images = make_images(args.images, args.height, args.width, seed=args.seed)

    def batched():
        return gradcam.heatmaps(model, images, class_index=1, layer=layer, batch_size=args.images)

    def one_by_one():
        return np.concatenate([gradcam.heatmaps(model, images[i:i + 1], class_index=1, layer=layer,
                                                batch_size=1) for i in range(len(images))])

    batched()  # warm-up: imports, tracing at batch 64 and at batch 1
    gradcam.heatmaps(model, images[:1], class_index=1, layer=layer, batch_size=1)
    times = {"batched": [], "single": []}
    for _ in range(args.rounds):
        for name, run in (("batched", batched), ("single", one_by_one)):
            start = time.perf_counter()
            maps = run()
            times[name].append(time.perf_counter() - start)
            if name == "batched":
                maps_batched = maps
            else:
                maps_single = maps

    rate_batched = args.images / min(times["batched"])
    rate_single = args.images / min(times["single"])
    ratio = rate_batched / rate_single
    diff = float(np.max(np.abs(maps_batched - maps_single)))
    same = diff <= args.atol
    print(f"pgds_resnet {args.height}x{args.width}x1, width {args.filters}, random weights; Grad-CAM at "
          f"{layer}, class 1; {args.images} images; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"one call, batch {args.images}:   {rate_batched:7.1f} maps/s "
          f"(rounds {['%.2f s' % t for t in times['batched']]})")
    print(f"{args.images} calls, batch 1: {rate_single:7.1f} maps/s "
          f"(rounds {['%.2f s' % t for t in times['single']]})")
    print(f"maps: max abs difference {diff:.2e} (tolerance {args.atol:g}); "
          f"{int(np.sum(maps_batched.reshape(args.images, -1).max(axis=1) == 0))} all-zero maps of {args.images}")
    ok = ratio >= MIN_RATIO and same
    print(f"{'PASS' if ok else 'FAIL'}: target >= {MIN_RATIO:.0f}x, same maps: {same}")
    print(f"speed-up: {ratio:.1f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
