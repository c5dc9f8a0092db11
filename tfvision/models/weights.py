"""Pretrained weights by where they come from: a download, a PyTorch file, a Keras file.

A model builder takes ``weights="imagenet"`` (its checkpoint's URL, fetched once into the
Keras cache) or a local file, and loads it all-or-nothing with an error that says why not.
"""

import warnings

import keras

from tfvision import fs
from tfvision.errors import ModelError
from tfvision.models.torch_weights import load_torch_weights

KERAS_SUFFIX = ".weights.h5"


def download(url, sha256) -> str:
    """Fetch ``url`` once into the Keras cache (``~/.keras/models``), checking its SHA-256."""
    try:
        path = keras.utils.get_file(
            url.rsplit("/", 1)[-1], url, file_hash=sha256, hash_algorithm="sha256",
            cache_subdir="models",
        )
    except Exception as err:  # noqa: BLE001 (get_file raises bare Exception for URL errors)
        raise ModelError(
            f"cannot download pretrained weights from {url} ({err}). Offline? Download the "
            "file elsewhere and point the config at it: `model.weights: /path/to/file` "
            f"(a .pth, .safetensors or {KERAS_SUFFIX} from `tfvision weights convert`)"
        ) from None
    return path


def load_weights(model, weights, imagenet=None):
    """Load ``"imagenet"`` (``imagenet``: that file's (url, sha256)) or a local weights file."""
    if weights == "imagenet":
        path = download(*imagenet)
    else:
        path = str(weights)
    if not path.endswith(KERAS_SUFFIX):
        return load_torch_weights(model, path)
    if not fs.isfile(path):
        raise ModelError(f"weights file {path} does not exist")
    try:
        with warnings.catch_warnings():  # Keras warns once per mismatched layer, then raises
            warnings.simplefilter("ignore", UserWarning)
            model.load_weights(path)
    except Exception as err:  # noqa: BLE001 (h5py/Keras: many types for bad files)
        reason = " ".join(line for line in str(err).splitlines()[:3] if line.strip())[:300]
        raise ModelError(
            f"cannot load {path} into {model.name!r}: truncated, or written for another "
            f"architecture ({reason})"
        ) from None
    return model
