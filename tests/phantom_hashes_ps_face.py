"""sha256 of the whole `ci` phantom of Shen 2024 (`ps_face`: four groups, several photos per
child; `tests.phantom_hashes` does the listing and the command line).

    python -m tests.phantom_hashes_ps_face            # print the listing
    python -m tests.phantom_hashes_ps_face --write    # rewrite tests/golden/phantom_ps_face_ci.sha256
    python -m tests.phantom_hashes_ps_face --check    # exit 1 when it differs
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests import phantom_hashes

LISTINGS = {"ci": phantom_hashes.GOLDEN / "phantom_ps_face_ci.sha256"}
STUDY = "ps_face"


def listings(disable_opencv_optimizations: bool = False) -> dict[str, str]:
    if disable_opencv_optimizations:
        import cv2

        cv2.setUseOptimized(False)
    with tempfile.TemporaryDirectory() as work:
        return {"ci": phantom_hashes.ci_listing(Path(work), STUDY)}


def main(argv: list[str] | None = None) -> int:
    return phantom_hashes.main(argv, render=listings, paths=LISTINGS,
                               description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
