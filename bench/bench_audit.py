"""Leakage audit against exporter-style copies of the real frames in ../shared/data.

    PYTHONPATH=. python bench/bench_audit.py [--copies 20] [--seed 0] [--timing 3000]

Prints the near-duplicate check's recall (copies paired with their source), false pairs per
1,000 frames (pairs joining two different real frames), and the audit's time as a ratio of the
time it takes only to read the same frames (one run, same files, same machine).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from data_prep import audit as au
from data_prep.exporter_copies import score_pairs, write_copy_set
from data_prep.io import read_grayscale

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_frames(data: Path = DATA) -> list[np.ndarray]:
    paths = sorted((data / "pgds_sample").glob("*/*.jpg")) + sorted(
        p for p in (data / "hc18_subset").glob("*.png") if not p.name.endswith("_Mask.png"))
    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]


def measure(frames: list[np.ndarray], copies: int, seed: int, folder: Path) -> dict:
    paths, sources, _ = write_copy_set(frames, copies, seed, folder)
    started = time.perf_counter()
    for path in paths:
        read_grayscale(path)
    read_seconds = time.perf_counter() - started
    started = time.perf_counter()
    prints = au.fingerprints(paths, progress=False)
    found = au.duplicate_pairs(paths, prints)
    audit_seconds = time.perf_counter() - started
    recall, false_pairs = score_pairs(found, sources)
    return {"frames": len(paths), "recall": recall, "false_pairs": false_pairs,
            "false_per_1000": 1000 * false_pairs / len(paths),
            "time_ratio": audit_seconds / read_seconds, "audit_s": audit_seconds, "read_s": read_seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20, help="exporter copies per real frame")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing", type=int, default=3000,
                        help="frames for the time ratio (real frames and copies, repeated with new seeds)")
    args = parser.parse_args(argv)
    frames = real_frames()
    if not frames:
        print(f"no real frames under {DATA}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(frames, args.copies, args.seed, Path(tmp) / "copies")
    print(f"{len(frames)} real frames x (1 + {args.copies} copies) = {result['frames']} frames: "
          f"recall {result['recall']:.3f}, false pairs {result['false_pairs']} "
          f"({result['false_per_1000']:.2f} per 1000 frames), time ratio {result['time_ratio']:.2f}")
    if args.timing:
        per_frame = max(1, round(args.timing / len(frames)) - 1)
        with tempfile.TemporaryDirectory() as tmp:
            timed = measure(frames, per_frame, args.seed + 1, Path(tmp) / "timing")
        print(f"{timed['frames']} frames: audit {timed['audit_s']:.1f} s, reading {timed['read_s']:.1f} s, "
              f"time ratio {timed['time_ratio']:.2f}; recall {timed['recall']:.3f}, "
              f"false pairs {timed['false_pairs']} ({timed['false_per_1000']:.2f} per 1000)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
