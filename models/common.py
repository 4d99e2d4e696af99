"""Small pieces every builder shares: input checks, the L2 regulariser and the softmax head.

Every model of the zoo ends the same way for classification: an optional dropout, a dense layer
named `logits` and a softmax named `predictions` computed in float32 (so a model built under the
`mixed_float16` policy still outputs float32 probabilities).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

SERIALIZATION_PACKAGE = "genetic_screening"
HEADS = ("softmax", "embedding")


def check_input_shape(input_shape: tuple[int, int, int], *, min_size: int, model: str) -> tuple[int, int, int]:
    """Return (height, width, channels) as ints, or raise ValueError saying what is wrong."""
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{model}: input_shape must be (height, width, channels) ints, got {input_shape!r}") from None
    if len(shape) != 3:
        raise ValueError(f"{model}: input_shape must be (height, width, channels), got {input_shape!r}")
    height, width, channels = shape
    if channels < 1:
        raise ValueError(f"{model}: input_shape {shape} has no channels")
    if height < min_size or width < min_size:
        raise ValueError(f"{model}: input {height}x{width} is too small; at least {min_size}x{min_size} is needed")
    return shape


def check_head(head: str, num_classes: int, *, model: str) -> None:
    if head not in HEADS:
        raise ValueError(f"{model}: head must be one of {HEADS}, got {head!r}")
    if head == "softmax" and int(num_classes) < 2:
        raise ValueError(f"{model}: a softmax head needs at least 2 classes, got num_classes={num_classes}")


def check_rate(value: float, *, name: str, model: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{model}: {name} must be in [0, 1), got {value}")
    return value


def l2_regularizer(l2: float) -> keras.regularizers.Regularizer | None:
    """keras L2 (adds l2 * sum(w**2) to the loss) or None when l2 is 0."""
    l2 = float(l2)
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    return keras.regularizers.L2(l2) if l2 > 0 else None


def softmax_head(features, num_classes: int, *, dropout: float, kernel_regularizer,
                 kernel_initializer, final_activation_dtype: str):
    """features -> [dropout] -> Dense `logits` -> softmax `predictions` (float32 by default)."""
    x = features
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(int(num_classes), kernel_initializer=kernel_initializer,
                                kernel_regularizer=kernel_regularizer, name="logits")(x)
    return keras.layers.Activation("softmax", dtype=final_activation_dtype, name="predictions")(logits)


def final_identity(x, *, name: str, final_activation_dtype: str):
    """A float32 (by default) pass-through that names an embedding output."""
    return keras.layers.Activation("linear", dtype=final_activation_dtype, name=name)(x)
