"""ArcFace and CosFace margin heads, and the cosine classifier used at inference (Shen 2024).

Both heads hold one weight vector per class, W (embedding_size, num_classes). With the
embedding x and W's columns L2-normalised, cos(theta_j) = x . W_j, and

    ArcFace (Deng et al. 2019; s=64, m=0.5):  true class  s * cos(theta_y + m),  others  s * cos(theta_j)
    CosFace (Wang et al. 2018; s=64, m=0.35): true class  s * (cos(theta_y) - m), others s * cos(theta_j)

For ArcFace, cos(theta + m) stops decreasing once theta + m > pi; insightface therefore uses
cos(theta) - m * sin(m) (`mm`) wherever cos(theta) <= cos(pi - m) (`th`), or with `easy_margin`
keeps cos(theta) wherever cos(theta) <= 0. Both fallbacks are implemented.

Margin warm-up (`warmup_steps` > 0, a known cure for ArcFace/CosFace that diverge or never
converge when trained from scratch on few classes): the true class's logit is blended from the
plain cosine to the margin-penalised one, s * ((1 - f) cos(theta_y) + f target(theta_y)) with
f = min(1, step / warmup_steps); `step` is a non-trainable counter of the head, advanced by
every training call (so a checkpoint resumes it). For CosFace this ramps m linearly. With
warmup_steps = 0 (default) the head has no counter and is exactly the formula above.

A head called on [embedding, labels] (integer class indices) gives the margin logits for
training; called on the embedding alone it gives s * cos(theta) for every class: the cosine
classifier, no margin (`CosineClassifier` is that layer on its own; ArcFace and CosFace extend
it). `build_margin_training_model` and `build_margin_inference_model` wire
both around a backbone with the SAME head layer, so training one trains the other. Train on the
logits with `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`; the inference
model outputs float32 softmax probabilities. All maths runs in float32, also under
`mixed_float16`.
"""
from __future__ import annotations

import math

import keras
from keras import ops

from models.common import SERIALIZATION_PACKAGE

MARGIN_HEAD_NAME = "margin_head"
_COS_EPS = 1e-7  # keeps sqrt(1 - cos^2) and its gradient finite at |cos| = 1


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CosineClassifier(keras.layers.Layer):
    """s * cos(theta_j) for every class, no margin; ArcFace and CosFace add their margin to it."""

    def __init__(self, num_classes: int, s: float = 64.0, m: float = 0.0,
                 kernel_initializer="random_normal", warmup_steps: int = 0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # the margin maths needs float32 under mixed precision
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"{self.__class__.__name__}: num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.s = float(s)
        self.m = float(m)
        if int(warmup_steps) < 0:
            raise ValueError(f"{self.__class__.__name__}: warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            input_shape = input_shape[0]  # [embedding, labels]
        self.kernel = self.add_weight(name="kernel", shape=(int(input_shape[-1]), self.num_classes),
                                      initializer=self.kernel_initializer, trainable=True)
        if self.warmup_steps:
            self.step = self.add_weight(name="warmup_step", shape=(), initializer="zeros",
                                        trainable=False)

    def cosine(self, embedding):
        embedding = ops.cast(embedding, "float32")
        x = embedding / ops.maximum(ops.norm(embedding, axis=-1, keepdims=True), 1e-12)
        w = self.kernel / ops.maximum(ops.norm(self.kernel, axis=0, keepdims=True), 1e-12)
        return ops.clip(ops.matmul(x, w), -1.0, 1.0)

    def target_logit(self, cos):
        """cos(theta) of the true class -> its penalised value (before scaling by s)."""
        return cos

    def call(self, inputs, training=None):
        if isinstance(inputs, (list, tuple)):
            embedding, labels = inputs
        else:
            embedding, labels = inputs, None
        cos = self.cosine(embedding)
        if labels is None:
            return self.s * cos
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        one_hot = ops.one_hot(labels, self.num_classes, dtype=cos.dtype)
        target = self.target_logit(cos)
        if self.warmup_steps:
            share = ops.minimum(1.0, self.step / float(self.warmup_steps))
            target = cos + share * (target - cos)
            if training:
                self.step.assign(self.step + 1.0)
        return self.s * ops.where(one_hot > 0, target, cos)

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            input_shape = input_shape[0]
        return (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, s=self.s, m=self.m,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        if self.warmup_steps:
            config.update(warmup_steps=self.warmup_steps)
        return config


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class ArcFace(CosineClassifier):
    """Additive angular margin: s * cos(theta + m) for the true class (insightface fallback)."""

    def __init__(self, num_classes: int, s: float = 64.0, m: float = 0.5, easy_margin: bool = False, **kwargs):
        super().__init__(num_classes, s=s, m=m, **kwargs)
        self.easy_margin = bool(easy_margin)
        self.cos_m = math.cos(self.m)
        self.sin_m = math.sin(self.m)
        self.th = math.cos(math.pi - self.m)
        self.mm = math.sin(math.pi - self.m) * self.m

    def target_logit(self, cos):
        sin = ops.sqrt(ops.clip(1.0 - cos * cos, _COS_EPS, 1.0))
        phi = cos * self.cos_m - sin * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            return ops.where(cos > 0, phi, cos)
        return ops.where(cos > self.th, phi, cos - self.mm)

    def get_config(self):
        config = super().get_config()
        config.update(easy_margin=self.easy_margin)
        return config


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class CosFace(CosineClassifier):
    """Additive cosine margin: s * (cos(theta) - m) for the true class."""

    def __init__(self, num_classes: int, s: float = 64.0, m: float = 0.35, **kwargs):
        super().__init__(num_classes, s=s, m=m, **kwargs)

    def target_logit(self, cos):
        return cos - self.m


MARGIN_HEADS = {"arcface": ArcFace, "cosface": CosFace}


def build_margin_training_model(backbone: keras.Model, num_classes: int, head: str = "arcface",
                                **head_options) -> keras.Model:
    """[image, labels] -> margin logits (float32) of a backbone's embedding.

    `backbone` must output an embedding (e.g. `build("iresnet100", ..., head="embedding")`). The
    result is flat: the backbone's layers plus an int32 input `labels` and the head layer
    `margin_head` (options such as s, m, easy_margin go to the head).
    """
    if head not in MARGIN_HEADS:
        raise ValueError(f"head must be one of {tuple(MARGIN_HEADS)}, got {head!r}")
    output_layer = backbone.layers[-1].name if backbone.layers else ""
    if (len(backbone.inputs) != 1 or len(backbone.outputs) != 1 or len(backbone.outputs[0].shape) != 2
            or output_layer == "predictions"):
        raise ValueError(f"backbone '{backbone.name}' must map one image input to one (batch, features) "
                         f"embedding; build it with head='embedding'")
    labels = keras.Input(shape=(), dtype="int32", name="labels")
    margin_head = MARGIN_HEADS[head](num_classes, name=MARGIN_HEAD_NAME, **head_options)
    logits = margin_head([backbone.outputs[0], labels])
    return keras.Model([backbone.inputs[0], labels], logits, name=f"{backbone.name}_{head}_train")


def build_margin_inference_model(training_model: keras.Model,
                                 final_activation_dtype: str = "float32") -> keras.Model:
    """image -> softmax(s * cos(theta)) over the classes, sharing the training model's layers."""
    margin_head = training_model.get_layer(MARGIN_HEAD_NAME)
    image = training_model.inputs[0]
    embedding = margin_head.input[0] if isinstance(margin_head.input, (list, tuple)) else margin_head.input
    logits = margin_head(embedding)
    probabilities = keras.layers.Activation("softmax", dtype=final_activation_dtype,
                                            name="predictions")(logits)
    return keras.Model(image, probabilities, name=training_model.name.replace("_train", "_infer"))
