"""IResNet-100, the face-recognition backbone of Shen 2024 (insightface arcface_torch layout).

Layout (insightface `recognition/arcface_torch/backbones/iresnet.py`, `iresnet100`):

    stem     conv3x3 64 (stride 1, no bias) - BN - PReLU
    layer1-4 3 / 13 / 30 / 3 IBasicBlocks of 64 / 128 / 256 / 512 channels, the first block of
             each layer with stride 2 (112 -> 56 -> 28 -> 14 -> 7)
    IBasicBlock  BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus the shortcut (identity,
             or conv1x1(stride) - BN when the shape changes), added, no activation after
    output   BN (`bn2`) - flatten - dropout - dense 512 (`fc`) - BN without scale (`features`:
             insightface freezes its gamma at 1) = the 512-d face embedding

BN epsilon 1e-5 and momentum 0.9 (PyTorch's 0.1), PReLU one slope per channel starting at
0.25, convs initialised N(0, 0.1) and `fc` like torch.nn.Linear, all as insightface does.
Layers carry insightface's names with "." replaced by "_" (`layer3_12_conv2`,
`layer1_0_downsample_0`, `features`), which makes a state-dict conversion a rename plus
a transpose (`load_insightface_arrays`). Stride-2 convs use explicit 1-pixel zero padding so
they align with PyTorch's `padding=1`.

The training heads (ArcFace, CosFace) and the cosine classifier are in `models.margins`.
Grad-CAM reads the last block's output, `layer4_{n-1}_add`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np

from models.common import check_head, check_input_shape, check_rate, l2_regularizer, softmax_head

BLOCKS_100 = (3, 13, 30, 3)
EMBEDDING_SIZE = 512
HEAD_LAYERS = ("logits",)
_BN = dict(epsilon=1e-5, momentum=0.9)


def gradcam_layer_name(blocks: Sequence[int] = BLOCKS_100) -> str:
    return f"layer4_{int(tuple(blocks)[-1]) - 1}_add"


def _conv_init() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.1)  # insightface: normal_(0, 0.1)


def _prelu(name: str) -> keras.layers.PReLU:
    return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2],
                              name=name)


def _conv3x3(x, filters: int, stride: int, *, regularizer, name: str):
    if stride != 1:  # PyTorch padding=1 on every side; "same" at stride 2 pads bottom/right only
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(filters, 3, strides=stride, padding=padding, use_bias=False,
                               kernel_initializer=_conv_init(), kernel_regularizer=regularizer,
                               name=name)(x)


def _ibasic_block(x, filters: int, stride: int, *, regularizer, name: str):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        # stride-sampling + 1x1 conv == a strided 1x1 conv (see resnet._strided_1x1_conv: it
        # sidesteps a TensorFlow 2.21 oneDNN bug in the strided 1x1 conv's gradient)
        shortcut = keras.layers.MaxPooling2D(1, strides=stride, name=f"{name}_downsample_stride")(x) \
            if stride != 1 else x
        shortcut = keras.layers.Conv2D(filters, 1, use_bias=False,
                                       kernel_initializer=_conv_init(), kernel_regularizer=regularizer,
                                       name=f"{name}_downsample_0")(shortcut)
        shortcut = keras.layers.BatchNormalization(**_BN, name=f"{name}_downsample_1")(shortcut)
    y = keras.layers.BatchNormalization(**_BN, name=f"{name}_bn1")(x)
    y = _conv3x3(y, filters, 1, regularizer=regularizer, name=f"{name}_conv1")
    y = keras.layers.BatchNormalization(**_BN, name=f"{name}_bn2")(y)
    y = _prelu(f"{name}_prelu")(y)
    y = _conv3x3(y, filters, stride, regularizer=regularizer, name=f"{name}_conv2")
    y = keras.layers.BatchNormalization(**_BN, name=f"{name}_bn3")(y)
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def build_iresnet(input_shape: tuple[int, int, int] = (112, 112, 3), num_classes: int = 0, *,
                  blocks: Sequence[int] = BLOCKS_100, embedding_size: int = EMBEDDING_SIZE,
                  l2: float = 0.0, dropout: float = 0.0, head: str = "embedding", width: int = 64,
                  final_activation_dtype: str = "float32", weights: str | None = None,
                  name: str = "iresnet100") -> keras.Model:
    """Build an IResNet (IResNet-100 by default) as a flat functional model.

    Args:
        input_shape: (height, width, channels); 112x112x3 is insightface's aligned face crop
            (the flatten size, hence `fc`, depends on it: 7x7x512 at 112x112).
        num_classes: classes of the optional softmax head (ignored for head="embedding").
        blocks: IBasicBlocks per layer (3, 13, 30, 3) = IResNet-100; (2, 2, 2, 2) = IResNet-18,
            (1, 1, 1, 1) gives a tiny variant for tests.
        embedding_size: width of `fc` / `features` (512).
        l2: L2 coefficient on conv and dense kernels (insightface uses optimizer weight decay
            5e-4 with SGD instead, i.e. about l2=2.5e-4).
        dropout: rate between flatten and `fc` (insightface default 0).
        head: "embedding" -> (None, embedding_size) float32 embedding `features`; "softmax" ->
            a dense softmax on top of the embedding (plain classification; for ArcFace/CosFace
            training use `models.margins.build_margin_training_model`).
        width: channels of layer1 (64); layers 2-4 have 2x, 4x, 8x.
        weights: a `.keras` / `.weights.h5` / legacy `.h5` backbone file loaded by layer name
            (the softmax head is skipped when it does not fit), or an `.npz` of an insightface
            PyTorch state dict (see `load_insightface_arrays`).
    """
    height, width_px, channels = check_input_shape(input_shape, min_size=16, model=name)
    check_head(head, num_classes, model=name)
    dropout = check_rate(dropout, name="dropout", model=name)
    blocks = tuple(int(b) for b in blocks)
    if len(blocks) != 4 or min(blocks) < 1:
        raise ValueError(f"{name}: blocks must be 4 positive counts, got {blocks}")
    if int(width) < 1 or int(embedding_size) < 1:
        raise ValueError(f"{name}: width and embedding_size must be >= 1, got {width}, {embedding_size}")
    width = int(width)
    regularizer = l2_regularizer(l2)

    inputs = keras.Input(shape=(height, width_px, channels), name="image")
    x = _conv3x3(inputs, width, 1, regularizer=regularizer, name="conv1")
    x = keras.layers.BatchNormalization(**_BN, name="bn1")(x)
    x = _prelu("prelu")(x)
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            x = _ibasic_block(x, width * 2 ** (stage - 1), 2 if block == 0 else 1,
                              regularizer=regularizer, name=f"layer{stage}_{block}")
    x = keras.layers.BatchNormalization(**_BN, name="bn2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(int(embedding_size), kernel_regularizer=regularizer, name="fc",
                           # torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                           kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"))(x)
    features = keras.layers.BatchNormalization(scale=False, dtype=final_activation_dtype, name="features",
                                               **_BN)(x)
    if head == "embedding":
        outputs = features
    else:
        outputs = softmax_head(features, num_classes, dropout=0.0, kernel_regularizer=regularizer,
                               kernel_initializer="glorot_uniform",
                               final_activation_dtype=final_activation_dtype)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        if str(weights).endswith(".npz"):
            from models.weights import require_file
            with np.load(require_file(weights)) as arrays:
                load_insightface_arrays(model, dict(arrays), source=str(weights))
        else:
            from models.weights import load_weights_file
            load_weights_file(model, weights, optional_layers=HEAD_LAYERS)
    return model


def iresnet100(input_shape: tuple[int, int, int] = (112, 112, 3), num_classes: int = 0,
               **options) -> keras.Model:
    """IResNet-100 (blocks 3/13/30/3); options as `build_iresnet`."""
    return build_iresnet(input_shape, num_classes, **options)


def load_insightface_arrays(model: keras.Model, state: Mapping[str, np.ndarray], *,
                            source: str = "state dict") -> list[str]:
    """Copy an insightface PyTorch IResNet state dict (as numpy arrays) into `model`.

    Get the arrays where PyTorch is installed, e.g.
    `np.savez("r100.npz", **{k: v.numpy() for k, v in torch.load("backbone.pth").items()})`.
    Conv kernels go OIHW -> HWIO; `fc.weight` (out, C*H*W in PyTorch's NCHW flatten order)
    is permuted to Keras' NHWC flatten order; BN running stats become moving mean/variance;
    `features.weight` (frozen at 1) is dropped since `features` has no scale. Every array must
    fit (same shapes) and every backbone layer must be found, else ValueError naming the layer.
    Returns the names of the layers set.
    """
    from models.weights import WeightsMismatchError

    def get(key: str) -> np.ndarray:
        if key not in state:
            raise WeightsMismatchError(f"{source}: has no '{key}' for layer "
                                       f"'{key.rsplit('.', 1)[0].replace('.', '_')}'")
        return np.asarray(state[key])

    updates: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    flatten_grid = None
    for layer in model.layers:
        if not layer.weights or layer.name in HEAD_LAYERS:
            continue
        prefix = layer.name
        for stage in range(1, 5):  # layer3_12_conv2 -> layer3.12.conv2
            if prefix.startswith(f"layer{stage}_"):
                head_part, _, rest = prefix.partition("_")
                block, _, rest = rest.partition("_")
                rest = rest.replace("downsample_", "downsample.")
                prefix = f"{head_part}.{block}.{rest}"
        if isinstance(layer, keras.layers.Conv2D):
            arrays = [get(f"{prefix}.weight").transpose(2, 3, 1, 0)]
        elif isinstance(layer, keras.layers.BatchNormalization):
            arrays = ([get(f"{prefix}.weight")] if layer.scale else []) + [
                get(f"{prefix}.bias"), get(f"{prefix}.running_mean"), get(f"{prefix}.running_var")]
        elif isinstance(layer, keras.layers.PReLU):
            arrays = [get(f"{prefix}.weight").reshape(1, 1, -1)]
        elif isinstance(layer, keras.layers.Dense) and layer.name == "fc":
            weight = get("fc.weight")  # (out, C*H*W), PyTorch flattens NCHW
            flat_in = layer.kernel.shape[0]
            grid_shape = model.get_layer("bn2").output.shape[1:]  # (H, W, C)
            flatten_grid = tuple(int(v) for v in grid_shape)
            if weight.shape != (layer.kernel.shape[1], flat_in):
                raise WeightsMismatchError(f"{source}: layer 'fc' expects fc.weight of shape "
                                           f"{(layer.kernel.shape[1], flat_in)}, the file has {weight.shape}")
            h, w, c = flatten_grid
            kernel = weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(flat_in, -1)
            arrays = [kernel, get("fc.bias")]
        else:
            raise WeightsMismatchError(f"{source}: no insightface mapping for layer '{layer.name}'")
        expected = [tuple(v.shape) for v in layer.weights]
        found = [tuple(a.shape) for a in arrays]
        if expected != found:
            raise WeightsMismatchError(f"{source}: layer '{layer.name}' expects shapes {expected}, "
                                       f"the state dict gives {found}")
        updates.append((layer, arrays))
    for layer, arrays in updates:
        layer.set_weights(arrays)
    return [layer.name for layer, _ in updates]
