"""tf.distribute: MirroredStrategy on 2 logical CPU devices matches one device; MultiWorker
(single worker, no TF_CONFIG) trains. Each runs in a fresh subprocess, because logical devices
and collective ops must be configured before TensorFlow initialises."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_train import write_tiny_study

REPO = Path(__file__).resolve().parent.parent
# BatchNorm statistics are per replica (half the batch each), so the curves differ a little.
MAX_RELATIVE_LOSS_DIFFERENCE = 0.05

_MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from pathlib import Path
from tests.test_train import train_tiny
out, manifest, splits = (Path(a) for a in sys.argv[1:4])
for strategy in ("none", "mirrored"):
    train_tiny(out / strategy, manifest, splits, strategy=strategy, epoch_grid=(1, 2, 3), batch_size=8,
               model_options={"dropout": 0.0})
print(json.dumps({"logical_cpus": len(tf.config.list_logical_devices("CPU"))}))
"""

_MULTIWORKER_SCRIPT = """
import sys
from pathlib import Path
from tests.test_train import train_tiny
out, manifest, splits = (Path(a) for a in sys.argv[1:4])
train_tiny(out / "multiworker", manifest, splits, strategy="multiworker", epoch_grid=(1,))
"""


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    manifest, splits = write_tiny_study(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(manifest), str(splits)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path):
    done = _run(_MIRRORED_SCRIPT, tmp_path)
    assert json.loads(done.stdout.strip().splitlines()[-1])["logical_cpus"] == 2
    single, mirrored = (pd.read_csv(tmp_path / name / "log.csv") for name in ("none", "mirrored"))
    records = [json.loads((tmp_path / name / "run.json").read_text()) for name in ("none", "mirrored")]
    assert [r["replicas"] for r in records] == [1, 2]
    assert [r["per_replica_batch"] for r in records] == [8, 4] and records[1]["global_batch"] == 8
    relative = {column: np.max(np.abs(mirrored[column] - single[column]) / np.abs(single[column]))
                for column in ("loss", "val_loss")}
    print(f"mirrored (2 logical CPUs) vs one device, max relative difference: "
          f"loss {relative['loss']:.4f}, val_loss {relative['val_loss']:.4f}")
    assert max(relative.values()) < MAX_RELATIVE_LOSS_DIFFERENCE


@pytest.mark.slow
def test_multiworker_single_worker_trains(tmp_path):
    _run(_MULTIWORKER_SCRIPT, tmp_path)
    record = json.loads((tmp_path / "multiworker" / "run.json").read_text())
    assert record["config"]["strategy"] == "multiworker" and record["replicas"] == 1
    assert pd.read_csv(tmp_path / "multiworker" / "log.csv")["epoch"].tolist() == [1]
