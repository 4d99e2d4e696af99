"""The model zoo: registry API, reference parameter counts, shapes, flat named graphs, Grad-CAM
layers, `.keras` round trips, one training step with the L2 penalty in the loss, mixed precision.

Models are built small (`width`, input size) where the check allows; the reference counts build
the full-size models (cheap: building allocates, nothing runs).
"""
from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from models import registry
from models.registry import MODEL_NAMES, build, count_parameters, gradcam_layer

TINY = {  # name -> options giving a tiny, fast model
    "resnet18": dict(width=4),
    "resnet34": dict(width=4),
    "pgds_resnet": dict(width=4),
    "vgg16": dict(width=4),
    "vgg19": dict(width=4),
    "vgg16_face": dict(width=4),
    "iresnet100": dict(width=4, blocks=(1, 1, 1, 1)),
}


def _snake(name: str) -> str:
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _inputs(shape, batch=2, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, *shape), dtype=np.float32)


# ---------------------------------------------------------------- reference parameter counts

@pytest.mark.parametrize("name, options, expected_trainable", [
    ("resnet18", {}, 11_689_512),        # torchvision resnet18 (BN gamma/beta counted, no conv bias)
    ("resnet34", {}, 21_797_672),        # torchvision resnet34
    ("vgg16", {"batch_norm": False}, 138_357_544),
    ("vgg19", {"batch_norm": False}, 143_667_240),
])
def test_reference_trainable_parameter_counts(name, options, expected_trainable):
    model = build(name, (224, 224, 3), 1000, **options)
    trainable, total = count_parameters(model)
    assert trainable == expected_trainable
    if name.startswith("resnet"):  # BN moving mean/variance are the only non-trainable weights
        bn_channels = sum(layer.gamma.shape[0] for layer in model.layers
                          if isinstance(layer, keras.layers.BatchNormalization))
        assert total - trainable == 2 * bn_channels
    else:
        assert total == trainable
    del model
    keras.backend.clear_session()


def test_pgds_resnet_count_matches_the_authors_layout_by_hand():
    # Authors' keras-resnet ResNet-18, 1 channel, 2 classes: conv bias, no BN on shortcuts,
    # the first block without its pre-activation BN. Trainable terms written out:
    def conv(k, cin, cout):
        return k * k * cin * cout + cout

    def bn(c):
        return 2 * c
    stem = conv(7, 1, 64) + bn(64)
    stage1 = (conv(3, 64, 64) + bn(64) + conv(3, 64, 64)) + (bn(64) + conv(3, 64, 64) + bn(64) + conv(3, 64, 64))
    def down_stage(cin, c):
        first = bn(cin) + conv(3, cin, c) + bn(c) + conv(3, c, c) + conv(1, cin, c)
        return first + bn(c) + conv(3, c, c) + bn(c) + conv(3, c, c)
    expected = stem + stage1 + down_stage(64, 128) + down_stage(128, 256) + down_stage(256, 512) \
        + bn(512) + (512 * 2 + 2)
    model = build("pgds_resnet", (400, 440, 1), 2)
    assert count_parameters(model)[0] == expected == 11_174_274
    assert model.output.shape == (None, 2)


# ---------------------------------------------------------------- registry API

def test_registry_names_defaults_and_study_shapes():
    assert MODEL_NAMES == ("resnet18", "resnet34", "pgds_resnet", "vgg16", "vgg19", "vgg16_face", "iresnet100")
    assert registry.default_options("pgds_resnet")["l2"] == 1e-4
    assert registry.default_options("pgds_resnet")["preactivation"] is True
    assert registry.default_options("resnet18")["preactivation"] is False
    assert registry.default_options("vgg16")["batch_norm"] is True  # Tang 2023: BN in every layer
    assert registry.default_options("iresnet100")["head"] == "embedding"
    options = registry.default_options("vgg16")
    options["l2"] = 5.0
    assert registry.default_options("vgg16")["l2"] == 1e-4  # a fresh dict every call
    assert registry.study_input_shape("pgds_resnet") == (400, 440, 1)
    assert registry.study_input_shape("resnet18") == (400, 440, 1)
    assert registry.study_input_shape("vgg16") == (224, 224, 1)
    assert registry.study_input_shape("resnet34", study="cns") == (224, 224, 3)
    assert registry.study_num_classes("resnet34", study="cns") == 5
    assert registry.study_input_shape("vgg16_face") == (224, 224, 3)
    assert registry.study_input_shape("iresnet100") == (112, 112, 3)


@pytest.mark.parametrize("call, message", [
    (lambda: build("resnet50", (64, 64, 3), 2), "unknown model"),
    (lambda: build("vgg16", (64, 64, 3), 2, preactivation=True), "does not take option"),
    (lambda: build("resnet18", (64, 64, 3), 2, batch_norm=True), "does not take option"),
    (lambda: build("resnet18", (16, 16, 3), 2), "too small"),
    (lambda: build("resnet18", (64, 64), 2), "input_shape"),
    (lambda: build("vgg19", (64, 64, 3), 1), "at least 2 classes"),
    (lambda: build("resnet18", (64, 64, 3), 2, head="arcface"), "head must be"),
    (lambda: build("vgg16", (64, 64, 3), 2, dropout=1.5), "dropout"),
    (lambda: registry.study_input_shape("resnet18", study="cns"), "not used in study"),
])
def test_registry_rejects_bad_requests(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_options_passed_as_none_are_ignored_and_defaults_apply():
    model = build("pgds_resnet", (64, 64, 1), 2, width=4, batch_norm=None, weights=None)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(float(layer.kernel_regularizer.l2) == pytest.approx(1e-4) for layer in convs)
    assert all(layer.use_bias for layer in convs)  # the authors' Keras default
    assert all(isinstance(layer.kernel_initializer, keras.initializers.HeNormal) for layer in convs)
    assert model.get_layer("logits").kernel_regularizer is None  # authors: L2 on convs only


@pytest.mark.parametrize("name, options, expected", [
    ("resnet18", {}, "stage4_block2_out"),
    ("resnet34", {}, "stage4_block3_out"),
    ("resnet18", {"preactivation": True}, "post_relu"),
    ("pgds_resnet", {}, "post_relu"),
    ("vgg16", {}, "block5_conv3_relu"),
    ("vgg19", {}, "block5_conv4_relu"),
    ("vgg16_face", {}, "conv5_3_relu"),
    ("iresnet100", {}, "layer4_2_add"),
    ("iresnet100", {"blocks": (1, 1, 1, 1)}, "layer4_0_add"),
])
def test_gradcam_layer_names(name, options, expected):
    assert gradcam_layer(name, **options) == expected


@pytest.mark.parametrize("name, options, expected_hw", [
    # (name, options, feature map at 128x140 input of the layer one stage before the last)
    ("pgds_resnet", {"width": 4}, (8, 9)),
    ("resnet34", {"width": 4}, (8, 9)),
    ("resnet18", {"width": 4, "preactivation": True}, (8, 9)),
    ("vgg16", {"width": 4}, (16, 17)),
    ("vgg19", {"width": 4}, (16, 17)),
])
def test_gradcam_layer_one_stage_before_the_last_exists_and_is_twice_as_fine(name, options, expected_hw):
    model = build(name, (128, 140, 1), 2, **options)
    last = model.get_layer(gradcam_layer(name, **options)).output.shape
    earlier = model.get_layer(gradcam_layer(name, stages_before_last=1, **options)).output.shape
    assert tuple(earlier[1:3]) == expected_hw
    assert earlier[1] == 2 * last[1]


def test_gradcam_layer_stages_before_last_is_refused_where_undefined():
    with pytest.raises(ValueError, match="stages_before_last"):
        gradcam_layer("iresnet100", stages_before_last=1)


# ---------------------------------------------------------------- shapes and graph structure

CHOSEN_NAMES_LIKE_AUTO_NAMES = {"flatten", "dropout"}  # named so on purpose (VGG-Face, insightface)
SHAPE_CASES = [
    # (name, input_shape, num_classes, options, expected output shape)
    ("resnet18", (64, 64, 1), 2, {}, (None, 2)),
    ("resnet18", (48, 80, 3), 5, {}, (None, 5)),
    ("resnet18", (400, 440, 1), 2, {}, (None, 2)),
    ("resnet18", (64, 64, 3), 2, {"head": "embedding"}, (None, 32)),
    ("resnet34", (64, 64, 1), 2, {}, (None, 2)),
    ("resnet34", (64, 64, 3), 5, {"preactivation": True}, (None, 5)),
    ("resnet34", (400, 440, 1), 2, {}, (None, 2)),
    ("pgds_resnet", (400, 440, 1), 2, {}, (None, 2)),
    ("pgds_resnet", (64, 64, 3), 3, {}, (None, 3)),
    ("vgg16", (32, 32, 1), 2, {}, (None, 2)),
    ("vgg16", (64, 48, 3), 4, {"batch_norm": False}, (None, 4)),
    ("vgg16", (400, 440, 1), 2, {}, (None, 2)),
    ("vgg16", (32, 32, 3), 2, {"head": "embedding"}, (None, 256)),
    ("vgg19", (32, 32, 1), 2, {}, (None, 2)),
    ("vgg19", (224, 224, 3), 2, {}, (None, 2)),
    ("vgg19", (400, 440, 1), 2, {}, (None, 2)),
    ("vgg16_face", (224, 224, 3), 2, {}, (None, 2)),
    ("vgg16_face", (64, 64, 1), 3, {}, (None, 3)),
    ("vgg16_face", (400, 440, 1), 2, {}, (None, 2)),
    ("vgg16_face", (64, 64, 3), 2, {"head": "embedding"}, (None, 256)),
    ("iresnet100", (112, 112, 3), 0, {}, (None, 512)),
    ("iresnet100", (112, 112, 1), 4, {"head": "softmax"}, (None, 4)),
    ("iresnet100", (64, 64, 3), 0, {"embedding_size": 128}, (None, 128)),
    ("iresnet100", (400, 440, 1), 0, {}, (None, 512)),
]


@pytest.mark.parametrize("name, input_shape, num_classes, options, expected", SHAPE_CASES)
def test_output_shape_and_flat_named_graph(name, input_shape, num_classes, options, expected):
    opts = {**TINY[name], **options}
    model = build(name, input_shape, num_classes, **opts)
    assert model.input.shape == (None, *input_shape)
    assert tuple(model.output.shape) == expected
    assert model.output.dtype == "float32"
    names = [layer.name for layer in model.layers]
    assert len(set(names)) == len(names)
    for layer in model.layers:
        assert not isinstance(layer, keras.Model), f"nested model {layer.name}"
        auto = _snake(layer.__class__.__name__)
        if layer.name not in CHOSEN_NAMES_LIKE_AUTO_NAMES:
            assert not re.fullmatch(rf"{auto}(_\d+)?", layer.name), f"auto-named layer {layer.name}"
    cam = model.get_layer(gradcam_layer(name, **{k: v for k, v in opts.items() if k in ("blocks", "preactivation")}))
    assert len(cam.output.shape) == 4 and cam.output.shape[1] >= 1


def test_full_depth_iresnet100_layout():
    model = build("iresnet100", (112, 112, 3), 0, width=4)
    blocks = [int(m.group(1)) for layer in model.layers if (m := re.fullmatch(r"layer(\d)_\d+_add", layer.name))]
    assert [blocks.count(stage) for stage in (1, 2, 3, 4)] == [3, 13, 30, 3]
    assert model.get_layer("layer4_2_add").output.shape == (None, 7, 7, 32)
    assert model.get_layer("fc").kernel.shape == (7 * 7 * 32, 512)
    assert model.get_layer("features").scale is False  # insightface freezes its gamma at 1
    prelu = model.get_layer("layer1_0_prelu")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(prelu.alpha), 0.25)
    assert prelu.alpha.shape == (1, 1, 4)  # one slope per channel, like torch.nn.PReLU(planes)


def test_resnet_layouts_differ_as_documented():
    post = build("resnet18", (64, 64, 3), 2, width=4)
    assert post.get_layer("stage2_block1_shortcut_bn")  # torchvision: 1x1 conv + BN
    assert not post.get_layer("stage1_block1_conv1").use_bias
    assert post.get_layer("logits").kernel_regularizer is not None  # L2 on dense too
    pre = build("pgds_resnet", (64, 64, 3), 2, width=4)
    names = {layer.name for layer in pre.layers}
    assert "stage1_block1_preact_bn" not in names and "stage1_block2_preact_bn" in names
    assert "stage2_block1_shortcut_conv" in names and "stage2_block1_shortcut_bn" not in names
    # The shortcut conv reads the block's raw input (authors' `_shortcut(input, residual)`).
    assert pre.get_layer("stage2_block1_shortcut_stride").input is pre.get_layer("stage1_block2_add").output


@pytest.mark.parametrize("size", [16, 15])
def test_stride_sampling_then_1x1_conv_equals_a_strided_1x1_conv(size):
    # The shortcut is built as MaxPooling2D(1, strides=2) + 1x1 conv (a TF 2.21 oneDNN bug
    # corrupts memory in the strided 1x1 conv's gradient); it must equal the strided conv.
    model = build("resnet18", (64, 64, 3), 2, width=4)
    stride = model.get_layer("stage2_block1_shortcut_stride")
    conv = model.get_layer("stage2_block1_shortcut_conv")
    x = np.random.default_rng(0).random((3, size, size, 4), dtype=np.float32)
    expected = keras.ops.convert_to_numpy(keras.ops.conv(x, conv.kernel, strides=2, padding="valid"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(conv(stride(x))), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch_norm, expected_bn", [(False, 0), (True, 13)])
def test_vgg_batch_norm_option(batch_norm, expected_bn):
    model = build("vgg16", (32, 32, 1), 2, width=4, batch_norm=batch_norm)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == expected_bn
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) == 13


def test_vgg16_face_fc_layers_are_convolutions_with_dropout_and_bn():
    model = build("vgg16_face", (224, 224, 3), 2, width=4)
    assert model.get_layer("fc6").kernel.shape == (7, 7, 32, 256)
    assert model.get_layer("fc7").kernel.shape == (1, 1, 256, 256)
    assert model.get_layer("fc8").kernel.shape == (1, 1, 256, 2)
    assert model.get_layer("fc6_dropout").rate == 0.5 and model.get_layer("fc7_dropout").rate == 0.5
    # BN sits between every conv and its ReLU
    assert model.get_layer("conv3_2_relu").input is model.get_layer("conv3_2_bn").output
    assert model.get_layer("fc6_relu").input is model.get_layer("fc6_bn").output


# ---------------------------------------------------------------- save / reload

SAVE_CASES = [("resnet18", (64, 64, 1)), ("resnet34", (64, 64, 3)), ("pgds_resnet", (64, 64, 1)),
              ("vgg16", (32, 32, 3)), ("vgg19", (32, 32, 1)), ("vgg16_face", (64, 64, 3)),
              ("iresnet100", (32, 32, 3))]


@pytest.mark.parametrize("name, input_shape", SAVE_CASES)
def test_keras_file_round_trip_gives_identical_outputs(name, input_shape, tmp_path):
    model = build(name, input_shape, 3, seed=3, **TINY[name])
    x = _inputs(input_shape)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(x, training=False)), expected)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]


# ---------------------------------------------------------------- one training step, L2 in the loss

@pytest.mark.parametrize("name, input_shape", SAVE_CASES)
def test_one_training_step_and_l2_is_in_the_loss(name, input_shape):
    x = _inputs(input_shape)
    y = np.array([0, 2])
    options = dict(TINY[name])
    if name == "iresnet100":
        options["head"] = "softmax"
    losses = {}
    for l2 in (1e-2, 0.0):
        model = build(name, input_shape, 3, seed=7, l2=l2, **options)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      run_eagerly=True)
        losses[l2] = float(model.test_on_batch(x, y))
        if l2:
            assert model.losses, "L2 set but no regularisation loss"
            penalty = float(sum(keras.ops.convert_to_numpy(v) for v in model.losses))
            before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
            step_loss = float(model.train_on_batch(x, y))
            assert np.isfinite(step_loss)
            after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
            assert any(not np.array_equal(a, b) for a, b in zip(before, after))
        else:
            assert not model.losses
    assert losses[1e-2] > losses[0.0]
    assert losses[1e-2] - losses[0.0] == pytest.approx(penalty, rel=1e-4)


def test_one_training_step_full_size_iresnet100_at_112():
    # about 10 s on 2 CPU cores (eager), so it stays in the fast suite
    from models.margins import build_margin_training_model
    backbone = build("iresnet100", (112, 112, 3), 0)
    model = build_margin_training_model(backbone, 4, head="cosface")
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    loss = float(model.train_on_batch([_inputs((112, 112, 3)), np.array([0, 3])], np.array([0, 3])))
    assert np.isfinite(loss)


# ---------------------------------------------------------------- mixed precision

@pytest.fixture
def mixed_float16():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("name, input_shape", SAVE_CASES)
def test_mixed_precision_outputs_are_float32(name, input_shape, mixed_float16):
    model = build(name, input_shape, 3, **TINY[name])
    assert model.get_layer(gradcam_layer(name, **TINY[name])).compute_dtype == "float16"
    assert model.output.dtype == "float32"
    out = model(_inputs(input_shape), training=False)
    assert keras.ops.convert_to_numpy(out).dtype == np.float32
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


def test_mixed_precision_policy_is_restored_after_the_fixture_test():
    assert keras.mixed_precision.global_policy().name == "float32"


# ---------------------------------------------------------------- the counts table

def test_counts_cli_prints_a_markdown_table(capsys):
    assert registry.main(["--counts", "--model", "pgds_resnet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| model |")
    assert "| pgds_resnet |" in out and "400x440x1" in out and "11,174,274" in out


def test_listing_cli_names_every_model(capsys):
    assert registry.main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODEL_NAMES)
