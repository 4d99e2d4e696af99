"""tf.data input pipeline: parity with data_prep.preprocess, pure order, exact resume stream."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from data_prep.io import write_dicom_grayscale  # noqa: E402
from data_prep.preprocess import load_model_input  # noqa: E402
from reproduce import input_pipeline as pipe  # noqa: E402

PARITY_TOLERANCE = 0.02  # max |tf.data - to_model_input| on [0, 1] inputs


def _frames(folder: Path) -> list[Path]:
    """One frame per format and flavour the pipeline decodes differently."""
    rng = np.random.default_rng(3)
    # Speckle-like texture spanning the full 8-bit range, like an ultrasound frame.
    gray = cv2.GaussianBlur((rng.random((90, 120)) * 255).astype(np.uint8), (5, 5), 0)
    gray = cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX)
    colour = (rng.random((90, 120, 3)) * 255).astype(np.uint8)
    deep = (rng.random((90, 120)) * 60000).astype(np.uint16)
    files = {"gray.png": gray, "gray.jpg": gray, "colour.png": colour, "colour.jpg": colour,
             "deep16.png": deep, "gray.bmp": gray, "rgba.png": np.dstack([colour, gray])}
    paths = []
    for name, array in files.items():
        cv2.imwrite(str(folder / name), array)
        paths.append(folder / name)
    write_dicom_grayscale(folder / "frame.dcm", gray)
    paths.append(folder / "frame.dcm")
    return paths


def _max_parity_error(paths, size_wh, channels=1) -> tuple[float, float]:
    spec = pipe.PipelineSpec(size_wh=size_wh, channels=channels, num_classes=2)
    table = pipe.ImageTable(tuple(str(p) for p in paths), np.zeros(len(paths), dtype=np.int64))
    streamed = np.concatenate([x for x, _ in pipe.eval_dataset(table, spec, batch_size=4).as_numpy_iterator()])
    reference = np.stack([load_model_input(p, size_wh=size_wh, channels=channels) for p in paths])
    assert streamed.shape == reference.shape and streamed.dtype == np.float32
    diff = np.abs(streamed - reference)
    return float(diff.max()), float(diff.mean())


@pytest.mark.parametrize("size_wh", [(140, 128), (120, 90), (70, 64), (300, 250)])
def test_parity_with_to_model_input_every_format(tmp_path, size_wh):
    worst, mean = _max_parity_error(_frames(tmp_path), size_wh)
    print(f"parity {size_wh}: max {worst:.4f}, mean {mean:.5f}")
    assert worst < PARITY_TOLERANCE and mean < 0.002


def test_parity_three_channels(tmp_path):
    worst, _ = _max_parity_error(_frames(tmp_path)[:2], (70, 64), channels=3)
    assert worst < PARITY_TOLERANCE


@pytest.mark.shared_data
@pytest.mark.parametrize("size_wh", [(440, 400), (140, 128)])
def test_parity_on_real_frames(pgds_sample_dir, hc18_dir, size_wh):
    paths = sorted(pgds_sample_dir.glob("*/*.jpg")) + sorted(hc18_dir.glob("*_HC.png"))[:4]
    worst, mean = _max_parity_error(paths, size_wh)
    print(f"real frames {size_wh}: max {worst:.4f}, mean {mean:.5f}")
    assert worst < PARITY_TOLERANCE
    if size_wh == (440, 400):  # no resize: JPEG decoding itself is bit-identical to cv2
        jpeg_worst, _ = _max_parity_error(paths[:8], size_wh)
        assert jpeg_worst == 0.0


def test_constant_image_gives_zeros(tmp_path):
    cv2.imwrite(str(tmp_path / "flat.png"), np.full((20, 30), 77, np.uint8))
    table = pipe.ImageTable((str(tmp_path / "flat.png"),), np.zeros(1, np.int64))
    x, _ = next(pipe.eval_dataset(table, pipe.PipelineSpec((15, 10), 1, 2), batch_size=1).as_numpy_iterator())
    assert x.shape == (1, 10, 15, 1) and not np.isnan(x).any() and np.all(x == 0)


# ----------------------------------------------------------------------------- order and resume


@pytest.mark.parametrize("n, seed, epoch", [(10, 0, 0), (37, 3, 5), (1, 0, 2)])
def test_epoch_permutation_is_pure(n, seed, epoch):
    first = pipe.epoch_permutation(n, seed, epoch)
    assert np.array_equal(first, pipe.epoch_permutation(n, seed, epoch))
    assert sorted(first.tolist()) == list(range(n))


def test_epoch_permutations_differ_between_epochs_and_seeds():
    assert not np.array_equal(pipe.epoch_permutation(50, 0, 0), pipe.epoch_permutation(50, 0, 1))
    assert not np.array_equal(pipe.epoch_permutation(50, 0, 0), pipe.epoch_permutation(50, 1, 0))


@pytest.mark.parametrize("labels, multiplicity, sources, copies", [
    ([0, 1, 0], None, [0, 1, 2], [0, 0, 0]),
    ([0, 1, 0], [2, 3], [0, 0, 1, 1, 1, 2, 2], [0, 1, 0, 1, 2, 0, 1]),
    ([1], [2, 6], [0] * 6, list(range(6))),
])
def test_expand_entries(labels, multiplicity, sources, copies):
    entries = pipe.expand_entries(np.array(labels), multiplicity)
    assert entries.source.tolist() == sources and entries.copy.tolist() == copies


@pytest.fixture(scope="module")
def small_table(tmp_path_factory) -> pipe.ImageTable:
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(11):
        image = (rng.random((30, 36)) * 200).astype(np.uint8)
        image[5:15, 5:25] = 255 if i % 3 == 0 else image[5:15, 5:25]
        path = folder / f"f{i:02d}.{'png' if i % 2 else 'jpg'}"
        cv2.imwrite(str(path), image)
        paths.append(str(path))
    return pipe.ImageTable(tuple(paths), np.array([int(i % 3 == 0) for i in range(11)]))


SPEC = pipe.PipelineSpec(size_wh=(18, 15), channels=1, num_classes=2)


def _batches(dataset):
    return [tuple(np.asarray(part) for part in batch) for batch in dataset.as_numpy_iterator()]


def test_batches_follow_the_permutation_and_never_straddle_epochs(small_table):
    dataset, steps = pipe.train_dataset(small_table, SPEC, batch_size=4, seed=7, start_epoch=0, end_epoch=2)
    batches = _batches(dataset)
    assert steps == 3 and len(batches) == 6
    assert [len(b[0]) for b in batches] == [4, 4, 3, 4, 4, 3]
    reference = np.concatenate([b[0] for b in _batches(pipe.eval_dataset(small_table, SPEC, batch_size=16))])
    for epoch in (0, 1):
        order = pipe.epoch_permutation(len(small_table), 7, epoch)
        images = np.concatenate([b[0] for b in batches[3 * epoch:3 * epoch + 3]])
        labels = np.concatenate([b[1] for b in batches[3 * epoch:3 * epoch + 3]])
        assert np.array_equal(images, reference[order])
        assert np.array_equal(labels.argmax(1), small_table.labels[order])


@pytest.mark.parametrize("augment", [False, True])
def test_resumed_stream_equals_the_tail_of_the_full_stream(small_table, augment):
    multiplicity = [2, 3] if augment else None
    full, steps = pipe.train_dataset(small_table, SPEC, batch_size=4, seed=1, start_epoch=0, end_epoch=3,
                                     multiplicity=multiplicity, augment=augment)
    tail, _ = pipe.train_dataset(small_table, SPEC, batch_size=4, seed=1, start_epoch=2, end_epoch=3,
                                 multiplicity=multiplicity, augment=augment)
    full_batches, tail_batches = _batches(full), _batches(tail)
    assert len(tail_batches) == steps
    for got, expected in zip(tail_batches, full_batches[2 * steps:]):
        assert all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_on_the_fly_augmentation_is_deterministic_and_keeps_copy_zero(small_table):
    multiplicity = [2, 3]
    entries = pipe.expand_entries(small_table.labels, multiplicity)

    def epoch_images(epoch: int) -> np.ndarray:
        dataset, _ = pipe.train_dataset(small_table, SPEC, batch_size=64, seed=4, start_epoch=epoch,
                                        end_epoch=epoch + 1, multiplicity=multiplicity, augment=True)
        images = np.concatenate([b[0] for b in _batches(dataset)])
        out = np.empty_like(images)
        out[pipe.epoch_permutation(len(entries), 4, epoch)] = images  # back to entry order
        return out

    first, again, second = epoch_images(0), epoch_images(0), epoch_images(1)
    assert len(first) == 2 * 7 + 3 * 4
    assert np.array_equal(first, again)
    originals = np.concatenate([b[0] for b in _batches(pipe.eval_dataset(small_table, SPEC, batch_size=64))])
    is_copy = entries.copy > 0
    assert np.array_equal(first[~is_copy], originals[entries.source[~is_copy]])
    changed = [not np.array_equal(first[i], originals[entries.source[i]]) for i in np.flatnonzero(is_copy)]
    assert np.mean(changed) > 0.8
    assert not np.array_equal(first[is_copy], second[is_copy])  # redrawn every epoch


def test_sample_weights_and_label_inputs(small_table):
    spec = pipe.PipelineSpec(size_wh=(18, 15), channels=1, num_classes=2, labels_as_input=True)
    dataset, _ = pipe.train_dataset(small_table, spec, batch_size=11, seed=0, start_epoch=0, end_epoch=1,
                                    sample_weights=[0.5, 2.0])
    (x, label), y, w = next(dataset.as_numpy_iterator())
    assert x.shape == (11, 15, 18, 1) and label.dtype == np.int32
    assert np.array_equal(label, y.argmax(1)) and np.array_equal(w, np.where(label == 1, 2.0, 0.5))


def test_memory_cache_equals_streaming(small_table):
    cached = pipe.materialize(small_table, SPEC)
    streamed, _ = pipe.train_dataset(small_table, SPEC, batch_size=4, seed=2, start_epoch=0, end_epoch=2)
    from_cache, _ = pipe.train_dataset(small_table, SPEC, batch_size=4, seed=2, start_epoch=0, end_epoch=2,
                                       cached=cached)
    for a, b in zip(_batches(streamed), _batches(from_cache)):
        assert all(np.array_equal(p, q) for p, q in zip(a, b))


@pytest.fixture(scope="module")
def mixed_size_table(tmp_path_factory) -> pipe.ImageTable:
    """Frames of three sizes, 8- and 16-bit PNG and JPEG: what the decoded cache must pad."""
    folder = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(1)
    paths = []
    for i, (height, width) in enumerate([(30, 36), (41, 29), (30, 36), (52, 47), (41, 29), (33, 33)]):
        image = (rng.random((height, width)) * 250).astype(np.uint8)
        if i == 3:
            image = image.astype(np.uint16) * 250  # 16-bit levels up to 62250
        path = folder / f"m{i}.{'jpg' if i == 1 else 'png'}"
        cv2.imwrite(str(path), image)
        paths.append(str(path))
    return pipe.ImageTable(tuple(paths), np.array([0, 1, 0, 1, 0, 1]))


@pytest.mark.parametrize("transform, augment", [("minmax", False), ("imagenet", False),
                                                ("imagenet", True)])
def test_decoded_cache_equals_streaming(mixed_size_table, transform, augment):
    spec = pipe.PipelineSpec(size_wh=(24, 20), channels=3, num_classes=2, transform=transform,
                             rrc_scale=(0.3, 1.0))
    decoded = pipe.decode_frames(mixed_size_table, spec)
    assert decoded.pixels.dtype == np.uint16 and decoded.pixels.shape == (6, 52, 47)
    assert decoded.shapes.tolist()[:2] == [[30, 36], [41, 29]]
    kwargs = dict(batch_size=4, seed=3, start_epoch=0, end_epoch=3, augment=augment)
    streamed, _ = pipe.train_dataset(mixed_size_table, spec, **kwargs)
    from_memory, _ = pipe.train_dataset(mixed_size_table, spec, decoded=decoded, **kwargs)
    pairs = list(zip(_batches(streamed), _batches(from_memory)))
    assert len(pairs) == 6
    for a, b in pairs:
        assert all(np.array_equal(p, q) for p, q in zip(a, b))
    evaluated = _batches(pipe.eval_dataset(mixed_size_table, spec, batch_size=8, decoded=decoded))
    reference = _batches(pipe.eval_dataset(mixed_size_table, spec, batch_size=8))
    assert np.array_equal(evaluated[0][0], reference[0][0])


def test_decoded_cache_over_its_limit_is_none(mixed_size_table):
    spec = pipe.PipelineSpec(size_wh=(24, 20), channels=1, num_classes=2)
    assert pipe.decode_frames(mixed_size_table, spec, limit_bytes=6 * 52 * 47 * 2 - 1) is None
    assert pipe.decode_frames(mixed_size_table, spec, limit_bytes=6 * 52 * 47 * 2) is not None


def test_unreadable_file_is_reported_with_its_name(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not an image at all")
    table = pipe.ImageTable((str(bad),), np.zeros(1, np.int64))
    with pytest.raises(Exception, match="broken.dcm"):
        list(pipe.eval_dataset(table, SPEC, batch_size=1).as_numpy_iterator())
