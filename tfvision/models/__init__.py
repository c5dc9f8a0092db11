"""Model builders. ``build_model`` turns a config's model section into a Keras model."""

import zipfile

import keras

from tfvision.errors import ConfigError, ModelError
from tfvision.models.cnn import scratch_cnn
from tfvision.models.resnet import resnet18, resnet34
from tfvision.models.torch_weights import load_torch_weights
from tfvision.models.transfer import BACKBONES, first_unfrozen, transfer_model, unfreeze
from tfvision.models.weights import load_weights

__all__ = [
    "BACKBONES",
    "build_model",
    "first_unfrozen",
    "load_model",
    "load_torch_weights",
    "resnet18",
    "resnet34",
    "scratch_cnn",
    "transfer_model",
    "unfreeze",
]


def build_model(model_cfg, num_classes, input_shape):
    """A Keras model for ``model_cfg`` that takes pixels in [0, 255] and returns logits."""
    weights = model_cfg.pretrained
    if model_cfg.name != "cnn":
        return transfer_model(
            model_cfg.name,
            num_classes,
            weights=weights,
            input_shape=input_shape,
            freeze=model_cfg.freeze,
            dropout=model_cfg.dropout,
        )
    model = scratch_cnn(
        input_shape=input_shape,
        num_classes=num_classes,
        filters=tuple(model_cfg.filters),
        dense_units=model_cfg.dense_units,
        pooling=model_cfg.pooling,
        dropout=model_cfg.dropout,
    )
    if weights == "imagenet":
        raise ConfigError("model.weights=imagenet needs a pretrained backbone as model.name; "
                          "cnn takes a local file (e.g. the seed's CNN as a PyTorch .pth)")
    return load_weights(model, weights) if weights else model


def load_model(path):
    """A saved ``.keras`` model. tfvision's own layers in it (``Conv2D``,
    ``FusedBatchNormalization``) are registered with Keras when this package is imported,
    which a bare ``keras.saving.load_model`` in a fresh process has not done."""
    try:
        return keras.saving.load_model(str(path))
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as err:
        raise ModelError(f"cannot load model {path}: {err}") from None
