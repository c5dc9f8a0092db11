"""The seed's from-scratch CNN (§4.1), ported with the Keras functional API.

Layer names follow the seed's modules (``conv1``, ``conv2``, ``fc1``, ``fc2``) so PyTorch
weights map onto them by name. The seed's ``fc1 = nn.Linear(64*6*6, 128)`` does not fit its
own convolutions; Keras infers the flatten size instead. ``pooling="max"`` follows the
seed's text (§3.3, a pooling layer after each convolution); ``pooling="none"`` reproduces
its code literally.
"""

import keras
from keras import layers

from tfvision.models.conv import Conv2D

POOLINGS = ("max", "avg", "none")


def scratch_cnn(
    input_shape=(32, 32, 3),
    num_classes=10,
    filters=(32, 64),
    dense_units=128,
    pooling="max",
    dropout=0.0,
    name="scratch_cnn",
):
    """Conv-ReLU-pool ×2 → Flatten → Dense-ReLU → Dense logits; takes pixels in [0, 255]."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    # With max-pooling the ReLU comes after the pool: the same numbers and gradients as the
    # seed's conv-ReLU-pool (ReLU is monotone, so it commutes with a max), with the ReLU and
    # its gradient on a quarter of the elements (BENCHMARKS.md, "ReLU after the max-pool").
    relu_after_pool = pooling == "max"
    for i, width in enumerate(filters, start=1):
        x = Conv2D(width, 3, padding="same", activation=None if relu_after_pool else "relu",
                   name=f"conv{i}")(x)
        if pooling == "max":
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
            x = layers.ReLU(name=f"relu{i}")(x)
        elif pooling == "avg":
            x = layers.AveragePooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="fc1")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    # Logits stay float32 under mixed precision so the loss and softmax are stable.
    outputs = layers.Dense(num_classes, name="fc2", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
