"""Shared fixtures: paths to the real frames in ../shared/data, and a quiet TensorFlow.

The real frames are never copied into the project. Where ../shared/data is absent (a user's
clone) the tests that need it skip with a reason; under CI=true they fail instead, so CI can
never pass by skipping them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _require(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        message = f"real data folder {path} is absent (it lives in ../shared/data beside the project)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI must have it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def pgds_sample_dir() -> Path:
    """../shared/data/pgds_sample: 8 real fetal-profile frames, normal/ and genetic_disease/."""
    return _require("pgds_sample")


@pytest.fixture(scope="session")
def hc18_dir() -> Path:
    """../shared/data/hc18_subset: 40 real fetal-head frames with expert head masks."""
    return _require("hc18_subset")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def pgds_ci_context(tmp_path_factory):
    """The Pgds study at the `ci` profile, prepared and its four models trained ONCE per test
    session (a few minutes on 2 cores), shared by the pgds pipeline, table, predict and figure
    tests. runs/ and results/ live under a session temp folder. Set PGDS_CI_RUNS=/some/folder
    to keep the trained models between sessions (development only)."""
    from reproduce.pgds import pipeline

    base = tmp_path_factory.mktemp("pgds_ci")
    runs = Path(os.environ["PGDS_CI_RUNS"]) if os.environ.get("PGDS_CI_RUNS") else base / "runs"
    ctx = pipeline.StudyContext(profile="ci", seed=0, runs_dir=runs,
                                results_dir=base / "results" / "pgds")
    for arch in pipeline.ARCHITECTURES:
        pipeline.predictions(ctx, arch)
        pipeline.operating_threshold(ctx, arch)
    return ctx
