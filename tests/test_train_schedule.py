"""Training-engine options of the CNS study (Qi 2025) as config: AdamW, the warm-up + cosine
schedule (values, serialisation, exact resume after SIGKILL), selection by validation accuracy,
early stopping, the grid-under-a-schedule refusal, the recorded selection split, and that the
default config records and trains exactly as before.

Tiny functional models (tests.test_train.tiny_builder) on tiny frames: seconds per run.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from data_prep.errors import InputError  # noqa: E402
from reproduce import config as cfg  # noqa: E402
from reproduce import train  # noqa: E402
from tests.test_train import (CLASSES, REPO, WEIGHT_TOLERANCE, max_weight_diff,  # noqa: E402
                              tiny_builder, tiny_tables, write_tiny_study)

# What TrainConfig.to_dict() recorded before the engine options existed (results/*/run.json).
LEGACY_FIELDS = {"study", "architecture", "profile", "fold", "size_wh", "channels", "epoch_grid",
                 "selection", "batch_size", "learning_rate", "l2", "width", "loss", "labels",
                 "augment", "multiplicity", "cache", "seed", "mixed_precision", "xla", "strategy",
                 "model_options", "precise_bn"}
NEW_DEFAULTS = {"optimizer": "adam", "weight_decay": 0.0, "schedule": "constant", "warmup_epochs": 1,
                "selection_metric": "val_loss", "early_stopping_patience": None,
                "selection_split": "val", "transform": "minmax", "crop_min_area": 0.08,
                "init_weights": None}
# Recorded only when not at this default (so earlier records match), with the policy it chose.
RECORDED_WHEN_SET = {"precision": "float32", "checkpoint_every": 1, "precise_bn_images": 2048,
                     "margin": {}, "run_eagerly": False}


def schedule_config(**overrides) -> cfg.TrainConfig:
    """The CNS recipe at tiny scale: AdamW, warm-up 1 epoch then cosine, best of 3 epochs."""
    values = dict(size_wh=(20, 18), epoch_grid=(3,), batch_size=4, optimizer="adamw",
                  weight_decay=5e-2, schedule="warmup_cosine", warmup_epochs=1,
                  selection="best_epoch")
    values.update(overrides)
    return cfg.make_config("pgds", "tiny", "ci", **values)


def train_schedule(run_dir: Path, manifest: Path, splits: Path, **overrides) -> train.RunResult:
    train_table, val_table = tiny_tables(manifest, splits)
    return train.train_run(schedule_config(**overrides), train_table, val_table, CLASSES, run_dir,
                           manifest=manifest, builder=tiny_builder, verbose=0)


def _subprocess_main() -> None:
    """`python -c ...` entry of the kill/resume test: run_dir manifest splits."""
    run_dir, manifest, splits = (Path(a) for a in sys.argv[1:4])
    overrides = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    if "epoch_grid" in overrides:
        overrides["epoch_grid"] = tuple(overrides["epoch_grid"])
    train_schedule(run_dir, manifest, splits, **overrides)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    # 24 cases: 16 training images (batch 4: 4 steps per epoch), 4 validation, 4 test.
    return write_tiny_study(tmp_path_factory.mktemp("schedule_study"))


# ----------------------------------------------------------------------------- the schedule


def test_warmup_cosine_values_per_step():
    schedule = train.warmup_cosine_class()(1e-3, warmup_steps=4, total_steps=12)
    values = np.array([float(schedule(step)) for step in range(15)])
    # Linear warm-up: the first step at peak / 4 (~0), the 4th at the peak.
    np.testing.assert_allclose(values[:4], [0.25e-3, 0.5e-3, 0.75e-3, 1e-3], rtol=1e-6)
    # Cosine from the peak (step 4) through half the peak (step 8) to 0 at step 12 (after the
    # last of the 12 steps), and 0 beyond.
    expected = [0.5e-3 * (1 + math.cos(math.pi * (s - 4) / 8)) for s in range(4, 13)]
    np.testing.assert_allclose(values[4:13], expected, rtol=1e-5, atol=1e-12)
    assert values[8] == pytest.approx(0.5e-3, rel=1e-6)
    assert values[12] == pytest.approx(0.0, abs=1e-12) and values[11] > 0
    assert np.all(np.diff(values[4:13]) < 0) and np.all(values[13:] == pytest.approx(0.0, abs=1e-12))
    # No warm-up: the cosine starts at the peak. The config sizes the schedule per step.
    assert float(train.warmup_cosine_class()(1e-3, 0, 10)(0)) == pytest.approx(1e-3)
    sized = train.learning_rate_for(schedule_config(epoch_grid=(5,), warmup_epochs=2), steps_per_epoch=7)
    assert (sized.warmup_steps, sized.total_steps, sized.peak_learning_rate) == (14, 35, 1e-3)
    assert train.learning_rate_for(cfg.make_config("pgds", "tiny", "ci"), 7) == 1e-3  # constant: a float


def test_warmup_cosine_serialisation_round_trip():
    import keras

    schedule = train.warmup_cosine_class()(5e-4, warmup_steps=3, total_steps=20)
    record = json.loads(json.dumps(keras.optimizers.schedules.serialize(schedule)))
    assert record["registered_name"] == "reproduce>WarmupCosine"
    again = keras.optimizers.schedules.deserialize(record)
    assert type(again) is type(schedule) and again.get_config() == schedule.get_config()
    assert [float(again(s)) for s in range(22)] == [float(schedule(s)) for s in range(22)]
    assert type(schedule).from_config(schedule.get_config()).get_config() == schedule.get_config()
    # Through the optimizer, as a .keras checkpoint stores it.
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.05)
    rebuilt = keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(optimizer))))
    assert rebuilt._learning_rate.get_config() == schedule.get_config()
    assert rebuilt.weight_decay == pytest.approx(0.05)
    assert train.WarmupCosine is type(schedule)  # module attribute, for user code


# ----------------------------------------------------------------------------- AdamW


@pytest.mark.parametrize("schedule", ["constant", "warmup_cosine"])
def test_adamw_decays_a_weight_with_zero_gradient(schedule):
    import keras

    config = schedule_config(schedule=schedule, learning_rate=1e-2, weight_decay=5e-2, epoch_grid=(3,))
    optimizer = train.make_optimizer(config, steps_per_epoch=2)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == pytest.approx(5e-2)
    weight = keras.Variable(np.full(3, 2.0, dtype="float32"))
    expected = 2.0
    for step in range(6):
        rate = 1e-2 if schedule == "constant" else float(optimizer._learning_rate(step))
        optimizer.apply_gradients([(np.zeros(3, dtype="float32"), weight)])
        expected *= 1 - rate * 5e-2  # w <- w - lr * wd * w; Adam's own update is 0 here
        np.testing.assert_allclose(weight.numpy(), expected, rtol=1e-6)
    assert expected < 2.0
    # Adam leaves a weight with zero gradient where it is (no decay).
    adam = train.make_optimizer(cfg.make_config("pgds", "tiny", "ci"))
    assert type(adam) is keras.optimizers.Adam
    still = keras.Variable(np.full(3, 2.0, dtype="float32"))
    adam.apply_gradients([(np.zeros(3, dtype="float32"), still)])
    assert np.all(still.numpy() == 2.0)


def test_adamw_turns_the_l2_regulariser_off_unless_asked():
    config = cfg.make_config("pgds", "pgds_resnet", "ci", model_options={"blocks": (1, 1, 1, 1)})

    def regularised(model) -> int:
        return sum(getattr(layer, "kernel_regularizer", None) is not None for layer in model.layers)

    adam = train.registry_builder(config, (64, 70, 1), 2)
    adamw = train.registry_builder(dataclasses.replace(config, optimizer="adamw", weight_decay=0.05),
                                   (64, 70, 1), 2)
    both = train.registry_builder(dataclasses.replace(config, optimizer="adamw", weight_decay=0.05,
                                                      l2=1e-4), (64, 70, 1), 2)
    assert regularised(adam) > 0 and regularised(adamw) == 0 and regularised(both) == regularised(adam)
    with pytest.raises(InputError, match="AdamW's decoupled decay"):
        cfg.make_config("pgds", "tiny", "ci", weight_decay=0.05)  # Adam: no weight_decay


# ----------------------------------------------------------------------------- resume


def test_schedule_adamw_sigkill_then_resume_equals_uninterrupted(study, tmp_path):
    import keras

    manifest, splits = study
    command = [sys.executable, "-c",
               "from tests.test_train_schedule import _subprocess_main; _subprocess_main()",
               str(tmp_path / "resumed"), str(manifest), str(splits)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(train.KILL_ENV, None)
    # 4 steps per epoch (epoch 1 warms up): die after step 2 of epoch 2, in the cosine decay.
    killed = subprocess.Popen(command, cwd=REPO, env={**env, train.KILL_ENV: "2:2"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    train_schedule(tmp_path / "reference", manifest, splits)  # meanwhile, uninterrupted
    output, _ = killed.communicate(timeout=300)
    assert killed.returncode == -9, output
    assert json.loads((tmp_path / "resumed" / train.STATE_FILE).read_text())["epochs_completed"] == 1
    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stderr
    final = "checkpoints/epoch_0003.keras"
    diff = max_weight_diff(tmp_path / "reference" / final, tmp_path / "resumed" / final)
    print(f"warmup_cosine + AdamW, killed in epoch 2 and resumed vs uninterrupted: max |dw| = {diff:.3g}")
    assert diff <= WEIGHT_TOLERANCE
    # The checkpoint reloads with its optimizer: AdamW, the same schedule, at step 12.
    train.register_serializables()
    model = keras.models.load_model(tmp_path / "resumed" / final)
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert model.optimizer._learning_rate.get_config() == \
        {"peak_learning_rate": 1e-3, "warmup_steps": 4, "total_steps": 12, "name": "warmup_cosine"}
    assert int(model.optimizer.iterations.numpy()) == 12
    # log.csv: each epoch's scheduled rate (its last step: 4e - 1), the same in both runs.
    logs = [pd.read_csv(tmp_path / name / train.LOG_FILE) for name in ("reference", "resumed")]
    assert logs[1]["epoch"].tolist() == [1, 2, 3]
    schedule = model.optimizer._learning_rate
    np.testing.assert_allclose(logs[0]["learning_rate"], [float(schedule(4 * e - 1)) for e in (1, 2, 3)],
                               rtol=1e-6)
    np.testing.assert_array_equal(logs[1]["learning_rate"], logs[0]["learning_rate"])
    np.testing.assert_allclose(logs[1][["loss", "val_loss"]], logs[0][["loss", "val_loss"]], rtol=0, atol=1e-6)
    selection = json.loads((tmp_path / "resumed" / train.SELECTION_FILE).read_text())
    assert "NOT an e-epoch run" in selection["note"] and selection["stopped_early"] is False


def _model_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.models.load_model(path, compile=False)(images, training=False))


def test_checkpoint_every_commits_less_often_and_is_the_same_run(study, tmp_path):
    """Committing every 2 epochs: a kill loses the uncommitted epoch, the resumed run ends
    with the weights, log and best-epoch model of an uninterrupted run committing every epoch
    (the best epoch, 3, falls between commits at 2 and 4: its weights waited in memory)."""
    manifest, splits = study
    # Reference: commit every epoch (5 epochs at a constant, high rate: the validation loss is
    # best at epoch 3, then rises).
    recipe = {"schedule": "constant", "learning_rate": 1.0}
    reference = train_schedule(tmp_path / "every1", manifest, splits, epoch_grid=(5,), **recipe)
    assert reference.selected_epoch == 3
    overrides = {"epoch_grid": [5], "checkpoint_every": 2, **recipe}
    command = [sys.executable, "-c",
               "from tests.test_train_schedule import _subprocess_main; _subprocess_main()",
               str(tmp_path / "every2"), str(manifest), str(splits), json.dumps(overrides)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(train.KILL_ENV, None)
    killed = subprocess.run(command, cwd=REPO, env={**env, train.KILL_ENV: "4:2"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    state = json.loads((tmp_path / "every2" / train.STATE_FILE).read_text())
    # Epoch 3 finished but was not committed: the run resumes after epoch 2.
    assert (state["epochs_completed"], state["checkpoint"]) == (2, "checkpoints/epoch_0002.keras")
    assert len(pd.read_csv(tmp_path / "every2" / train.LOG_FILE)) == 2
    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stderr and "after epoch 2" in resumed.stderr
    final = "checkpoints/epoch_0005.keras"
    assert max_weight_diff(tmp_path / "every1" / final, tmp_path / "every2" / final) <= WEIGHT_TOLERANCE
    logs = [pd.read_csv(tmp_path / name / train.LOG_FILE) for name in ("every1", "every2")]
    assert logs[1]["epoch"].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(logs[1][["loss", "val_loss"]], logs[0][["loss", "val_loss"]],
                               rtol=0, atol=1e-6)
    selections = [json.loads((tmp_path / name / train.SELECTION_FILE).read_text())
                  for name in ("every1", "every2")]
    assert selections[1]["epoch"] == selections[0]["epoch"] == reference.selected_epoch
    images = np.random.default_rng(0).random((3, 18, 20, 1), dtype=np.float32)
    np.testing.assert_allclose(_model_outputs(tmp_path / "every2" / train.SELECTED_MODEL, images),
                               _model_outputs(tmp_path / "every1" / train.SELECTED_MODEL, images),
                               rtol=0, atol=1e-5)
    # Only the last two commits' checkpoints are kept (the newest and the one to fall back to).
    assert sorted(p.name for p in (tmp_path / "every2" / "checkpoints").iterdir()) == \
        ["epoch_0004.keras", "epoch_0005.keras"]


@pytest.mark.parametrize("field, value", [("checkpoint_every", 0), ("checkpoint_every", 1.5),
                                          ("precise_bn_images", 0), ("precise_bn_images", True)])
def test_operational_fields_must_be_positive_integers(field, value):
    with pytest.raises(InputError, match="must be a positive integer"):
        schedule_config(**{field: value})


# ----------------------------------------------------------------------------- selection


HISTORY = [
    {"epoch": 1, "val_loss": 0.9, "val_accuracy": 0.50},
    {"epoch": 2, "val_loss": 0.7, "val_accuracy": 0.75},
    {"epoch": 3, "val_loss": 0.5, "val_accuracy": 0.75},   # ties 2 on accuracy, smaller loss
    {"epoch": 4, "val_loss": 0.5, "val_accuracy": 0.75},   # ties 3 on both: the earlier wins
    {"epoch": 5, "val_loss": 0.4, "val_accuracy": float("nan")},  # NaN accuracy ranks last
    {"epoch": 6, "val_loss": 0.6, "val_accuracy": 0.70},
]


@pytest.mark.parametrize("grid, selection, metric, expected", [
    ((1, 2, 3, 4, 5, 6), "best_epoch", "val_accuracy", (3, 0.5)),
    ((2, 4, 6), "grid", "val_accuracy", (4, 0.5)),
    ((2, 6), "grid", "val_accuracy", (2, 0.7)),
    ((5, 6), "grid", "val_accuracy", (6, 0.6)),
    ((1, 2, 3, 4, 5, 6), "best_epoch", "val_loss", (5, 0.4)),  # today's rule, unchanged
])
def test_val_accuracy_selection_and_ties(grid, selection, metric, expected):
    assert train.select_epoch(HISTORY, grid, selection, metric) == expected
    assert train.select_epoch(HISTORY, grid, selection) == train.select_epoch(HISTORY, grid, selection, "val_loss")


def test_early_stopping_stops_and_rerun_reuses_the_finished_run(study, tmp_path):
    manifest, splits = study
    # A learning rate of 1e-30 leaves the weights where they are: every epoch scores the same,
    # so no epoch after the first is better and patience 2 stops after epoch 3 of 6.
    options = dict(optimizer="adam", weight_decay=0.0, schedule="constant", learning_rate=1e-30,
                   epoch_grid=(6,), selection_metric="val_accuracy", early_stopping_patience=2,
                   selection_split="test_fold")
    first = train_schedule(tmp_path / "run", manifest, splits, **options)
    log = pd.read_csv(tmp_path / "run" / train.LOG_FILE)
    selection = json.loads((tmp_path / "run" / train.SELECTION_FILE).read_text())
    stopped = selection["stopped_early_at_epoch"]
    assert selection["stopped_early"] is True and stopped == selection["epoch"] + 2 < 6
    assert log["epoch"].tolist() == list(range(1, stopped + 1)) and first.epochs_trained == stopped
    assert f"stopped early at epoch {stopped} of 6" in selection["early_stopping_note"]
    assert selection["epochs_completed"] == stopped and selection["max_epochs"] == 6
    # val_accuracy selection: the best row of the log by (accuracy, -loss, -epoch).
    best = min(log.to_dict("records"), key=lambda row: (-row["val_accuracy"], row["val_loss"], row["epoch"]))
    assert first.selected_epoch == selection["epoch"] == int(best["epoch"])
    assert selection["selection_metric"] == "val_accuracy" and len(selection["candidates_val_accuracy"]) == stopped
    # The selection split is only recorded, in run.json's config and selection.json with its warning.
    assert selection["selection_split"] == "test_fold" and "inflated" in selection["selection_split_note"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["selection_split"] == "test_fold"
    # The run is complete: a rerun trains nothing and keeps the selection.
    again = train_schedule(tmp_path / "run", manifest, splits, **options)
    assert (again.epochs_trained, again.resumed_from, again.selected_epoch) == (0, stopped, first.selected_epoch)
    assert json.loads((tmp_path / "run" / train.SELECTION_FILE).read_text()) == selection


@pytest.mark.parametrize("overrides, message", [
    (dict(selection="grid", epoch_grid=(1, 2, 3)), "not an e-epoch run"),
    (dict(selection="grid", epoch_grid=(1, 2, 3), schedule="constant", optimizer="adam",
          weight_decay=0.0, early_stopping_patience=2), "use --selection best_epoch"),
    (dict(warmup_epochs=3), "warm-up epoch"),
    (dict(early_stopping_patience=0), "positive integer"),
    (dict(selection_metric="auroc"), "selection_metric must be one of"),
    (dict(optimizer="sgd"), "optimizer must be one of"),
    (dict(schedule="step"), "schedule must be one of"),
    (dict(selection_split="test"), "selection_split must be one of"),
])
def test_bad_engine_options_refused(overrides, message):
    with pytest.raises(InputError, match=message):
        schedule_config(**overrides)


def test_grid_under_schedule_refused_but_one_grid_epoch_allowed(study, tmp_path, capsys, monkeypatch):
    with pytest.raises(InputError, match=r"epoch grid \(1, 2\) under the warmup_cosine schedule"):
        cfg.make_config("pgds", "pgds_resnet", "ci", schedule="warmup_cosine")  # grid (1, 2)
    assert schedule_config(selection="grid", epoch_grid=(3,)).selection == "grid"  # the full run
    assert schedule_config(epoch_grid=(1, 2, 3)).selection == "best_epoch"
    # The command line: exit 2, one line, nothing trained.
    manifest, splits = study
    monkeypatch.setattr(train, "train_run", lambda *a, **k: pytest.fail("trained"))
    argv = ["--study", "pgds", "--profile", "ci", "--manifest", str(manifest), "--splits", str(splits),
            "--out", str(tmp_path), "--schedule", "warmup_cosine", "--epochs", "1,2,3"]
    assert train.main(argv) == 2
    assert "not an e-epoch run" in capsys.readouterr().err.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- CLI + defaults


def test_cli_flags_reach_the_config(study, tmp_path, monkeypatch):
    manifest, splits = study
    trained = []

    def fake_train_run(config, train_table, val_table, class_names, run_dir, **kwargs):
        trained.append((config, val_table))
        return train.RunResult(Path(run_dir), 1, 0.5, Path(run_dir) / train.SELECTED_MODEL, 1, 0, 0.0)

    monkeypatch.setattr(train, "train_run", fake_train_run)
    base = ["--study", "pgds", "--profile", "ci", "--manifest", str(manifest), "--splits", str(splits),
            "--architectures", "pgds_resnet", "--out", str(tmp_path)]
    assert train.main(base + ["--optimizer", "adamw", "--weight-decay", "0.05", "--schedule",
                              "warmup_cosine", "--warmup-epochs", "2", "--epochs", "5",
                              "--selection", "best_epoch", "--selection-metric", "val_accuracy",
                              "--early-stopping-patience", "3", "--selection-split", "test_fold"]) == 0
    assert train.main(base) == 0
    (config, val_table), (default, default_val) = trained
    assert (config.optimizer, config.weight_decay, config.schedule, config.warmup_epochs,
            config.selection, config.selection_metric, config.early_stopping_patience,
            config.selection_split) == ("adamw", 0.05, "warmup_cosine", 2, "best_epoch",
                                        "val_accuracy", 3, "test_fold")
    frame = pd.read_csv(splits)

    def names(table) -> list[str]:
        return sorted(Path(path).name for path in table.paths)

    assert names(val_table) == sorted(Path(p).name for p in frame.loc[frame["split"] == "test", "image_path"])
    assert names(default_val) == sorted(Path(p).name for p in frame.loc[frame["split"] == "val", "image_path"])
    assert default == cfg.make_config("pgds", "pgds_resnet", "ci")
    with pytest.raises(SystemExit):
        train.build_parser("pgds").parse_args(["--optimizer", "sgd"])  # argparse choices


def test_default_configs_gained_only_fields_that_reproduce_today():
    fields = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING
              else f.default for f in dataclasses.fields(cfg.TrainConfig)}
    assert set(fields) - LEGACY_FIELDS - set(RECORDED_WHEN_SET) == set(NEW_DEFAULTS) == set(cfg.ENGINE_DEFAULTS)
    assert {name: fields[name] for name in RECORDED_WHEN_SET} == RECORDED_WHEN_SET
    assert {name: fields[name] for name in NEW_DEFAULTS} == NEW_DEFAULTS == cfg.ENGINE_DEFAULTS
    for study_key, spec in cfg.STUDIES.items():
        if spec.train_overrides:  # a study's own recipe (cns) sets them on purpose
            continue
        for profile in cfg.PROFILE_NAMES:
            config = cfg.make_config(study_key, spec.architectures[0], profile)
            assert {name: getattr(config, name) for name in NEW_DEFAULTS} == NEW_DEFAULTS, (study_key, profile)
            # Recorded exactly as before (so earlier run folders and results/ still match) ...
            assert set(config.to_dict()) == LEGACY_FIELDS, (study_key, profile)
            # ... and Adam at a constant rate, as before.
            assert type(train.learning_rate_for(config)) is float
    # The committed results' training configs are today's defaults, field for field.
    record = json.loads((REPO / "results" / "pgds" / "run.json").read_text())["config"]["training"]
    for arch, recorded in record.items():
        assert json.loads(json.dumps(cfg.TrainConfig(**recorded).to_dict())) == recorded
        assert json.loads(json.dumps(cfg.make_config("pgds", arch, "default").to_dict())) == recorded, arch
    # Any new option set: all seven are recorded, and read back to the same config.
    cns = cfg.make_config("pgds", "tiny", "ci", selection_split="test_fold")
    assert set(cns.to_dict()) == LEGACY_FIELDS | set(NEW_DEFAULTS)
    assert cfg.TrainConfig(**json.loads(json.dumps(cns.to_dict()))) == cns
    bf16 = cfg.make_config("pgds", "tiny", "ci", precision="bfloat16").to_dict()
    assert set(bf16) == LEGACY_FIELDS | {"precision", "dtype_policy"}
    assert (bf16["precision"], bf16["dtype_policy"]) == ("bfloat16", "mixed_bfloat16")


def test_study_paper_selection_and_train_overrides(monkeypatch):
    # Pgds: the default is Tang 2023's rule; CNS: honest selection is a named departure from
    # the authors' test-fold protocol, which is recorded as theirs when asked for.
    rule, departure = train.selection_rule(cfg.make_config("pgds", "pgds_resnet", "ci"))
    assert departure is False and "Tang 2023" in rule
    honest = cfg.make_config("cns", "resnet34", "ci", selection="best_epoch", selection_metric="val_accuracy",
                             early_stopping_patience=5)
    assert train.selection_rule(honest)[1] is True
    protocol = dataclasses.replace(honest, selection_split="test_fold")
    rule, departure = train.selection_rule(protocol)
    assert departure is False and "held-out test fold" in rule and "Qi 2025" in rule
    # A study's recipe per profile is config: applied after the profile, before the caller.
    recipe = {"optimizer": "adamw", "weight_decay": 5e-2, "learning_rate": 5e-4, "schedule": "warmup_cosine",
              "epoch_grid": (20,), "selection": "best_epoch", "early_stopping_patience": 5}
    monkeypatch.setitem(cfg.STUDIES, "cns", dataclasses.replace(cfg.STUDIES["cns"],
                                                                train_overrides={"paper": recipe}))
    config = cfg.make_config("cns", "resnet34", "paper", learning_rate=1e-3)
    assert (config.optimizer, config.weight_decay, config.schedule, config.epoch_grid,
            config.early_stopping_patience, config.learning_rate) == ("adamw", 5e-2, "warmup_cosine",
                                                                      (20,), 5, 1e-3)
    assert cfg.make_config("cns", "resnet34", "ci").optimizer == "adam"  # other profiles untouched
