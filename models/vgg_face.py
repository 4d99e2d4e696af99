"""The face VGG-16 of Hong 2021: VGG-Face's VGG-16 with its fully connected layers as convolutions.

Hong et al. 2021 (genetic syndromes from children's faces): "13 convolutional layers ...
We replaced the fully connected layers with convolutional layers with a 50% dropout ... The
convolutional layer ... was connected to a ReLU activation function after batch normalization
... Following the convolution layer operations, the data were finally outputted via softmax",
initialised from VGG-Face (Parkhi et al. 2015). The graph:

    conv1_1 .. conv5_3   3x3 "same" conv - BN - ReLU, max pool after each block (pool1..pool5)
    fc6                  conv 7x7 (the pool5 grid at 224x224) 4096 - BN - ReLU - dropout 0.5
    fc7                  conv 1x1 4096 - BN - ReLU - dropout 0.5
    fc8                  conv 1x1 num_classes - global average pool - softmax `predictions`

At 224x224 fc6 sees the whole 7x7 grid, so fc6/fc7/fc8 compute exactly VGG-Face's fully
connected layers; larger inputs slide them (fully convolutional) and average fc8's map.

Weights (`weights=PATH`): no model hub is reachable, so VGG-Face must come from a file:
  * a `.keras` / `.weights.h5` file of this graph, e.g. built with
    `build_vgg16_face((224, 224, 3), 2622, batch_norm=...)`, the VGG-Face arrays assigned by layer
    name (conv kernels HWIO, fc6 kernel reshaped to (7, 7, 512, 4096)), then `save_weights`; or
  * a legacy Keras `.h5` saved by layer name, such as keras-vggface's
    `rcmalli_vggface_tf_vgg16.h5` (layers conv1_1 ... conv5_3, fc6, fc7, fc8; its dense fc
    kernels are reshaped to this graph's conv kernels).
The layers are named like VGG-Face's (conv1_1 ... conv5_3, fc6, fc7, fc8) so either loads by
name. VGG-Face has no BN: BN layers missing from the file keep their initial values, and fc8 is
skipped when its class count differs (2622 identities vs the study's classes). A missing file,
or a file whose arrays do not fit, raises a clear error naming the path and the first layer.
VGG-Face was trained on mean-subtracted 0-255 RGB; Hong fed [0, 1] images and fine-tuned.
"""
from __future__ import annotations

import keras

from models.common import (check_head, check_input_shape, check_rate, final_identity,
                           l2_regularizer)

CONVS_PER_BLOCK = (2, 2, 3, 3, 3)
GRADCAM_LAYER = "conv5_3_relu"


def gradcam_layer_name(stage: int = 5) -> str:
    """The activated last conv of block `stage` (1-5): conv5_3_relu, conv4_3_relu, ..."""
    if not 1 <= stage <= len(CONVS_PER_BLOCK):
        raise ValueError(f"vgg16_face has blocks 1-{len(CONVS_PER_BLOCK)}, got {stage}")
    return f"conv{stage}_{CONVS_PER_BLOCK[stage - 1]}_relu"


def build_vgg16_face(input_shape: tuple[int, int, int] = (224, 224, 3), num_classes: int = 2, *,
                     batch_norm: bool = True, l2: float = 0.0, dropout: float = 0.5,
                     head: str = "softmax", width: int = 64, final_activation_dtype: str = "float32",
                     weights: str | None = None, name: str = "vgg16_face") -> keras.Model:
    """Build Hong 2021's face VGG-16 (see the module docstring), optionally loading VGG-Face.

    Args:
        input_shape: (height, width, channels); 224x224x3 is the study's (and VGG-Face's) input.
        num_classes: classes of fc8 (2 in Hong 2021).
        batch_norm: BN before every ReLU (Hong 2021); False gives plain VGG-Face.
        l2: L2 coefficient on every conv kernel (0 = none).
        dropout: rate after fc6 and fc7 (50% in Hong 2021).
        head: "softmax" -> (None, num_classes) float32 probabilities; "embedding" -> fc7's
            activation averaged over the grid (None, 64 * width).
        width: filters of the first block (64); fc6/fc7 have 64 * width channels (4096).
        weights: VGG-Face (or a fine-tuned model) file, see the module docstring.
    """
    height, width_px, channels = check_input_shape(input_shape, min_size=32, model=name)
    check_head(head, num_classes, model=name)
    dropout = check_rate(dropout, name="dropout", model=name)
    if int(width) < 1:
        raise ValueError(f"{name}: width must be >= 1, got {width}")
    width = int(width)
    regularizer = l2_regularizer(l2)
    init = keras.initializers.HeNormal

    def conv_bn_relu(x, filters: int, kernel, layer: str):
        x = keras.layers.Conv2D(filters, kernel, padding="same" if kernel == 3 else "valid",
                                kernel_initializer=init(), kernel_regularizer=regularizer, name=layer)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{layer}_bn")(x)
        return keras.layers.ReLU(name=f"{layer}_relu")(x)

    inputs = keras.Input(shape=(height, width_px, channels), name="image")
    x = inputs
    for block, convs in enumerate(CONVS_PER_BLOCK, start=1):
        filters = width * min(2 ** (block - 1), 8)
        for conv in range(1, convs + 1):
            x = conv_bn_relu(x, filters, 3, f"conv{block}_{conv}")
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"pool{block}")(x)

    grid = (min(7, x.shape[1]), min(7, x.shape[2]))  # 7x7 = VGG-Face's fc6 at 224x224
    x = conv_bn_relu(x, 64 * width, grid, "fc6")
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="fc6_dropout")(x)
    x = conv_bn_relu(x, 64 * width, 1, "fc7")
    if head == "embedding":
        x = keras.layers.GlobalAveragePooling2D(name="fc7_pool")(x)
        outputs = final_identity(x, name="embedding", final_activation_dtype=final_activation_dtype)
    else:
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name="fc7_dropout")(x)
        x = keras.layers.Conv2D(int(num_classes), 1, kernel_initializer="glorot_uniform",
                                kernel_regularizer=regularizer, name="fc8")(x)
        x = keras.layers.GlobalAveragePooling2D(name="fc8_pool")(x)
        outputs = keras.layers.Activation("softmax", dtype=final_activation_dtype, name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        from models.weights import load_weights_file
        optional = ["fc8"] + [layer.name for layer in model.layers if layer.name.endswith("_bn")]
        load_weights_file(model, weights, optional_layers=optional)
    return model
