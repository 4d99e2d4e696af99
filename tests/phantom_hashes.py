"""sha256 of the phantoms the tests pin: the whole `ci` phantom and a sample of `default`.

    python -m tests.phantom_hashes            # print both listings
    python -m tests.phantom_hashes --write    # rewrite tests/golden/phantom_pgds_*.sha256
    python -m tests.phantom_hashes --check    # exit 1 when a listing differs (what CI checks)

A listing holds one line per file, `<sha256>  <path>` (sha256sum's format), every file of the
phantom folder but `run.json` (it records the time and the library versions). The `default`
sample renders the first `DEFAULT_SAMPLE_CASES` planned cases with `phantom_pgds.render_case`
(the same code path as the whole phantom; each case has its own random streams, so a sample
is the same bytes as those cases of the full phantom) plus the plan itself. `listings(study=...)`
and `main(render=..., paths=...)` serve another study's phantom the same way
(`tests/phantom_hashes_cns.py`).

`tests/test_phantom_portable.py` compares both with the committed listings, in this process
and in a subprocess with OpenCV's and NumPy's SIMD dispatch turned off: the phantom must be
the same bytes on every x86-64 CPU.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
LISTINGS = {"ci": GOLDEN / "phantom_pgds_ci.sha256",
            "default_sample": GOLDEN / "phantom_pgds_default_sample.sha256"}
DEFAULT_SAMPLE_CASES = 24
SEED = 0


def folder_listing(folder: Path, skip: tuple[str, ...] = ("run.json",)) -> str:
    lines = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative in skip:
            continue
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {relative}")
    return "\n".join(lines) + "\n"


def ci_listing(work: Path, study: str = "pgds") -> str:
    from data_prep import phantom

    out = Path(work) / "ci"
    phantom.generate_phantom(study, "ci", out, seed=SEED, force=True, progress=False)
    return folder_listing(out)


def _pgds_plan_row(case) -> dict:
    return {"case_id": case.case_id, "subtype": case.subtype, "week": case.gestational_week,
            "views": list(case.views)}


def default_sample_listing(work: Path, study: str = "pgds", n_cases: int = DEFAULT_SAMPLE_CASES,
                           plan_row=_pgds_plan_row) -> str:
    """The plan (`plan_row` of every case) and the first `n_cases` cases of `study`'s default
    phantom, rendered by its generator's `render_case`."""
    from data_prep import phantom

    module = phantom.STUDY_GENERATORS[study]
    profile = module.resolve_profile("default")
    out = Path(work) / "default_sample"
    for folder in ("images", "masks", "phi_masks"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    cases = module.plan_cases(profile, SEED)
    plan = [plan_row(c) for c in cases]
    (out / "plan.json").write_text(json.dumps(plan, indent=0) + "\n", encoding="utf-8")
    for case in cases[:n_cases]:
        module.render_case(profile, case, SEED, out)
    return folder_listing(out)


def listings(disable_opencv_optimizations: bool = False, *, study: str = "pgds",
             n_cases: int = DEFAULT_SAMPLE_CASES, plan_row=_pgds_plan_row) -> dict[str, str]:
    if disable_opencv_optimizations:
        import cv2

        cv2.setUseOptimized(False)
    with tempfile.TemporaryDirectory() as work:
        return {"ci": ci_listing(Path(work), study),
                "default_sample": default_sample_listing(Path(work), study, n_cases, plan_row)}


def main(argv: list[str] | None = None, *, render=None, paths: dict[str, Path] | None = None,
         description: str | None = None) -> int:
    """The command line; `render` (a `listings`-like function) and `paths` (its committed
    files) let another study's phantom reuse it (tests/phantom_hashes_cns.py)."""
    render, paths = render or listings, paths or LISTINGS
    parser = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the committed listings")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a listing differs from the committed one")
    parser.add_argument("--no-opencv-optimizations", action="store_true",
                        help="cv2.setUseOptimized(False) before rendering")
    parser.add_argument("--json", action="store_true", help="print the listings as JSON")
    args = parser.parse_args(argv)
    found = render(args.no_opencv_optimizations)
    if args.write:
        for name, text in found.items():
            paths[name].write_text(text, encoding="utf-8")
            print(f"wrote {paths[name]}")
        return 0
    if args.json:
        print(json.dumps(found))
        return 0
    if args.check:
        bad = [name for name, text in found.items()
               if text != paths[name].read_text(encoding="utf-8")]
        print("differs: " + ", ".join(bad) if bad else "phantom hashes match")
        return 1 if bad else 0
    for name, text in found.items():
        print(f"== {name} ==\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
