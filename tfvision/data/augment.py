"""Training-time augmentation, applied to whole batches so it costs little per image.

Crops and flips are index gathers (or one crop_and_resize) over the whole uint8 batch;
RandAugment picks its operations per image; MixUp and CutMix mix images and their one-hot
labels. Every random draw is stateless, seeded by ``train.seed`` and a fingerprint of the
batch: the seeded shuffle makes every epoch's batches different, and ``data.deterministic:
true`` reproduces them exactly. (A seed stream zipped in as a dataset would stop tf.distribute
from sharding TFRecords by file.)

Random resized crops come from the original image, as torchvision's ``RandomResizedCrop``
takes them (``original_crops``): a batch of encoded images is cut per image, a JPEG decoding
only its crop (``decode_and_crop_jpeg``, the TF Model Garden's path), then resized to
``data.image_size``. Sources without encoded originals (the embedded digits) crop the image
already resized, at a scale of at least ``RESIZED_CROP_SCALE[0]`` of the area.
"""

import math

import tensorflow as tf

from tfvision.config import RANDAUGMENT_MAX_MAGNITUDE

SMALL_IMAGE = 64  # crop_flip: pad-and-crop up to this side, random resized crop above
RESIZED_CROP_SCALE = (0.25, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)
FILL = 128.0  # grey, for the corners RandAugment's geometric operations uncover


def mixes_labels(data_cfg) -> bool:
    """MixUp/CutMix on: labels travel as one-hot rows (soft labels once mixed)."""
    return data_cfg.mixup > 0 or data_cfg.cutmix > 0


def crop_kind(augment: str, size) -> str | None:
    if augment == "crop_flip":
        return "pad_crop" if max(size) <= SMALL_IMAGE else "resized_crop"
    return {"pad_crop_flip": "pad_crop", "resized_crop_flip": "resized_crop"}.get(augment)


def _seeds(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


def _uniform(shape, seed, low=0.0, high=1.0):
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def crop_boxes(heights, widths, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts=10):
    """``(top, left, height, width)`` int32 [B] of random resized crops, drawn as torchvision's
    ``RandomResizedCrop.get_params`` draws them: up to 10 tries of an area share uniform in
    ``scale`` and a log-uniform aspect ratio in ``ratio``, sides rounded half to even; the
    first that fits wins, and when none does, the centre crop clamped to ``ratio``.

    (``tf.image.sample_distorted_bounding_box`` draws the aspect ratio uniformly and rejects
    boxes differently, so its crops are not distributed as torchvision's.)
    """
    s_area, s_ratio, s_top, s_left = _seeds(seed, 4)
    h = tf.cast(heights, tf.float32)[:, None]
    w = tf.cast(widths, tf.float32)[:, None]
    shape = tf.stack([tf.shape(heights)[0], attempts])
    target = h * w * _uniform(shape, s_area, *scale)
    aspect = tf.exp(_uniform(shape, s_ratio, math.log(ratio[0]), math.log(ratio[1])))
    crop_w = tf.round(tf.sqrt(target * aspect))
    crop_h = tf.round(tf.sqrt(target / aspect))
    fits = (crop_w > 0) & (crop_w <= w) & (crop_h > 0) & (crop_h <= h)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(fits, axis=1)
    crop_w, crop_h = (tf.gather(c, first, batch_dims=1) for c in (crop_w, crop_h))
    h, w = h[:, 0], w[:, 0]
    wide, narrow = w / h > ratio[1], w / h < ratio[0]
    centre_w = tf.where(wide, tf.round(h * ratio[1]), w)
    centre_h = tf.where(narrow, tf.round(w / ratio[0]), h)
    crop_w, crop_h = tf.where(found, crop_w, centre_w), tf.where(found, crop_h, centre_h)
    top = tf.where(found, tf.floor(_uniform(tf.shape(h), s_top) * (h - crop_h + 1)),
                   tf.floor((h - crop_h) / 2))
    left = tf.where(found, tf.floor(_uniform(tf.shape(w), s_left) * (w - crop_w + 1)),
                    tf.floor((w - crop_w) / 2))
    return tuple(tf.cast(v, tf.int32) for v in (top, left, crop_h, crop_w))


def original_crops(encoded, size, flip, seed, scale, ratio, resize):
    """Random resized crops (and flips) of a batch of encoded images [B], cut from the
    originals; uint8 [B, *size, 3] out. ``resize`` is the pipeline's resize.

    Each image is read once: a JPEG's shape comes from its header and only its crop is
    decoded; any other format is decoded whole, then cropped.
    """
    s_box, s_flip = _seeds(seed, 2)
    per_image = tf.random.experimental.stateless_split(s_box, num=tf.shape(encoded)[0])

    def box(shape, one_seed):
        return tf.concat(crop_boxes(shape[:1], shape[1:2], one_seed, scale, ratio), 0)

    def crop(args):
        one, one_seed = args

        def from_jpeg():
            shape = tf.image.extract_jpeg_shape(one)[:2]
            return tf.image.decode_and_crop_jpeg(one, box(shape, one_seed), channels=3)

        def from_other():
            image = tf.io.decode_image(one, channels=3, expand_animations=False)
            top, left, height, width = tf.unstack(box(tf.shape(image)[:2], one_seed))
            return image[top:top + height, left:left + width]

        image = tf.cond(tf.io.is_jpeg(one), from_jpeg, from_other)
        image.set_shape([None, None, 3])
        return tf.cast(resize(image, size), tf.uint8)

    images = tf.map_fn(crop, (encoded, per_image), parallel_iterations=8,
                       fn_output_signature=tf.TensorSpec([*size, 3], tf.uint8))
    if flip:
        flipped = _uniform([tf.shape(encoded)[0]], s_flip) < 0.5
        images = tf.where(flipped[:, None, None, None], tf.reverse(images, [2]), images)
    return images


def crop_flip(images, kind, flip, seed):
    """A random crop (``kind``: "pad_crop", "resized_crop" or None), then a random horizontal
    flip, of every image in a uint8 batch [B, H, W, 3]; float32 out.

    Pad-and-crop and flips only move pixels, so they are index gathers on the uint8 batch
    (exact and cheap); a random resized crop interpolates, with ``crop_and_resize``, whose
    boxes also carry the flip (left and right swapped).
    """
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    s_x, s_y, s_area, s_ratio, s_flip = _seeds(seed, 5)
    flipped = _uniform([batch], s_flip) < 0.5 if flip else tf.zeros([batch], tf.bool)
    if kind == "resized_crop":
        area = _uniform([batch], s_area, *RESIZED_CROP_SCALE)
        ratio = tf.exp(_uniform([batch], s_ratio, *(math.log(r) for r in RESIZED_CROP_RATIO)))
        crop_w = tf.minimum(tf.sqrt(area * ratio), 1.0)  # as fractions of the side
        crop_h = tf.minimum(tf.sqrt(area / ratio), 1.0)
        top = _uniform([batch], s_y) * (1.0 - crop_h)
        left = _uniform([batch], s_x) * (1.0 - crop_w)
        right = left + crop_w
        left, right = tf.where(flipped, right, left), tf.where(flipped, left, right)
        boxes = tf.stack([top, left, top + crop_h, right], axis=1)
        return tf.image.crop_and_resize(images, boxes, tf.range(batch), (height, width))
    rows = tf.tile(tf.range(height)[None], [batch, 1])
    cols = tf.tile(tf.range(width)[None], [batch, 1])
    cols = tf.where(flipped[:, None], tf.reverse(cols, [1]), cols)
    if kind == "pad_crop":  # shift by up to 1/8 of the side with zeros coming in
        pad = max(min(height, width) // 8, 1)
        images = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        rows += tf.random.stateless_uniform([batch, 1], s_y, maxval=2 * pad + 1, dtype=tf.int32)
        cols += tf.random.stateless_uniform([batch, 1], s_x, maxval=2 * pad + 1, dtype=tf.int32)
    images = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.cast(tf.gather(images, cols, axis=2, batch_dims=1), tf.float32)


# RandAugment operations on one float32 image [H, W, 3]; ``v`` is the signed strength in [-1, 1].

def _blend(base, image, factor):
    return tf.clip_by_value(base + factor * (image - base), 0.0, 255.0)


def _grey(image):
    return tf.image.rgb_to_grayscale(image)


def _geometric(image, transform):
    """Resample through a projective transform (output pixel → input pixel), grey fill."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.reshape(tf.cast(transform, tf.float32), [1, 8]),
        output_shape=tf.shape(image)[:2], fill_value=FILL, interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]


def _auto_contrast(image, v):
    low = tf.reduce_min(image, axis=[0, 1])
    high = tf.reduce_max(image, axis=[0, 1])
    spread = tf.where(high > low, high - low, 255.0)
    return tf.where(high > low, tf.clip_by_value((image - low) * (255.0 / spread), 0.0, 255.0),
                    image)


def _equalize_channel(channel):
    values = tf.cast(channel, tf.int32)
    hist = tf.math.bincount(values, minlength=256, maxlength=256)
    last = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
    step = (tf.reduce_sum(hist) - last) // 255
    lut = tf.clip_by_value((tf.cumsum(hist, exclusive=True) + step // 2) // tf.maximum(step, 1),
                           0, 255)
    return tf.where(step > 0, tf.cast(tf.gather(lut, values), tf.float32), channel)


def _equalize(image, v):
    return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], axis=-1)


def _rotate(image, v):
    angle = v * math.radians(30.0)
    height, width = (tf.cast(s, tf.float32) - 1.0 for s in tf.unstack(tf.shape(image)[:2]))
    cos, sin = tf.cos(angle), tf.sin(angle)
    dx = (width - (cos * width - sin * height)) / 2.0
    dy = (height - (sin * width + cos * height)) / 2.0
    return _geometric(image, [cos, -sin, dx, sin, cos, dy, 0.0, 0.0])


def _solarize(image, v):
    return tf.where(image >= 256.0 * (1.0 - tf.abs(v)), 255.0 - image, image)


def _color(image, v):
    return _blend(_grey(image), image, 1.0 + 0.9 * v)


def _posterize(image, v):
    step = 2.0 ** tf.round(4.0 * tf.abs(v))  # keep 8 down to 4 bits
    return tf.floor(image / step) * step


def _contrast(image, v):
    return _blend(tf.reduce_mean(_grey(image)), image, 1.0 + 0.9 * v)


def _brightness(image, v):
    return _blend(tf.zeros_like(image), image, 1.0 + 0.9 * v)


def _sharpness(image, v):
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    inner = tf.pad(tf.ones(tf.shape(image)[:2] - 2), [[1, 1], [1, 1]])[..., None] > 0
    return _blend(tf.where(inner, smooth, image), image, 1.0 + 0.9 * v)


def _shear_x(image, v):
    centre = (tf.cast(tf.shape(image)[0], tf.float32) - 1.0) / 2.0
    return _geometric(image, [1.0, 0.3 * v, -0.3 * v * centre, 0.0, 1.0, 0.0, 0.0, 0.0])


def _shear_y(image, v):
    centre = (tf.cast(tf.shape(image)[1], tf.float32) - 1.0) / 2.0
    return _geometric(image, [1.0, 0.0, 0.0, 0.3 * v, 1.0, -0.3 * v * centre, 0.0, 0.0])


def _translate_x(image, v):
    shift = 0.45 * v * tf.cast(tf.shape(image)[1], tf.float32)
    return _geometric(image, [1.0, 0.0, shift, 0.0, 1.0, 0.0, 0.0, 0.0])


def _translate_y(image, v):
    shift = 0.45 * v * tf.cast(tf.shape(image)[0], tf.float32)
    return _geometric(image, [1.0, 0.0, 0.0, 0.0, 1.0, shift, 0.0, 0.0])


RAND_AUGMENT_OPS = (
    lambda image, v: image, _auto_contrast, _equalize, _rotate, _solarize, _color, _posterize,
    _contrast, _brightness, _sharpness, _shear_x, _shear_y, _translate_x, _translate_y,
)


def rand_augment(image, seed, num_ops, magnitude):
    """RandAugment (Cubuk et al., 2019): ``num_ops`` operations drawn uniformly per image."""
    level = magnitude / RANDAUGMENT_MAX_MAGNITUDE
    seeds = _seeds(seed, 2 * num_ops)
    for i in range(num_ops):
        op = tf.random.stateless_uniform([], seeds[2 * i], maxval=len(RAND_AUGMENT_OPS),
                                         dtype=tf.int32)
        v = tf.where(_uniform([], seeds[2 * i + 1]) < 0.5, -level, level)
        image = tf.switch_case(
            op, [lambda fn=fn, image=image, v=v: fn(image, v) for fn in RAND_AUGMENT_OPS])
        image.set_shape([None, None, 3])
    return image


def _beta(alpha, seed):
    gammas = tf.random.stateless_gamma([2], seed, alpha=alpha)
    return gammas[0] / (gammas[0] + gammas[1])


def mix(images, labels, seed, mixup_alpha, cutmix_alpha):
    """MixUp or CutMix (one of them per batch, at random when both are on) with a shuffled
    copy of the batch; labels (one-hot) are mixed in proportion to the pixels."""
    s_perm, s_lam, s_box, s_choice = _seeds(seed, 4)
    order = tf.argsort(_uniform(tf.shape(images)[:1], s_perm))
    others = tf.gather(images, order)

    def mixup():
        lam = _beta(mixup_alpha, s_lam)
        return lam * images + (1.0 - lam) * others, lam

    def cutmix():
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        side = tf.sqrt(1.0 - _beta(cutmix_alpha, s_lam))
        half_h = tf.cast(side * tf.cast(height, tf.float32) / 2.0, tf.int32)
        half_w = tf.cast(side * tf.cast(width, tf.float32) / 2.0, tf.int32)
        centre = tf.random.stateless_uniform([2], s_box, maxval=tf.int32.max, dtype=tf.int32)
        cy, cx = centre[0] % height, centre[1] % width
        top, bottom = tf.maximum(cy - half_h, 0), tf.minimum(cy + half_h, height)
        left, right = tf.maximum(cx - half_w, 0), tf.minimum(cx + half_w, width)
        rows = tf.range(height)[:, None]
        cols = tf.range(width)[None, :]
        box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
        area = tf.cast((bottom - top) * (right - left), tf.float32)
        return tf.where(box[None, :, :, None], others, images), 1.0 - area / tf.cast(
            height * width, tf.float32)

    if mixup_alpha > 0 and cutmix_alpha > 0:
        images, lam = tf.cond(_uniform([], s_choice) < 0.5, cutmix, mixup)
    else:
        images, lam = cutmix() if cutmix_alpha > 0 else mixup()
    return images, lam * labels + (1.0 - lam) * tf.gather(labels, order)


class BatchAugment:
    """The map function for batches: uint8 → float32, augmented when training."""

    def __init__(self, data_cfg, size, num_classes, training, seed=0, one_hot=False,
                 cropped=False):
        """``one_hot``: labels become one-hot rows (always when MixUp/CutMix mix them);
        ``cropped``: the batch's crops and flips were already cut from the originals."""
        self.size = tuple(size)
        self.num_classes = num_classes
        self.training = training
        self.seed = seed
        self.crop = None if cropped else crop_kind(data_cfg.augment, size)
        self.flip = data_cfg.augment != "none" and not cropped
        self.rand_ops = data_cfg.randaugment
        self.magnitude = data_cfg.randaugment_magnitude
        self.mixup, self.cutmix = data_cfg.mixup, data_cfg.cutmix
        self.mixes = mixes_labels(data_cfg)
        self.one_hot = one_hot or self.mixes

    def __call__(self, images, labels):
        if not self.training:
            return self._labels(tf.cast(images, tf.float32), labels)
        s_geo, s_rand, s_mix = _seeds(self.batch_seed(images), 3)
        if self.crop or self.flip:
            images = crop_flip(images, self.crop, self.flip, s_geo)
        else:
            images = tf.cast(images, tf.float32)
        if self.rand_ops:
            per_image = tf.random.stateless_uniform(
                [tf.shape(images)[0], 2], s_rand, minval=None, maxval=None, dtype=tf.int64)
            images = tf.map_fn(
                lambda args: rand_augment(args[0], args[1], self.rand_ops, self.magnitude),
                (images, per_image), fn_output_signature=tf.TensorSpec([*self.size, 3]))
        images, labels = self._labels(images, labels)
        if self.mixes:
            images, labels = mix(images, labels, s_mix, self.mixup, self.cutmix)
        return tf.clip_by_value(images, 0.0, 255.0), labels

    def batch_seed(self, images):
        """``[train.seed, fingerprint of the batch's pixels (or encoded images), in order]``."""
        if images.dtype != tf.string:
            images = tf.reshape(images, [tf.shape(images)[0], -1])
        per_image = tf.fingerprint(images)
        batch = tf.fingerprint(tf.reshape(per_image, [1, -1]))[0]
        return tf.stack([tf.constant(self.seed, tf.int64), tf.bitcast(batch, tf.int64)])

    def _labels(self, images, labels):
        if self.one_hot:
            labels = tf.one_hot(labels, self.num_classes, dtype=tf.float32)
        return images, labels
