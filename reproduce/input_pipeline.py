"""tf.data input pipeline: manifest rows -> batches of model input, streamed from disk.

What it produces matches `data_prep.preprocess.to_model_input` (cv2 INTER_LINEAR resize to
(W, H), then per-image min-max to [0, 1]) to within about one grey level of the image's own
range (cv2 interpolates 8-bit images with 11-bit fixed-point weights, TF in float): max
|difference| 0.005 on the real frames of ../shared/data, below 0.01 on synthetic ones, 0 when
no resize is needed (tests/test_input_pipeline.py). Decoding runs in parallel inside TF:

- files whose BYTES are JPEG or PNG (whatever their name: a BMP, TIFF or DICOM named .png goes
  the data_prep.io way, and a file that is no image fails there with its one-line error):
  `tf.io.decode_jpeg` with libjpeg's accurate integer IDCT (what cv2
  and Pillow use; bit-identical pixels) when the bytes are a JPEG, else `tf.io.decode_png`
  (8- or 16-bit, read from the IHDR header); colour becomes BT.601 luma as in cv2. EXIF
  orientation is ignored, as data_prep.io does;
- anything else (DICOM, BMP, TIFF) goes through `tf.numpy_function` calling
  `data_prep.io.read_grayscale`.
- resize: bilinear with half-pixel centres and no antialiasing (cv2 INTER_LINEAR's rule),
  rounded back to whole grey levels, as cv2 does on uint8/uint16 images.
- per-image min-max to [0, 1] (a constant image becomes all zeros), float32, channels tiled.

Order and randomness are pure functions of the seed, so a resumed run sees exactly the batches
and augmentations an uninterrupted one would have seen:

- epoch e visits the training entries in `epoch_permutation(n, seed, e)`
  (numpy `default_rng([seed, e])`), never through a stateful shuffle buffer;
- with on-the-fly augmentation each original appears `multiplicity[label]` times per epoch
  (copy 0 unchanged, copies 1.. through `data_prep.augment.random_augment` with
  `default_rng([seed, e, entry])`), the paper's 2x/6x scheme redrawn every epoch.

Nothing loads the data set into memory unless asked: `cache="memory"` holds the finished model
inputs (decoded once, one float32 array: n x H x W x C x 4 bytes; no on-the-fly augmentation);
`cache="decoded"` holds the decoded grey frames at their own size (`DecodedFrames`: each file
read and decoded once, up to DECODED_CACHE_LIMIT bytes, else streamed with a notice) and still
crops, augments and resizes every epoch. Decoding is what the training step waits for on a
2-core CPU: ResNet-10 width 16 at 96x96, batch 16, trained at 114 images/s streaming PNGs and
178 from memory (bench/bench_train.py measures the ratio).
`train_dataset` returns one dataset for epochs [start, end) and its steps per epoch, to be fed
to `model.fit(..., steps_per_epoch=steps, initial_epoch=start, epochs=end)`.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from data_prep.preprocess import EVAL_RESIZE_RATIO  # noqa: E402  (Resize(256) / CenterCrop(224))

AUTOTUNE = tf.data.AUTOTUNE

# Formats TensorFlow decodes itself (data_prep.io.image_format of the file's bytes); every
# other format goes through data_prep.io.
TF_DECODED_FORMATS = ("jpeg", "png")
# BT.601 luma, the weights cv2.COLOR_BGR2GRAY uses (data_prep.io turns colour into this).
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ImageTable:
    """The images of one split: absolute paths and integer labels (index into class names)."""

    paths: tuple[str, ...]
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    @classmethod
    def from_frame(cls, frame, class_names: Sequence[str], root: str | Path | None = None) -> "ImageTable":
        """From a manifest/splits DataFrame: `abs_path` if present, else root / image_path."""
        index = {name: i for i, name in enumerate(class_names)}
        if "abs_path" in frame.columns:
            paths = tuple(str(p) for p in frame["abs_path"])
        else:
            base = Path(root) if root is not None else Path(".")
            paths = tuple(str(base / p) for p in frame["image_path"])
        labels = np.asarray([index[str(label)] for label in frame["label"]], dtype=np.int64)
        return cls(paths, labels)


# Decoded grey frames held in memory at most (cache="decoded"): above it the pipeline streams.
DECODED_CACHE_LIMIT = 1 << 30


@dataclass(frozen=True)
class DecodedFrames:
    """The grey frames of a table decoded once: `pixels[i, :h_i, :w_i]` is frame i (zero
    padding elsewhere), `shapes[i] = (h_i, w_i)`. uint16 when every level is a whole number in
    0..65535 (8- and 16-bit files), else float32: the levels are exactly what decoding gives."""

    pixels: np.ndarray
    shapes: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)


@dataclass(frozen=True)
class Entries:
    """Training entries of one epoch: which original each entry shows, and which copy
    (0 = the original itself, >= 1 = an augmented copy)."""

    source: np.ndarray
    copy: np.ndarray

    def __len__(self) -> int:
        return len(self.source)


# ----------------------------------------------------------------------------- pure order rules


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order entries are visited in epoch `epoch` (0-based): a pure function of its inputs."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n)).astype(np.int64)


def augment_rng(seed: int, epoch: int, entry: int) -> np.random.Generator:
    """The generator that augments training entry `entry` in epoch `epoch` (0-based)."""
    return np.random.default_rng([int(seed), int(epoch), int(entry)])


def expand_entries(labels: np.ndarray, multiplicity: Sequence[int] | None) -> Entries:
    """Each original i appears multiplicity[labels[i]] times (copy 0 is the original)."""
    labels = np.asarray(labels, dtype=np.int64)
    if multiplicity is None:
        return Entries(np.arange(len(labels), dtype=np.int64), np.zeros(len(labels), dtype=np.int64))
    counts = np.asarray(multiplicity, dtype=np.int64)[labels]
    if np.any(counts < 1):
        raise ValueError("every multiplicity must be at least 1")
    source = np.repeat(np.arange(len(labels), dtype=np.int64), counts)
    copy = np.concatenate([np.arange(c, dtype=np.int64) for c in counts]) if len(counts) else source
    return Entries(source, copy)


# ----------------------------------------------------------------------------- decoding


def uses_tf_decoder(path: str) -> bool:
    """Whether TF decodes the file itself: its first bytes are a JPEG or PNG signature. A
    file that is unreadable or no image goes to data_prep.io, which names what is wrong."""
    from data_prep.errors import InputError
    from data_prep.io import image_format

    try:
        return image_format(path) in TF_DECODED_FORMATS
    except InputError:
        return False


def _read_with_data_prep(path: bytes) -> np.ndarray:
    from data_prep.io import read_grayscale

    return np.asarray(read_grayscale(path.decode()), dtype=np.float32)


def _to_luma(image: tf.Tensor) -> tf.Tensor:
    """[H, W, C] float32 grey levels -> [H, W] (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).

    Colour becomes BT.601 luma rounded to whole levels, as cv2.cvtColor does on integers."""
    channels = tf.shape(image)[-1]

    def colour() -> tf.Tensor:
        rgb = image[..., :3]
        return tf.round(rgb[..., 0] * _LUMA[0] + rgb[..., 1] * _LUMA[1] + rgb[..., 2] * _LUMA[2])

    return tf.cond(channels >= 3, colour, lambda: image[..., 0])


def decode_grayscale(path: tf.Tensor, tf_decodable: tf.Tensor) -> tf.Tensor:
    """One file -> [H, W] float32 whole grey levels in the file's own scale (8 or 16 bit)."""

    def with_tf() -> tf.Tensor:
        contents = tf.io.read_file(path)

        def jpeg() -> tf.Tensor:
            # INTEGER_ACCURATE is libjpeg's slow integer IDCT, what cv2 and Pillow use (TF's
            # default, INTEGER_FAST, differs by up to 2 levels); colour is decoded to RGB and
            # turned into luma as cv2 does, rather than taking the JPEG's own Y channel.
            image = tf.io.decode_jpeg(contents, channels=0, dct_method="INTEGER_ACCURATE")
            return _to_luma(tf.cast(image, tf.float32))

        def png() -> tf.Tensor:
            # The IHDR bit depth sits at byte 24 of every PNG.
            depth = tf.io.decode_raw(tf.strings.substr(contents, 24, 1), tf.uint8)[0]
            image = tf.cond(
                depth <= 8,
                lambda: tf.cast(tf.io.decode_png(contents, channels=0, dtype=tf.uint8), tf.float32),
                lambda: tf.cast(tf.io.decode_png(contents, channels=0, dtype=tf.uint16), tf.float32))
            return _to_luma(image)

        return tf.cond(tf.io.is_jpeg(contents), jpeg, png)

    def with_python() -> tf.Tensor:
        image = tf.numpy_function(_read_with_data_prep, [path], tf.float32, stateful=False)
        return tf.ensure_shape(image, [None, None])

    return tf.cond(tf_decodable, with_tf, with_python)


def resize_minmax(gray: tf.Tensor, size_wh: tuple[int, int], channels: int) -> tf.Tensor:
    """[H0, W0] grey levels -> [H, W, channels] float32 in [0, 1] (per-image min-max).

    cv2.resize on an integer image returns whole levels, so the bilinear result is rounded
    before the min-max, as `data_prep.preprocess.to_model_input` does."""
    width, height = size_wh
    resized = tf.round(tf.image.resize(gray[..., None], (height, width), method="bilinear",
                                       antialias=False)[..., 0])
    low, high = tf.reduce_min(resized), tf.reduce_max(resized)
    span = high - low
    scaled = tf.where(span > 0, (resized - low) / tf.maximum(span, 1e-12), tf.zeros_like(resized))
    scaled = tf.ensure_shape(scaled, [height, width])[..., None]
    return tf.tile(scaled, [1, 1, channels]) if channels > 1 else scaled


def _augment_numpy(image: np.ndarray, seed: np.int64, epoch: np.int64, entry: np.int64) -> np.ndarray:
    from data_prep.augment import random_augment

    levels = image.astype(np.uint16 if image.max() > 255 else np.uint8)
    out = random_augment(levels, augment_rng(int(seed), int(epoch), int(entry)))
    return np.asarray(out, dtype=np.float32)


# ----------------------------------------------------------------------------- datasets


TRANSFORMS = ("minmax", "imagenet", "face")
# Hong 2021 augments aligned faces by "randomly rotating, cropping or horizontally flipping";
# the angle is not given: +-10 degrees keeps the eyes level enough for the template's layout.
FACE_ROTATION_DEG = 10.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RRC_SCALE, RRC_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


@dataclass(frozen=True)
class PipelineSpec:
    """How frames become model input (shared by training, validation and evaluation).

    `transform` "minmax" (Tang 2023's code: bilinear resize to the input, per-image min-max to
    [0, 1]) or "imagenet" (Qi 2025's code, torchvision's recipe): training images through
    RandomResizedCrop (area 8-100 %, aspect 3/4-4/3) and a horizontal flip, evaluation images
    resized so the shorter side is 256/224 of the input's and centre-cropped; then levels / 255,
    grey tiled to the channels, and ImageNet's per-channel mean and SD. `rrc_scale` narrows
    the crop's area range (a profile may keep more of small frames). "face" (Hong 2021, for
    aligned face crops): training images rotated by up to +-FACE_ROTATION_DEG (reflected at
    the border), then RandomResizedCrop (area `rrc_scale`) and a horizontal flip; evaluation
    images resized whole (an aligned crop has nothing to cut away); then levels / full scale
    (Hong feeds [0, 1] images), grey tiled to the channels.
    """

    size_wh: tuple[int, int]
    channels: int
    num_classes: int
    labels_as_input: bool = False  # margin heads (ArcFace/CosFace) take [image, label] as input
    transform: str = "minmax"
    rrc_scale: tuple[float, float] = RRC_SCALE

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")


def imagenet_normalize(levels: tf.Tensor, channels: int) -> tf.Tensor:
    """[H, W] grey levels (8- or 16-bit scale) -> [H, W, channels]: levels / full scale, grey
    tiled, then ImageNet's per-channel mean and SD (3 channels; other counts: the mean of the
    three channels' statistics, 0.449 and 0.226)."""
    full_scale = tf.where(tf.reduce_max(levels) > 255.0, 65535.0, 255.0)
    tiled = tf.stack([levels / full_scale] * channels, axis=-1)
    if channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = (float(np.mean(IMAGENET_MEAN)),) * channels, (float(np.mean(IMAGENET_STD)),) * channels
    return (tiled - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def unit_levels(levels: tf.Tensor, channels: int) -> tf.Tensor:
    """[H, W] grey levels (8- or 16-bit scale) -> [H, W, channels] in [0, 1], grey tiled."""
    full_scale = tf.where(tf.reduce_max(levels) > 255.0, 65535.0, 255.0)
    return tf.stack([levels / full_scale] * channels, axis=-1)


def eval_transform(gray: tf.Tensor, spec: "PipelineSpec") -> tf.Tensor:
    """An unaugmented frame as model input under the spec's transform."""
    if spec.transform == "imagenet":
        return imagenet_normalize(resize_center_crop(gray, spec.size_wh), spec.channels)
    if spec.transform == "face":
        width, height = spec.size_wh
        resized = tf.image.resize(gray[..., None], (height, width), method="bilinear",
                                  antialias=False)[..., 0]
        return unit_levels(tf.ensure_shape(resized, [height, width]), spec.channels)
    return resize_minmax(gray, spec.size_wh, spec.channels)


def random_rotation(gray: tf.Tensor, seed: tf.Tensor, max_degrees: float) -> tf.Tensor:
    """[H, W] rotated about its centre by a uniform angle in +-max_degrees drawn from a
    stateless seed (bilinear, reflected at the border: no black corners on a face)."""
    angle = (tf.random.stateless_uniform([], seed=seed) * 2.0 - 1.0) * (max_degrees * np.pi / 180.0)
    shape = tf.cast(tf.shape(gray), tf.float32)
    cy, cx = (shape[0] - 1.0) / 2.0, (shape[1] - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) reads input (cos(x-cx) + sin(y-cy) + cx, -sin(x-cx) + cos(y-cy) + cy).
    transform = tf.stack([cos, sin, cx - cos * cx - sin * cy,
                          -sin, cos, cy + sin * cx - cos * cy, 0.0, 0.0])[None]
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=gray[None, ..., None], transforms=transform, output_shape=tf.shape(gray),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    return rotated[0, ..., 0]


def resize_center_crop(gray: tf.Tensor, size_wh: tuple[int, int]) -> tf.Tensor:
    """[H0, W0] -> [H, W]: the shorter side resized to EVAL_RESIZE_RATIO x the input's shorter
    side (aspect kept, bilinear), then the centre H x W (torchvision Resize + CenterCrop)."""
    width, height = size_wh
    shape = tf.cast(tf.shape(gray), tf.float32)
    target_short = tf.round(min(width, height) * EVAL_RESIZE_RATIO)
    scale = target_short / tf.minimum(shape[0], shape[1])
    new_h = tf.maximum(tf.cast(tf.round(shape[0] * scale), tf.int32), height)
    new_w = tf.maximum(tf.cast(tf.round(shape[1] * scale), tf.int32), width)
    resized = tf.image.resize(gray[..., None], tf.stack([new_h, new_w]), method="bilinear",
                              antialias=False)[..., 0]
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return tf.ensure_shape(resized[top:top + height, left:left + width], [height, width])


def random_resized_crop(gray: tf.Tensor, size_wh: tuple[int, int], seed: tf.Tensor,
                        scale: tuple[float, float] = RRC_SCALE,
                        ratio: tuple[float, float] = RRC_RATIO) -> tf.Tensor:
    """torchvision's RandomResizedCrop + RandomHorizontalFlip, drawn from a stateless seed
    (a pure function of it, so a resumed run sees the same crops): up to 10 tries of an area
    fraction in `scale` and a log-uniform aspect in `ratio` that fit, else the whole frame."""
    width, height = size_wh
    shape = tf.cast(tf.shape(gray), tf.float32)
    area = shape[0] * shape[1]
    draws = tf.random.stateless_uniform([10, 2], seed=seed)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * draws[:, 0])
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    aspect = tf.exp(log_lo + (log_hi - log_lo) * draws[:, 1])
    crop_w = tf.round(tf.sqrt(target_area * aspect))
    crop_h = tf.round(tf.sqrt(target_area / aspect))
    fits = (crop_w >= 1) & (crop_h >= 1) & (crop_w <= shape[1]) & (crop_h <= shape[0])
    first = tf.argmax(tf.cast(fits, tf.int32))
    found = tf.reduce_any(fits)
    crop_w = tf.where(found, crop_w[first], shape[1])
    crop_h = tf.where(found, crop_h[first], shape[0])
    offsets = tf.random.stateless_uniform([3], seed=seed + tf.constant([0, 1], tf.int64))
    top = tf.cast(tf.floor(offsets[0] * (shape[0] - crop_h + 1)), tf.int32)
    left = tf.cast(tf.floor(offsets[1] * (shape[1] - crop_w + 1)), tf.int32)
    crop = gray[top:top + tf.cast(crop_h, tf.int32), left:left + tf.cast(crop_w, tf.int32)]
    resized = tf.image.resize(crop[..., None], (height, width), method="bilinear",
                              antialias=False)[..., 0]
    flipped = tf.where(offsets[2] < 0.5, resized[:, ::-1], resized)
    return tf.ensure_shape(flipped, [height, width])


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # Under MultiWorkerMirroredStrategy each worker reads every file list but keeps its own
    # share of the elements (the lists are small; the pixels are what costs).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def _load_fn(table: ImageTable, spec: PipelineSpec) -> Callable[[tf.Tensor], tf.Tensor]:
    paths = tf.constant(table.paths, dtype=tf.string)
    decodable = tf.constant([uses_tf_decoder(p) for p in table.paths], dtype=tf.bool)

    def load(index: tf.Tensor) -> tf.Tensor:
        return decode_grayscale(tf.gather(paths, index), tf.gather(decodable, index))

    return load


def _targets(spec: PipelineSpec, sample_weights: Sequence[float] | None):
    """Per-class one-hot rows and per-class weights, looked up by label index."""
    one_hot = tf.constant(np.eye(spec.num_classes, dtype=np.float32))
    weights = None if sample_weights is None else tf.constant(np.asarray(sample_weights, dtype=np.float32))
    return one_hot, weights


def materialize(table: ImageTable, spec: PipelineSpec, batch_size: int = 64) -> np.ndarray:
    """Decode every image once into one float32 array [n, H, W, C] (the memory cache)."""
    load = _load_fn(table, spec)
    dataset = (tf.data.Dataset.range(len(table))
               .map(lambda i: eval_transform(load(i), spec),
                    num_parallel_calls=AUTOTUNE, deterministic=True)
               .batch(batch_size).prefetch(AUTOTUNE))
    width, height = spec.size_wh
    out = np.empty((len(table), height, width, spec.channels), dtype=np.float32)
    position = 0
    for batch in dataset.as_numpy_iterator():
        out[position:position + len(batch)] = batch
        position += len(batch)
    return out


def decode_frames(table: ImageTable, spec: PipelineSpec,
                  limit_bytes: int = DECODED_CACHE_LIMIT) -> DecodedFrames | None:
    """Every frame of the table decoded once (the cache="decoded" store), or None when the
    padded store would exceed `limit_bytes` (the caller then streams)."""
    load = _load_fn(table, spec)
    dataset = (tf.data.Dataset.range(len(table))
               .map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
               .prefetch(AUTOTUNE))
    frames, fits_uint16 = [], True
    for frame in dataset.as_numpy_iterator():
        frames.append(frame)
        fits_uint16 = fits_uint16 and bool(np.all((frame == np.round(frame)) & (frame >= 0)
                                                  & (frame <= 65535)))
    shapes = np.asarray([f.shape for f in frames], dtype=np.int32).reshape(-1, 2)
    height, width = (shapes.max(axis=0) if len(frames) else (1, 1))
    dtype = np.uint16 if fits_uint16 else np.float32
    if len(frames) * int(height) * int(width) * np.dtype(dtype).itemsize > limit_bytes:
        return None
    pixels = np.zeros((len(frames), int(height), int(width)), dtype=dtype)
    for index, frame in enumerate(frames):
        pixels[index, :frame.shape[0], :frame.shape[1]] = frame
    return DecodedFrames(pixels, shapes)


def _image_fn(table: ImageTable, spec: PipelineSpec, cached: np.ndarray | None,
              augment: bool, entries: Entries, seed: int, decoded: DecodedFrames | None = None):
    """(epoch, entry) -> model input image, decoding (and augmenting) on the fly or from cache."""
    source = tf.constant(entries.source)
    copy = tf.constant(entries.copy)
    if cached is not None:
        images = tf.constant(cached)
        return lambda epoch, entry: tf.gather(images, tf.gather(source, entry))
    if decoded is not None:
        if len(decoded.shapes) != len(table):
            raise ValueError(f"{len(decoded.shapes)} decoded frames for a table of {len(table)}")
        pixels, shapes = tf.constant(decoded.pixels), tf.constant(decoded.shapes)

        def load(index: tf.Tensor) -> tf.Tensor:
            shape = tf.gather(shapes, index)
            return tf.cast(tf.gather(pixels, index)[:shape[0], :shape[1]], tf.float32)
    else:
        load = _load_fn(table, spec)

    def image(epoch: tf.Tensor, entry: tf.Tensor) -> tf.Tensor:
        gray = load(tf.gather(source, entry))
        if spec.transform == "face":
            if augment:
                crop_seed = tf.stack([tf.constant(seed, tf.int64),
                                      tf.cast(epoch, tf.int64) * 1_000_003 + tf.cast(entry, tf.int64)])
                turned = random_rotation(gray, crop_seed + tf.constant([0, 7], tf.int64),
                                         FACE_ROTATION_DEG)
                framed = random_resized_crop(turned, spec.size_wh, crop_seed, spec.rrc_scale)
                return unit_levels(framed, spec.channels)
            return eval_transform(gray, spec)
        if spec.transform == "imagenet":
            if augment:
                crop_seed = tf.stack([tf.constant(seed, tf.int64),
                                      tf.cast(epoch, tf.int64) * 1_000_003 + tf.cast(entry, tf.int64)])
                framed = random_resized_crop(gray, spec.size_wh, crop_seed, spec.rrc_scale)
                return imagenet_normalize(framed, spec.channels)
            return eval_transform(gray, spec)
        if augment:
            def augmented() -> tf.Tensor:
                out = tf.numpy_function(_augment_numpy, [gray, tf.constant(seed, tf.int64), epoch, entry],
                                        tf.float32, stateful=False)
                return tf.ensure_shape(out, [None, None])
            gray = tf.cond(tf.gather(copy, entry) > 0, augmented, lambda: gray)
        return resize_minmax(gray, spec.size_wh, spec.channels)

    return image


def train_dataset(table: ImageTable, spec: PipelineSpec, *, batch_size: int, seed: int,
                  start_epoch: int, end_epoch: int, multiplicity: Sequence[int] | None = None,
                  augment: bool = False, sample_weights: Sequence[float] | None = None,
                  cached: np.ndarray | None = None,
                  decoded: DecodedFrames | None = None) -> tuple[tf.data.Dataset, int]:
    """Batches for epochs [start_epoch, end_epoch) (0-based) and the steps of one epoch.

    Yields (x, y) or (x, y, w) with y one-hot float32 and w the per-sample class weight.
    Batches never straddle two epochs; the last batch of an epoch may be partial.
    `multiplicity[c]`: entries per original of class c (copy 0 = the original; the others
    are augmented when `augment`, else repeated unchanged: the offline/"none" shape).
    `cached`: finished inputs (`materialize`); `decoded`: the table's decoded frames
    (`decode_frames`), cropped, augmented and resized as when streamed.
    """
    if len(table) == 0:
        raise ValueError("the training split is empty")
    if augment and cached is not None:
        raise ValueError("on-the-fly augmentation cannot read from the memory cache")
    entries = expand_entries(table.labels, multiplicity)
    n = len(entries)
    steps = -(-n // batch_size)
    one_hot, weights = _targets(spec, sample_weights)
    source = tf.constant(entries.source)
    labels = tf.constant(table.labels)
    image = _image_fn(table, spec, cached, augment, entries, seed, decoded)

    def order(epoch: tf.Tensor) -> tf.Tensor:
        perm = tf.numpy_function(lambda e: epoch_permutation(n, seed, int(e)), [epoch], tf.int64,
                                 stateful=False)
        return tf.ensure_shape(perm, [n])

    def element(epoch: tf.Tensor, entry: tf.Tensor):
        label_index = tf.gather(labels, tf.gather(source, entry))
        x = image(epoch, entry)
        if spec.labels_as_input:
            x = (x, tf.cast(label_index, tf.int32))
        y = tf.gather(one_hot, label_index)
        return (x, y) if weights is None else (x, y, tf.gather(weights, label_index))

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        visits = tf.data.Dataset.from_tensor_slices(order(epoch))
        return (visits.map(lambda entry: element(epoch, entry), num_parallel_calls=AUTOTUNE,
                           deterministic=True)
                .batch(batch_size))

    dataset = (tf.data.Dataset.range(int(start_epoch), int(end_epoch))
               .flat_map(one_epoch)
               .prefetch(AUTOTUNE)
               .with_options(_options()))
    return dataset, steps


def eval_dataset(table: ImageTable, spec: PipelineSpec, *, batch_size: int,
                 sample_weights: Sequence[float] | None = None, with_labels: bool = True,
                 cached: np.ndarray | None = None,
                 decoded: DecodedFrames | None = None) -> tf.data.Dataset:
    """Batches of the table in its own order, unaugmented: (x, y[, w]) or x alone."""
    entries = expand_entries(table.labels, None)
    one_hot, weights = _targets(spec, sample_weights)
    labels = tf.constant(table.labels)
    image = _image_fn(table, spec, cached, False, entries, 0, decoded)
    zero = tf.constant(0, tf.int64)

    def element(index: tf.Tensor):
        x = image(zero, index)
        if not with_labels:
            return x
        label_index = tf.gather(labels, index)
        if spec.labels_as_input:
            x = (x, tf.cast(label_index, tf.int32))
        y = tf.gather(one_hot, label_index)
        return (x, y) if weights is None else (x, y, tf.gather(weights, label_index))

    return (tf.data.Dataset.range(len(table))
            .map(element, num_parallel_calls=AUTOTUNE, deterministic=True)
            .batch(batch_size)
            .prefetch(AUTOTUNE)
            .with_options(_options()))


def multiplicity_vector(class_names: Sequence[str], multiplicity: Mapping[str, int] | None) -> list[int] | None:
    """{'normal': 2, 'genetic_disease': 6} in class-index order, or None."""
    if multiplicity is None:
        return None
    missing = [name for name in class_names if name not in multiplicity]
    if missing:
        raise ValueError(f"no augmentation multiplicity for class(es) {missing}")
    return [int(multiplicity[name]) for name in class_names]
