"""Precise batch-norm statistics: re-estimate every BatchNormalization layer's moving mean and
variance from the training images with the CURRENT weights, before validation.

Why: Keras keeps a BN layer's inference statistics as an exponential moving average of the
batch statistics seen during training (momentum 0.9 in our builders: the last ~10 batches).
With Adam at 1e-3 the weights move a lot within those batches, so the averages describe a
network that no longer exists. On the default phantom (Pgds-ResNet, seed 0) the logged
validation loss jumped between 0.28 and 2.3 from one epoch to the next while the training
loss fell smoothly; some epochs called nearly every validation image diseased (validation
accuracy 0.29). The same training run (identical weights) with statistics re-estimated
before each validation logged 0.27-0.79, and 0.41/0.37/0.27 instead of 0.41/0.45/1.15 at the
grid epochs 10/20/30: selection moved from epoch 10 (test AUROC 0.916) to epoch 30 (0.981).
So validation loss -- the paper's model-selection rule -- had compared BN lag, not models.
This is "precise BN" (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", arXiv:2105.07576;
pycls/Detectron2 `PreciseBN`).

How: one training-mode forward pass over fixed batches of un-augmented training images (at most
`MAX_RECALIBRATION_IMAGES`, evenly spaced, decoded once per run; so
each layer sees the activations the current weights give, normalised by batch statistics as
in training); per BN layer, the batch means and (biased) variances of its input are averaged
over the batches, weighted by batch size, and written into `moving_mean` / `moving_variance`.
Trainable weights are untouched, so the optimisation trajectory is exactly the same as
without it; only the statistics used at inference (validation, snapshots, test) change. No
validation or test image is used.

`BatchNormRecalibrator(model)(batches)` (or `recalibrate_batch_norm(model, batches)`) does it
for any Keras model whose BN layers all hang from its first (image) input (every model in
models.registry, and the flat ArcFace/CosFace training models); `precise_bn_callback` runs it
before each validation of `fit`.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from reproduce.config import RECORDED_WHEN_SET


def batch_norm_layers(model) -> list:
    """Every keras.layers.BatchNormalization in `model`, nested models included, in order."""
    import keras

    found, stack = [], list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):
            stack.extend(reversed(layer.layers))
    return found


def _moments_model(model, layers):
    """image -> the input of every BN layer in `layers` (a functional view sharing weights)."""
    import keras

    image = model.inputs[0]
    try:
        return keras.Model(image, [layer.input for layer in layers],
                           name=f"{model.name}_bn_inputs")
    except ValueError as error:
        raise ValueError(f"model {model.name!r}: every BatchNormalization layer must depend on "
                         f"the image input alone to re-estimate its statistics ({error})") from None


class BatchNormRecalibrator:
    """Re-estimates the BN statistics of one model; the traced forward pass is kept between
    calls (one trace per input shape, not one per epoch)."""

    def __init__(self, model):
        import tensorflow as tf

        self.layers = batch_norm_layers(model)
        if not self.layers:
            return
        probe = _moments_model(model, self.layers)
        axes = []
        for layer in self.layers:
            rank = len(layer.input.shape)
            axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
            axes.append([i for i in range(rank) if i != axis % rank])

        @tf.function(reduce_retracing=True)
        def batch_moments(images):
            inputs = probe(images, training=True)
            inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
            return [tf.nn.moments(tf.cast(value, tf.float32), axes=reduce)
                    for value, reduce in zip(inputs, axes)]

        self._batch_moments = batch_moments

    def __call__(self, batches: Iterable) -> int:
        """Set every BN layer's moving mean/variance to the size-weighted average of its batch
        statistics over `batches` (arrays or tensors of images). Returns the number of images
        used; with none, the model is left as it was."""
        import tensorflow as tf

        if not self.layers:
            return 0
        sums = [[np.zeros(layer.moving_mean.shape, np.float64),
                 np.zeros(layer.moving_variance.shape, np.float64)] for layer in self.layers]
        seen = 0
        for images in batches:
            count = int(images.shape[0])
            if not count:
                continue
            for total, (mean, variance) in zip(sums, self._batch_moments(tf.convert_to_tensor(images))):
                total[0] += count * mean.numpy().astype(np.float64)
                total[1] += count * variance.numpy().astype(np.float64)
            seen += count
        if seen:  # overwrites what the training-mode passes did to the moving averages too
            for layer, (total_mean, total_variance) in zip(self.layers, sums):
                layer.moving_mean.assign((total_mean / seen).astype(layer.moving_mean.dtype))
                layer.moving_variance.assign(
                    (total_variance / seen).astype(layer.moving_variance.dtype))
        return seen


def recalibrate_batch_norm(model, batches: Iterable) -> int:
    """One-off `BatchNormRecalibrator(model)(batches)`: see there."""
    return BatchNormRecalibrator(model)(batches)


#: At most this many training images re-estimate the statistics (an evenly spaced subset of a
#: larger training split): 2048 images at 400x440x1 hold 1.4 GB of float32. A run sets its own
#: number as TrainConfig.precise_bn_images; this is that field's default.
MAX_RECALIBRATION_IMAGES = RECORDED_WHEN_SET["precise_bn_images"]


class TrainingImages:
    """The un-augmented training images used for re-estimation, decoded on first use."""

    def __init__(self, table, spec, cached: np.ndarray | None = None,
                 max_images: int = MAX_RECALIBRATION_IMAGES):
        self._table, self._spec, self._images = table, spec, cached
        n = len(table) if cached is None else len(cached)
        self.indices = (np.arange(n) if n <= max_images
                        else np.linspace(0, n - 1, max_images).round().astype(np.int64))

    def images(self) -> np.ndarray:
        if self._images is None:
            from reproduce.input_pipeline import ImageTable, materialize

            subset = ImageTable(tuple(self._table.paths[i] for i in self.indices),
                                np.asarray(self._table.labels)[self.indices])
            self._images = materialize(subset, self._spec)
        elif len(self._images) != len(self.indices):
            self._images = self._images[self.indices]
        return self._images

    def batches(self, batch_size: int):
        images = self.images()
        return (images[start:start + batch_size] for start in range(0, len(images), batch_size))


def precise_bn_callback(batches_factory):
    """A Keras callback that re-estimates BN statistics just before each validation pass of
    `fit` (and hence before the epoch's checkpoint and snapshot are saved).
    `batches_factory()` returns a fresh iterable of image batches each time."""
    import keras

    class PreciseBatchNorm(keras.callbacks.Callback):
        recalibrator = None

        def on_test_begin(self, logs=None):
            if self.recalibrator is None:
                self.recalibrator = BatchNormRecalibrator(self.model)
            self.recalibrator(batches_factory())

    return PreciseBatchNorm()
