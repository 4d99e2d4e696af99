"""Basic-block ResNets: ResNet-18/34 (post-activation) and Pgds-ResNet (pre-activation, Tang 2023).

Two layouts, one builder:

* post-activation (He et al. 2016, torchvision's `resnet18`/`resnet34`): stem conv7x7/2 - BN -
  ReLU - maxpool3x3/2, then blocks conv3x3-BN-ReLU-conv3x3-BN + shortcut (1x1 conv/stride + BN
  when the shape changes) - ReLU. Convolutions carry no bias, BN follows every conv, explicit
  zero padding reproduces torchvision's alignment at stride 2 (so converted torchvision weights
  compute the same thing). At 224x224x3 with 1000 classes this has exactly torchvision's
  11,689,512 (ResNet-18) and 21,797,672 (ResNet-34) trainable parameters.
* pre-activation (He et al. 2016b) exactly as the Pgds-ResNet authors' `resnet/resnet.py`
  builds it (github.com/1057813680/Screening_genetic-diseases, raghakot's keras-resnet):
  stem conv7x7/2 (bias) - BN - ReLU - maxpool3x3/2 "same"; blocks BN-ReLU-conv3x3 twice (the very
  first block skips its first BN-ReLU since the stem just did it); shortcut = identity or a 1x1
  conv with stride on the block's raw input (no BN); final BN - ReLU - global average pool -
  dense softmax. he_normal everywhere, L2 on every conv (not on the dense layer), Keras-default
  conv biases and BN settings.

Every layer is named (`stage{s}_block{b}_...`); the Grad-CAM layer is the last block's output
activation (`stage4_block{n}_out`) for post-activation nets and the final `post_relu` for
pre-activation nets (see `gradcam_layer_name`).
"""
from __future__ import annotations

from collections.abc import Sequence

import keras

from models.common import (check_head, check_input_shape, check_rate, final_identity,
                           l2_regularizer, softmax_head)

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
HEAD_LAYERS = ("logits",)  # the layers whose shape depends on num_classes


def gradcam_layer_name(depth: int = 18, *, preactivation: bool = False,
                       blocks: Sequence[int] | None = None, stage: int = 4) -> str:
    """Name of the activated output of `stage` (1-4; 4, the last conv block's output, is the
    layer Grad-CAM reads by default). Pre-activation: stage 4's is post_relu, an earlier
    stage's is the BN-ReLU that opens the next stage (`stage{s+1}_block1_preact_relu`)."""
    stage_blocks = tuple(blocks) if blocks is not None else BLOCKS[depth]
    if not 1 <= stage <= len(stage_blocks):
        raise ValueError(f"stage must lie in 1..{len(stage_blocks)}, got {stage}")
    if preactivation:
        return "post_relu" if stage == len(stage_blocks) else f"stage{stage + 1}_block1_preact_relu"
    return f"stage{stage}_block{stage_blocks[stage - 1]}_out"


def _conv(filters: int, kernel: int, stride: int, *, padding: str, use_bias: bool, regularizer,
          name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=use_bias,
                               kernel_initializer=keras.initializers.HeNormal(),
                               kernel_regularizer=regularizer, name=name)


def _strided_1x1_conv(x, filters: int, stride: int, *, use_bias: bool, regularizer, name: str,
                      subsample_name: str):
    """A 1x1 conv with stride, computed as stride-sampling then a stride-1 1x1 conv.

    Identical output and weights; it sidesteps a TensorFlow 2.21 CPU (oneDNN) bug where the
    gradient of a strided 1x1 conv corrupts memory for small channel counts and odd batches.
    """
    if stride != 1:
        x = keras.layers.MaxPooling2D(1, strides=stride, name=subsample_name)(x)
    return _conv(filters, 1, 1, padding="valid", use_bias=use_bias, regularizer=regularizer, name=name)(x)


def _post_activation_block(x, filters: int, stride: int, *, regularizer, name: str):
    """torchvision BasicBlock: conv-BN-ReLU-conv-BN + shortcut, then ReLU."""
    bn = dict(epsilon=1e-5, momentum=0.9)  # torchvision's eps and momentum
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _strided_1x1_conv(x, filters, stride, use_bias=False, regularizer=regularizer,
                                     name=f"{name}_shortcut_conv", subsample_name=f"{name}_shortcut_stride")
        shortcut = keras.layers.BatchNormalization(**bn, name=f"{name}_shortcut_bn")(shortcut)
    if stride != 1:
        # torchvision pads 1 on every side; Keras "same" would pad only bottom/right at stride 2.
        y = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        y = _conv(filters, 3, stride, padding="valid", use_bias=False, regularizer=regularizer,
                  name=f"{name}_conv1")(y)
    else:
        y = _conv(filters, 3, 1, padding="same", use_bias=False, regularizer=regularizer,
                  name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(**bn, name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, 1, padding="same", use_bias=False, regularizer=regularizer,
              name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(**bn, name=f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _pre_activation_block(x, filters: int, stride: int, *, first_of_network: bool, regularizer,
                          name: str):
    """The authors' `basic_block`: BN-ReLU-conv twice, shortcut from the raw block input."""
    if first_of_network:
        y = x  # the stem just did BN-ReLU(-maxpool)
    else:
        y = keras.layers.BatchNormalization(name=f"{name}_preact_bn")(x)
        y = keras.layers.ReLU(name=f"{name}_preact_relu")(y)
    y = _conv(filters, 3, stride, padding="same", use_bias=True, regularizer=regularizer,
              name=f"{name}_conv1")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = keras.layers.ReLU(name=f"{name}_relu2")(y)
    y = _conv(filters, 3, 1, padding="same", use_bias=True, regularizer=regularizer,
              name=f"{name}_conv2")(y)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _strided_1x1_conv(x, filters, stride, use_bias=True, regularizer=regularizer,
                                     name=f"{name}_shortcut_conv", subsample_name=f"{name}_shortcut_stride")
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def build_resnet(input_shape: tuple[int, int, int], num_classes: int, *, depth: int = 18,
                 blocks: Sequence[int] | None = None, preactivation: bool = False, l2: float = 1e-4,
                 l2_dense: bool | None = None, dropout: float = 0.0, head: str = "softmax",
                 width: int = 64, final_activation_dtype: str = "float32",
                 weights: str | None = None, name: str | None = None) -> keras.Model:
    """Build a basic-block ResNet as a flat functional model.

    Args:
        input_shape: (height, width, channels), any channel count, at least 32x32.
        num_classes: softmax width (ignored when head="embedding").
        depth: 18 or 34 (block counts 2/2/2/2 or 3/4/6/3); `blocks` overrides the counts.
        preactivation: False = torchvision layout, True = the Pgds-ResNet authors' layout.
        l2: L2 coefficient on every conv kernel (and the dense kernel when l2_dense).
        l2_dense: L2 on the dense classifier too; default True post-activation, False
            pre-activation (the authors' code regularises convs only).
        dropout: rate of a dropout before the classifier (0 = none, as in both references).
        head: "softmax" -> (None, num_classes) float32 probabilities; "embedding" -> the pooled
            features (None, 8 * width).
        width: channels of the first stage (64 in the references; small values for tests).
        weights: optional `.keras` / `.weights.h5` / legacy `.h5` file loaded by layer name; the
            classifier is skipped when its shape does not fit num_classes.
    """
    model_name = name or (f"{'pre' if preactivation else ''}resnet{depth}")
    height, width_px, channels = check_input_shape(input_shape, min_size=32, model=model_name)
    check_head(head, num_classes, model=model_name)
    dropout = check_rate(dropout, name="dropout", model=model_name)
    if blocks is None:
        if depth not in BLOCKS:
            raise ValueError(f"{model_name}: depth must be one of {sorted(BLOCKS)}, got {depth}")
        blocks = BLOCKS[depth]
    blocks = tuple(int(b) for b in blocks)
    if len(blocks) != 4 or min(blocks) < 1:
        raise ValueError(f"{model_name}: blocks must be 4 positive counts, got {blocks}")
    if int(width) < 1:
        raise ValueError(f"{model_name}: width must be >= 1, got {width}")
    width = int(width)
    if l2_dense is None:
        l2_dense = not preactivation
    regularizer = l2_regularizer(l2)

    inputs = keras.Input(shape=(height, width_px, channels), name="image")
    if preactivation:
        x = _conv(width, 7, 2, padding="same", use_bias=True, regularizer=regularizer, name="conv1")(inputs)
        x = keras.layers.BatchNormalization(name="conv1_bn")(x)
        x = keras.layers.ReLU(name="conv1_relu")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    else:
        x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
        x = _conv(width, 7, 2, padding="valid", use_bias=False, regularizer=regularizer, name="conv1")(x)
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="conv1_bn")(x)
        x = keras.layers.ReLU(name="conv1_relu")(x)
        # Zero padding equals torchvision's -inf padding here: the input is post-ReLU (>= 0).
        x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="pool1")(x)

    for stage, count in enumerate(blocks, start=1):
        filters = width * 2 ** (stage - 1)
        for block in range(1, count + 1):
            stride = 2 if (stage > 1 and block == 1) else 1
            block_name = f"stage{stage}_block{block}"
            if preactivation:
                x = _pre_activation_block(x, filters, stride, first_of_network=(stage == 1 and block == 1),
                                          regularizer=regularizer, name=block_name)
            else:
                x = _post_activation_block(x, filters, stride, regularizer=regularizer, name=block_name)
    if preactivation:
        x = keras.layers.BatchNormalization(name="post_bn")(x)
        x = keras.layers.ReLU(name="post_relu")(x)
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)

    if head == "embedding":
        outputs = final_identity(features, name="embedding", final_activation_dtype=final_activation_dtype)
    else:
        outputs = softmax_head(features, num_classes, dropout=dropout,
                               kernel_regularizer=regularizer if l2_dense else None,
                               kernel_initializer=keras.initializers.HeNormal(),
                               final_activation_dtype=final_activation_dtype)
    model = keras.Model(inputs, outputs, name=model_name)
    if weights is not None:
        from models.weights import load_weights_file
        load_weights_file(model, weights, optional_layers=HEAD_LAYERS)
    return model


def resnet18(input_shape: tuple[int, int, int], num_classes: int, **options) -> keras.Model:
    """ResNet-18 (post-activation unless preactivation=True); options as `build_resnet`."""
    return build_resnet(input_shape, num_classes, depth=18, name=options.pop("name", "resnet18"), **options)


def resnet34(input_shape: tuple[int, int, int], num_classes: int, **options) -> keras.Model:
    """ResNet-34 (post-activation unless preactivation=True); options as `build_resnet`."""
    return build_resnet(input_shape, num_classes, depth=34, name=options.pop("name", "resnet34"), **options)


def pgds_resnet(input_shape: tuple[int, int, int] = (400, 440, 1), num_classes: int = 2,
                **options) -> keras.Model:
    """Pgds-ResNet (Tang 2023) as the authors' code builds it: pre-activation ResNet-18,
    he_normal, L2 1e-4 on every conv, 400x440x1 input, 2-way softmax. Options override."""
    options.setdefault("preactivation", True)
    options.setdefault("l2", 1e-4)
    return build_resnet(input_shape, num_classes, depth=18, name=options.pop("name", "pgds_resnet"), **options)
