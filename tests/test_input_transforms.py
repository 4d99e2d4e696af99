"""The "imagenet" input transform (Qi 2025's torchvision recipe) of reproduce.input_pipeline:
Resize(256/224) + CenterCrop for evaluation, RandomResizedCrop + flip for training, ImageNet
normalisation; and that the default "minmax" transform is untouched."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from reproduce import input_pipeline as pipe


def _gray(h: int = 60, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w)).astype(np.float32)


def test_eval_transform_is_resize_centre_crop_then_imagenet_normalisation():
    import cv2

    gray = _gray(60, 80)
    spec = pipe.PipelineSpec(size_wh=(32, 32), channels=3, num_classes=2, transform="imagenet")
    ours = pipe.eval_transform(tf.constant(gray), spec).numpy()
    # reference: shorter side 60 -> round(32 * 256/224) = 37, so 80 -> round(80 * 37/60) = 49
    resized = cv2.resize(gray, (49, 37), interpolation=cv2.INTER_LINEAR)
    top, left = (37 - 32) // 2, (49 - 32) // 2
    crop = resized[top:top + 32, left:left + 32] / 255.0
    reference = (np.stack([crop] * 3, -1) - np.array(pipe.IMAGENET_MEAN)) / np.array(pipe.IMAGENET_STD)
    assert ours.shape == (32, 32, 3)
    assert np.max(np.abs(ours - reference)) < 1e-3


def test_grey_input_uses_the_mean_imagenet_statistics():
    spec = pipe.PipelineSpec(size_wh=(16, 16), channels=1, num_classes=2, transform="imagenet")
    out = pipe.eval_transform(tf.fill([20, 20], 255.0), spec).numpy()
    assert out.shape == (16, 16, 1)
    assert np.allclose(out, (1.0 - 0.449) / 0.226, atol=1e-5)


def test_random_resized_crop_is_a_pure_function_of_its_seed():
    gray = tf.constant(_gray(60, 80, seed=1))
    a = pipe.random_resized_crop(gray, (24, 24), tf.constant([3, 7], tf.int64)).numpy()
    b = pipe.random_resized_crop(gray, (24, 24), tf.constant([3, 7], tf.int64)).numpy()
    c = pipe.random_resized_crop(gray, (24, 24), tf.constant([3, 8], tf.int64)).numpy()
    assert a.shape == (24, 24) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert gray.numpy().min() <= a.min() and a.max() <= gray.numpy().max()


def test_random_resized_crop_flips_about_half_and_crops_inside_the_frame():
    # a horizontal ramp: a flip makes the left column brighter than the right
    ramp = tf.constant(np.tile(np.arange(80, dtype=np.float32), (60, 1)))
    flips = 0
    for k in range(200):
        out = pipe.random_resized_crop(ramp, (16, 16), tf.constant([0, k], tf.int64)).numpy()
        flips += int(out[:, 0].mean() > out[:, -1].mean())
    assert 70 <= flips <= 130


def test_training_dataset_with_the_imagenet_transform_is_reproducible(tmp_path):
    import cv2

    paths = []
    for i in range(4):
        path = tmp_path / f"f{i}.png"
        cv2.imwrite(str(path), _gray(50, 70, seed=i).astype(np.uint8))
        paths.append(str(path))
    table = pipe.ImageTable(tuple(paths), np.array([0, 1, 0, 1]))
    spec = pipe.PipelineSpec(size_wh=(24, 24), channels=3, num_classes=2, transform="imagenet",
                             rrc_scale=(0.5, 1.0))

    def epoch_batches(start):
        dataset, steps = pipe.train_dataset(table, spec, batch_size=4, seed=5, start_epoch=start,
                                            end_epoch=start + 1, augment=True)
        return [x for x, _ in dataset.as_numpy_iterator()]

    first, again, second = epoch_batches(0), epoch_batches(0), epoch_batches(1)
    assert first[0].shape == (4, 24, 24, 3)
    assert np.array_equal(first[0], again[0])           # resume sees the same crops
    assert not np.array_equal(first[0], second[0])      # another epoch, other crops


def test_unknown_transform_is_refused_and_minmax_is_the_default():
    with pytest.raises(ValueError, match="transform"):
        pipe.PipelineSpec(size_wh=(8, 8), channels=1, num_classes=2, transform="zscore")
    spec = pipe.PipelineSpec(size_wh=(8, 8), channels=1, num_classes=2)
    assert spec.transform == "minmax"
    out = pipe.eval_transform(tf.constant(_gray(10, 10)), spec).numpy()
    assert out.min() == 0.0 and out.max() == 1.0
