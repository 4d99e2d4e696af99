"""Benchmark: MTCNN face detection (data_prep.faces) -- detection rates on scikit-image's LFW
subset and seconds per photo on this CPU.

LFW subset (`skimage.data.lfw_subset()`): 100 face crops, then 100 non-face crops, 25x25 grey.
Each crop is upscaled to --side px (bicubic) with a --border px edge-replicated frame, so that a
face is large enough for MTCNN (>= 48 px), and judged by `detect_face` at its defaults: a crop
is "found" when its status is ok. Timing: `detect_face` on the astronaut photo resized to each
side in --sizes, after one warm-up call (building the detector is timed on its own).

Run:  .venv/bin/python bench/bench_faces.py [--side 120] [--border 40] [--sizes 512,1024,2048]
Expect: faces found >= 90 %, non-faces found 0 %; about 0.1-0.2 s per 512x512 photo on one
core; prints one line per measurement and PASS/FAIL last; exits 1 on FAIL.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from data_prep import faces  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=120)
    parser.add_argument("--border", type=int, default=40)
    parser.add_argument("--sizes", default="512,1024,2048")
    args = parser.parse_args(argv)
    from skimage import data

    started = time.perf_counter()
    faces._detector()
    print(f"detector built in {time.perf_counter() - started:.1f} s")

    subset = data.lfw_subset()
    statuses, confidences, started = [], [], time.perf_counter()
    for crop in subset:
        gray = cv2.resize(np.round(crop * 255).astype(np.uint8), (args.side, args.side),
                          interpolation=cv2.INTER_CUBIC)
        gray = cv2.copyMakeBorder(gray, *(args.border,) * 4, cv2.BORDER_REPLICATE)
        found = faces.detect_faces(gray)
        statuses.append(faces.assess_faces(found).status)
        confidences.append(found[0].confidence if found else 0.0)
    elapsed = (time.perf_counter() - started) / len(subset)
    face_rate = np.mean([s == "ok" for s in statuses[:100]])
    non_face_rate = np.mean([s == "ok" for s in statuses[100:]])
    print(f"lfw_subset at {args.side}+2x{args.border} px: faces found {face_rate:.0%} "
          f"({', '.join(f'{s} {statuses[:100].count(s)}' for s in sorted(set(statuses[:100])))}), "
          f"non-faces found "
          f"{non_face_rate:.0%} (highest non-face confidence {max(confidences[100:]):.3f}); "
          f"{elapsed:.3f} s per crop")

    astronaut = data.astronaut()
    faces.detect_face(astronaut)
    for side in (int(s) for s in args.sizes.split(",")):
        photo = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_CUBIC)
        started = time.perf_counter()
        report = faces.detect_face(photo)
        print(f"astronaut {side}x{side}: {report.status}, "
              f"{time.perf_counter() - started:.3f} s per photo")
    ok = face_rate >= 0.9 and non_face_rate == 0.0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
