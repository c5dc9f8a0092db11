"""What ``tfvision evaluate TARGET`` evaluates, and on which batches.

A TARGET is a run dir, a ``.keras`` file or an export. A Keras model reads the pipeline's
pixels; an export is called exactly as TF Serving calls it, through ``serving_default`` on
encoded images, so its report shows what a deployed model does (with the temperature of
``export --calibrate``, its logits are divided by it, as its probabilities are). Either way the labels are
the model's class ids, matched by class name to the source's.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfvision import fs, rundir
from tfvision.config import Config, load_config, override_config
from tfvision.data.dataset import load_dataset, load_source
from tfvision.data.pipeline import AUTOTUNE, Preset, decode_image
from tfvision.errors import DataError
from tfvision.export.loaded import is_export, load_export
from tfvision.models import load_model


@dataclass
class Target:
    path: str
    config: Config  # the run's (or -c CONFIG), with --data and --set applied
    class_names: list  # the model's, in the order of its logits
    logits_of: Callable  # a batch of inputs -> NumPy logits
    takes_bytes: bool  # inputs are encoded images (an export), not pixels
    run_dir: str | None  # where history.csv may be
    keras_model: object = None  # the model itself, when it is a Keras one (to explain it)


def whole_source(config: Config, source: str) -> Config:
    """``config`` reading all of SOURCE as its validation split: an image folder, a TFRecord
    file pattern, or ``tfds:NAME[:SPLIT]`` (default split: test)."""
    data = config.data
    if source.startswith("tfds:"):
        name, _, split = source.removeprefix("tfds:").partition(":")
        data = dataclasses.replace(data, source="tfds", name=name, train_split=split or "test",
                                   validation_split=split or "test")
    elif fs.isdir(source):
        data = dataclasses.replace(data, source="folder", path=source, validation_path=source)
    else:
        data = dataclasses.replace(data, source="tfrecord", path=source,
                                   validation_path=source, labels=None)
    return dataclasses.replace(config, data=data)


def _export_config(path, config) -> tuple:
    """(config, run dir): an export under ``RUN_DIR/export/<name>/<version>`` evaluates
    with its run's config unless one is given; an export on its own, with the defaults."""
    parent = fs.absolute(path)
    for _ in range(3):
        parent = fs.dirname(parent)
        if tf.io.gfile.exists(rundir.run_file(parent, "config")):
            return config or rundir.load_run_config(parent), parent
    return config or load_config(None), None


def resolve(target, config: Config | None = None, overrides=(), data: str | None = None,
            model=None) -> Target:
    """The model, its class names and the config to evaluate it with. ``model``: an
    in-memory Keras model to use instead of loading ``target`` (training's own report)."""
    path = str(target).rstrip("/")
    if model is None and is_export(path):
        config, run_dir = _export_config(path, config)
        export = load_export(path)

        def logits_of(encoded):  # a calibrated export is judged by what it serves
            return export(encoded)["logits"].numpy() / np.float32(export.temperature)

        takes_bytes, class_names = True, export.class_names
        model = None
    else:
        model_path, run_dir = rundir.resolve_model_path(target)
        config = config or rundir.load_run_config(run_dir)
        model = model or load_model(model_path)
        class_names = rundir.read_class_names(run_dir)
        @tf.function
        def call(images):
            return tf.cast(model(images, training=False), tf.float32)

        def logits_of(images):
            return call(images).numpy()

        takes_bytes = False
    if data:
        config = whole_source(config, data)
    config = override_config(config, overrides)
    return Target(path, config, class_names, logits_of, takes_bytes, run_dir, model)


def _label_map(source_names, model_names) -> tf.Tensor:
    """Source class id -> model class id, by name; a class the model lacks is an error."""
    unknown = [n for n in source_names if n not in model_names]
    if unknown:
        raise DataError(f"the data has classes the model does not know: {', '.join(unknown)} "
                        f"(the model's classes: {', '.join(model_names)})")
    return tf.constant([model_names.index(n) for n in source_names], tf.int64)


def _class_ids(labels, mapping):
    if labels.shape.rank == 2:  # one-hot rows (MixUp/CutMix configs)
        labels = tf.argmax(labels, axis=1)
    return tf.gather(mapping, tf.cast(labels, tf.int64))


def _png(image):
    return tf.io.encode_png(tf.cast(image, tf.uint8))


def encode_batch(images):
    """A batch of pixels as PNG bytes: lossless, so an export decodes exactly these pixels."""
    return tf.map_fn(_png, images, fn_output_signature=tf.string)


def encode_pair(images, labels):
    """``encode_batch`` for ``(images, labels)`` batches (corrupted pixels to an export)."""
    return encode_batch(images), labels


@dataclass
class Batches:
    """The evaluated set, batched: ``clean`` holds the target's inputs; ``pixels`` the
    pipeline's pixels at the model's size (corruptions are applied to these)."""

    clean: tf.data.Dataset
    pixels: tf.data.Dataset | None
    names: list | None  # a readable name per example (file paths), when the source has one


def batches(target: Target, with_pixels=False, dataset=None) -> Batches:
    """The validation split of the target's config: the pipeline's batches for a Keras
    model; for an export, each image's original file bytes (folders, TFRecords, TFDS), or
    for sources of pixels (digits) a lossless PNG of them, at its own size, so the export
    decodes and fits it as TF Serving would. ``dataset``: the config's
    ``load_dataset``, when the caller has it already."""
    config = target.config
    pixels = names = None
    if not target.takes_bytes or with_pixels:
        data = dataset or load_dataset(config)
        mapping = _label_map(data.class_names, target.class_names)

        def relabel(images, labels):
            return images, _class_ids(labels, mapping)

        pixels = data.validation.map(relabel)
        names = data.validation_names
    if not target.takes_bytes:
        return Batches(pixels, pixels, names)
    source = load_source(config)
    split = source.validation
    mapping = _label_map(source.class_names, target.class_names)

    def encode(item, label):  # the original file's bytes where the source keeps them
        encoded = split.to_encoded(item) if split.to_encoded else _png(split.to_image(item))
        return encoded, tf.gather(mapping, label)

    clean = (split.items(False).map(encode, num_parallel_calls=AUTOTUNE, deterministic=True)
             .batch(config.data.batch_size).prefetch(AUTOTUNE))
    return Batches(clean, pixels, split.names)


def thumbnail(target: Target, item) -> np.ndarray:
    """A kept input (pixels, or an export's encoded image) as uint8 pixels at the model's
    input size."""
    if target.takes_bytes:
        item = Preset.of(target.config)(decode_image(tf.constant(item))).numpy()
    return np.asarray(item).astype(np.uint8)
