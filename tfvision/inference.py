"""Predictions from an export (its ``serving_default``) or a ``.keras`` model, on image files.

An export answers exactly as TF Serving would: the encoded file bytes go into the graph.
Answers are ranked from the model's probabilities for every class, so ``top_k`` is not
limited by the ``top_k`` the export was written with.
"""

import warnings

import numpy as np
import tensorflow as tf

from tfvision import fs, rundir
from tfvision.data.imagecheck import read_image_files
from tfvision.data.pipeline import Preset, decode_image
from tfvision.errors import DataError, ModelError


class TopKWarning(UserWarning):
    """``top_k`` asked for more classes than the model has; all of them are given."""


def read_images(paths) -> list[bytes]:
    """Encoded bytes of each file, checked by header (``read_image_files``) and decoded once,
    so a bad file is named with its reason before any work."""
    encoded = read_image_files(paths)
    for path, data in zip(paths, encoded):
        try:
            decode_image(tf.constant(data))
        except (tf.errors.InvalidArgumentError, ValueError):
            raise DataError(f"{path} is not a readable image: corrupt image data, TensorFlow "
                            "cannot decode it") from None
    return encoded


def _export_class_names(signature, num_classes, path) -> list:
    """Every class name of a tfvision export. Its outputs name only the top ``export.top_k``
    classes; the full list is the string constant the signature captures to gather them."""
    lists = [c for c in signature.captured_inputs
             if c.dtype == tf.string and c.shape == (num_classes,)]
    if len(lists) != 1:
        raise ModelError(f"{path}: cannot find the list of its {num_classes} class names in "
                         "serving_default (not an export written by tfvision?)")
    return [n.decode() for n in lists[0].numpy()]


def _predict_saved_model(path, encoded):
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ModelError(f"{path} has no serving_default signature")
    signature = loaded.signatures["serving_default"]
    probabilities = signature(image_bytes=tf.constant(encoded))["probabilities"].numpy()
    return _export_class_names(signature, probabilities.shape[1], path), probabilities


def keras_preset(model, path) -> Preset:
    """How a ``.keras`` model at ``path`` sees images: its run's own preset, as the run's
    validation and exports use it, or squashed to its input size outside a run."""
    try:
        return Preset.of(rundir.load_run_config(fs.dirname(path)))
    except ModelError:
        return Preset(tuple(model.input_shape[1:3]))


def _predict_keras(path, encoded):
    model = rundir.load_model(path)
    preset = keras_preset(model, path)
    images = tf.stack([preset(decode_image(tf.constant(b))) for b in encoded])
    probabilities = tf.nn.softmax(tf.cast(model(images, training=False), tf.float32)).numpy()
    return rundir.class_names_or_ids(fs.dirname(path), probabilities.shape[1]), probabilities


def _latest_version(model: str) -> str:
    """A TF Serving model folder (``DIR/<version>/``) stands for its highest version."""
    from tfvision.export.versions import existing_versions

    versions = existing_versions(model)
    return fs.join(model, str(versions[-1])) if versions else model


def predict(model, images, top_k=5) -> list[dict]:
    """``[{"image": path, "class_names": [...], "scores": [...]}, ...]``, best first.

    ``model``: an export version, a model folder of versions (the latest is used), or a
    ``.keras`` file. With ``top_k`` above the number of classes, every class is given and a
    ``TopKWarning`` says so.
    """
    model = _latest_version(str(model).rstrip("/"))
    encoded = read_images(images)
    if tf.io.gfile.exists(fs.join(model, "saved_model.pb")):
        class_names, probabilities = _predict_saved_model(model, encoded)
    elif model.endswith(".keras") and fs.isfile(model):
        class_names, probabilities = _predict_keras(model, encoded)
    else:
        raise ModelError(f"{model} is neither a SavedModel (or a folder of versions of one) "
                         "nor a .keras file")
    count = len(class_names)
    if top_k > count:
        warnings.warn(f"top_k={top_k} but the model has {count} classes; showing all {count}",
                      TopKWarning, stacklevel=2)
    # Stable, so ties rank as tf.math.top_k ranks them (lower class id first).
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    return [
        {"image": str(p), "class_names": [class_names[i] for i in row],
         "scores": [float(s) for s in np.take(probs, row)]}
        for p, row, probs in zip(images, order, probabilities)
    ]
