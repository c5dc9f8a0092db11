"""Reading a tfvision export back: its ``serving_default``, class names, temperature and
preprocessing preset.

Prediction and evaluation both call an export exactly as TF Serving does (encoded image
bytes into ``serving_default``); this is the one place that finds what they need in it.
"""

import json
from dataclasses import dataclass

import tensorflow as tf

from tfvision import fs
from tfvision.data.pipeline import Preset
from tfvision.errors import ModelError
from tfvision.export.serving import BYTES_SIGNATURE, INPUT_NAMES
from tfvision.export.versions import GRAPH_FILE, existing_versions

METADATA_FILE = ("assets.extra", "tfvision.json")  # beside the warmup records


@dataclass
class LoadedExport:
    path: str
    signature: object  # the serving_default concrete function
    class_names: list
    temperature: float  # baked into probabilities and scores (1.0: not calibrated)
    saved_model: object  # holds the variables the signature reads
    preset: Preset | None  # how its signatures fit images (None: not recorded)

    def __call__(self, encoded) -> dict:
        """The signature's outputs for a batch of encoded images (a string tensor)."""
        return self.signature(**{INPUT_NAMES[BYTES_SIGNATURE]: encoded})


def latest_version(model) -> str:
    """A TF Serving model folder (``DIR/<version>/``) stands for its highest version; any
    other path for itself. Local paths or URLs."""
    model = str(model).rstrip("/")
    versions = existing_versions(model)
    return fs.join(model, str(versions[-1])) if versions else model


def is_export(path) -> bool:
    return tf.io.gfile.exists(fs.join(latest_version(path), GRAPH_FILE))


def _class_names(signature, path) -> list:
    """Every class name of a tfvision export. Its outputs name only the top ``export.top_k``
    classes; the full list is the string constant the signature captures to gather them."""
    num_classes = signature.structured_outputs["probabilities"].shape[-1]
    lists = [c for c in signature.captured_inputs
             if c.dtype == tf.string and c.shape == (num_classes,)]
    if len(lists) != 1:
        raise ModelError(f"{path}: cannot find the list of its {num_classes} class names in "
                         "serving_default (not an export written by tfvision?)")
    return [n.decode() for n in lists[0].numpy()]


def write_metadata(version_dir, temperature: float, preset: Preset) -> None:
    """What the graph holds but does not show: the baked-in temperature and how images are
    fitted to the model (so a client or a tool can see what the server feeds it)."""
    path = fs.join(version_dir, *METADATA_FILE)
    tf.io.gfile.makedirs(fs.dirname(path))
    preprocessing = {"image_size": list(preset.image_size), "eval_resize": preset.eval_resize,
                     "crop_fraction": preset.crop_fraction}
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps({"temperature": temperature, "preprocessing": preprocessing}) + "\n")


def load_export(path) -> LoadedExport:
    """An export version, or a model folder of versions (its latest)."""
    path = latest_version(path)
    loaded = tf.saved_model.load(path)
    if BYTES_SIGNATURE not in loaded.signatures:
        raise ModelError(f"{path} has no {BYTES_SIGNATURE} signature")
    signature = loaded.signatures[BYTES_SIGNATURE]
    metadata = fs.join(path, *METADATA_FILE)
    recorded = {}
    if tf.io.gfile.exists(metadata):
        with tf.io.gfile.GFile(metadata) as f:
            recorded = json.load(f)
    preprocessing = recorded.get("preprocessing")
    preset = (Preset(tuple(preprocessing["image_size"]), preprocessing["eval_resize"],
                     preprocessing["crop_fraction"]) if preprocessing else None)
    return LoadedExport(path, signature, _class_names(signature, path),
                        recorded.get("temperature", 1.0), loaded, preset)
