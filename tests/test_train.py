"""Training engine: epoch grid in one pass, selection, exact resume after SIGKILL, losses,
mixed precision / XLA, the CLI with a registry model.

Most tests train a tiny functional model (`tiny_builder`) on tiny synthetic frames, so each
training takes seconds; `test_cli_trains_registry_pgds_resnet` runs the real
models.registry Pgds-ResNet (width 4, one block per stage) through the command line.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from data_prep.errors import InputError  # noqa: E402
from reproduce import config as cfg  # noqa: E402
from reproduce import train  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("normal", "genetic_disease")
WEIGHT_TOLERANCE = 1e-6


# ----------------------------------------------------------------------------- helpers


def write_tiny_study(folder: Path, n_cases: int = 24, size_hw: tuple[int, int] = (36, 40),
                     seed: int = 0) -> tuple[Path, Path]:
    """n_cases one-frame cases (PNG and JPEG), disease = a bright blob; a fixed splits CSV
    (2/3 train, 1/6 val, 1/6 test). Returns (manifest path, splits path)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, splits = [], []
    for case in range(n_cases):
        label = CLASSES[case % 2]
        image = (rng.random(size_hw) * 120).astype(np.uint8)
        if label == "genetic_disease":
            y, x = rng.integers(4, size_hw[0] - 12), rng.integers(4, size_hw[1] - 12)
            image[y:y + 8, x:x + 8] = 230
        name = f"images/c{case:03d}.{'jpg' if case % 3 == 0 else 'png'}"
        cv2.imwrite(str(folder / name), image)
        rows.append({"image_path": name, "case_id": f"case{case:03d}", "label": label})
        split = "train" if case < n_cases * 2 // 3 else ("val" if case < n_cases * 5 // 6 else "test")
        splits.append({"image_path": name, "case_id": f"case{case:03d}", "split": split})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(splits).to_csv(folder / "splits.csv", index=False)
    return folder / "manifest.csv", folder / "splits.csv"


def tiny_builder(config, input_shape, num_classes):
    """conv - BN - ReLU - GAP - dropout - dense softmax (float32); embedding for margin heads."""
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(6, 3, strides=2, kernel_regularizer=keras.regularizers.L2(1e-4))(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(config.model_options.get("dropout", 0.25))(x)
    if config.loss in ("arcface", "cosface"):
        return keras.Model(inputs, keras.layers.Dense(8, name="embedding")(x))
    logits = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, keras.layers.Activation("softmax", dtype="float32")(logits))


def tiny_config(**overrides) -> cfg.TrainConfig:
    values = dict(size_wh=(20, 18), epoch_grid=(1, 2, 3), batch_size=4)
    values.update(overrides)
    return cfg.make_config("pgds", "tiny", "ci", **values)


def tiny_tables(manifest: Path, splits: Path):
    from data_prep.splits import load_splits

    frame = train.load_manifest(manifest, labels=CLASSES)
    tables = train.fold_tables(frame, load_splits(splits), CLASSES, str(splits))
    return tables[0]


def train_tiny(run_dir: Path, manifest: Path, splits: Path, **overrides) -> train.RunResult:
    train_table, val_table = tiny_tables(manifest, splits)
    return train.train_run(tiny_config(**overrides), train_table, val_table, CLASSES, run_dir,
                           manifest=manifest, builder=tiny_builder, verbose=0)


def _subprocess_main() -> None:
    """`python -c ...` entry of the kill/resume test: run_dir manifest splits."""
    run_dir, manifest, splits = (Path(a) for a in sys.argv[1:4])
    train_tiny(run_dir, manifest, splits, augment="on_the_fly")


def weights_of(path: Path) -> list[np.ndarray]:
    import keras

    return keras.models.load_model(path, compile=False).get_weights()


def max_weight_diff(a: Path, b: Path) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(weights_of(a), weights_of(b)))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny_study(tmp_path_factory.mktemp("tiny_study"))


# ----------------------------------------------------------------------------- epoch grid


def test_grid_snapshots_equal_separate_runs(study, tmp_path):
    manifest, splits = study
    grid = train_tiny(tmp_path / "grid", manifest, splits, epoch_grid=(1, 2, 3))
    log = pd.read_csv(tmp_path / "grid" / train.LOG_FILE)
    assert log["epoch"].tolist() == [1, 2, 3]
    assert set(train.LOG_COLUMNS) <= set(log.columns) and (log["images_per_s"] > 0).all()
    for epochs in (1, 2):
        separate = train_tiny(tmp_path / f"separate{epochs}", manifest, splits, epoch_grid=(epochs,))
        diff = max_weight_diff(tmp_path / "grid" / f"snapshots/epoch_{epochs:04d}.keras", separate.selected_model)
        print(f"snapshot at epoch {epochs} vs a separate {epochs}-epoch run: max |dw| = {diff:.3g}")
        assert diff <= WEIGHT_TOLERANCE
    selection = json.loads((tmp_path / "grid" / train.SELECTION_FILE).read_text())
    best = log.loc[log["val_loss"].idxmin()]
    assert selection["epoch"] == grid.selected_epoch == int(best["epoch"])
    assert selection["departure_from_paper"] is False
    assert max_weight_diff(grid.selected_model,
                           tmp_path / "grid" / f"snapshots/epoch_{grid.selected_epoch:04d}.keras") == 0.0
    # Only the last two checkpoints are kept (the newest and the one to fall back to).
    assert sorted(p.name for p in (tmp_path / "grid" / "checkpoints").iterdir()) == \
        ["epoch_0002.keras", "epoch_0003.keras"]


def test_best_epoch_selection_is_named_a_departure(study, tmp_path):
    manifest, splits = study
    result = train_tiny(tmp_path / "best", manifest, splits, epoch_grid=(3,), selection="best_epoch")
    log = pd.read_csv(tmp_path / "best" / train.LOG_FILE)
    selection = json.loads((tmp_path / "best" / train.SELECTION_FILE).read_text())
    assert result.selected_epoch == int(log.loc[log["val_loss"].idxmin(), "epoch"]) == selection["epoch"]
    assert selection["departure_from_paper"] is True and "departure" in selection["rule"]
    assert len(selection["candidates_val_loss"]) == 3


def test_finished_run_is_kept_and_other_config_refused(study, tmp_path):
    manifest, splits = study
    first = train_tiny(tmp_path / "run", manifest, splits, epoch_grid=(1,))
    again = train_tiny(tmp_path / "run", manifest, splits, epoch_grid=(1,))
    assert first.epochs_trained == 1 and again.epochs_trained == 0 and again.resumed_from == 1
    with pytest.raises(InputError, match="another config"):
        train_tiny(tmp_path / "run", manifest, splits, epoch_grid=(1,), learning_rate=0.5)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["seed"] == 0 and record["manifest_sha256"] and "tensorflow-cpu" in record["versions"]
    assert record["config"]["epoch_grid"] == [1] and record["global_batch"] == 4


# ----------------------------------------------------------------------------- resume


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(study, tmp_path):
    manifest, splits = study
    command = [sys.executable, "-c", "from tests.test_train import _subprocess_main; _subprocess_main()",
               str(tmp_path / "resumed"), str(manifest), str(splits)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(train.KILL_ENV, None)
    # 16 training images, multiplicity 2/6 -> 64 entries -> 16 batches of 4; die in epoch 2.
    killed = subprocess.Popen(command, cwd=REPO, env={**env, train.KILL_ENV: "2:5"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Meanwhile, the uninterrupted reference (in this process: also checks cross-process equality).
    train_tiny(tmp_path / "reference", manifest, splits, augment="on_the_fly")
    output, _ = killed.communicate(timeout=300)
    assert killed.returncode == -9, output
    state = json.loads((tmp_path / "resumed" / train.STATE_FILE).read_text())
    assert state["epochs_completed"] == 1
    assert pd.read_csv(tmp_path / "resumed" / train.LOG_FILE)["epoch"].tolist() == [1]
    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stderr
    diff = max_weight_diff(tmp_path / "reference" / "checkpoints/epoch_0003.keras",
                           tmp_path / "resumed" / "checkpoints/epoch_0003.keras")
    print(f"killed in epoch 2 and resumed vs uninterrupted: max |dw| = {diff:.3g}")
    assert diff <= WEIGHT_TOLERANCE
    logs = [pd.read_csv(tmp_path / name / train.LOG_FILE) for name in ("reference", "resumed")]
    assert logs[1]["epoch"].tolist() == [1, 2, 3]  # no row written twice
    np.testing.assert_allclose(logs[1][["loss", "val_loss"]], logs[0][["loss", "val_loss"]], rtol=0, atol=1e-6)
    assert not list((tmp_path / "resumed" / "checkpoints").glob(".*"))  # no stray temp file


# ----------------------------------------------------------------------------- losses


def test_weighted_cross_entropy_uses_training_frequencies(tmp_path):
    manifest, splits = write_tiny_study(tmp_path / "data", n_cases=30)
    frame = pd.read_csv(splits)
    keep = ~((frame["split"] == "train") & frame["case_id"].isin(["case001", "case003", "case005", "case007"]))
    frame[keep].to_csv(splits, index=False)  # 20 train -> 10 normal, 6 disease
    train_tiny(tmp_path / "run", manifest, splits, epoch_grid=(1,), loss="weighted_ce")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["train_class_counts"] == [10, 6]
    assert record["class_weights"] == pytest.approx([16 / 20, 16 / 12])
    # The logged validation loss is the class-weighted one: recompute it from the model.
    import keras

    from reproduce import input_pipeline as pipe
    _, val_table = tiny_tables(manifest, splits)
    model = keras.models.load_model(tmp_path / "run" / train.SELECTED_MODEL, compile=False)
    spec = pipe.PipelineSpec((20, 18), 1, 2)
    x = np.concatenate([b for b in pipe.eval_dataset(val_table, spec, batch_size=64, with_labels=False)])
    p = model.predict(x, verbose=0)
    ce = -np.log(np.clip(p[np.arange(len(p)), val_table.labels], 1e-7, 1))
    expected = np.mean(np.asarray(record["class_weights"])[val_table.labels] * ce)
    val_loss = pd.read_csv(tmp_path / "run" / train.LOG_FILE)["val_loss"].iloc[0]
    regularisation = float(sum(model.losses)) if model.losses else 0.0
    assert val_loss == pytest.approx(expected + regularisation, rel=1e-4)


@pytest.mark.parametrize("head", ["arcface", "cosface"])
def test_margin_heads_train(study, tmp_path, head):
    manifest, splits = study
    result = train_tiny(tmp_path / head, manifest, splits, epoch_grid=(1,), loss=head)
    log = pd.read_csv(tmp_path / head / train.LOG_FILE)
    assert np.isfinite(log[["loss", "val_loss"]].to_numpy()).all()
    import keras

    model = keras.models.load_model(result.selected_model, compile=False)
    assert [tuple(i.shape) for i in model.inputs] == [(None, 18, 20, 1), (None,)]


# ----------------------------------------------------------------------------- GPU path on CPU


def _one_step(config: cfg.TrainConfig):
    import keras

    with train.numerics(config):
        model = train.build_and_compile(config, 2, tiny_builder)
        x = np.random.default_rng(0).random((4, 18, 20, 1)).astype("float32")
        y = keras.utils.to_categorical([0, 1, 0, 1], 2)
        start = time.perf_counter()
        loss = model.train_on_batch(x, y)
        return model, float(np.ravel(loss)[0]), time.perf_counter() - start


def test_mixed_precision_builds_compiles_and_steps():
    import keras

    model, loss, _ = _one_step(tiny_config(mixed_precision=True))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)  # automatic loss scaling
    assert model.layers[1].compute_dtype == "float16" and model.outputs[0].dtype == "float32"
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert np.isfinite(loss)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run


def test_xla_step_on_cpu():
    model, loss, seconds = _one_step(tiny_config(xla=True, mixed_precision=True))
    print(f"one XLA + mixed-precision step on CPU (compile included): {seconds:.1f} s")
    assert model.jit_compile is True and np.isfinite(loss)


# ----------------------------------------------------------------------------- CLI


def test_umbrella_help_lists_targets():
    out = subprocess.run([sys.executable, "-m", "reproduce", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "pgds train" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "reproduce", "nope", "train"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_cli_trains_registry_pgds_resnet(study, tmp_path, capsys):
    manifest, splits = study
    argv = ["--study", "pgds", "--profile", "ci", "--manifest", str(manifest), "--splits", str(splits),
            "--architectures", "pgds_resnet", "--model-option", "blocks=1,1,1,1", "--epochs", "1,2",
            "--out", str(tmp_path / "runs"), "--verbose", "0"]
    assert train.main(argv) == 0
    run_dir = train.run_dir_for(tmp_path / "runs", "pgds", "ci", "pgds_resnet", 0)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["architecture"] == "pgds_resnet" and record["config"]["size_wh"] == [70, 64]
    assert record["config"]["model_options"] == {"blocks": [1, 1, 1, 1]} and record["config"]["width"] == 4
    assert record["git_commit"] and record["manifest_sha256"]
    assert pd.read_csv(run_dir / train.LOG_FILE)["epoch"].tolist() == [1, 2]
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == ["epoch_0001.keras", "epoch_0002.keras"]
    import keras

    model = keras.models.load_model(run_dir / train.SELECTED_MODEL, compile=False)
    assert model.name == "pgds_resnet" and model.input_shape == (None, 64, 70, 1)
    err = capsys.readouterr().err
    assert "[1/1] pgds pgds_resnet fold 0" in err and "selected epoch" in err
    # Bad input: one line naming the file, exit code 2.
    assert train.main(argv[:4] + ["--manifest", str(tmp_path / "missing.csv")] + argv[6:]) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_cli_shard_trains_only_its_share(study, tmp_path, capsys, monkeypatch):
    manifest, splits = study
    trained = []

    def fake_train_run(config, train_table, val_table, class_names, run_dir, **kwargs):
        trained.append((config.architecture, config.fold, Path(run_dir)))
        return train.RunResult(Path(run_dir), 1, 0.5, Path(run_dir) / train.SELECTED_MODEL, 1, 0, 0.0)

    monkeypatch.setattr(train, "train_run", fake_train_run)
    argv = ["--study", "pgds", "--profile", "ci", "--manifest", str(manifest), "--splits", str(splits),
            "--architectures", "pgds_resnet,resnet18,resnet34,vgg16,vgg19", "--out", str(tmp_path),
            "--shard", "1/2"]
    assert train.main(argv) == 0
    assert [(a, f) for a, f, _ in trained] == [("resnet18", 0), ("vgg16", 0)]
    assert trained[0][2] == tmp_path / "pgds" / "ci" / "resnet18" / "fold0"
    err = capsys.readouterr().err
    assert "5 run(s) in the grid; shard 1/2 trains 2" in err
    assert "[1/2] pgds resnet18 fold 0" in err and "[2/2] pgds vgg16 fold 0" in err


def _capture_runs(monkeypatch) -> list:
    trained = []

    def fake_train_run(config, train_table, val_table, class_names, run_dir, **kwargs):
        trained.append((config, train_table, val_table, kwargs))
        return train.RunResult(Path(run_dir), 1, 0.5, Path(run_dir) / train.SELECTED_MODEL, 1, 0, 0.0)

    monkeypatch.setattr(train, "train_run", fake_train_run)
    return trained


def test_cli_offline_augmentation_written_once(study, tmp_path, monkeypatch):
    manifest, splits = study
    trained = _capture_runs(monkeypatch)
    argv = ["--study", "pgds", "--profile", "ci", "--manifest", str(manifest), "--splits", str(splits),
            "--architectures", "pgds_resnet,vgg16", "--augment", "offline", "--out", str(tmp_path)]
    assert train.main(argv) == 0
    (config, train_table, val_table, _), _ = trained
    assert config.augment == "offline"
    # 16 training originals, 8 per class -> 8 * 2 + 8 * 6 images; validation untouched.
    assert len(train_table) == 64 and np.bincount(train_table.labels).tolist() == [16, 48]
    assert len(val_table) == 4 and all(Path(p).is_file() for p in train_table.paths)
    folders = list((tmp_path / "pgds" / "augmented").iterdir())
    assert len(folders) == 1  # shared by both architectures
    stamp = (folders[0] / "manifest.csv").stat().st_mtime_ns
    assert train.main(argv) == 0
    assert (folders[0] / "manifest.csv").stat().st_mtime_ns == stamp  # reused, not rewritten


def test_cli_default_data_is_the_phantom(tmp_path, monkeypatch):
    trained = _capture_runs(monkeypatch)
    assert train.main(["--study", "pgds", "--profile", "ci", "--architectures", "pgds_resnet",
                       "--out", str(tmp_path), "--augment", "on_the_fly"]) == 0
    (config, train_table, val_table, kwargs), = trained
    assert (tmp_path / "phantom" / "pgds_ci_seed0" / "manifest.csv") == Path(kwargs["manifest"])
    splits = pd.read_csv(tmp_path / "pgds" / "ci" / "splits.csv")
    assert set(splits["split"]) == {"train", "val", "test"}
    assert len(train_table) == (splits["split"] == "train").sum() and len(val_table) > 0
    assert config.augment == "on_the_fly" and dict(config.multiplicity) == {"normal": 2, "genetic_disease": 6}


@pytest.mark.parametrize("extra, message", [
    (["--architectures", "resnet99"], "unknown architecture(s) resnet99"),
    (["--folds", "3"], "fold 3 is not in the splits"),
    (["--shard", "2/2"], "--shard 2/2"),
    (["--epochs", "3,2"], "strictly increasing"),
    (["--model-option", "dropout"], "KEY=VALUE"),
    (["--folds", "0,x"], "--folds must be distinct non-negative integers"),
    (["--folds", "1,1"], "--folds must be distinct"),
])
def test_cli_bad_input_exits_2_with_one_line(study, tmp_path, capsys, monkeypatch, extra, message):
    manifest, splits = study
    trained = _capture_runs(monkeypatch)
    argv = ["--study", "pgds", "--profile", "ci", "--manifest", str(manifest), "--splits", str(splits),
            "--out", str(tmp_path), *extra]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1] and not trained


@pytest.mark.parametrize("extra, message", [
    (["--architectures", "pgds_resnet,resnet99"], "--architectures: unknown architecture(s) resnet99"),
    (["--folds", "1"], "without --splits the run has one hold-out split, fold 0"),
    (["--folds", "-1"], "--folds must be distinct non-negative integers"),
])
def test_cli_bad_flags_are_refused_before_the_phantom_is_rendered(tmp_path, capsys, monkeypatch,
                                                                   extra, message):
    rendered = []
    monkeypatch.setattr(train, "_phantom_manifest", lambda *a: rendered.append(a))
    assert train.main(["--study", "pgds", "--profile", "ci", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not rendered and not any(tmp_path.iterdir())


def test_bfloat16_precision_builds_compiles_and_steps():
    import keras

    model, loss, _ = _one_step(tiny_config(precision="bfloat16"))
    assert model.layers[1].compute_dtype == "bfloat16" and model.outputs[0].dtype == "float32"
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    assert np.isfinite(loss)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run


@pytest.mark.parametrize("limit", [train.MONITOR_CACHE_LIMIT, 1])
def test_monitor_inputs_predict_as_model_predict_does(limit, monkeypatch):
    """The monitored images held as inputs (or streamed, above the limit) give model.predict's
    probabilities bit for bit."""
    import tensorflow as tf

    monkeypatch.setattr(train, "MONITOR_CACHE_LIMIT", limit)
    config = tiny_config()
    model = tiny_builder(config, (18, 20, 1), 2)
    images = np.random.default_rng(0).random((11, 18, 20, 1), np.float32)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(4)
    inputs = train._monitor_inputs(dataset)
    assert isinstance(inputs, list) == (limit > 1)
    expected = np.asarray(model.predict(dataset, verbose=0), np.float64)
    assert np.array_equal(train._predict_monitor(model, inputs), expected)


def test_a_run_folder_trained_on_another_manifest_is_refused_unless_forced(study, tmp_path):
    """Before: training into a folder holding a model of another manifest (every label
    flipped) exited 0, kept the old model and rewrote run.json with the new manifest's hash."""
    manifest, splits = study
    run_dir = tmp_path / "run"
    train_tiny(run_dir, manifest, splits, epoch_grid=(1,))
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    frame = pd.read_csv(manifest)
    frame["label"] = frame["label"].map({"normal": "genetic_disease", "genetic_disease": "normal"})
    import shutil

    shutil.copytree(manifest.parent / "images", flipped / "images")
    frame.to_csv(flipped / "manifest.csv", index=False)
    before = (run_dir / "run.json").read_text()
    with pytest.raises(InputError, match="made from another manifest.*--force"):
        train_tiny(run_dir, flipped / "manifest.csv", splits, epoch_grid=(1,))
    assert (run_dir / "run.json").read_text() == before   # nothing rewritten
    result = train.train_run(tiny_config(epoch_grid=(1,)), *tiny_tables(manifest, splits), CLASSES,
                             run_dir, manifest=flipped / "manifest.csv", force=True,
                             builder=tiny_builder, verbose=0)
    assert result.epochs_trained == 1   # --force retrains
