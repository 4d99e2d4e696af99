"""The model zoo's one entry point: a model name -> a built Keras model.

    from models.registry import build
    model = build("pgds_resnet", (400, 440, 1), 2)            # Tang 2023's Pgds-ResNet
    model = build("vgg16", (224, 224, 1), 2, batch_norm=True)

Names (`MODEL_NAMES`): resnet18, resnet34, pgds_resnet, vgg16, vgg19, vgg16_face, iresnet100.
`build` starts from `default_options(name)` (the settings of the study that uses the model) and
applies the caller's options on top; an option the model does not take raises ValueError (an
option passed as None is ignored, so callers may pass a uniform set). Common options:

    l2: float            L2 coefficient on conv (and dense) kernels; 0 = none
    dropout: float       dropout rate (classifier, VGG fc layers, IResNet before fc)
    batch_norm: bool     VGG only: BN between every conv and its ReLU
    preactivation: bool  ResNets only: BN-ReLU-conv layout (the Pgds-ResNet authors')
    head: str            "softmax" (None, num_classes) probabilities | "embedding" features
    weights: str|None    a file to load (see models.weights); missing/unfitting -> clear error
    width: int           first-stage channels (64 = the published models; small for tests)
    final_activation_dtype: str   dtype of the last layer ("float32", also under mixed_float16)
    seed: int|None       keras.utils.set_random_seed(seed) before building (same seed, same weights)
    blocks, embedding_size   IResNet only; blocks also for ResNets

Every model is a flat functional graph with named layers; `gradcam_layer(name)` names the last
conv block's output activation for Grad-CAM. `python -m models.registry --counts` prints every
model's parameter counts at its study's input size.
"""
from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from models import iresnet, resnet, vgg, vgg_face

MODEL_NAMES: tuple[str, ...] = ("resnet18", "resnet34", "pgds_resnet", "vgg16", "vgg19", "vgg16_face",
                                "iresnet100")

_COMMON = ("l2", "dropout", "head", "weights", "width", "final_activation_dtype")
_BUILDERS: dict[str, tuple[Callable[..., keras.Model], tuple[str, ...]]] = {
    "resnet18": (resnet.resnet18, _COMMON + ("preactivation", "blocks")),
    "resnet34": (resnet.resnet34, _COMMON + ("preactivation", "blocks")),
    "pgds_resnet": (resnet.pgds_resnet, _COMMON + ("preactivation", "blocks")),
    "vgg16": (vgg.vgg16, _COMMON + ("batch_norm",)),
    "vgg19": (vgg.vgg19, _COMMON + ("batch_norm",)),
    "vgg16_face": (vgg_face.build_vgg16_face, _COMMON + ("batch_norm",)),
    "iresnet100": (iresnet.iresnet100, _COMMON + ("blocks", "embedding_size")),
}

# The settings of the study each model reproduces (Tang 2023 says every model had BN and L2
# weight decay; the authors' code uses L2 1e-4 on every conv; Hong 2021: BN, 50% dropout).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "resnet18": dict(l2=1e-4, preactivation=False, dropout=0.0, head="softmax"),
    "resnet34": dict(l2=1e-4, preactivation=False, dropout=0.0, head="softmax"),
    "pgds_resnet": dict(l2=1e-4, preactivation=True, dropout=0.0, head="softmax"),
    "vgg16": dict(l2=1e-4, batch_norm=True, dropout=0.5, head="softmax"),
    "vgg19": dict(l2=1e-4, batch_norm=True, dropout=0.5, head="softmax"),
    "vgg16_face": dict(l2=0.0, batch_norm=True, dropout=0.5, head="softmax"),
    "iresnet100": dict(l2=0.0, dropout=0.0, head="embedding"),
}

# Where each model is used: (study key, model) -> (description, input shape, classes). The first
# entry of a model is its default study (resnet34 also serves the cns study at 224x224x3).
STUDIES: dict[tuple[str, str], tuple[str, tuple[int, int, int], int]] = {
    ("pgds", "pgds_resnet"): ("Tang 2023, Pgds-ResNet", (400, 440, 1), 2),
    ("pgds", "resnet18"): ("Tang 2023 comparison", (400, 440, 1), 2),
    ("pgds", "resnet34"): ("Tang 2023 comparison", (400, 440, 1), 2),
    ("pgds", "vgg16"): ("Tang 2023 comparison (224x224 resizes)", (224, 224, 1), 2),
    ("pgds", "vgg19"): ("Tang 2023 comparison (224x224 resizes)", (224, 224, 1), 2),
    ("cns", "resnet34"): ("Qi 2025, 4 anomalies + normal", (224, 224, 3), 5),
    ("gs_vgg16", "vgg16_face"): ("Hong 2021", (224, 224, 3), 2),
    ("ps_face", "iresnet100"): ("Shen 2024, 512-d embedding", (112, 112, 3), 4),
}


def _check_name(name: str) -> str:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return name


def default_options(name: str) -> dict[str, Any]:
    """The options `build` uses for `name` unless the caller overrides them (a fresh dict)."""
    return dict(_DEFAULTS[_check_name(name)])


def _study_entry(name: str, study: str | None) -> tuple[str, tuple[int, int, int], int]:
    _check_name(name)
    for (study_key, model_name), entry in STUDIES.items():
        if model_name == name and (study is None or study == study_key):
            return entry
    studies = sorted(k for k, m in STUDIES if m == name)
    raise ValueError(f"model {name!r} is not used in study {study!r}; it is used in {', '.join(studies)}")


def study_input_shape(name: str, study: str | None = None) -> tuple[int, int, int]:
    """(height, width, channels) `name` is trained at in `study` (default: its first study;
    pgds_resnet -> (400, 440, 1), resnet34 -> (400, 440, 1) for pgds, (224, 224, 3) for cns)."""
    return _study_entry(name, study)[1]


def study_num_classes(name: str, study: str | None = None) -> int:
    """Classes of `name` in `study` (iresnet100: Shen 2024's 4 groups)."""
    return _study_entry(name, study)[2]


def accepted_options(name: str) -> tuple[str, ...]:
    return _BUILDERS[_check_name(name)][1] + ("seed",)


def _resolved(name: str, options: dict[str, Any]) -> dict[str, Any]:
    allowed = accepted_options(name)
    unknown = sorted(k for k, v in options.items() if k not in allowed and v is not None)
    if unknown:
        raise ValueError(f"model {name!r} does not take option(s) {', '.join(unknown)}; it takes "
                         f"{', '.join(allowed)}")
    merged = default_options(name)
    merged.update({k: v for k, v in options.items() if v is not None})
    return merged


def gradcam_layer(name: str, *, stages_before_last: int = 0, **options) -> str:
    """The layer Grad-CAM should read for `name` built with `options`: the last conv block's
    output activation (resnet18 -> stage4_block2_out, pgds_resnet -> post_relu, vgg16 ->
    block5_conv3_relu, vgg16_face -> conv5_3_relu, iresnet100 -> layer4_2_add).

    `stages_before_last=k` (ResNets and VGGs): the output of the k-th stage before the last,
    a map 2**k times finer (pgds_resnet, k=1 -> stage4_block1_preact_relu, the activated
    stage-3 output; vgg16, k=1 -> block4_conv3_relu; vgg16_face, k=1 -> conv4_3_relu)."""
    opts = _resolved(name, options)
    if name in ("resnet18", "resnet34", "pgds_resnet"):
        depth = 34 if name == "resnet34" else 18
        stages = len(opts.get("blocks") or resnet.BLOCKS[depth])
        return resnet.gradcam_layer_name(depth, preactivation=bool(opts.get("preactivation")),
                                         blocks=opts.get("blocks"),
                                         stage=stages - stages_before_last)
    if name in ("vgg16", "vgg19"):
        return vgg.gradcam_layer_name(int(name[3:]), stage=5 - stages_before_last)
    if name == "vgg16_face":
        return vgg_face.gradcam_layer_name(stage=5 - stages_before_last)
    if stages_before_last:
        raise ValueError(f"stages_before_last is supported for ResNets and VGGs, not {name}")
    return iresnet.gradcam_layer_name(opts.get("blocks", iresnet.BLOCKS_100))


def build(name: str, input_shape: tuple[int, int, int], num_classes: int, **options) -> keras.Model:
    """Build model `name` for `input_shape` (height, width, channels) and `num_classes`.

    Outputs float32 softmax probabilities (None, num_classes), except head="embedding"
    (iresnet100's default: the (None, 512) embedding). Options: see the module docstring.
    """
    opts = _resolved(name, options)
    seed = opts.pop("seed", None)
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    builder = _BUILDERS[name][0]
    return builder(tuple(input_shape), int(num_classes), **opts)


def count_parameters(model: keras.Model) -> tuple[int, int]:
    """(trainable, total) parameter counts; BN moving statistics count as non-trainable."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(sum(np.prod(w.shape) for w in model.weights))
    return trainable, total


def counts_table(names: tuple[str, ...] = MODEL_NAMES, *, progress: bool = True) -> str:
    """Markdown table of parameter counts of every (study, model) at the study's input size and
    the model's default options."""
    rows = [(key, entry) for key, entry in STUDIES.items() if key[1] in names]
    lines = ["| model | study | input (HxWxC) | output | options | trainable | total |",
             "|---|---|---|---|---|---:|---:|"]
    for index, ((study, name), (description, shape, classes)) in enumerate(rows, start=1):
        if progress:
            print(f"[{index}/{len(rows)}] building {name} at {shape}", file=sys.stderr)
        model = build(name, shape, classes)
        trainable, total = count_parameters(model)
        defaults = default_options(name)
        output = f"{classes} classes" if defaults["head"] == "softmax" else \
            f"{model.outputs[0].shape[-1]}-d embedding"
        opts = ", ".join(f"{k}={v}" for k, v in defaults.items() if k != "head")
        lines.append(f"| {name} | {study}: {description} | {'x'.join(map(str, shape))} | {output} | {opts} | "
                     f"{trainable:,} | {total:,} |")
        del model
        keras.backend.clear_session()
        gc.collect()
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.registry",
                                     description="The model zoo: list models or print parameter counts.")
    parser.add_argument("--counts", action="store_true",
                        help="print a markdown table of trainable/total parameters of every model at "
                             "its study's input size (builds each model; about a minute on a CPU)")
    parser.add_argument("--model", choices=MODEL_NAMES, action="append",
                        help="restrict --counts to this model (repeatable)")
    args = parser.parse_args(argv)
    if args.counts:
        print(counts_table(tuple(args.model) if args.model else MODEL_NAMES))
    else:
        for name in MODEL_NAMES:
            print(f"{name}\tstudy input {study_input_shape(name)}\tGrad-CAM layer {gradcam_layer(name)}\t"
                  f"defaults {default_options(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
