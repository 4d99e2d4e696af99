"""ArcFace / CosFace / cosine classifier against numpy, the margin training and inference models,
and loading a user's weights file (formats, clear errors, VGG-Face and insightface conversion).
"""
from __future__ import annotations

import math

import h5py
import keras
import numpy as np
import pytest

from models.margins import (ArcFace, CosFace, CosineClassifier, build_margin_inference_model,
                            build_margin_training_model)
from models.registry import build
from models.weights import WeightsFileError, WeightsMismatchError, load_weights_file

S = 64.0


def _normalised_cosines(embedding: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    e = embedding / np.linalg.norm(embedding, axis=1, keepdims=True)
    w = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    return np.clip(e @ w, -1.0, 1.0)


def _arcface_numpy(cos, labels, s, m, easy_margin):
    """Deng et al.: s*cos(theta+m) on the true class; insightface's fallbacks past pi - m."""
    logits = s * cos.copy()
    for row, label in enumerate(labels):
        c = cos[row, label]
        theta = math.acos(c)
        if easy_margin:
            logits[row, label] = s * (math.cos(theta + m) if c > 0 else c)
        elif theta + m <= math.pi:  # cos(theta) > cos(pi - m)
            logits[row, label] = s * math.cos(theta + m)
        else:
            logits[row, label] = s * (c - math.sin(math.pi - m) * m)
    return logits


def _cosface_numpy(cos, labels, s, m):
    logits = s * cos.copy()
    logits[np.arange(len(labels)), labels] = s * (cos[np.arange(len(labels)), labels] - m)
    return logits


@pytest.fixture
def embeddings_and_kernel():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(16, 6)).astype(np.float32)
    labels = rng.integers(0, 6, size=24)
    embedding = rng.normal(size=(24, 16)).astype(np.float32)
    # Rows 0-3 point away from their class (theta near pi): the ArcFace fallback must act there;
    # rows 4-5 point at it (theta near 0).
    for row in range(4):
        embedding[row] = -kernel[:, labels[row]] + 0.05 * rng.normal(size=16)
    for row in (4, 5):
        embedding[row] = kernel[:, labels[row]] + 0.05 * rng.normal(size=16)
    return embedding, kernel, labels


def _head(layer_class, kernel, **options):
    layer = layer_class(kernel.shape[1], **options)
    layer.build((None, kernel.shape[0]))
    layer.kernel.assign(kernel)
    return layer


@pytest.mark.parametrize("m, easy_margin", [(0.5, False), (0.5, True), (0.3, False), (1.2, False)])
def test_arcface_logits_match_numpy(embeddings_and_kernel, m, easy_margin):
    embedding, kernel, labels = embeddings_and_kernel
    cos = _normalised_cosines(embedding, kernel)
    true_cos = cos[np.arange(len(labels)), labels]
    assert np.sum(true_cos <= math.cos(math.pi - m)) >= 2  # the fallback branch is exercised
    layer = _head(ArcFace, kernel, m=m, easy_margin=easy_margin)
    got = keras.ops.convert_to_numpy(layer([embedding, labels]))
    expected = _arcface_numpy(cos, labels, S, m, easy_margin)
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-4)
    others = np.ones_like(cos, dtype=bool)
    others[np.arange(len(labels)), labels] = False
    np.testing.assert_allclose(got[others], S * cos[others], atol=1e-3)  # margin on the true class only


def test_arcface_defaults_and_fallback_constants():
    layer = ArcFace(4)
    assert (layer.s, layer.m, layer.easy_margin) == (64.0, 0.5, False)
    assert layer.th == pytest.approx(math.cos(math.pi - 0.5))
    assert layer.mm == pytest.approx(math.sin(math.pi - 0.5) * 0.5)
    assert (CosFace(4).s, CosFace(4).m) == (64.0, 0.35)


def test_cosface_logits_match_numpy(embeddings_and_kernel):
    embedding, kernel, labels = embeddings_and_kernel
    layer = _head(CosFace, kernel)
    got = keras.ops.convert_to_numpy(layer([embedding, labels]))
    np.testing.assert_allclose(got, _cosface_numpy(_normalised_cosines(embedding, kernel), labels, S, 0.35),
                               atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize("layer_class", [ArcFace, CosFace, CosineClassifier])
def test_without_labels_the_head_is_the_cosine_classifier(embeddings_and_kernel, layer_class):
    embedding, kernel, _ = embeddings_and_kernel
    got = keras.ops.convert_to_numpy(_head(layer_class, kernel)(embedding))
    np.testing.assert_allclose(got, S * _normalised_cosines(embedding, kernel), atol=1e-3)


def test_labels_may_come_as_a_column(embeddings_and_kernel):
    embedding, kernel, labels = embeddings_and_kernel
    layer = _head(CosFace, kernel)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer([embedding, labels[:, None]])),
                                  keras.ops.convert_to_numpy(layer([embedding, labels])))


def _tiny_backbone(input_shape=(32, 32, 3)):
    return build("iresnet100", input_shape, 0, width=4, blocks=(1, 1, 1, 1), embedding_size=16, seed=5)


@pytest.mark.parametrize("head", ["arcface", "cosface"])
def test_margin_training_and_inference_models(head, tmp_path):
    backbone = _tiny_backbone()
    train = build_margin_training_model(backbone, 4, head=head)
    infer = build_margin_inference_model(train)
    assert not any(isinstance(layer, keras.Model) for layer in train.layers + infer.layers)
    assert train.get_layer("margin_head") is infer.get_layer("margin_head")  # shared weights
    images = np.random.default_rng(1).random((3, 32, 32, 3), dtype=np.float32)
    labels = np.array([0, 3, 1])
    embedding = keras.ops.convert_to_numpy(backbone(images, training=False))
    kernel = keras.ops.convert_to_numpy(train.get_layer("margin_head").kernel)
    cos = _normalised_cosines(embedding, kernel)
    expected = (_arcface_numpy(cos, labels, S, 0.5, False) if head == "arcface"
                else _cosface_numpy(cos, labels, S, 0.35))
    logits = keras.ops.convert_to_numpy(train([images, labels], training=False))
    np.testing.assert_allclose(logits, expected, atol=2e-3)
    probabilities = keras.ops.convert_to_numpy(infer(images, training=False))
    softmax = np.exp(S * cos - (S * cos).max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, softmax / softmax.sum(axis=1, keepdims=True), atol=1e-4)

    train.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    assert np.isfinite(float(train.train_on_batch([images, labels], labels)))
    path = tmp_path / "train.keras"
    train.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded([images, labels], training=False)),
                                  keras.ops.convert_to_numpy(train([images, labels], training=False)))
    assert isinstance(reloaded.get_layer("margin_head"), ArcFace if head == "arcface" else CosFace)


def test_margin_training_at_112_with_a_reduced_depth_iresnet():
    backbone = build("iresnet100", (112, 112, 3), 0, width=4, blocks=(1, 1, 1, 1))
    train = build_margin_training_model(backbone, 4, head="arcface")
    train.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    images = np.random.default_rng(2).random((2, 112, 112, 3), dtype=np.float32)
    assert np.isfinite(float(train.train_on_batch([images, np.array([1, 2])], np.array([1, 2]))))


def _conv_backbone() -> keras.Model:
    image = keras.Input((8, 8, 1), name="image")
    return keras.Model(image, keras.layers.Conv2D(2, 3, name="conv")(image))


@pytest.mark.parametrize("backbone, head, message", [
    (lambda: build("resnet18", (32, 32, 3), 2, width=4), "arcface", "head='embedding'"),
    (_conv_backbone, "cosface", "head='embedding'"),
    (_tiny_backbone, "sphereface", "head must be"),
])
def test_margin_model_rejects_bad_backbones_and_heads(backbone, head, message):
    with pytest.raises(ValueError, match=message):
        build_margin_training_model(backbone(), 3, head=head)


def test_mixed_precision_margin_outputs_are_float32():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        train = build_margin_training_model(_tiny_backbone(), 4, head="arcface")
        infer = build_margin_inference_model(train)
        assert train.output.dtype == "float32" and infer.output.dtype == "float32"
        assert train.get_layer("margin_head").compute_dtype == "float32"
        images = np.random.default_rng(3).random((2, 32, 32, 3), dtype=np.float32)
        logits = keras.ops.convert_to_numpy(train([images, np.array([0, 1])], training=False))
        assert logits.dtype == np.float32 and np.all(np.isfinite(logits))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert keras.mixed_precision.global_policy().name == previous.name


# ---------------------------------------------------------------- weights files

def _outputs(model, shape):
    x = np.random.default_rng(4).random((2, *shape), dtype=np.float32)
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_weights_round_trip_restores_outputs(suffix, tmp_path):
    source = build("resnet18", (32, 32, 1), 3, width=4, seed=11)
    path = tmp_path / f"model{suffix}"
    source.save_weights(path) if suffix == ".weights.h5" else source.save(path)
    target = build("resnet18", (32, 32, 1), 3, width=4, seed=12)
    assert not np.allclose(_outputs(target, (32, 32, 1)), _outputs(source, (32, 32, 1)))
    report = load_weights_file(target, path)
    assert not report.skipped and "conv1" in report.loaded
    np.testing.assert_array_equal(_outputs(target, (32, 32, 1)), _outputs(source, (32, 32, 1)))


def test_missing_file_error_names_the_path(tmp_path):
    missing = tmp_path / "no_such_vggface.weights.h5"
    with pytest.raises(FileNotFoundError, match="no_such_vggface.weights.h5"):
        build("vgg16_face", (64, 64, 3), 2, width=2, weights=str(missing))
    with pytest.raises(WeightsFileError, match=str(missing)):
        load_weights_file(build("resnet18", (32, 32, 1), 2, width=2), missing)


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_unfitting_file_error_names_the_first_mismatching_layer(suffix, tmp_path):
    source = build("resnet18", (32, 32, 1), 2, width=8)
    path = tmp_path / f"wide{suffix}"
    source.save_weights(path) if suffix == ".weights.h5" else source.save(path)
    target = build("resnet18", (32, 32, 1), 2, width=4, seed=1)
    before = _outputs(target, (32, 32, 1))
    with pytest.raises(WeightsMismatchError, match=r"layer 'conv1' does not fit.*\(7, 7, 1, 4\).*\(7, 7, 1, 8\)"):
        load_weights_file(target, path)
    np.testing.assert_array_equal(_outputs(target, (32, 32, 1)), before)  # nothing half-loaded
    with pytest.raises(WeightsMismatchError, match="no layer of model 'resnet18' matched"):
        load_weights_file(target, path, skip_mismatch=True, verbose=False)


def test_other_architecture_and_unsupported_files_are_refused(tmp_path):
    vgg = build("vgg16", (32, 32, 1), 2, width=2)
    vgg_path = tmp_path / "vgg.keras"
    vgg.save(vgg_path)
    resnet = build("resnet18", (32, 32, 1), 2, width=2)
    with pytest.raises(WeightsMismatchError, match="has no weights for layer 'conv1'"):
        load_weights_file(resnet, vgg_path)
    vgg.save_weights(tmp_path / "vgg.weights.h5")
    with pytest.raises(WeightsMismatchError, match="vgg.weights.h5"):
        load_weights_file(resnet, tmp_path / "vgg.weights.h5")
    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    with pytest.raises(WeightsMismatchError, match="unsupported weights file type"):
        load_weights_file(resnet, text)
    fake = tmp_path / "fake.keras"
    fake.write_text("not a zip")
    with pytest.raises(WeightsMismatchError, match="fake.keras: is not a Keras .keras model: its bytes are text"):
        load_weights_file(resnet, fake)


def test_classifier_is_skipped_when_the_class_count_changes(tmp_path):
    source = build("resnet18", (32, 32, 3), 1000, width=4, seed=2)
    path = tmp_path / "imagenet_like.weights.h5"
    source.save_weights(path)
    model = build("resnet18", (32, 32, 3), 2, width=4, weights=str(path))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("conv1").kernel),
                                  keras.ops.convert_to_numpy(source.get_layer("conv1").kernel))
    strict = build("resnet18", (32, 32, 3), 2, width=4)
    with pytest.raises(WeightsMismatchError, match="layer 'logits'"):
        load_weights_file(strict, path)
    report = load_weights_file(strict, path, skip_mismatch=True, verbose=False)
    assert list(report.skipped) == ["logits"] and "conv1" in report.loaded


def _write_legacy_h5(path, layers: dict[str, list[tuple[str, np.ndarray]]]):
    """A Keras 2 `save_weights` file: layer_names / weight_names attributes, arrays by name."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [name.encode() for name in layers]
        handle.attrs["backend"] = b"tensorflow"
        for name, weights in layers.items():
            group = handle.create_group(name)
            group.attrs["weight_names"] = [f"{name}/{w}:0".encode() for w, _ in weights]
            for weight_name, array in weights:
                group.create_dataset(f"{name}/{weight_name}:0", data=array)


def test_vgg_face_legacy_h5_loads_by_name_with_dense_fc_as_conv(tmp_path):
    rng = np.random.default_rng(6)
    width = 2
    layers: dict[str, list[tuple[str, np.ndarray]]] = {}
    channels = 3
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        filters = width * min(2 ** (block - 1), 8)
        for conv in range(1, convs + 1):
            layers[f"conv{block}_{conv}"] = [("kernel", rng.normal(size=(3, 3, channels, filters)).astype("f4")),
                                             ("bias", rng.normal(size=filters).astype("f4"))]
            channels = filters
    fc = 64 * width
    # keras-vggface's VGG16: Dense fc6/fc7/fc8 after flatten (7*7*channels), 2622 identities.
    layers["fc6"] = [("kernel", rng.normal(size=(7 * 7 * channels, fc)).astype("f4")),
                     ("bias", rng.normal(size=fc).astype("f4"))]
    layers["fc7"] = [("kernel", rng.normal(size=(fc, fc)).astype("f4")), ("bias", rng.normal(size=fc).astype("f4"))]
    layers["fc8"] = [("kernel", rng.normal(size=(fc, 2622)).astype("f4")), ("bias", rng.normal(size=2622).astype("f4"))]
    path = tmp_path / "rcmalli_vggface_tf_vgg16.h5"
    _write_legacy_h5(path, layers)

    model = build("vgg16_face", (224, 224, 3), 2, width=width, weights=str(path))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("conv1_1").kernel),
                                  layers["conv1_1"][0][1])
    fc6 = model.get_layer("fc6")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fc6.kernel).reshape(-1, fc), layers["fc6"][0][1])
    # The 7x7 conv on pool5's 7x7 grid computes the dense layer on the flattened grid.
    grid = rng.normal(size=(1, 7, 7, channels)).astype("f4")
    dense = grid.reshape(1, -1) @ layers["fc6"][0][1] + layers["fc6"][1][1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fc6(grid)).reshape(1, -1), dense, rtol=1e-4, atol=1e-3)
    assert model.get_layer("fc8").kernel.shape == (1, 1, fc, 2)  # new 2-class head kept

    report = load_weights_file(model, path, optional_layers=lambda n: n == "fc8" or n.endswith("_bn"),
                               verbose=False)
    assert set(report.reshaped) == {"fc6", "fc7"} and "fc8" in report.skipped and "conv1_1_bn" in report.skipped
    with pytest.raises(WeightsMismatchError, match="has no weights for layer 'conv1_1_bn'"):
        load_weights_file(model, path)


def test_vgg_face_weights_at_another_input_size_do_not_fit(tmp_path):
    source = build("vgg16_face", (224, 224, 3), 2, width=2)
    path = tmp_path / "vggface.weights.h5"
    source.save_weights(path)
    with pytest.raises(WeightsMismatchError, match="layer 'fc6' does not fit"):
        build("vgg16_face", (64, 64, 3), 2, width=2, weights=str(path))


def _numpy_torch_conv(x_nhwc, weight_oihw, stride, padding):
    """PyTorch conv2d (cross-correlation, symmetric zero padding), no bias, in numpy."""
    x = np.pad(x_nhwc, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    k = weight_oihw.shape[2]
    out_h = (x.shape[1] - k) // stride + 1
    out_w = (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, weight_oihw.shape[0]), dtype=np.float64)
    for i in range(out_h):
        for j in range(out_w):
            patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[:, i, j, :] = np.einsum("bhwc,ochw->bo", patch, weight_oihw)
    return out


def test_insightface_state_dict_conversion(tmp_path):
    model = build("iresnet100", (32, 32, 3), 0, width=4, blocks=(1, 1, 1, 1), embedding_size=8)
    rng = np.random.default_rng(8)
    state = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        key = layer.name
        for stage in range(1, 5):
            if key.startswith(f"layer{stage}_"):
                _, block, rest = key.split("_", 2)
                key = f"layer{stage}.{block}.{rest.replace('downsample_', 'downsample.')}"
        if isinstance(layer, keras.layers.Conv2D):
            h, w, cin, cout = layer.kernel.shape
            state[f"{key}.weight"] = rng.normal(size=(cout, cin, h, w)).astype("f4")
        elif isinstance(layer, keras.layers.BatchNormalization):
            c = layer.beta.shape[0]
            state.update({f"{key}.weight": rng.uniform(0.5, 1.5, c).astype("f4"), f"{key}.bias": rng.normal(size=c).astype("f4"),
                          f"{key}.running_mean": rng.normal(size=c).astype("f4"),
                          f"{key}.running_var": rng.uniform(0.5, 1.5, c).astype("f4"),
                          f"{key}.num_batches_tracked": np.array(10)})
        elif isinstance(layer, keras.layers.PReLU):
            state[f"{key}.weight"] = rng.uniform(0, 0.5, layer.alpha.shape[-1]).astype("f4")
        elif layer.name == "fc":
            n_in, n_out = layer.kernel.shape
            state["fc.weight"] = rng.normal(size=(n_out, n_in)).astype("f4")
            state["fc.bias"] = rng.normal(size=n_out).astype("f4")
    path = tmp_path / "backbone.npz"
    np.savez(path, **state)
    loaded = build("iresnet100", (32, 32, 3), 0, width=4, blocks=(1, 1, 1, 1), embedding_size=8, weights=str(path))

    probe = keras.Model(loaded.input, [loaded.get_layer("layer1_0_conv2_pad").input, loaded.get_layer("layer1_0_conv2").output,
                                       loaded.get_layer("bn2").output, loaded.get_layer("fc").output])
    x = rng.random((2, 32, 32, 3), dtype=np.float32)
    conv_in, conv_out, grid, fc_out = (keras.ops.convert_to_numpy(t) for t in probe(x, training=False))
    # The stride-2 conv equals PyTorch's conv3x3(stride=2, padding=1) with the OIHW kernel.
    np.testing.assert_allclose(conv_out, _numpy_torch_conv(conv_in, state["layer1.0.conv2.weight"], 2, 1),
                               rtol=1e-4, atol=1e-4)
    # fc reads PyTorch's NCHW flatten order.
    torch_flat = grid.transpose(0, 3, 1, 2).reshape(2, -1)
    np.testing.assert_allclose(fc_out, torch_flat @ state["fc.weight"].T + state["fc.bias"], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.get_layer("features").moving_variance),
                                  state["features.running_var"])

    del state["layer2.0.bn3.running_mean"]
    np.savez(path, **state)
    with pytest.raises(WeightsMismatchError, match="layer2.0.bn3.running_mean"):
        build("iresnet100", (32, 32, 3), 0, width=4, blocks=(1, 1, 1, 1), embedding_size=8, weights=str(path))
