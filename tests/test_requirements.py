"""The pinned environment: Keras 3 with tf-keras-vis, and never the Keras 2 package.

The Keras 2 compatibility package (PyPI `tf-keras`, module `tf_keras`) makes tf-keras-vis
pick the Keras 2 code path, which fails on Keras 3 models. Neither requirements file may
install it, and the environment the tests run in must not have it.
"""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KERAS2_NAMES = {"tf-keras", "tf_keras"}


def _requirements(path: Path) -> list[str]:
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[\s=<>!~\[;]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-gpu.txt"])
def test_requirements_pin_keras3_and_not_the_keras2_package(name):
    packages = _requirements(REPO / name)
    assert "keras" in packages and "tf-keras-vis" in packages
    assert not KERAS2_NAMES & set(packages), packages


def test_environment_has_no_keras2_package():
    import keras

    assert keras.__version__.startswith("3.")
    for name in KERAS2_NAMES:
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(name)
