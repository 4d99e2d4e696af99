"""Precise BN (reproduce/precise_bn.py): the re-estimated statistics equal Keras's own batch
statistics (one batch) and their size-weighted average (several), trainable weights never
move, and `fit` with the callback saves snapshots whose statistics are those of their weights."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from reproduce import config as cfg  # noqa: E402
from reproduce import precise_bn  # noqa: E402
from reproduce import train  # noqa: E402
from tests.test_train import study, train_tiny  # noqa: E402,F401  (fixture)

# float32 sums in another order: relative 1e-5 (statistics reach ~10 in deep layers).
STAT_RTOL, STAT_ATOL = 1e-5, 1e-6


def _trained(name: str, input_hwc=(32, 36, 1), width=4, seed=0):
    """A registry model after two small Adam steps, so its moving statistics are stale."""
    import keras
    from models import registry

    keras.utils.set_random_seed(seed)
    model = registry.build(name, input_shape=input_hwc, num_classes=2, width=width)
    images = np.random.default_rng(seed).random((16, *input_hwc)).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    model.fit(images, np.eye(2)[np.arange(16) % 2], batch_size=8, epochs=1, verbose=0)
    return model


def _stats(model):
    return [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
            for layer in precise_bn.batch_norm_layers(model)]


def _keras_batch_stats(model, images):
    """Keras's own statistics of one training-mode batch: momentum 0 on a weight copy."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in precise_bn.batch_norm_layers(copy):
        layer.momentum = 0.0
    copy(images, training=True)
    return _stats(copy)


def _close(a, b) -> bool:
    return all(np.allclose(x, y, rtol=STAT_RTOL, atol=STAT_ATOL)
               for pa, pb in zip(a, b) for x, y in zip(pa, pb))


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for pa, pb in zip(a, b) for x, y in zip(pa, pb))


@pytest.mark.parametrize("name", ["pgds_resnet", "resnet34", "vgg16"])
def test_one_batch_equals_keras_batch_statistics(name):
    import keras

    model = _trained(name)
    images = np.random.default_rng(1).random((12, 32, 36, 1)).astype("float32")
    trainable = [v.numpy().copy() for v in model.trainable_variables]
    before = _stats(model)
    expected = _keras_batch_stats(model, images)
    assert precise_bn.recalibrate_batch_norm(model, [images]) == 12
    after = _stats(model)
    assert len(after) == sum(isinstance(layer, keras.layers.BatchNormalization)
                             for layer in model.layers) > 0
    assert _close(after, expected)
    assert _max_diff(after, before) > 1e-3  # the stale statistics really changed
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(trainable, model.trainable_variables))


def test_several_batches_average_weighted_by_size():
    model = _trained("pgds_resnet")
    rng = np.random.default_rng(2)
    batches = [rng.random((n, 32, 36, 1)).astype("float32") for n in (8, 8, 3)]
    per_batch = [_keras_batch_stats(model, b) for b in batches]
    weights = np.array([8, 8, 3], float) / 19
    expected = [tuple(sum(w * stats[i][k] for w, stats in zip(weights, per_batch)) for k in (0, 1))
                for i in range(len(per_batch[0]))]
    assert precise_bn.recalibrate_batch_norm(model, iter(batches)) == 19
    assert _close(_stats(model), expected)


def test_no_image_leaves_model_unchanged():
    model = _trained("pgds_resnet")
    before = _stats(model)
    assert precise_bn.recalibrate_batch_norm(model, []) == 0
    assert precise_bn.recalibrate_batch_norm(model, [np.zeros((0, 32, 36, 1), "float32")]) == 0
    assert _max_diff(_stats(model), before) == 0.0


def test_model_without_batch_norm_is_a_no_op():
    import keras

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    assert precise_bn.recalibrate_batch_norm(model, [np.zeros((2, 8, 8, 1), "float32")]) == 0


def test_training_images_take_an_evenly_spaced_subset():
    from reproduce.input_pipeline import ImageTable, PipelineSpec

    table = ImageTable(tuple(f"x{i}.png" for i in range(10)), np.zeros(10, np.int64))
    spec = PipelineSpec(size_wh=(4, 3), channels=1, num_classes=2)
    cached = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1) * np.ones((1, 3, 4, 1), np.float32)
    images = precise_bn.TrainingImages(table, spec, cached, max_images=4)
    assert images.indices.tolist() == [0, 3, 6, 9]
    batches = list(images.batches(3))
    assert [len(b) for b in batches] == [3, 1] and batches[1][0, 0, 0, 0] == 9


def test_profiles_and_cli_flag():
    assert cfg.make_config("pgds", "pgds_resnet", "default").precise_bn
    assert cfg.make_config("pgds", "pgds_resnet", "ci").precise_bn
    assert not cfg.make_config("pgds", "pgds_resnet", "paper").precise_bn  # the authors' Keras BN
    args = train.build_parser("pgds").parse_args(["--no-precise-bn"])
    assert args.precise_bn is False
    assert train.build_parser("pgds").parse_args([]).precise_bn is None


def test_fit_snapshots_hold_the_statistics_of_their_own_weights(study, tmp_path):  # noqa: F811
    """The same run with and without the callback: identical trainable weights (the trajectory
    does not change); with it, re-estimating a saved snapshot's statistics again changes
    nothing (they were computed from its own weights before validation); without it, it does."""
    import keras
    from reproduce.input_pipeline import PipelineSpec
    from tests.test_train import tiny_tables

    manifest, splits = study
    train_table, _ = tiny_tables(manifest, splits)
    spec = PipelineSpec(size_wh=(20, 18), channels=1, num_classes=2)
    models = {}
    for precise in (True, False):
        train_tiny(tmp_path / str(precise), manifest, splits, epoch_grid=(1, 2), augment="on_the_fly",
                   precise_bn=precise)
        models[precise] = keras.models.load_model(
            tmp_path / str(precise) / "snapshots/epoch_0002.keras", compile=False)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in
               zip(models[True].trainable_variables, models[False].trainable_variables))
    for precise, model in models.items():
        saved = _stats(model)
        precise_bn.recalibrate_batch_norm(model, precise_bn.TrainingImages(train_table, spec).batches(4))
        print(f"precise_bn={precise}: re-estimating the saved snapshot moves its statistics by "
              f"{_max_diff(_stats(model), saved):.3g}")
        assert _close(_stats(model), saved) == precise
