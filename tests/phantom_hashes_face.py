"""sha256 of the face phantoms the tests pin: the whole `ci` phantom and a sample of `default`.

    python -m tests.phantom_hashes_face            # print both listings
    python -m tests.phantom_hashes_face --write    # rewrite tests/golden/phantom_face_*.sha256
    python -m tests.phantom_hashes_face --check    # exit 1 when a listing differs

One line per file, `<sha256>  <path>`, every file but `run.json` (`tests.phantom_hashes` does
the listing and the command line); the `default` sample is the plan and the first
`DEFAULT_SAMPLE_CHILDREN` planned children rendered by `phantom_face.render_child` (each child
has its own random streams, so they are the same bytes as in the full phantom).
`tests/test_phantom_face.py` compares both with the committed listings, here and with OpenCV's
and NumPy's SIMD dispatch turned off.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from tests import phantom_hashes

LISTINGS = {"ci": phantom_hashes.GOLDEN / "phantom_face_ci.sha256",
            "default_sample": phantom_hashes.GOLDEN / "phantom_face_default_sample.sha256"}
DEFAULT_SAMPLE_CHILDREN = 12
STUDY = "gs_vgg16"


def default_sample_listing(work: Path) -> str:
    from data_prep import phantom_face

    profile = phantom_face.resolve_profile("default")
    out = Path(work) / "default_sample"
    for folder in ("photos", "masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    children = phantom_face.plan_children(profile, phantom_hashes.SEED)
    plan = [dataclasses.asdict(child) for child in children]
    (out / "plan.json").write_text(json.dumps(plan, indent=0) + "\n", encoding="utf-8")
    for child in children[:DEFAULT_SAMPLE_CHILDREN]:
        phantom_face.render_child(profile, child, phantom_hashes.SEED, out)
    return phantom_hashes.folder_listing(out)


def listings(disable_opencv_optimizations: bool = False) -> dict[str, str]:
    if disable_opencv_optimizations:
        import cv2

        cv2.setUseOptimized(False)
    with tempfile.TemporaryDirectory() as work:
        return {"ci": phantom_hashes.ci_listing(Path(work), STUDY),
                "default_sample": default_sample_listing(Path(work))}


def main(argv: list[str] | None = None) -> int:
    return phantom_hashes.main(argv, render=listings, paths=LISTINGS,
                               description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
