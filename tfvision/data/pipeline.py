"""The one tf.data path every source goes through.

Sources hand over undecoded items (see ``source.Split``). Here they are decoded and resized
to ``data.image_size`` in parallel, rounded to uint8 and cached (memory or disk, chosen by
size) so later epochs skip decoding; then shuffled with the run's seed, batched by the global
batch size, augmented batch-wise (training only) and prefetched. Batches hold float32 RGB in
[0, 255]: the models normalize inside their graph, so export and serving use the same
``decode_image`` and ``resize``.
"""

import atexit
import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass

import tensorflow as tf

from tfvision import fs
from tfvision.data.augment import BatchAugment, crop_kind, original_crops

AUTOTUNE = tf.data.AUTOTUNE
MEMORY_SHARE = 0.5  # of the memory available now, for all of a run's in-memory caches
DISK_SHARE = 0.8  # of the free space where disk caches go


def to_rgb(image):
    """Grayscale → RGB, RGBA → RGB (alpha dropped); channels must be known statically."""
    channels = image.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:
        return image[..., :3]
    return image


def resize(image, size):
    """RGB float32 in [0, 255] at ``size`` (height, width), as in training, evaluation and
    serving; rounded to whole values, so the pipeline's uint8 cache loses nothing and an
    export sees exactly the pixels the model was evaluated on.

    A uint8 image already at ``size`` is only cast: the antialiased kernel returns it exactly
    there, but still costs 0.8 ms for one 224² image, 4–6 % of a ResNet-18 request on 2 cores."""
    image = to_rgb(image)
    exact = image.dtype == tf.uint8

    def whole(pixels):
        return tf.round(tf.clip_by_value(pixels, 0.0, 255.0))

    def unchanged():
        pixels = tf.cast(image, tf.float32)
        return pixels if exact else whole(pixels)

    # The kernel reads uint8 itself (ScaleAndTranslate is registered for it): no float copy.
    resized = tf.cond(tf.reduce_all(tf.shape(image)[-3:-1] == size), unchanged,
                      lambda: whole(tf.image.resize(image, size, antialias=True)))
    if not tf.is_tensor(size):
        resized.set_shape([*image.shape[:-3], *size, 3])
    return resized


def preprocess(image, image_size, eval_resize="center_crop", crop_fraction=0.875):
    """What evaluation and serving feed the model: a decoded image (uint8 ``[H, W, C]``, or
    a batch of same-sized ones) → float32 ``[h, w, 3]`` in [0, 255] at ``image_size``.

    ``squash`` resizes the whole image to ``image_size``. ``center_crop`` is torchvision's
    ``ClassificationPresetEval``: the shorter side is resized (bilinear, antialiased) to
    ``floor(max(image_size) / crop_fraction)`` (224 / 0.875 = 256), the longer one in
    proportion, truncated as torchvision's ``Resize`` truncates it; then the centre is cut
    out, its offset rounded half to even as Python's ``round`` in torchvision's
    ``center_crop``. Every validation pipeline, ``predict`` and every export signature
    call this one function.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if eval_resize == "squash":
        return resize(image, size)
    if eval_resize != "center_crop":
        raise ValueError(f"eval_resize must be squash or center_crop, got {eval_resize!r}")
    height, width = size
    shape = tf.shape(image)
    in_h, in_w = tf.cast(shape[-3], tf.float64), tf.cast(shape[-2], tf.float64)
    short = tf.constant(math.floor(max(size) / crop_fraction), tf.float64)
    # The shorter side becomes `short` exactly; the longer, short * long / short_in, truncated.
    new_h = tf.where(in_h <= in_w, short, tf.floor(short * in_h / in_w))
    new_w = tf.where(in_h <= in_w, tf.floor(short * in_w / in_h), short)
    resized = resize(image, tf.cast(tf.stack([new_h, new_w]), tf.int32))
    top = tf.cast(tf.round((new_h - height) / 2), tf.int32)
    left = tf.cast(tf.round((new_w - width) / 2), tf.int32)
    cropped = resized[..., top:top + height, left:left + width, :]
    return tf.ensure_shape(cropped, [*cropped.shape[:-3], height, width, 3])


@dataclass(frozen=True)
class Preset:
    """``preprocess`` with its settings fixed: how a run's evaluation and its exports fit
    images to the model (recorded in each export)."""

    image_size: tuple
    eval_resize: str = "squash"
    crop_fraction: float = 0.875

    @classmethod
    def of(cls, config) -> "Preset":
        return cls(config.image_hw, config.eval_resize, config.data.crop_fraction)

    def __call__(self, image):
        return preprocess(image, self.image_size, self.eval_resize, self.crop_fraction)

    def region(self, height, width) -> tuple:
        """``(top, left, height, width)``, in a ``height`` × ``width`` picture's own pixels, of
        what ``preprocess`` keeps of it (all of it when squashed): where a heatmap goes."""
        if self.eval_resize == "squash":
            return 0.0, 0.0, float(height), float(width)
        short = math.floor(max(self.image_size) / self.crop_fraction)
        new_h = short if height <= width else math.floor(short * height / width)
        new_w = math.floor(short * width / height) if height <= width else short
        crop_h, crop_w = self.image_size
        top, left = round((new_h - crop_h) / 2), round((new_w - crop_w) / 2)
        scale_h, scale_w = height / new_h, width / new_w
        return top * scale_h, left * scale_w, crop_h * scale_h, crop_w * scale_w


def decode_image(encoded):
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes → uint8 RGB [H, W, 3] (first frame of a GIF)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


_process_cache_dir = None


def _default_cache_dir() -> str:
    """A directory of this process's own, removed when it exits."""
    global _process_cache_dir
    if _process_cache_dir is None:
        _process_cache_dir = tempfile.mkdtemp(prefix="tfvision-cache-")
        atexit.register(shutil.rmtree, _process_cache_dir, ignore_errors=True)
    return _process_cache_dir


@dataclass(frozen=True)
class CachePlan:
    """Where each split's decoded images are kept: ``kind`` is memory, disk or none;
    ``paths`` maps a split to ``""`` (memory), a file prefix (disk) or None."""

    kind: str
    paths: dict
    decoded_bytes: int
    directory: str | None = None

    def __str__(self) -> str:
        where = f" in {self.directory}" if self.directory else ""
        return f"{self.kind}{where} ({self.decoded_bytes / 1e9:.2f} GB decoded)"


def _fits_on_disk(decoded: int, cache_dir) -> bool:
    """Room for the cache in ``cache_dir`` (default: the temp dir). An object store's
    (``gs://``) space is not measured: it is taken to have room."""
    if cache_dir and fs.is_url(cache_dir):
        return True
    probe = cache_dir or tempfile.gettempdir()
    os.makedirs(probe, exist_ok=True)
    return decoded <= DISK_SHARE * shutil.disk_usage(probe).free


def plan_cache(data_cfg, splits: dict, preset) -> CachePlan:
    """``data.cache: auto`` keeps decoded images in memory when all splits fit in half the
    available memory, else on disk when they fit there, else decodes every epoch."""
    height, width = preset.image_size
    decoded = sum(split.size for split in splits.values()) * height * width * 3
    cache_dir = fs.absolute(data_cfg.cache_dir) if data_cfg.cache_dir else None
    choice = data_cfg.cache
    if choice == "auto":
        if decoded <= MEMORY_SHARE * _available_memory():
            choice = "memory"
        else:
            choice = "disk" if _fits_on_disk(decoded, cache_dir) else "none"
    if choice != "disk":
        path = None if choice == "none" else ""
        return CachePlan(choice, {name: path for name in splits}, decoded)
    directory = cache_dir or _default_cache_dir()
    tf.io.gfile.makedirs(directory)
    plan = {}
    for name, split in splits.items():
        what = f"{split.fingerprint}|{height}x{width}|{preset.eval_resize}|{preset.crop_fraction}"
        key = hashlib.sha1(what.encode()).hexdigest()[:16]
        plan[name] = fs.join(directory, f"{name}-{key}")
    return CachePlan("disk", plan, decoded, directory)


def resolve_autotune(value) -> bool:
    """``data.autotune``: ``auto`` is off on hosts without a GPU or TPU. There the training
    step already uses every core, and the autotuner's threads and growing buffers took up to
    a third of a 2-core machine from it (BENCHMARKS.md); fixed parallelism does not."""
    if value == "auto":
        return any(tf.config.list_physical_devices(kind) for kind in ("GPU", "TPU"))
    return value


def make_pipeline(split, data_cfg, preset, batch_size, *, training, seed, cache, num_classes,
                  shard_policy, one_hot=False):
    """A source split → batches of (float32 RGB [B, H, W, 3] in [0, 255], labels).

    Training images are resized to ``preset.image_size`` and augmented batch-wise;
    validation images go through ``preset``, as evaluation and the exports do.

    Labels are int64 class ids, or one-hot rows (``one_hot``: MixUp/CutMix mix them, or the
    loss smooths them; then in both splits, so one loss and one set of metrics serve
    training and validation).
    """
    options = tf.data.Options()
    options.deterministic = bool(data_cfg.deterministic) or not training
    options.experimental_distribute.auto_shard_policy = getattr(
        tf.data.experimental.AutoShardPolicy, shard_policy.upper())
    options.autotune.enabled = resolve_autotune(data_cfg.autotune)

    items = split.items(training)
    buffer = max(min(data_cfg.shuffle_buffer, split.size), 1)
    if training and cache is None:  # shuffle cheap items, before decoding
        items = items.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)

    size = preset.image_size
    fit = (lambda image: resize(image, size)) if training else preset
    # Random resized crops are cut from the originals: their encoded bytes are what is
    # cached (the plan's estimate, decoded at image_size, is the larger for photos).
    originals = (training and split.to_encoded is not None
                 and crop_kind(data_cfg.augment, size) == "resized_crop")

    def load(x, label):
        if originals:
            return split.to_encoded(x), label
        return tf.cast(fit(split.to_image(x)), tf.uint8), label

    ds = items.map(load, num_parallel_calls=AUTOTUNE)
    if cache is not None:
        ds = ds.cache(cache)
        if training:
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    # Training batches all have the same, static size (as XLA and TPUs want); the remainder
    # left out differs every epoch, as the order does.
    ds = ds.batch(batch_size, drop_remainder=training and split.size >= batch_size,
                  num_parallel_calls=AUTOTUNE)
    finish = BatchAugment(data_cfg, size, num_classes, training=training, seed=seed,
                          one_hot=one_hot, cropped=originals)
    if originals:
        def cut(encoded, labels):
            return original_crops(encoded, size, data_cfg.augment != "none",
                                  finish.batch_seed(encoded),
                                  data_cfg.crop_scale, data_cfg.crop_ratio, resize), labels

        ds = ds.map(cut, num_parallel_calls=AUTOTUNE)
    ds = ds.map(finish, num_parallel_calls=AUTOTUNE)
    return ds.with_options(options).prefetch(AUTOTUNE)

