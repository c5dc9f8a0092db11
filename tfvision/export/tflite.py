"""TFLite exports: float32 and dynamic-range quantized, each measured on the validation split.

TFLite has no image decoder among its builtin ops, so these files take what the Keras model
takes: float32 RGB pixels in [0, 255] at the model's size (normalization stays inside).
Quantization changes the numbers, so its cost is reported as an accuracy difference.
"""

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfvision import fs
from tfvision.data.pipeline import Preset, decode_image
from tfvision.errors import ExportError
from tfvision.export.savedmodel import check_close, probe_images
from tfvision.export.versions import new_version

VARIANTS = {
    "float32": ("model.tflite", {}),
    "dynamic_range": ("model_dynamic_range.tflite", {"optimizations": [tf.lite.Optimize.DEFAULT]}),
}


@dataclass
class TfliteExport:
    path: Path | str  # a Path when local (fs.user_path)
    accuracy: dict  # {"keras": ..., "float32": ..., "dynamic_range": ...} on the validation split


def load_interpreter(path):
    with warnings.catch_warnings():  # deprecated for ai_edge_litert, still the TF 2.21 runtime
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(str(path))


def tflite_logits(interpreter, images) -> np.ndarray:
    """Run a tfvision TFLite model on a float32 batch ``[N, H, W, 3]``."""
    images = np.asarray(images, np.float32)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    if tuple(inp["shape"]) != images.shape:
        interpreter.resize_tensor_input(inp["index"], images.shape)
        interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def _accuracies(model, interpreters, validation) -> dict:
    correct = dict.fromkeys(["keras", *interpreters], 0)
    total = 0
    for images, labels in validation:
        labels = labels.numpy()
        if labels.ndim == 2:  # one-hot rows when MixUp/CutMix are on
            labels = labels.argmax(axis=1)
        predictions = {"keras": model(images, training=False).numpy()}
        predictions.update({k: tflite_logits(i, images) for k, i in interpreters.items()})
        for key, logits in predictions.items():
            correct[key] += int((np.argmax(logits, axis=1) == labels).sum())
        total += len(labels)
    if not total:
        raise ExportError("the validation split is empty; cannot measure TFLite accuracy")
    return {key: n / total for key, n in correct.items()}


def export_tflite(model, export_dir, validation, version=None) -> TfliteExport:
    """Write both TFLite variants as a new version; check float32 against ``model``, measure all.

    ``validation`` yields ``(float32 images, labels)`` batches, as ``load_dataset`` makes them.
    """
    size = tuple(model.input_shape[1:3])
    probe = tf.stack([Preset(size)(decode_image(tf.constant(e))) for e in probe_images(size)])
    # The TFLite converter writes local files only: convert into a local folder, then copy
    # into the version (which may be on gs://).
    with new_version(export_dir, version) as (written, tmp), \
            tempfile.TemporaryDirectory(prefix="tfvision-tflite-") as local:
        tf.io.gfile.mkdir(tmp)
        interpreters = {}
        for variant, (filename, options) in VARIANTS.items():
            path = os.path.join(local, filename)
            model.export(path, format="litert", verbose=False, **options)
            interpreters[variant] = load_interpreter(path)
            tf.io.gfile.copy(path, fs.join(tmp, filename))
        got, want = tflite_logits(interpreters["float32"], probe), model(probe).numpy()
        check_close(got, want, model, "the float32 TFLite model's logits")
        accuracy = _accuracies(model, interpreters, validation)
    return TfliteExport(fs.user_path(fs.join(export_dir, str(written))), accuracy)
