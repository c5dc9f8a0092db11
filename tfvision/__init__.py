"""tfvision: the PyTorch image-classification tutorial, ported to Keras 3 / TensorFlow.

The public API is re-exported here lazily, so ``import tfvision`` (and the CLI's ``--help``)
does not pay for importing TensorFlow until a function that needs it is used.
"""

import importlib

from tfvision.host import choose_tensorflow_settings

# Before anything imports TensorFlow: its oneDNN switch is read once, when it loads.
choose_tensorflow_settings()

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "tfvision.config",
    "load_config": "tfvision.config",
    "scratch_cnn": "tfvision.models",
    "build_model": "tfvision.models",
    "resnet18": "tfvision.models",
    "resnet34": "tfvision.models",
    "transfer_model": "tfvision.models",
    "load_torch_weights": "tfvision.models",
    "load_dataset": "tfvision.data.dataset",
    "preprocess": "tfvision.data.pipeline",
    "train": "tfvision.training",
    "evaluate": "tfvision.evaluation",
    "export_model": "tfvision.export.savedmodel",
    "predict": "tfvision.inference",
    "explain": "tfvision.explanations",
}

__all__ = [*_EXPORTS, "__version__"]  # noqa: PLE0604 - one list: the names of _EXPORTS


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tfvision' has no attribute {name!r}")
