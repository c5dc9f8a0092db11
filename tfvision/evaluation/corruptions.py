"""Six common corruptions at severities 1-5, in the spirit of ImageNet-C (Hendrycks and
Dietterich, 2019), as TensorFlow ops on batches, seeded.

They act on the pixels the model sees (float32 RGB in [0, 255] at its input size), so the
same corruption means the same thing for a 32-pixel digit and a 224-pixel photo: sizes
(blur, pixelation) are fractions of the image side. Strengths follow ImageNet-C's; the blur
follows CIFAR-10-C's at 32 pixels, scaled with the side.
"""

import tensorflow as tf

SEVERITIES = (1, 2, 3, 4, 5)
_NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)  # of the [0, 1] range
_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)  # pixels at a 32-pixel side
_JPEG_QUALITY = (25, 18, 15, 10, 7)
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to the HSV value, in [0, 1]
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # distance to the mean kept
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # side of the coarse image, relative


def gaussian_noise(images, severity, seed):
    noise = tf.random.stateless_normal(tf.shape(images), seed, stddev=255 * _NOISE_STD[severity - 1])
    return images + noise


def gaussian_blur(images, severity, seed):
    side = min(images.shape[1], images.shape[2])
    sigma = _BLUR_SIGMA[severity - 1] * side / 32
    radius = max(int(3 * sigma + 0.5), 1)
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(x ** 2) / (2 * sigma ** 2))
    kernel /= tf.reduce_sum(kernel)
    rows = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "SYMMETRIC")
    blurred = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(blurred, tf.transpose(rows, [1, 0, 2, 3]), [1, 1, 1, 1],
                                  "VALID")


def jpeg_compression(images, severity, seed):
    quality = _JPEG_QUALITY[severity - 1]
    return tf.map_fn(
        lambda image: tf.cast(tf.image.decode_jpeg(tf.image.encode_jpeg(
            tf.cast(image, tf.uint8), quality=quality)), tf.float32),
        images,
    )


def brightness(images, severity, seed):
    hsv = tf.image.rgb_to_hsv(images / 255)
    value = tf.clip_by_value(hsv[..., 2:] + _BRIGHTNESS[severity - 1], 0, 1)
    return tf.image.hsv_to_rgb(tf.concat([hsv[..., :2], value], -1)) * 255


def contrast(images, severity, seed):
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return (images - mean) * _CONTRAST[severity - 1] + mean


def pixelate(images, severity, seed):
    height, width = images.shape[1], images.shape[2]
    factor = _PIXELATE[severity - 1]
    small = tf.image.resize(images, [max(int(height * factor), 1), max(int(width * factor), 1)],
                            method="area")
    return tf.image.resize(small, [height, width], method="nearest")


CORRUPTIONS = {f.__name__: f for f in (gaussian_noise, gaussian_blur, jpeg_compression,
                                       brightness, contrast, pixelate)}


def corrupt(batches, name, severity, seed):
    """``(images, labels)`` batches with ``name`` at ``severity`` applied to the images,
    rounded to whole pixel values in [0, 255]. Batch ``i`` draws its noise from the
    stateless seed ``(seed, i)``, so a sweep is the same every run."""
    function = CORRUPTIONS[name]

    def apply(index, batch):
        images, labels = batch
        out = function(images, severity, tf.stack([tf.cast(seed, tf.int64), index]))
        return tf.round(tf.clip_by_value(out, 0.0, 255.0)), labels

    return batches.enumerate().map(apply, num_parallel_calls=tf.data.AUTOTUNE,
                                   deterministic=True)
