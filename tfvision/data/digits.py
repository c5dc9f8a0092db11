"""The embedded dataset: 1,797 real 8×8 handwritten digits (UCI optdigits, see DIGITS.md).

It needs no network, so the quickstart and the tests run anywhere. Validation takes the first
``data.validation_fraction`` of a fixed permutation (its own constant seed, not
``train.seed``), so validation accuracy is comparable between runs: 1,438 / 359 at the
default 0.2.
"""

from pathlib import Path

import numpy as np

DIGITS_FILE = Path(__file__).with_name("digits.npz")
CLASS_NAMES = [str(i) for i in range(10)]
_SPLIT_SEED = 20260101


def load_digits_arrays(validation_fraction=0.2):
    """``(train_images, train_labels), (val_images, val_labels)``; images uint8 [N, 8, 8, 1]."""
    with np.load(DIGITS_FILE) as f:
        images, labels = f["images"][..., None], f["labels"].astype(np.int64)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
    n_val = round(len(images) * validation_fraction)
    val, train = order[:n_val], order[n_val:]
    return (images[train], labels[train]), (images[val], labels[val])


def load_digits(data_cfg, seed, input_context=None):
    """The digits as a source (``source.SourceData``); ``seed`` does not move the split."""
    import tensorflow as tf

    from tfvision.data.source import SourceData, Split

    def split(images, labels, name):
        def items(shuffle):
            ds = tf.data.Dataset.from_tensor_slices((images, labels))
            if input_context is not None:
                ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
            return ds

        return Split(items, tf.identity, len(images), f"digits:{name}:{len(images)}")

    (xt, yt), (xv, yv) = load_digits_arrays(data_cfg.validation_fraction)
    return SourceData(split(xt, yt, "train"), split(xv, yv, "validation"), CLASS_NAMES)
