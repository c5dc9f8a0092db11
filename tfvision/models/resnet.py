"""ResNet-18 and ResNet-34 built layer for layer as torchvision builds them.

People porting the seed's ``models.resnet18(pretrained=True)`` need the same network and the
same weights, and keras.applications has no ResNet-18. Layer names are torchvision's
``state_dict`` prefixes (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``,
..., ``fc``), so PyTorch weights load by name (``tfvision.models.load_torch_weights``), and
``convert`` turns a torchvision checkpoint into a Keras weights file once.

Two details make the numbers match PyTorch's: stride-2 convolutions and the stem max-pool are
padded symmetrically with an explicit ``ZeroPadding2D`` (Keras ``padding="same"`` pads only
bottom/right when the stride is 2), and BatchNorm uses PyTorch's epsilon 1e-5 with momentum
0.9 (PyTorch's momentum=0.1 weights the new batch, Keras' the running value), and trains
with the fused kernel, which also updates the running variance as PyTorch does (unbiased).
"""

import re

import keras
import tensorflow as tf
from keras import layers

from tfvision import fs, rundir
from tfvision.errors import ModelError
from tfvision.models.batchnorm import FusedBatchNormalization
from tfvision.models.torch_weights import HEAD, load_torch_weights, read_state_dict
from tfvision.models.weights import KERAS_SUFFIX, download, load_weights

# torchvision's IMAGENET1K_V1 checkpoints: (url, SHA-256 of the file).
WEIGHTS = {
    "resnet18": (
        "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
    ),
    "resnet34": (
        "https://download.pytorch.org/models/resnet34-b627a593.pth",
        "b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f",
    ),
}
# Basic blocks per stage (layer1..layer4); stage widths double from 64.
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def imagenet_normalization(name="preprocess"):
    """torchvision's ``Normalize(mean, std)`` applied to pixels in [0, 255]."""
    return layers.Normalization(
        mean=[255.0 * m for m in IMAGENET_MEAN],
        variance=[(255.0 * s) ** 2 for s in IMAGENET_STD],
        name=name,
    )


def _conv(x, filters, kernel, stride, name):
    """A bias-free convolution padded as PyTorch pads it (``padding=kernel // 2``)."""
    padding = "same"
    if stride > 1:
        padding = "valid"
        if kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}.pad")(x)
    # torchvision's kaiming_normal_(mode="fan_out", relu). One initializer per layer: a shared
    # one holds a seed drawn at import, which gives every convolution of a shape the same kernel
    # and ignores keras.utils.set_random_seed.
    kaiming = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
    return layers.Conv2D(
        filters, kernel, stride, padding=padding, use_bias=False,
        kernel_initializer=kaiming, name=name,
    )(x)


def _bn(x, name):
    return FusedBatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def basic_block(x, filters, stride, name):
    """torchvision's ``BasicBlock``: two 3×3 convolutions and a (projected) shortcut."""
    shortcut = x
    y = _conv(x, filters, 3, stride, f"{name}.conv1")
    y = layers.ReLU(name=f"{name}.relu1")(_bn(y, f"{name}.bn1"))
    y = _bn(_conv(y, filters, 3, 1, f"{name}.conv2"), f"{name}.bn2")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, stride, f"{name}.downsample.0")
        shortcut = _bn(shortcut, f"{name}.downsample.1")
    y = layers.Add(name=f"{name}.add")([y, shortcut])
    return layers.ReLU(name=f"{name}.relu2")(y)


def stem(x):
    """``conv1`` (7×7/2, pad 3) → ``bn1`` → ReLU → ``maxpool`` (3×3/2, pad 1)."""
    x = layers.ReLU(name="relu")(_bn(_conv(x, 64, 7, 2, "conv1"), "bn1"))
    # Zero padding equals PyTorch's -inf padding here: the input is a ReLU output (>= 0).
    x = layers.ZeroPadding2D(1, name="maxpool.pad")(x)
    return layers.MaxPooling2D(3, 2, name="maxpool")(x)


def ResNet(
    arch,
    num_classes=1000,
    weights=None,
    input_shape=(224, 224, 3),
    include_top=True,
    include_preprocessing=True,
    pooling=None,
    name=None,
):
    """The generic builder behind ``resnet18``/``resnet34``.

    ``weights``: None, ``"imagenet"`` (torchvision's checkpoint, downloaded once into the
    Keras cache), or a local file (``.pth``/``.pt``/``.safetensors`` state dict, or a
    ``.weights.h5`` written by ``tfvision weights convert``). Without the top, ``pooling``
    is None (feature map), ``"avg"`` or ``"max"``, as in keras.applications.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = imagenet_normalization()(inputs) if include_preprocessing else inputs
    x = stem(x)
    for stage, blocks in enumerate(BLOCKS[arch]):
        filters = 64 * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = basic_block(x, filters, stride, f"layer{stage + 1}.{block}")
    if include_top or pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="maxpool_global")(x)
    if include_top:
        x = layers.Dense(num_classes, name=HEAD, dtype="float32")(x)
    model = keras.Model(inputs, x, name=name or arch)
    if weights is not None:
        load_weights(model, weights, WEIGHTS[arch])
    return model


def resnet18(num_classes=1000, weights=None, input_shape=(224, 224, 3), include_top=True,
             include_preprocessing=True, pooling=None, name=None):
    """torchvision's ``resnet18``; takes RGB pixels in [0, 255] and returns logits."""
    return ResNet("resnet18", num_classes, weights, input_shape, include_top,
                  include_preprocessing, pooling, name)


def resnet34(num_classes=1000, weights=None, input_shape=(224, 224, 3), include_top=True,
             include_preprocessing=True, pooling=None, name=None):
    """torchvision's ``resnet34``; takes RGB pixels in [0, 255] and returns logits."""
    return ResNet("resnet34", num_classes, weights, input_shape, include_top,
                  include_preprocessing, pooling, name)


def detect_resnet(state) -> str:
    """``resnet18`` or ``resnet34``, from the number of blocks per stage in a state dict."""
    blocks = [0, 0, 0, 0]
    for key in state:
        match = re.match(r"layer([1-4])\.(\d+)\.", key)
        if match:
            stage, block = int(match[1]) - 1, int(match[2])
            blocks[stage] = max(blocks[stage], block + 1)
    for arch, expected in BLOCKS.items():
        if tuple(blocks) == expected:
            return arch
    known = ", ".join(f"{a} {list(b)}" for a, b in BLOCKS.items())
    raise ModelError(
        f"not a torchvision ResNet-18/34 state dict: blocks per stage {blocks}; known: {known}"
    )


def convert(src, dst) -> tuple[str, int | None]:
    """Write a torchvision ResNet state dict (a file, or ``resnet18``/``resnet34`` to
    download it) as a Keras weights file, so later runs need neither torch nor network.
    Returns (architecture, number of classes of its ``fc``, or None without one)."""
    dst = str(dst)
    if not dst.endswith(KERAS_SUFFIX):
        raise ModelError(f"{dst}: the destination must be a Keras weights file (*{KERAS_SUFFIX})")
    named = src in WEIGHTS and not fs.isfile(src)
    state = read_state_dict(download(*WEIGHTS[src]) if named else src)
    arch = detect_resnet(state)
    head = f"{HEAD}.weight"
    num_classes = state[head].shape[0] if head in state else None
    model = ResNet(arch, num_classes or 1000, include_top=num_classes is not None)
    load_torch_weights(model, state)
    tf.io.gfile.makedirs(fs.dirname(dst) or ".")
    with rundir.atomic_write(dst) as tmp:  # keeps the .weights.h5 suffix Keras insists on
        model.save_weights(tmp)
    return arch, num_classes
