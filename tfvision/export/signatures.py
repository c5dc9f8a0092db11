"""The serving signatures: raw images in, class names out, preprocessing inside the graph.

TF Serving users send encoded images, uint8 pixels or tf.Examples and want class names
back, so every signature decodes and resizes exactly as evaluation does
(``tfvision.data.pipeline``) and answers the same named outputs.
"""

import tensorflow as tf

from tfvision.data.pipeline import decode_image, resize
from tfvision.export.serving import (
    BYTES_SIGNATURE,
    EXAMPLE_SIGNATURE,
    IMAGE_FEATURE,
    TENSOR_SIGNATURE,
)


def serving_functions(model, class_names, top_k, temperature=1.0) -> dict:
    """``{signature name: tf.function}`` for ``model``, with ``top_k`` classes per image.

    ``temperature`` (``tfvision export --calibrate``) divides the logits before the softmax
    of ``probabilities`` and ``scores``; ``logits`` stay the model's own.
    """
    size = tuple(model.input_shape[1:3])
    names = tf.constant(list(class_names))
    k = min(top_k, len(class_names))

    def answer(images):
        logits = tf.cast(model(images, training=False), tf.float32)
        probabilities = tf.nn.softmax(logits / temperature)
        scores, class_ids = tf.math.top_k(probabilities, k=k)
        return {
            "probabilities": probabilities,
            "logits": logits,
            "class_ids": class_ids,
            "scores": scores,
            "class_names": tf.gather(names, class_ids),
        }

    def decode_batch(encoded):
        return tf.map_fn(
            lambda one: resize(decode_image(one), size),
            encoded,
            fn_output_signature=tf.TensorSpec([*size, 3], tf.float32),
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def from_bytes(image_bytes):
        return answer(decode_batch(image_bytes))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def from_tensor(images):
        return answer(resize(images, size))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def from_example(examples):
        features = tf.io.parse_example(
            examples, {IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)}
        )
        return answer(decode_batch(features[IMAGE_FEATURE]))

    return {
        BYTES_SIGNATURE: from_bytes,
        TENSOR_SIGNATURE: from_tensor,
        EXAMPLE_SIGNATURE: from_example,
    }
