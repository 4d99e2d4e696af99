"""Training engine: the paper's epoch grid in one pass, model selection, exact resume, scale.

`python -m reproduce pgds train --profile ci|default|paper [--manifest M] [--splits S] ...`
trains every (architecture, fold) of the study's run grid (or this machine's `--shard i/n` of
it) and writes, per run, under `runs/<study>/<profile>/<architecture>/fold<k>/`:

- `run.json` (config, seed, library versions, git commit, manifest hash; data_prep.provenance),
- `log.csv`: one row per epoch (epoch, loss, val_loss, accuracy, val_accuracy, seconds,
  images_per_s, checkpoint_seconds, learning_rate), rewritten atomically, never a row twice,
- `snapshots/epoch_XXXX.keras` at every epoch of the grid (Tang 2023 s2.3 trains 25, 50, 100,
  150 and 200 epochs; with a constant learning rate the e-epoch model IS epoch e of the longest
  run, so one run to max(grid) gives all five at the cost of one),
- `selection.json` + `selected.keras`: the snapshot with the smallest validation loss
  (`--selection grid`, the paper's rule), or the best of ALL epochs (`--selection best_epoch`,
  a departure from the paper, named as such in selection.json); `--selection-metric
  val_accuracy` ranks by the highest validation accuracy instead (ties: smaller val loss, then
  the earlier epoch); `--early-stopping-patience P` (best_epoch only) ends the run P epochs
  after the last new best, and the run is then complete (resume and reuse treat it as
  finished); selection.json names the metric, the validation source (`--selection-split`: a
  test-fold selection is said to inflate the test figures), any early stop and, under a
  non-constant schedule, that a snapshot at epoch e is not an e-epoch run,
- `checkpoints/epoch_XXXX.keras` + `state.json`: the last committed epoch (model, optimizer,
  epoch counter, dropout RNG state), committed atomically every `checkpoint_every` epochs (1
  unless a profile sets it; always at grid epochs, an early stop and the last epoch); a killed
  run started again resumes from it and ends with the same weights as an uninterrupted run
  (order and augmentation are pure functions of (seed, epoch, image); see
  reproduce.input_pipeline), having redone at most checkpoint_every - 1 epochs.

Optimiser: `--optimizer adam` (Tang 2023), `rmsprop` (Hong 2021) or `adamw` (decoupled weight
decay `--weight-decay`; no L2 kernel regulariser unless `--l2` asks for one), at a constant rate
or `--schedule warmup_cosine` (`WarmupCosine`: per-step linear warm-up over `--warmup-epochs`,
then cosine to 0 at the last epoch; serialisable, so checkpoints reload and a resumed run
continues the same schedule from the optimizer's step counter). log.csv's learning_rate is the
rate of each epoch's last step. Loading a checkpoint WITH its optimizer (compile=True) in a
fresh process needs
`register_serializables()` (or `reproduce.train.WarmupCosine`) first; compile=False does not.

Losses: `bce` (keras BinaryCrossentropy on one-hot labels and a 2-unit softmax, as the
authors' code), `weighted_ce` (categorical cross-entropy with per-sample class weights
n_total / (n_classes * n_c) from the training split, Qi 2025, on train and validation),
`arcface` / `cosface` (models.margins heads, Shen 2024).

Scale: `--mixed-precision` (mixed_float16; Keras 3 compile() wraps the optimizer in a
LossScaleOptimizer itself), `--xla` (jit_compile), `--strategy mirrored|multiworker`
(tf.distribute; the model is built and compiled in strategy.scope(); `--batch-size` is the
GLOBAL batch, split evenly over replicas; under multiworker only the chief writes the run
folder, and every worker decodes the whole batch stream and keeps its share, tf.data's DATA
auto-sharding), `--shard i/n` (deterministic round-robin share of the run grid, `shard_runs`).
Determinism: keras.utils.set_random_seed + TF op determinism (same seed, same weights on CPU);
Keras refuses XLA under op determinism, so `--xla` runs without it.

Snapshots are whole training models with their optimizer (resumable); load them for
inference with `keras.models.load_model(path, compile=False)`. For ArcFace/CosFace the saved
model is the [image, label] training model: `models.margins.build_margin_inference_model`
turns it into image -> probabilities.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_prep import atomic  # noqa: E402
from data_prep.errors import EXIT_FINDING, InputError, report_bad_input  # noqa: E402
from data_prep.provenance import write_run_json  # noqa: E402
from reproduce import config as cfg  # noqa: E402
from reproduce.config import TrainConfig  # noqa: E402

KILL_ENV = "REPRODUCE_TEST_KILL_AT"  # "epoch:batch" (1-based): SIGKILL self there (tests only)
STATE_FILE = "state.json"
PREVIOUS_STATE_FILE = "state.previous.json"
LOG_FILE = "log.csv"
SELECTION_FILE = "selection.json"
SELECTED_MODEL = "selected.keras"
# Per-epoch class probabilities of the monitored (test-fold) images: epoch, index, p_0..p_K-1.
MONITOR_FILE = "monitor.csv"
BEST_EPOCH_MODEL = "best_epoch.keras"
LOG_COLUMNS = ("epoch", "loss", "val_loss", "accuracy", "val_accuracy", "seconds",
               "images_per_s", "checkpoint_seconds", "learning_rate")

# (config, input_shape (H, W, C), num_classes) -> uncompiled keras.Model
ModelBuilder = Callable[[TrainConfig, tuple[int, int, int], int], Any]


# ----------------------------------------------------------------------------- run grid


@dataclass(frozen=True)
class RunSpec:
    """One independent training run of the grid (study x architecture x fold)."""

    study: str
    architecture: str
    fold: int

    def describe(self) -> str:
        return f"{self.study} {self.architecture} fold {self.fold}"


def run_grid(study: str, architectures: Sequence[str], folds: Sequence[int]) -> list[RunSpec]:
    """Every run, architecture-major: [(a0, f0), (a0, f1), ..., (a1, f0), ...]."""
    return [RunSpec(study, arch, int(fold)) for arch in architectures for fold in folds]


def shard_runs(runs: Sequence[RunSpec], index: int, count: int) -> list[RunSpec]:
    """Shard `index` of `count` (0-based): runs index, index+count, index+2*count, ...

    Deterministic round-robin: the shards are disjoint, cover the grid, differ in size by at
    most one, and depend only on the grid's order.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need count >= 1 and 0 <= index < count")
    return list(runs[index::count])


def run_dir_for(out: str | Path, study: str, profile: str, architecture: str, fold: int) -> Path:
    return Path(out) / study / profile / architecture / f"fold{int(fold)}"


# ----------------------------------------------------------------------------- schedule

_WARMUP_COSINE: Any = None


def warmup_cosine_class():
    """The WarmupCosine LearningRateSchedule class, defined and registered with Keras on first
    use (this module imports no TensorFlow until it trains).

    WarmupCosine(peak_learning_rate, warmup_steps, total_steps)(step), step = the optimizer's
    0-based step counter:
      step < warmup_steps:        peak * (step + 1) / warmup_steps   (peak/warmup_steps .. peak)
      warmup_steps <= step:       peak * (1 + cos(pi * min((step - warmup_steps) /
                                                   (total_steps - warmup_steps), 1))) / 2
    so the rate reaches 0 at step == total_steps (the end of the last epoch; the last step
    itself still moves the weights a little) and stays 0 beyond.
    """
    global _WARMUP_COSINE
    if _WARMUP_COSINE is None:
        import keras
        from keras import ops

        @keras.saving.register_keras_serializable(package="reproduce")
        class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
            """Linear warm-up, then cosine decay to 0 (see warmup_cosine_class)."""

            def __init__(self, peak_learning_rate: float, warmup_steps: int, total_steps: int,
                         name: str = "warmup_cosine"):
                super().__init__()
                if not peak_learning_rate > 0:
                    raise ValueError(f"peak learning rate must be positive, got {peak_learning_rate}")
                if not 0 <= int(warmup_steps) < int(total_steps):
                    raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps}, "
                                     f"{total_steps}")
                self.peak_learning_rate = float(peak_learning_rate)
                self.warmup_steps = int(warmup_steps)
                self.total_steps = int(total_steps)
                self.name = name

            def __call__(self, step):
                step = ops.cast(step, "float32")
                peak = ops.cast(self.peak_learning_rate, "float32")
                warmup = float(self.warmup_steps)
                progress = ops.clip((step - warmup) / float(self.total_steps - self.warmup_steps),
                                    0.0, 1.0)
                cosine = 0.5 * peak * (1.0 + ops.cos(math.pi * progress))
                if not self.warmup_steps:
                    return cosine
                return ops.where(step < warmup, peak * (step + 1.0) / warmup, cosine)

            def get_config(self):
                return {"peak_learning_rate": self.peak_learning_rate,
                        "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                        "name": self.name}

        _WARMUP_COSINE = WarmupCosine
    return _WARMUP_COSINE


def register_serializables() -> None:
    """Register this module's Keras objects (WarmupCosine), to load checkpoints with compile=True."""
    warmup_cosine_class()


def __getattr__(name: str):  # `from reproduce.train import WarmupCosine` (imports keras then)
    if name == "WarmupCosine":
        return warmup_cosine_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def learning_rate_for(config: TrainConfig, steps_per_epoch: int | None = None):
    """The optimizer's learning rate: the float, or a WarmupCosine over the run's steps."""
    if config.schedule == "constant":
        return config.learning_rate
    if not steps_per_epoch:
        raise ValueError(f"the {config.schedule} schedule needs the steps per epoch")
    return warmup_cosine_class()(config.learning_rate,
                                 warmup_steps=steps_per_epoch * config.warmup_epochs,
                                 total_steps=steps_per_epoch * config.max_epochs)


def make_optimizer(config: TrainConfig, steps_per_epoch: int | None = None):
    """keras Adam (as before), AdamW with the config's decoupled weight decay, or RMSprop
    (Keras defaults: rho 0.9, no momentum; Hong 2021 gives no settings)."""
    import keras

    learning_rate = learning_rate_for(config, steps_per_epoch)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    return keras.optimizers.Adam(learning_rate=learning_rate)


def last_step_learning_rate(optimizer) -> float:
    """The rate the optimizer's most recent step used (log.csv's learning_rate of an epoch)."""
    import keras

    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    schedule = getattr(inner, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return float(np.asarray(schedule(max(int(np.asarray(inner.iterations)) - 1, 0))))
    return float(np.asarray(optimizer.learning_rate))


# ----------------------------------------------------------------------------- model + compile


def registry_builder(config: TrainConfig, input_shape: tuple[int, int, int], num_classes: int):
    """models.registry.build with the architecture's defaults, then the config's l2 / width.
    Under AdamW with `l2=None` the L2 kernel regulariser is off (decoupled decay replaces it)."""
    from models import registry

    options = dict(registry.default_options(config.architecture))
    if config.l2 is not None:
        options["l2"] = config.l2
    elif config.optimizer == "adamw" and "l2" in options:
        options["l2"] = 0.0
    if config.width is not None:
        options["width"] = config.width
    options.update(config.model_options)
    if config.loss in ("arcface", "cosface"):
        options["head"] = "embedding"  # models.margins puts the margin head on top
    try:
        model = registry.build(config.architecture, input_shape, num_classes, **options)
    except ValueError as err:  # unknown model or option, input too small: the user's to fix
        raise InputError(None, str(err)) from None
    if config.init_weights is not None:
        load_init_weights(model, config.init_weights)
    return model


def load_init_weights(model, path: str | Path) -> None:
    """Initialise `model` from the user's weights file (e.g. ImageNet ResNet-34), matched by
    layer name; the classifier keeps its initial weights when its class count differs (a new
    final layer, as Qi 2025). A file that is absent or does not fit is an InputError naming it
    and the first layer that does not fit."""
    from models import weights as weights_mod

    try:
        report = weights_mod.load_weights_file(model, path, optional_layers=("logits",))  # a new final layer
    except weights_mod.WeightsFileError:
        raise InputError(path, "weights file not found (--init-weights)") from None
    except (weights_mod.WeightsMismatchError, OSError, ValueError) as err:
        raise InputError(path, f"these weights do not fit {model.name}: {err}") from None
    print(f"initialised from {report.summary()}", file=sys.stderr, flush=True)


def input_shape_for(config: TrainConfig) -> tuple[int, int, int]:
    """(H, W, C): the profile's size, or the architecture's paper input (registry)."""
    if config.size_wh is not None:
        width, height = config.size_wh
        return int(height), int(width), int(config.channels or 1)
    from models import registry

    height, width, channels = registry.study_input_shape(config.architecture, config.study)
    return int(height), int(width), int(config.channels or channels)


def make_loss(config: TrainConfig):
    import keras

    if config.loss == "bce":
        # The authors' code: BinaryCrossentropy on one-hot labels and a 2-unit softmax.
        return keras.losses.BinaryCrossentropy()
    if config.loss == "weighted_ce":
        # Class weights arrive as per-sample weights from the input pipeline.
        return keras.losses.CategoricalCrossentropy()
    # ArcFace / CosFace heads output scaled, margin-adjusted logits.
    return keras.losses.CategoricalCrossentropy(from_logits=True)


def build_and_compile(config: TrainConfig, num_classes: int, builder: ModelBuilder | None = None,
                      steps_per_epoch: int | None = None):
    """The training model, compiled (call inside strategy.scope() under tf.distribute).
    `steps_per_epoch` sizes a non-constant learning-rate schedule."""
    import keras

    builder = builder or registry_builder
    model = builder(config, input_shape_for(config), num_classes)
    if config.loss in ("arcface", "cosface"):
        from models import margins

        options = dict(config.margin)
        warmup_epochs = options.pop("warmup_epochs", 0)
        if warmup_epochs:
            options["warmup_steps"] = int(round(float(warmup_epochs) * (steps_per_epoch or 1)))
        model = margins.build_margin_training_model(model, num_classes, config.loss, **options)
    model.compile(optimizer=make_optimizer(config, steps_per_epoch),
                  loss=make_loss(config),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  jit_compile=bool(config.xla), run_eagerly=bool(config.run_eagerly))
    return model


def prebuild_training_variables(model, config: TrainConfig, num_classes: int) -> None:
    """Create the optimizer's slots (and, without tf.distribute, the loss and metric trackers)
    eagerly before `fit`. A tf.function that creates variables while it is traced is traced
    TWICE; for ResNet-34 that is ~25 s instead of ~15 s of tracing per run. The values are the
    same zeros `fit` would create (metric states are reset at each epoch's start)."""
    model.optimizer.build(model.trainable_variables)
    if config.strategy != "none" or config.loss in ("arcface", "cosface"):
        return
    x = np.zeros((1, *input_shape_for(config)), dtype=np.float32)
    y = np.zeros((1, num_classes), dtype=np.float32)
    weight = np.ones((1,), dtype=np.float32)
    y_pred = model(x, training=False)
    model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=weight)
    model.compute_metrics(x, y, y_pred, sample_weight=weight)
    model.reset_metrics()


def seed_generator_states(model) -> list[np.ndarray]:
    """Dropout & co. RNG states (Keras does not save them in .keras files)."""
    return [np.asarray(v.numpy()) for v in model.variables if v.path.endswith("seed_generator_state")]


def restore_seed_generator_states(model, states: Sequence[Sequence[int]]) -> None:
    variables = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    if len(variables) != len(states):
        raise RuntimeError(f"checkpoint has {len(states)} RNG states, the model {len(variables)}")
    for variable, state in zip(variables, states):
        variable.assign(np.asarray(state, dtype=variable.dtype))


@contextlib.contextmanager
def numerics(config: TrainConfig) -> Iterator[None]:
    """Seeds, op determinism and the dtype policy of a run; the policy is restored after.

    Keras silently turns XLA off while TF op determinism is on, so `--xla` runs without it
    (same seed, same start; bit-identical results are then not promised)."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(cfg.dtype_policy(config))
    keras.utils.set_random_seed(config.seed)
    if config.xla:
        tf_config.disable_op_determinism()
    else:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# ----------------------------------------------------------------------------- strategy

_STRATEGY_CACHE: dict[str, Any] = {}


def make_strategy(name: str):
    """tf.distribute strategy for `name` (created once per process: MultiWorker must be made
    before any other TF op, and creating strategies repeatedly leaks devices)."""
    import tensorflow as tf

    if name not in _STRATEGY_CACHE:
        if name == "none":
            _STRATEGY_CACHE[name] = tf.distribute.get_strategy()
        elif name == "mirrored":
            _STRATEGY_CACHE[name] = tf.distribute.MirroredStrategy()
        elif name == "multiworker":
            _STRATEGY_CACHE[name] = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            raise InputError(None, f"strategy must be one of {', '.join(cfg.STRATEGIES)}, got {name!r}")
    return _STRATEGY_CACHE[name]


def worker_identity(strategy) -> tuple[bool, int]:
    """(is_chief, task_id). Only the chief writes the run folder under MultiWorker."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return chief, task_id


# ----------------------------------------------------------------------------- state on disk


def file_record(path: Path) -> dict[str, Any]:
    """What a written file must still be when it is read back: its size and sha256."""
    from data_prep.provenance import sha256_file

    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def damage(path: Path, record: Mapping[str, Any] | None) -> str | None:
    """Why `path` is not the file `record` describes (None: it is; with no record, only that it
    exists). Size first: a truncated or empty file is named without hashing it."""
    if not path.is_file():
        return "is missing"
    if not record:
        return None
    size = path.stat().st_size
    if size != record["bytes"]:
        return f"has {size} bytes where {record['bytes']} were written (truncated or replaced)"
    if file_record(path)["sha256"] != record["sha256"]:
        return "is not the file that was written (its sha256 differs)"
    return None


@dataclass
class RunState:
    """What `state.json` holds: the last committed epoch and everything to continue from it,
    with the size and sha256 of every model file it names (`files`), so a damaged one is found
    before it is loaded. The commit before it stays as `state.previous.json` with its own
    checkpoint, to fall back to."""

    epochs_completed: int = 0
    checkpoint: str | None = None
    history: list[dict[str, float]] | None = None
    seed_states: list[list[int]] | None = None
    best_epoch: int | None = None
    best_val_loss: float | None = None
    stopped_early_at: int | None = None   # early stopping ended the run after this epoch
    files: dict[str, dict[str, Any]] | None = None   # relative path -> file_record

    @classmethod
    def load(cls, run_dir: Path) -> "RunState":
        """The newest commit whose state file parses and whose checkpoint is intact; a damaged
        newer one is named on stderr and passed over. InputError when commits exist but none
        is usable."""
        problems = []
        for name in (STATE_FILE, PREVIOUS_STATE_FILE):
            path = run_dir / name
            if not path.exists():
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                state = cls(**{k: data.get(k) for k in cls.__dataclass_fields__})
            except (OSError, ValueError, TypeError, AttributeError) as err:
                problems.append(f"{path} is damaged ({type(err).__name__})")
                continue
            state.history, state.files = state.history or [], state.files or {}
            why = (damage(run_dir / state.checkpoint, state.files.get(state.checkpoint))
                   if state.checkpoint else None)
            if why:
                problems.append(f"{run_dir / state.checkpoint} {why}")
                continue
            if problems:
                print(f"warning: {'; '.join(problems)}: resuming from {path.name} (epoch "
                      f"{state.epochs_completed}) instead", file=sys.stderr, flush=True)
            return state
        if problems:
            raise InputError(run_dir, "no intact checkpoint to resume from: " + "; ".join(problems)
                             + "; use --force to start this run again")
        return cls(history=[], files={})

    def save(self, run_dir: Path) -> None:
        """Commit: the current state.json becomes state.previous.json, then this state is
        written (each step atomic)."""
        if (run_dir / STATE_FILE).is_file():
            _copy_atomic(run_dir / STATE_FILE, run_dir / PREVIOUS_STATE_FILE)
        atomic.write_json(run_dir / STATE_FILE, self.__dict__)


def _val_loss(row: Mapping[str, Any]) -> float:
    value = row.get("val_loss")
    return math.inf if value is None or not np.isfinite(value) else float(value)


def _val_accuracy(row: Mapping[str, Any]) -> float:
    value = row.get("val_accuracy")
    return -math.inf if value is None or not np.isfinite(value) else float(value)


def selection_key(row: Mapping[str, Any], metric: str = "val_loss") -> tuple:
    """Sort key of an epoch's log row, best first: smallest val loss (`val_loss`) or highest
    val accuracy, then smallest val loss (`val_accuracy`); then the earlier epoch. A missing
    or NaN value ranks last."""
    if metric == "val_accuracy":
        return (-_val_accuracy(row), _val_loss(row), int(row["epoch"]))
    if metric != "val_loss":
        raise ValueError(f"selection metric must be one of {', '.join(cfg.SELECTION_METRICS)}, "
                         f"got {metric!r}")
    return (_val_loss(row), int(row["epoch"]))


def select_epoch(history: Sequence[Mapping[str, Any]], grid: Sequence[int], selection: str,
                 metric: str = "val_loss") -> tuple[int, float]:
    """(epoch, val_loss) of the best epoch by `metric` (selection_key) among the grid's epochs
    (`grid`) or among all epochs (`best_epoch`); ties go to the earlier epoch."""
    if selection == "grid":
        candidates = [row for row in history if int(row["epoch"]) in set(grid)]
    else:
        candidates = list(history)
    if not candidates:
        raise ValueError("no epoch to select from")
    best = min(candidates, key=lambda row: selection_key(row, metric))
    return int(best["epoch"]), _val_loss(best)


def _copy_atomic(src: Path, dest: Path) -> None:
    with atomic.atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _write_log(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> None:
    frame = pd.DataFrame(list(history))
    columns = [c for c in LOG_COLUMNS if c in frame.columns] + \
              [c for c in frame.columns if c not in LOG_COLUMNS]
    atomic.write_csv(run_dir / LOG_FILE, frame[columns] if len(frame) else pd.DataFrame(columns=LOG_COLUMNS))


# ----------------------------------------------------------------------------- callbacks


def _write_monitor(run_dir: Path, epoch: int, probabilities: np.ndarray) -> None:
    """Append epoch `epoch`'s probabilities to monitor.csv (dropping any later epochs a killed
    run left), atomically."""
    path = run_dir / MONITOR_FILE
    previous = read_monitor(run_dir)
    if previous is not None:
        previous = previous[previous["epoch"] < epoch]
    rows = pd.DataFrame(probabilities, columns=[f"p_{k}" for k in range(probabilities.shape[1])])
    rows.insert(0, "index", np.arange(len(rows)))
    rows.insert(0, "epoch", epoch)
    frame = rows if previous is None or not len(previous) else pd.concat([previous, rows],
                                                                           ignore_index=True)
    atomic.write_csv(path, frame)


def read_monitor(run_dir: Path) -> pd.DataFrame | None:
    """monitor.csv of a run (epoch, index, p_0..), None when the run monitored nothing."""
    path = Path(run_dir) / MONITOR_FILE
    if not path.is_file():
        return None
    return pd.read_csv(path)


# Monitored images held as model inputs at most (larger sets are streamed from disk each epoch).
MONITOR_CACHE_LIMIT = 512 << 20


def _monitor_inputs(monitor_ds):
    """The monitored images' model inputs, batch by batch, computed once: the evaluation
    transform is deterministic, and re-decoding and resizing the PNGs after every epoch cost
    more than the prediction itself (0.36 s of a 2.2-s epoch on the default CNS profile). The
    dataset itself when the inputs would exceed MONITOR_CACHE_LIMIT."""
    batches, size = [], 0
    for batch in monitor_ds:
        array = np.asarray(batch)
        size += array.nbytes
        if size > MONITOR_CACHE_LIMIT:
            return monitor_ds
        batches.append(array)
    return batches


def _predict_monitor(model, inputs) -> np.ndarray:
    """Probabilities of the monitored images: the same batches as model.predict over the
    dataset (the same outputs, bit for bit, tested), without its per-call iterator set-up."""
    if isinstance(inputs, list):
        return np.concatenate([np.asarray(model.predict_on_batch(b), np.float64) for b in inputs])
    return np.asarray(model.predict(inputs, verbose=0), np.float64)


def _make_callbacks(config: TrainConfig, run_dir: Path, state: RunState, images_per_epoch: int,
                    monitor_ds=None):
    import keras

    grid = set(config.epoch_grid)

    class EpochRecorder(keras.callbacks.Callback):
        """Times each epoch; every `checkpoint_every` epochs (and at grid epochs, an early stop
        and the last epoch) commits checkpoint, snapshot, best-epoch model, monitor, log and
        state atomically. Between commits a new best epoch's weights wait in memory: saving a
        .keras file costs ~0.4 s, a fifth of an epoch of the default CNS profile."""

        def on_train_begin(self, logs=None):
            self._pending_best = None     # (epoch, weights) of a best epoch not yet written
            self._pending_monitor = []    # (epoch, probabilities) not yet written

        def on_epoch_begin(self, epoch, logs=None):
            self._start = self._train_end = time.perf_counter()

        def on_test_begin(self, logs=None):
            self._train_end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            end = time.perf_counter()
            train_seconds = max(self._train_end - self._start, 1e-9)
            completed = epoch + 1
            row = {"epoch": completed}
            for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
                row[key] = float(logs[key]) if key in logs else None
            row.update({key: float(v) for key, v in logs.items() if key not in row})
            row["seconds"] = round(end - self._start, 4)
            row["images_per_s"] = round(images_per_epoch / train_seconds, 2)
            row["learning_rate"] = last_step_learning_rate(self.model.optimizer)
            tick = time.perf_counter()
            if config.selection == "best_epoch":
                best = next((r for r in state.history if int(r["epoch"]) == state.best_epoch), None)
                if best is None or selection_key(row, config.selection_metric) < \
                        selection_key(best, config.selection_metric):
                    self._pending_best = (completed, self.model.get_weights())
                    state.best_epoch, state.best_val_loss = completed, _val_loss(row)
            patience = config.early_stopping_patience
            stop = (patience is not None and completed < config.max_epochs
                    and completed - int(state.best_epoch) >= patience)
            if stop:
                state.stopped_early_at = completed
            state.history = [r for r in state.history if int(r["epoch"]) < completed] + [row]
            if monitor_ds is not None:
                # Label-free predictions of the monitored images with this epoch's weights;
                # nothing in training or selection reads them.
                self._pending_monitor.append((completed, _predict_monitor(self.model, monitor_ds)))
            commit = (stop or completed >= config.max_epochs or completed in grid
                      or completed % config.checkpoint_every == 0)
            row["checkpoint_seconds"] = round(time.perf_counter() - tick, 4)
            if commit:
                self._commit(completed, row, tick)
                _write_log(run_dir, state.history)
            if stop:
                self.model.stop_training = True

        def _commit(self, completed: int, row: dict, tick: float) -> None:
            files = state.files
            checkpoint = f"checkpoints/epoch_{completed:04d}.keras"
            with atomic.atomic_path(run_dir / checkpoint) as tmp:
                self.model.save(tmp)
            files[checkpoint] = file_record(run_dir / checkpoint)
            if completed in grid:
                snapshot = f"snapshots/epoch_{completed:04d}.keras"
                _copy_atomic(run_dir / checkpoint, run_dir / snapshot)
                files[snapshot] = files[checkpoint]
            if self._pending_best is not None:
                best_epoch, weights = self._pending_best
                if best_epoch == completed:
                    _copy_atomic(run_dir / checkpoint, run_dir / BEST_EPOCH_MODEL)
                    files[BEST_EPOCH_MODEL] = files[checkpoint]
                else:   # an earlier epoch of this commit interval: its weights, saved as a model
                    current = self.model.get_weights()
                    self.model.set_weights(weights)
                    with atomic.atomic_path(run_dir / BEST_EPOCH_MODEL) as tmp:
                        self.model.save(tmp)
                    self.model.set_weights(current)
                    files[BEST_EPOCH_MODEL] = file_record(run_dir / BEST_EPOCH_MODEL)
                self._pending_best = None
            for epoch_done, probabilities in self._pending_monitor:
                _write_monitor(run_dir, epoch_done, probabilities)
            self._pending_monitor = []
            # Keep this commit's checkpoint and the previous one (state.previous.json's, to
            # fall back to); older ones go.
            previous = state.checkpoint
            state.epochs_completed = completed
            state.checkpoint = checkpoint
            state.seed_states = [s.tolist() for s in seed_generator_states(self.model)]
            row["checkpoint_seconds"] = round(time.perf_counter() - tick, 4)
            state.save(run_dir)  # the commit point
            for old in sorted((run_dir / "checkpoints").glob("epoch_*.keras")):
                name = f"checkpoints/{old.name}"
                if name not in (checkpoint, previous):
                    old.unlink(missing_ok=True)
                    files.pop(name, None)

    callbacks = [EpochRecorder()]
    kill_at = os.environ.get(KILL_ENV)
    if kill_at:
        kill_epoch, kill_batch = (int(part) for part in kill_at.split(":"))

        class KillSwitch(keras.callbacks.Callback):
            """Test hook: SIGKILL this process after `kill_batch` batches of epoch `kill_epoch`."""

            def on_epoch_begin(self, epoch, logs=None):
                self._epoch = epoch + 1

            def on_train_batch_end(self, batch, logs=None):
                if self._epoch == kill_epoch and batch + 1 == kill_batch:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(KillSwitch())
    return callbacks


# ----------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    selected_epoch: int
    selected_val_loss: float
    selected_model: Path
    epochs_trained: int      # in this call (0 when the run was already complete)
    resumed_from: int        # epochs completed before this call
    seconds: float


def _reset_run_dir(run_dir: Path) -> None:
    for name in (STATE_FILE, PREVIOUS_STATE_FILE, LOG_FILE, SELECTION_FILE, SELECTED_MODEL,
                 BEST_EPOCH_MODEL):
        (run_dir / name).unlink(missing_ok=True)
    for name in ("checkpoints", "snapshots"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _remove_stray_temp_files(run_dir: Path) -> None:
    """Half-written temp files of a process killed during an atomic write (".name.XXXX.ext")."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "snapshots"):
        if folder.is_dir():
            for path in folder.glob(".*"):
                if path.is_file():
                    path.unlink()


TEST_FOLD_NOTE = ("test-fold selection: the epoch was chosen on the held-out test fold's "
                  "images and labels (the CNS authors' protocol), so the test figures of this "
                  "model read the test labels twice and are inflated; they are not an "
                  "independent test")


def selection_rule(config: TrainConfig) -> tuple[str, bool | None]:
    """(the rule in words, whether it departs from the study's paper; None: paper rule not
    recorded)."""
    what = ("smallest validation loss" if config.selection_metric == "val_loss" else
            "highest validation accuracy (ties: smaller validation loss, then the earlier epoch)")
    where = "among the epoch-grid snapshots" if config.selection == "grid" else "over every epoch"
    rule = f"{what} {where}"
    if config.early_stopping_patience is not None:
        rule += f", early stopping with patience {config.early_stopping_patience}"
    if config.selection_split == "test_fold":
        rule += ", on the held-out test fold"
    paper = cfg.STUDIES[config.study].paper_selection if config.study in cfg.STUDIES else None
    if paper is None:
        return rule, None
    if paper.matches(config):
        return f"{rule} ({paper.source})", False
    return f"{rule} (departure from {paper.source}: {paper.description})", True


def _intact_selected_model(run_dir: Path) -> tuple[int, float, Path] | None:
    """(epoch, val_loss, path) of a finished run's selected model when selection.json records
    it and the file is still what was written; else None."""
    try:
        record = json.loads((run_dir / SELECTION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not record.get("model_file") or \
            damage(run_dir / SELECTED_MODEL, record["model_file"]):
        return None
    return int(record["epoch"]), float(record["val_loss"]), run_dir / SELECTED_MODEL


def _finalize_selection(config: TrainConfig, run_dir: Path, state: RunState) -> tuple[int, float, Path]:
    metric = config.selection_metric
    epoch, val_loss = select_epoch(state.history, config.epoch_grid, config.selection, metric)
    source = (run_dir / f"snapshots/epoch_{epoch:04d}.keras" if config.selection == "grid"
              else run_dir / BEST_EPOCH_MODEL)
    why = damage(source, (state.files or {}).get(str(source.relative_to(run_dir))))
    if why:
        # Never copy a damaged file over a good selected model (it used to be).
        kept = _intact_selected_model(run_dir)
        if kept is not None:
            print(f"warning: {source} {why}; keeping {run_dir / SELECTED_MODEL}, which is intact",
                  file=sys.stderr, flush=True)
            return kept
        raise InputError(source, f"{why}: the selected model cannot be made from it; use "
                         "--force to train this run again")
    _copy_atomic(source, run_dir / SELECTED_MODEL)
    rows = [r for r in state.history
            if config.selection == "best_epoch" or int(r["epoch"]) in set(config.epoch_grid)]
    chosen = next(r for r in state.history if int(r["epoch"]) == epoch)
    rule, departure = selection_rule(config)
    record: dict[str, Any] = {
        "selection": config.selection,
        "selection_metric": metric,
        "selection_split": config.selection_split,
        "rule": rule,
        "departure_from_paper": departure,
        "epoch": epoch, "val_loss": val_loss, "model": SELECTED_MODEL,
        "source": str(source.relative_to(run_dir)),
        "candidates_val_loss": {str(int(r["epoch"])): _val_loss(r) for r in rows},
    }
    if metric == "val_accuracy":
        record["val_accuracy"] = _val_accuracy(chosen)
        record["candidates_val_accuracy"] = {str(int(r["epoch"])): _val_accuracy(r) for r in rows}
    record["model_file"] = file_record(run_dir / SELECTED_MODEL)
    record["epochs_completed"] = state.epochs_completed
    record["max_epochs"] = config.max_epochs
    record["early_stopping_patience"] = config.early_stopping_patience
    record["stopped_early"] = state.stopped_early_at is not None
    record["stopped_early_at_epoch"] = state.stopped_early_at
    if state.stopped_early_at is not None:
        record["early_stopping_note"] = (
            f"training stopped early at epoch {state.stopped_early_at} of {config.max_epochs}: "
            f"no better epoch by {metric} in the {config.early_stopping_patience} epoch(s) after "
            f"epoch {state.best_epoch}; the run is complete")
    if config.selection_split == "test_fold":
        record["selection_split_note"] = TEST_FOLD_NOTE
    if config.schedule != "constant":
        record["note"] = (
            f"learning-rate schedule {config.schedule} over the run's {config.max_epochs} epochs: "
            f"the model after epoch e < {config.max_epochs} is epoch e of this schedule, NOT an "
            "e-epoch run (an e-epoch schedule would have decayed its learning rate to 0 by "
            "epoch e), so it stands for no shorter training")
    atomic.write_json(run_dir / SELECTION_FILE, record)
    return epoch, val_loss, run_dir / SELECTED_MODEL


def train_run(config: TrainConfig, train_table, val_table, class_names: Sequence[str],
              run_dir: str | Path, *, manifest: str | Path | None = None, force: bool = False,
              builder: ModelBuilder | None = None, verbose: int = 2,
              extra_record: Mapping[str, Any] | None = None,
              monitor_table=None) -> RunResult:
    """Train one run to max(epoch_grid), resuming from `run_dir/state.json` when present.

    `train_table` / `val_table`: reproduce.input_pipeline.ImageTable (training images as they
    are to be seen: the offline-augmented set for --augment offline). Returns the selection.
    `monitor_table`: images predicted (without their labels) after every epoch into
    monitor.csv, e.g. the fold's test images for a test-fold-selection comparison.
    """
    from reproduce import input_pipeline as pipe

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if len(val_table) == 0:
        raise InputError(None, f"{config.study} {config.architecture} fold {config.fold}: the "
                         "validation split is empty, but model selection needs validation loss "
                         "(make the splits with a val fraction > 0)")
    num_classes = len(class_names)
    counts = np.bincount(np.asarray(train_table.labels), minlength=num_classes)
    weights = None
    if config.loss == "weighted_ce":
        weights = [cfg.class_weights(dict(zip(class_names, counts.tolist())))[c] for c in class_names]
    strategy = make_strategy(config.strategy)
    replicas = int(strategy.num_replicas_in_sync)
    per_replica = cfg.per_replica_batch(config.batch_size, replicas)
    chief, task_id = worker_identity(strategy)
    write_dir = run_dir if chief else run_dir / f".worker{task_id}"

    # One process per run folder: a second run into it is refused in one line (the chief only;
    # multi-worker training's other workers write beside it, under .worker<k>).
    lock = atomic.folder_lock(run_dir, "run") if chief else contextlib.nullcontext()
    with lock:
        if chief:
            if force:
                _reset_run_dir(run_dir)
            write_run_json(run_dir, config.to_dict(), seed=config.seed, manifest=manifest, force=force,
                           extra={"class_names": list(class_names), "n_train": len(train_table),
                                  "n_val": len(val_table), "train_class_counts": counts.tolist(),
                                  "class_weights": weights, "replicas": replicas,
                                  "global_batch": config.batch_size, "per_replica_batch": per_replica,
                                  **({"monitored_images": len(monitor_table),
                                      "monitor": "label-free predictions of these images after every "
                                                 "epoch (monitor.csv); not read by training or "
                                                 "selection"} if monitor_table is not None else {}),
                                  **dict(extra_record or {})})
        state = RunState.load(run_dir)
        resumed_from = state.epochs_completed
        if resumed_from >= config.max_epochs or state.stopped_early_at is not None:
            epoch, val_loss, path = (_finalize_selection(config, run_dir, state) if chief
                                     else (0, 0.0, run_dir))
            return RunResult(run_dir, epoch, val_loss, path, 0, resumed_from,
                             time.perf_counter() - started)

        on_the_fly = config.augment == "on_the_fly"
        multiplicity = pipe.multiplicity_vector(class_names, config.multiplicity) if on_the_fly else None
        images_per_epoch = len(pipe.expand_entries(train_table.labels, multiplicity))
        steps_per_epoch = cfg.steps_per_epoch(images_per_epoch, config.batch_size)
        with numerics(config):
            with strategy.scope():
                model = build_and_compile(config, num_classes, builder, steps_per_epoch=steps_per_epoch)
                prebuild_training_variables(model, config, num_classes)
                if state.checkpoint:
                    model.load_weights(run_dir / state.checkpoint)
                    restore_seed_generator_states(model, state.seed_states or [])
            height, width, channels = input_shape_for(config)
            spec = pipe.PipelineSpec(size_wh=(width, height), channels=channels, num_classes=num_classes,
                                     labels_as_input=config.loss in ("arcface", "cosface"),
                                     transform=config.transform,
                                     rrc_scale=(config.crop_min_area, 1.0))
            cached_train = cached_val = decoded_train = decoded_val = None
            if config.cache == "memory":
                cached_train = pipe.materialize(train_table, spec)
                cached_val = pipe.materialize(val_table, spec)
            elif config.cache == "decoded":
                decoded_train = pipe.decode_frames(train_table, spec)
                decoded_val = pipe.decode_frames(val_table, spec)
                if decoded_train is None or decoded_val is None:
                    print(f"cache decoded: the frames exceed {pipe.DECODED_CACHE_LIMIT >> 20} MiB "
                          "decoded; streaming them from disk instead", file=sys.stderr, flush=True)
                    decoded_train = decoded_val = None
            train_ds, steps = pipe.train_dataset(
                train_table, spec, batch_size=config.batch_size, seed=config.seed,
                start_epoch=resumed_from, end_epoch=config.max_epochs, multiplicity=multiplicity,
                augment=on_the_fly, sample_weights=weights, cached=cached_train,
                decoded=decoded_train)
            val_ds = pipe.eval_dataset(val_table, spec, batch_size=config.batch_size,
                                       sample_weights=weights, cached=cached_val, decoded=decoded_val)
            if steps != steps_per_epoch:  # the schedule was sized with steps_per_epoch
                raise RuntimeError(f"the input pipeline has {steps} steps per epoch, "
                                   f"expected {steps_per_epoch}")
            (write_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            _remove_stray_temp_files(write_dir)
            monitor_ds = None
            if monitor_table is not None and len(monitor_table) and chief:
                monitor_spec = pipe.PipelineSpec(size_wh=(width, height), channels=channels,
                                                 num_classes=num_classes, transform=config.transform)
                monitor_ds = pipe.eval_dataset(monitor_table, monitor_spec,
                                               batch_size=config.batch_size, with_labels=False)
                monitor_ds = _monitor_inputs(monitor_ds)
            callbacks = _make_callbacks(config, write_dir, state, images_per_epoch, monitor_ds)
            if config.precise_bn:
                from reproduce.precise_bn import TrainingImages, precise_bn_callback

                # The training table's images, not augmented on the fly (with --augment offline the
                # table holds the written copies too), never a validation image; decoded once, in
                # batches of the per-replica size (the batch size BN normalises with in training).
                recalibration = TrainingImages(train_table, spec, cached_train,
                                               max_images=config.precise_bn_images)
                callbacks.append(precise_bn_callback(lambda: recalibration.batches(per_replica)))
            if resumed_from:
                print(f"resuming {run_dir} after epoch {resumed_from}", file=sys.stderr, flush=True)
            model.fit(train_ds, steps_per_epoch=steps, initial_epoch=resumed_from,
                      epochs=config.max_epochs, validation_data=val_ds, callbacks=callbacks,
                      verbose=verbose, shuffle=False)
        trained = state.epochs_completed - resumed_from  # fewer than planned after an early stop
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)
            return RunResult(run_dir, 0, 0.0, run_dir, trained, resumed_from, time.perf_counter() - started)
        epoch, val_loss, path = _finalize_selection(config, run_dir, state)
        return RunResult(run_dir, epoch, val_loss, path, trained, resumed_from,
                         time.perf_counter() - started)


# ----------------------------------------------------------------------------- data for a study


def load_manifest(path: str | Path, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """The checked manifest with an `abs_path` column (data_prep.manifest.load_manifest)."""
    from data_prep.manifest import load_manifest as load

    return load(path, labels=labels)


def class_names_for(study: str, manifest: pd.DataFrame, source: str) -> tuple[str, ...]:
    names = cfg.STUDIES[study].labels or tuple(sorted(manifest["label"].astype(str).unique()))
    unknown = sorted(set(manifest["label"].astype(str)) - set(names))
    if unknown:
        row = int(np.flatnonzero(manifest["label"].astype(str).isin(unknown).to_numpy())[0]) + 1
        raise InputError(source, f"label '{unknown[0]}' is not one of {', '.join(names)}",
                         row=row, column="label")
    return tuple(names)


def fold_tables(manifest: pd.DataFrame, splits: pd.DataFrame, class_names: Sequence[str], source: str,
                validation: str = "val"):
    """{fold: (train ImageTable, validation ImageTable)} joining splits to the manifest on
    image_path. The validation table is the fold's val split, or with validation="test_fold"
    its TEST split (TrainConfig.selection_split "test_fold": the CNS authors' protocol, which
    selects on the test labels)."""
    from data_prep.splits import iter_folds
    from reproduce.input_pipeline import ImageTable

    if validation not in cfg.SELECTION_SPLITS:
        raise ValueError(f"validation must be one of {', '.join(cfg.SELECTION_SPLITS)}, got {validation!r}")
    by_path = manifest.set_index(manifest["image_path"].astype(str))
    tables = {}
    for fold in iter_folds(splits):
        parts = []
        for part in (fold.train, fold.val if validation == "val" else fold.test):
            missing = sorted(set(part["image_path"].astype(str)) - set(by_path.index))
            if missing:
                raise InputError(source, f"image '{missing[0]}' is not in the manifest", column="image_path")
            parts.append(ImageTable.from_frame(by_path.loc[part["image_path"].astype(str)], class_names))
        tables[fold.fold] = tuple(parts)
    return tables


# ----------------------------------------------------------------------------- CLI


def build_parser(study: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m reproduce {study or '<study>'} train",
        description="Train the study's architectures over the epoch grid (one pass, snapshots at "
                    "each grid epoch), select the best epoch (by validation loss unless told "
                    "otherwise), resume killed runs. The leakage audit of the splits (data_prep.audit) runs "
                    "first: exit 2 when a case sits in two splits or the input is malformed, "
                    "exit 1 when identical (or, on a user manifest, near-duplicate) images sit "
                    "on both sides of a split; nothing is trained then.")
    parser.add_argument("--study", choices=sorted(cfg.STUDIES), default=study or "pgds",
                        help="study key (set by `python -m reproduce <study> train`)")
    parser.add_argument("--profile", choices=cfg.PROFILE_NAMES, default="default",
                        help="ci: tiny, for tests; default: laptop CPU; paper: Tang 2023 settings")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="manifest CSV (image_path, case_id, label, ...); default: the "
                             "study's phantom for the profile, generated under --out")
    parser.add_argument("--splits", type=Path, default=None,
                        help="splits CSV (image_path, case_id, split[, fold]); default: a "
                             "case-level 70/10/20 train/val/test split of the manifest (seed)")
    parser.add_argument("--architectures", default=None,
                        help="comma-separated models.registry names; default: the study's")
    parser.add_argument("--folds", default=None,
                        help="comma-separated fold numbers to train; default: every fold")
    # --runs as every study target names it; --out, its old name, still works.
    parser.add_argument("--runs", "--out", dest="out", type=Path, default=Path(cfg.RUNS_DIR),
                        help="folder for models, checkpoints and logs (default: the git-ignored "
                             "runs/; --out is the same flag under its old name)")
    parser.add_argument("--epochs", default=None,
                        help="epoch grid, e.g. 25,50,100,150,200 (default: the profile's)")
    parser.add_argument("--selection", choices=cfg.SELECTIONS, default=None,
                        help="grid (default): the best epoch-grid snapshot (Tang 2023); "
                             "best_epoch: the best of all epochs (a departure from Tang 2023)")
    parser.add_argument("--selection-metric", choices=cfg.SELECTION_METRICS, default=None,
                        help="what 'best' means: val_loss (default: smallest) or val_accuracy "
                             "(highest; ties: smaller val loss, then the earlier epoch)")
    parser.add_argument("--early-stopping-patience", type=int, default=None, metavar="P",
                        help="with --selection best_epoch: stop after P epochs without a better "
                             "epoch by the selection metric (the run is then complete); "
                             "default: no early stopping")
    parser.add_argument("--selection-split", choices=cfg.SELECTION_SPLITS, default=None,
                        help="images that select the epoch: val (default: the validation split) "
                             "or test_fold (each fold's TEST images, the CNS authors' protocol: it "
                             "reads the test labels and inflates the test figures; recorded as such)")
    parser.add_argument("--loss", choices=cfg.LOSSES, default=None,
                        help="default: the study's (pgds: bce)")
    parser.add_argument("--augment", choices=cfg.AUGMENT_MODES, default=None,
                        help="none; offline (augmented copies written to disk first, as the "
                             "paper); on_the_fly (same multiplicity, redrawn each epoch)")
    parser.add_argument("--cache", choices=cfg.CACHE_MODES, default="none",
                        help="memory: hold the finished model inputs in RAM (no on-the-fly "
                             "augmentation); decoded: hold the decoded frames in RAM and still "
                             "crop/augment/resize every epoch; none: stream from disk")
    parser.add_argument("--batch-size", type=int, default=None, help="GLOBAL batch size")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="learning rate (the peak rate under --schedule warmup_cosine)")
    parser.add_argument("--optimizer", choices=cfg.OPTIMIZERS, default=None,
                        help="adam (default, Tang 2023) or adamw (decoupled weight decay, Qi 2025)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="AdamW's decoupled weight decay (w -= lr * wd * w per step); "
                             "adamw only; default 0")
    parser.add_argument("--schedule", choices=cfg.SCHEDULES, default=None,
                        help="constant (default) or warmup_cosine: linear warm-up over "
                             "--warmup-epochs, then cosine decay to 0 at the last epoch (per step)")
    parser.add_argument("--warmup-epochs", type=int, default=None,
                        help="warm-up epochs of --schedule warmup_cosine (default 1)")
    parser.add_argument("--transform", choices=cfg.TRANSFORMS, default=None,
                        help="input: minmax (Tang 2023: resize, per-image min-max) or imagenet "
                             "(Qi 2025: RandomResizedCrop + flip in training, Resize + "
                             "CenterCrop in evaluation, ImageNet mean/SD); default: the study's")
    parser.add_argument("--crop-min-area", type=float, default=None,
                        help="smallest RandomResizedCrop area fraction under --transform "
                             "imagenet (torchvision: 0.08); default: the profile's")
    parser.add_argument("--init-weights", type=Path, default=None,
                        help="initialise from this weights file (e.g. ImageNet ResNet-34 as "
                             ".keras/.h5), matched by layer name, with a new final layer; "
                             "default: random initialisation")
    parser.add_argument("--l2", type=float, default=None,
                        help="L2 penalty on convolutions (default: the architecture's under "
                             "Adam, none under AdamW)")
    parser.add_argument("--width", type=int, default=None,
                        help="model base width (small for quick runs); default: the profile's")
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra models.registry.build option, repeatable "
                             "(e.g. dropout=0.3, blocks=1,1,1,1)")
    parser.add_argument("--precise-bn", action=argparse.BooleanOptionalAction, default=None,
                        help="re-estimate batch-norm statistics from the un-augmented training "
                             "images before each validation (reproduce/precise_bn.py); default: "
                             "the profile's (ci, default: on; paper: off, as the authors' code)")
    parser.add_argument("--precise-bn-images", type=int, default=None, metavar="N",
                        help="at most N training images (evenly spaced) re-estimate the batch-norm "
                             "statistics; default: the profile's (2048 unless it sets fewer)")
    parser.add_argument("--checkpoint-every", type=int, default=None, metavar="E",
                        help="commit a checkpoint every E epochs (and at grid epochs, an early "
                             "stop and the last epoch); a kill redoes at most E-1 epochs; "
                             "default: the profile's (1 unless it sets more)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, init, order, augmentation")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 policy (GPU); loss scaling is automatic")
    parser.add_argument("--precision", choices=cfg.PRECISIONS, default="float32",
                        help="CPU compute precision: float32 (default), bfloat16 (Keras "
                             "mixed_bfloat16), auto (bf16 only where the CPU lists amx_bf16 or "
                             "avx512_bf16; bench/bench_precision.py measures whether it pays)")
    parser.add_argument("--xla", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--strategy", choices=cfg.STRATEGIES, default="none",
                        help="tf.distribute: mirrored (GPUs of one host), multiworker (TF_CONFIG)")
    parser.add_argument("--shard", default="0/1",
                        help="i/n: run only shard i (0-based) of n of the run grid")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2,
                        help="Keras progress: 0 silent, 1 bar, 2 one line per epoch")
    parser.add_argument("--force", action="store_true",
                        help="start runs again from scratch, even with another config")
    parser.add_argument("--accept-near-duplicates", action="store_true",
                        help="train although the leakage audit (data_prep.audit, run on the "
                             "splits before any training) flags near-duplicate images across "
                             "splits of a user manifest; a case in two splits (exit 2) and "
                             "identical images across splits (exit 1) are always refused, and "
                             "the audit itself cannot be skipped")
    return parser


def _phantom_manifest(study: str, profile: str, out: Path, seed: int) -> Path:
    """The study's phantom for the profile under out/phantom/ (generated once, then reused)."""
    from data_prep import phantom

    folder = out / "phantom" / f"{study}_{profile}_seed{seed}"
    if (folder / "manifest.csv").is_file():
        return folder / "manifest.csv"
    print(f"generating the {study} phantom ({profile} profile) in {folder}", file=sys.stderr, flush=True)
    return Path(phantom.generate_phantom(study, profile, folder, seed=seed))


def offline_training_table(manifest: pd.DataFrame, manifest_path: Path, fold_split: pd.DataFrame,
                           config: TrainConfig, class_names: Sequence[str], out: Path):
    """The training images plus their augmented copies on disk (data_prep.augment, the paper's
    offline 2x/6x scheme), written once per (manifest, training images, multiplicity, seed)."""
    import hashlib

    from data_prep import augment
    from data_prep.splits import load_splits
    from reproduce.input_pipeline import ImageTable

    train_paths = sorted(fold_split.loc[fold_split["split"] == "train", "image_path"].astype(str))
    key = hashlib.sha256(json.dumps([Path(manifest_path).read_bytes().hex(), train_paths,
                                     dict(config.multiplicity or {}), config.seed]).encode()).hexdigest()[:16]
    folder = out / config.study / "augmented" / key
    if not (folder / "manifest.csv").is_file():
        print(f"writing offline augmentation to {folder}", file=sys.stderr, flush=True)
        augment.augment_training_split(manifest, fold_split.drop(columns=["fold"], errors="ignore"),
                                       folder, multiplicity=dict(config.multiplicity), seed=config.seed,
                                       manifest_path=manifest_path, force=True)
    augmented = load_manifest(folder / "manifest.csv")
    splits = load_splits(folder / "splits.csv")
    train_rows = augmented[augmented["image_path"].isin(splits.loc[splits["split"] == "train", "image_path"])]
    return ImageTable.from_frame(train_rows, class_names)


def leakage_audit(manifest_path: Path, splits_path: Path, *, is_phantom: bool,
                  accept_near_duplicates: bool = False) -> str | None:
    """data_prep.audit of the splits before any training, with `python -m data_prep audit`'s
    verdicts: a case in two splits (or malformed splits) raises InputError (exit 2); identical
    images on both sides of a split return the one-line finding (exit 1), near duplicates too
    unless `accept_near_duplicates`, or the manifest is the phantom (whose near-duplicate flags
    are false positives by construction, as reproduce.study says). None when training may go on.
    """
    from data_prep import audit as audit_mod

    report = audit_mod.audit(manifest_path, splits_path, progress=False)
    if report.case_leaks:
        leak = report.case_leaks[0]
        where = "" if leak.fold is None else f" in fold {leak.fold}"
        raise InputError(splits_path, f"leakage audit: case '{leak.case_id}' is in more than one "
                         f"split{where} ({', '.join(leak.splits)}); split by case_id; nothing "
                         "trained", row=leak.row, column="case_id")
    pairs = report.exact_pairs or ([] if is_phantom or accept_near_duplicates else report.near_pairs)
    if pairs:
        first = pairs[0]
        kind = "identical" if report.exact_pairs else "near-duplicate"
        hint = ("give copies of one picture one case_id" if report.exact_pairs else
                "give copies of one picture one case_id, or --accept-near-duplicates after "
                "checking that the flagged pairs are different pictures")
        return (f"{splits_path}: leakage audit: {len(pairs)} {kind} image pair(s) sit on both "
                f"sides of a split, e.g. '{first.image_a}' ({first.split_a}) and "
                f"'{first.image_b}' ({first.split_b}); `python -m data_prep audit --manifest "
                f"{manifest_path} --splits {splits_path} --out DIR` lists them; {hint}; "
                "nothing trained")
    if report.near_pairs:
        print(f"audit note: {len(report.near_pairs)} near-duplicate flag(s) "
              + ("between different phantom cases (false positives: shared layout); not refused"
                 if is_phantom else "accepted (--accept-near-duplicates)"), file=sys.stderr)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    study = argv[argv.index("--study") + 1] if "--study" in argv[:-1] else None
    args = build_parser(study).parse_args(argv)
    return report_bad_input(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    from data_prep.splits import case_level_split, load_splits

    atomic.check_folder_target(args.out, "--runs")
    shard_index, shard_count = cfg.parse_shard(args.shard)
    model_options = cfg.parse_model_options(args.model_option)
    grid = cfg.parse_epoch_grid(args.epochs) if args.epochs else None
    study = cfg.STUDIES[args.study]
    architectures = tuple(a.strip() for a in args.architectures.split(",")) if args.architectures \
        else study.architectures
    requested_folds = None if args.folds is None else cfg.parse_folds(args.folds)
    from models.registry import MODEL_NAMES

    # Checked before any phantom is rendered or split is made (seconds to minutes of work).
    unknown = [a for a in architectures if a not in MODEL_NAMES]
    if unknown:
        raise InputError(None, f"--architectures: unknown architecture(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(MODEL_NAMES)}")
    if requested_folds is not None and not args.splits and set(requested_folds) - {0}:
        raise InputError(None, f"--folds {args.folds}: without --splits the run has one hold-out "
                         "split, fold 0; give --splits with more folds")
    manifest_path = args.manifest or _phantom_manifest(args.study, args.profile, args.out, args.seed)
    manifest = load_manifest(manifest_path, labels=study.labels)
    class_names = class_names_for(args.study, manifest, str(manifest_path))
    if args.splits:
        splits, splits_source = load_splits(args.splits), str(args.splits)
    else:
        splits = case_level_split(manifest, test_size=0.2, val_size=0.1, seed=args.seed)
        splits_source = str(args.out / args.study / args.profile / "splits.csv")
        atomic.write_csv(splits_source, splits)
    finding = leakage_audit(Path(manifest_path), Path(splits_source), is_phantom=args.manifest is None,
                            accept_near_duplicates=args.accept_near_duplicates)
    if finding is not None:
        print(f"error: {finding}", file=sys.stderr)
        return EXIT_FINDING
    tables_by_split: dict[str, dict] = {}

    def tables_for(selection_split: str) -> dict:
        if selection_split not in tables_by_split:
            tables_by_split[selection_split] = fold_tables(manifest, splits, class_names,
                                                           splits_source, validation=selection_split)
        return tables_by_split[selection_split]

    tables = tables_for("val")
    folds = sorted(tables) if requested_folds is None else list(requested_folds)
    for fold in folds:
        if fold not in tables:
            raise InputError(splits_source, f"fold {fold} is not in the splits (has {sorted(tables)})",
                             column="fold")
    make_strategy(args.strategy)  # before any other TF work (MultiWorker requires it)
    runs = run_grid(args.study, architectures, folds)
    mine = shard_runs(runs, shard_index, shard_count)
    print(f"{len(runs)} run(s) in the grid; shard {shard_index}/{shard_count} trains {len(mine)}",
          file=sys.stderr, flush=True)
    for position, run in enumerate(mine, start=1):
        config = cfg.make_config(
            run.study, run.architecture, args.profile, fold=run.fold, epoch_grid=grid,
            selection=args.selection, loss=args.loss, augment=args.augment, cache=args.cache,
            batch_size=args.batch_size, learning_rate=args.learning_rate, l2=args.l2,
            width=args.width, seed=args.seed, mixed_precision=args.mixed_precision,
            precision=args.precision,
            xla=args.xla, strategy=args.strategy, model_options=model_options,
            precise_bn=args.precise_bn, precise_bn_images=args.precise_bn_images,
            checkpoint_every=args.checkpoint_every,
            optimizer=args.optimizer, weight_decay=args.weight_decay, schedule=args.schedule,
            warmup_epochs=args.warmup_epochs,
            selection_metric=args.selection_metric,
            early_stopping_patience=args.early_stopping_patience,
            selection_split=args.selection_split, transform=args.transform,
            crop_min_area=args.crop_min_area,
            init_weights=None if args.init_weights is None else str(args.init_weights))
        print(f"[{position}/{len(mine)}] {run.describe()}", file=sys.stderr, flush=True)
        run_dir = run_dir_for(args.out, run.study, args.profile, run.architecture, run.fold)
        train_table, val_table = tables_for(config.selection_split)[run.fold]
        if config.augment == "offline":
            fold_split = splits if "fold" not in splits.columns else splits[splits["fold"] == run.fold]
            train_table = offline_training_table(manifest, Path(manifest_path), fold_split, config,
                                                 class_names, args.out)
        result = train_run(config, train_table, val_table, class_names, run_dir,
                           manifest=manifest_path, force=args.force, verbose=args.verbose)
        print(f"[{position}/{len(mine)}] {run.describe()}: selected epoch {result.selected_epoch} "
              f"(val_loss {result.selected_val_loss:.4f}) -> {result.selected_model} "
              f"[{result.seconds:.1f} s]", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
