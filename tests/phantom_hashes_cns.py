"""sha256 of the CNS phantoms the tests pin: the whole `ci` phantom and a sample of `default`.

    python -m tests.phantom_hashes_cns            # print both listings
    python -m tests.phantom_hashes_cns --write    # rewrite tests/golden/phantom_cns_*.sha256
    python -m tests.phantom_hashes_cns --check    # exit 1 when a listing differs

`tests.phantom_hashes` (the Pgds phantom's listings) does the work, with the CNS phantom: one
line per file, `<sha256>  <path>`, every file but `run.json`; the `default` sample is the plan
and the first `DEFAULT_SAMPLE_CASES` planned patients rendered by `phantom_cns.render_case`
(each patient has its own random streams, so they are the same bytes as in the full phantom).
`tests/test_phantom_cns.py` compares both with the committed listings, here and with OpenCV's
and NumPy's SIMD dispatch turned off.
"""
from __future__ import annotations

import sys

from tests import phantom_hashes

LISTINGS = {"ci": phantom_hashes.GOLDEN / "phantom_cns_ci.sha256",
            "default_sample": phantom_hashes.GOLDEN / "phantom_cns_default_sample.sha256"}
DEFAULT_SAMPLE_CASES = 12


def _plan_row(case) -> dict:
    return {"case_id": case.case_id, "label": case.label, "center": case.center,
            "week": case.gestational_week, "planes": list(case.planes)}


def listings(disable_opencv_optimizations: bool = False) -> dict[str, str]:
    return phantom_hashes.listings(disable_opencv_optimizations, study="cns",
                                   n_cases=DEFAULT_SAMPLE_CASES, plan_row=_plan_row)


def main(argv: list[str] | None = None) -> int:
    return phantom_hashes.main(argv, render=listings, paths=LISTINGS,
                               description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
