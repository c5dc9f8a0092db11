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
import os
import shutil
import tempfile
from dataclasses import dataclass

import tensorflow as tf

from tfvision import fs
from tfvision.data.augment import BatchAugment

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
    export sees exactly the pixels the model was evaluated on."""
    image = tf.image.resize(tf.cast(to_rgb(image), tf.float32), size, antialias=True)
    return tf.round(tf.clip_by_value(image, 0.0, 255.0))


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


def plan_cache(data_cfg, splits: dict, size) -> CachePlan:
    """``data.cache: auto`` keeps decoded images in memory when all splits fit in half the
    available memory, else on disk when they fit there, else decodes every epoch."""
    height, width = size
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
        key = hashlib.sha1(f"{split.fingerprint}|{height}x{width}".encode()).hexdigest()[:16]
        plan[name] = fs.join(directory, f"{name}-{key}")
    return CachePlan("disk", plan, decoded, directory)


def resolve_autotune(value) -> bool:
    """``data.autotune``: ``auto`` is off on hosts without a GPU or TPU. There the training
    step already uses every core, and the autotuner's threads and growing buffers took up to
    a third of a 2-core machine from it (BENCHMARKS.md); fixed parallelism does not."""
    if value == "auto":
        return any(tf.config.list_physical_devices(kind) for kind in ("GPU", "TPU"))
    return value


def make_pipeline(split, data_cfg, size, batch_size, *, training, seed, cache, num_classes,
                  shard_policy):
    """A source split → batches of (float32 RGB [B, H, W, 3] in [0, 255], labels).

    Labels are int64 class ids, or one-hot rows when MixUp/CutMix mix them (then in both
    splits, so one loss and one set of metrics serve training and validation).
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

    def load(x, label):
        return tf.cast(resize(split.to_image(x), size), tf.uint8), label

    ds = items.map(load, num_parallel_calls=AUTOTUNE)
    if cache is not None:
        ds = ds.cache(cache)
        if training:
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    # Training batches all have the same, static size (as XLA and TPUs want); the remainder
    # left out differs every epoch, as the order does.
    ds = ds.batch(batch_size, drop_remainder=training and split.size >= batch_size,
                  num_parallel_calls=AUTOTUNE)
    finish = BatchAugment(data_cfg, size, num_classes, training=training, seed=seed)
    ds = ds.map(finish, num_parallel_calls=AUTOTUNE)
    return ds.with_options(options).prefetch(AUTOTUNE)

