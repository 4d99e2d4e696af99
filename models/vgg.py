"""VGG-16 and VGG-19 (Simonyan & Zisserman 2015), optionally with batch normalisation.

Classic layout: 5 blocks of 3x3 "same" convolutions (2-2-3-3-3 convs for VGG-16, 2-2-4-4-4 for
VGG-19; 64-128-256-512-512 filters), 2x2 max pooling after each block, then flatten - fc1 4096 -
ReLU - dropout - fc2 4096 - ReLU - dropout - classifier. Convolutions keep their bias (as in
torchvision's vgg16_bn). At 224x224x3 with 1000 classes and no BN this has exactly the
reference 138,357,544 (VGG-16) and 143,667,240 (VGG-19) trainable parameters.

`batch_norm=True` puts a BN between every conv and its ReLU (Tang 2023: "the batch
normalization module was added to each layer of the model"; we follow torchvision's vgg_bn and
normalise the convolutions, not the fc layers). Layer names follow keras.applications
(`block{b}_conv{c}`, `fc1`, `fc2`), so converted ImageNet conv weights load by name. Grad-CAM
reads `block5_conv{n}_relu`, the last conv's activation.
"""
from __future__ import annotations

import keras

from models.common import (check_head, check_input_shape, check_rate, final_identity,
                           l2_regularizer, softmax_head)

CONVS_PER_BLOCK = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
HEAD_LAYERS = ("logits",)


def gradcam_layer_name(depth: int = 16, stage: int = 5) -> str:
    """The last ReLU of conv block `stage` (1-5; 5, the last conv layer, is the default)."""
    if not 1 <= stage <= 5:
        raise ValueError(f"stage must lie in 1..5, got {stage}")
    return f"block{stage}_conv{CONVS_PER_BLOCK[depth][stage - 1]}_relu"


def build_vgg(input_shape: tuple[int, int, int], num_classes: int, *, depth: int = 16,
              batch_norm: bool = False, l2: float = 0.0, dropout: float = 0.5, head: str = "softmax",
              width: int = 64, final_activation_dtype: str = "float32", weights: str | None = None,
              name: str | None = None) -> keras.Model:
    """Build VGG-16/19 as a flat functional model.

    Args:
        input_shape: (height, width, channels), at least 32x32 (five 2x2 poolings).
        num_classes: softmax width (ignored when head="embedding").
        batch_norm: BN between every conv and its ReLU.
        l2: L2 coefficient on every conv and dense kernel (0 = none).
        dropout: rate after fc1 and fc2 (0.5 in the original).
        head: "softmax" -> (None, num_classes) float32 probabilities; "embedding" -> fc2's
            activation (None, 64 * width).
        width: filters of the first block (64 in the reference); the fc layers have 64 * width
            units (4096 in the reference).
        weights: optional `.keras` / `.weights.h5` / legacy `.h5` file loaded by layer name; the
            classifier is skipped when its shape does not fit num_classes.
    """
    model_name = name or f"vgg{depth}{'_bn' if batch_norm else ''}"
    if depth not in CONVS_PER_BLOCK:
        raise ValueError(f"{model_name}: depth must be 16 or 19, got {depth}")
    height, width_px, channels = check_input_shape(input_shape, min_size=32, model=model_name)
    check_head(head, num_classes, model=model_name)
    dropout = check_rate(dropout, name="dropout", model=model_name)
    if int(width) < 1:
        raise ValueError(f"{model_name}: width must be >= 1, got {width}")
    width = int(width)
    regularizer = l2_regularizer(l2)

    inputs = keras.Input(shape=(height, width_px, channels), name="image")
    x = inputs
    for block, convs in enumerate(CONVS_PER_BLOCK[depth], start=1):
        filters = width * min(2 ** (block - 1), 8)
        for conv in range(1, convs + 1):
            layer = f"block{block}_conv{conv}"
            x = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer=keras.initializers.HeNormal(),
                                    kernel_regularizer=regularizer, name=layer)(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(name=f"{layer}_bn")(x)
            x = keras.layers.ReLU(name=f"{layer}_relu")(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)

    x = keras.layers.Flatten(name="flatten")(x)
    for fc in ("fc1", "fc2"):
        x = keras.layers.Dense(64 * width, kernel_initializer=keras.initializers.HeNormal(),
                               kernel_regularizer=regularizer, name=fc)(x)
        x = keras.layers.ReLU(name=f"{fc}_relu")(x)
        if head == "embedding" and fc == "fc2":
            break  # the embedding is fc2's activation, before dropout
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"{fc}_dropout")(x)

    if head == "embedding":
        outputs = final_identity(x, name="embedding", final_activation_dtype=final_activation_dtype)
    else:
        outputs = softmax_head(x, num_classes, dropout=0.0, kernel_regularizer=regularizer,
                               kernel_initializer="glorot_uniform",
                               final_activation_dtype=final_activation_dtype)
    model = keras.Model(inputs, outputs, name=model_name)
    if weights is not None:
        from models.weights import load_weights_file
        load_weights_file(model, weights, optional_layers=HEAD_LAYERS)
    return model


def vgg16(input_shape: tuple[int, int, int], num_classes: int, **options) -> keras.Model:
    """VGG-16; options as `build_vgg`."""
    return build_vgg(input_shape, num_classes, depth=16, name=options.pop("name", "vgg16"), **options)


def vgg19(input_shape: tuple[int, int, int], num_classes: int, **options) -> keras.Model:
    """VGG-19; options as `build_vgg`."""
    return build_vgg(input_shape, num_classes, depth=19, name=options.pop("name", "vgg19"), **options)
