"""A pretrained backbone with a new classification head: the seed's swapped ``fc`` (§4.2).

Every model takes RGB pixels in [0, 255]: each backbone's own preprocessing (torchvision
mean/std, caffe-style BGR mean subtraction, [-1, 1] scaling, or the one keras.applications
builds in) is a layer of the graph. Fine-tuning follows the keras.io recipe: train the head
on a frozen backbone, then unfreeze (all of it, or from a stage on) at a lower learning rate
while BatchNorm keeps its pretrained statistics: a pretrained backbone is always called with
``training=False`` and its BatchNorm layers stay frozen.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import layers, ops

from tfvision import fs
from tfvision.errors import ModelError
from tfvision.models.conv import with_summed_bias_gradients
from tfvision.models.resnet import resnet18, resnet34
from tfvision.models.torch_weights import HEAD

# A residual/inverted-residual block, from its layers' names: layer4.1 (torchvision ResNet),
# conv5_block3 (keras ResNet, ResNetV2), block6o (EfficientNetV2), expanded_conv_10
# (MobileNetV3), convnext_tiny_stage_3_block_2 (ConvNeXt).
_BLOCK = re.compile(
    r"^(layer\d\.\d+|conv\d_block\d+|block\d+[a-z]+|expanded_conv(?:_\d+)?"
    r"|\w+_stage_\d+_block_\d+)[._]"
)


@keras.saving.register_keras_serializable(package="tfvision")
class CaffePreprocessing(layers.Layer):
    """keras.applications' "caffe" mode (ResNet50/101/152): RGB → BGR, minus ImageNet mean."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, images):
        return ops.flip(images, axis=-1) - ops.convert_to_tensor(self.MEAN_BGR, images.dtype)


def _minus_one_to_one():
    """keras.applications' "tf" mode (ResNetV2): [0, 255] → [-1, 1]."""
    return layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")


@dataclass(frozen=True)
class Backbone:
    build: Callable  # (input_shape, weights) -> headless model with global average pooling
    preprocessing: Callable | None = None  # a layer to put before it, if it has none


def _torchvision(factory):
    def build(input_shape, weights):
        return factory(weights=weights, input_shape=input_shape, include_top=False,
                       pooling="avg")

    return Backbone(build)


def _application(name, preprocessing=None):
    def build(input_shape, weights):
        cls = getattr(keras.applications, name)
        model = cls(include_top=False, weights=weights, input_shape=input_shape, pooling="avg")
        return with_summed_bias_gradients(model)

    return Backbone(build, preprocessing)


BACKBONES = {
    "resnet18": _torchvision(resnet18),
    "resnet34": _torchvision(resnet34),
    "resnet50": _application("ResNet50", CaffePreprocessing),
    "resnet101": _application("ResNet101", CaffePreprocessing),
    "resnet152": _application("ResNet152", CaffePreprocessing),
    "resnet50v2": _application("ResNet50V2", _minus_one_to_one),
    # These four build their preprocessing in (include_preprocessing=True).
    "efficientnetv2b0": _application("EfficientNetV2B0"),
    "efficientnetv2s": _application("EfficientNetV2S"),
    "mobilenetv3small": _application("MobileNetV3Small"),
    "mobilenetv3large": _application("MobileNetV3Large"),
    "convnexttiny": _application("ConvNeXtTiny"),
}


def _key(name):
    return name.lower().replace("_", "").replace("-", "")


def _backbone(name, input_shape, weights):
    if _key(name) not in BACKBONES:
        raise ModelError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    if weights not in (None, "imagenet") and not fs.isfile(weights):
        raise ModelError(f"weights file {weights} does not exist")
    try:
        return BACKBONES[_key(name)].build(input_shape, weights)
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001 (keras.applications' download/load failures)
        raise ModelError(
            f"cannot load {weights} weights for {name}: {err}. Offline? Download them "
            "elsewhere and set `model.weights: /path/to/file`"
        ) from None


def transfer_model(backbone, num_classes, weights="imagenet", input_shape=None, freeze=True,
                   dropout=0.0):
    """``backbone`` (see ``BACKBONES``) without its top, plus a new ``fc`` of ``num_classes``.

    ``weights``: ``"imagenet"``, None (random), or a local file: a PyTorch/safetensors state
    dict or Keras ``.weights.h5`` for resnet18/34, a keras.applications weights file (the
    "notop" one) for the others. With ``freeze`` only the head trains (phase 1). The model
    takes pixels in [0, 255] at ``input_shape`` (default 224×224×3) and returns logits.
    """
    input_shape = tuple(input_shape or (224, 224, 3))
    base = _backbone(backbone, input_shape, weights)
    base.trainable = not freeze
    inputs = keras.Input(shape=input_shape, name="image")
    preprocessing = BACKBONES[_key(backbone)].preprocessing
    x = preprocessing()(inputs) if preprocessing else inputs
    # Pretrained BatchNorm statistics must survive fine-tuning (keras.io transfer guide);
    # a randomly initialized backbone needs its BatchNorm to learn instead.
    x = base(x, training=False) if weights is not None else base(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, name=HEAD, dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"{base.name}_transfer")


def backbone_of(model):
    """The nested backbone of a ``transfer_model``."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ModelError(f"model {model.name!r} has no backbone to unfreeze: fine-tuning "
                         "(train.fine_tune_epochs) needs model.name set to a backbone, e.g. "
                         "resnet18")
    return nested[0]


def block_names(backbone):
    """Names of the backbone's residual blocks, in order (``layer1.0``, ..., ``layer4.1``)."""
    blocks = []
    for layer in backbone.layers:
        match = _BLOCK.match(layer.name)
        if match and match[1] not in blocks:
            blocks.append(match[1])
    return blocks


def first_unfrozen(model, start="all") -> int:
    """Index in the backbone's layers where ``unfreeze(model, start)`` starts training."""
    backbone = backbone_of(model)
    if start == "all":
        return 0
    if isinstance(start, int):
        blocks = block_names(backbone)
        if not 0 < start <= len(blocks):
            raise ModelError(f"cannot unfreeze the last {start} blocks of {backbone.name}: "
                             f"it has {len(blocks)} ({blocks[0]} ... {blocks[-1]})")
        start = blocks[-start]
    for index, layer in enumerate(backbone.layers):
        if layer.name.startswith(start):
            return index
    stages = sorted({re.split(r"[._]", b)[0] for b in block_names(backbone)})
    raise ModelError(f"no layer of {backbone.name} starts with {start!r}; give all, a number "
                     f"of blocks, or a layer-name prefix such as {', '.join(stages[-3:])}")


def unfreeze(model, start="all", freeze_batchnorm=True):
    """Phase 2: the backbone trains from layer ``start`` on; returns the trainable count.

    ``start``: ``"all"``, a layer-name prefix (``layer4``, ``conv5``, ``block6``) or an int N
    for the last N blocks. BatchNorm layers stay frozen unless ``freeze_batchnorm`` is False
    (a backbone trained from scratch, whose statistics are not worth keeping).
    """
    first = first_unfrozen(model, start)
    base = backbone_of(model)
    base.trainable = True
    for index, layer in enumerate(base.layers):
        frozen_bn = freeze_batchnorm and isinstance(layer, layers.BatchNormalization)
        layer.trainable = index >= first and not frozen_bn
    return len(model.trainable_weights)
