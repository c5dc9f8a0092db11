"""The shared pipeline: reproducible with data.deterministic, disjoint shares for several
workers, caches, and augmentations that do what they claim (pixels and labels)."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import pretend_gpus, run_cli, small_config
from imagedata import KINDS, write_folder
from tensorflow.python.distribute import input_ops

from tfvision.data.augment import RAND_AUGMENT_OPS, crop_flip, mix
from tfvision.data.dataset import load_dataset
from tfvision.data.pipeline import resolve_autotune
from tfvision.errors import ConfigError


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_folder(root, kinds=KINDS[:12])
    return root


@pytest.fixture(scope="module")
def records(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("records") / "shards"
    done = run_cli("data", "convert", image_folder, out, "--shards", "4")
    assert done.returncode == 0, done.stderr
    return out


def _folder(root, *overrides):
    return small_config("data.source=folder", f"data.path={root}", "data.batch_size=8",
                        *overrides)


def _records(out, *overrides):
    return small_config("data.source=tfrecord", f"data.path={out}/train-*.tfrecord",
                        f"data.validation_path={out}/validation-*.tfrecord",
                        "data.batch_size=8", *overrides)


def _epochs(ds, n=2):
    return [[(images, labels) for images, labels in ds.as_numpy_iterator()] for _ in range(n)]


def _fingerprints(ds):
    return [image.tobytes() for images, _ in ds.as_numpy_iterator() for image in images]


AUGMENTED = ("data.deterministic=true", "data.augment=crop_flip", "data.randaugment=2",
             "data.mixup=0.2", "data.cutmix=1.0")


def test_deterministic_pipeline_repeats_its_batches_for_the_same_seed(image_folder):
    first = _epochs(load_dataset(_folder(image_folder, *AUGMENTED)).train)
    again = _epochs(load_dataset(_folder(image_folder, *AUGMENTED)).train)
    other = _epochs(load_dataset(_folder(image_folder, *AUGMENTED, "train.seed=7")).train)
    for epoch, epoch_again in zip(first, again):
        for (images, labels), (images_again, labels_again) in zip(epoch, epoch_again, strict=True):
            np.testing.assert_array_equal(images, images_again)
            np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(first[0][0][0], first[1][0][0])  # each epoch differs
    assert not np.array_equal(first[0][0][0], other[0][0][0])  # and each seed


def test_autotune_is_off_on_a_cpu_host_unless_asked_and_changes_no_pixel(image_folder,
                                                                         monkeypatch):
    pretend_gpus(monkeypatch, 0)
    auto = load_dataset(_folder(image_folder, "data.deterministic=true"))
    tuned = load_dataset(_folder(image_folder, "data.deterministic=true", "data.autotune=true"))
    assert auto.train.options().autotune.enabled is False
    assert tuned.train.options().autotune.enabled is True
    assert _fingerprints(auto.train) == _fingerprints(tuned.train)
    with pytest.raises(ConfigError, match="data.autotune must be auto, true or false, got 'sometimes'"):
        load_dataset(_folder(image_folder, "data.autotune=sometimes"))
    pretend_gpus(monkeypatch, 1)
    assert resolve_autotune("auto") is True  # where the input pipeline competes with no step


@pytest.mark.parametrize("source", ["folder", "tfrecord"])
def test_two_workers_read_disjoint_shares(source, image_folder, records):
    config = _folder(image_folder) if source == "folder" else _records(records)
    whole = load_dataset(config)
    shares = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker,
                                             num_replicas_in_sync=2)
        data = load_dataset(config, global_batch_size=8, input_context=context)
        images, _ = next(iter(data.train))
        assert images.shape[0] == 4  # per replica
        shares.append((set(_fingerprints(data.train)), _fingerprints(data.validation)))
    (train_0, val_0), (train_1, val_1) = shares
    assert train_0 and train_1 and not train_0 & train_1
    assert not set(val_0) & set(val_1)
    assert sorted(val_0 + val_1) == sorted(_fingerprints(whole.validation))


def test_auto_shard_policy_suits_the_source(image_folder, records):
    folder = load_dataset(_folder(image_folder))
    # No cache: in one process both rewritten copies would share one in-memory cache. Small
    # batches: DATA sharding deals out whole batches, and each worker needs some.
    sharded = load_dataset(_records(records, "data.cache=none", "data.batch_size=2"))
    policy = tf.data.experimental.AutoShardPolicy
    assert folder.train.options().experimental_distribute.auto_shard_policy == policy.DATA
    assert sharded.train.options().experimental_distribute.auto_shard_policy == policy.FILE
    assert sharded.validation.options().experimental_distribute.auto_shard_policy == policy.DATA
    # What tf.distribute does with them for two workers: disjoint shares.
    for split, complete in ((sharded.train, False), (sharded.validation, True)):
        parts = [_fingerprints(input_ops.auto_shard_dataset(split, 2, worker, 2))
                 for worker in range(2)]
        assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
        if complete:  # no shuffling, no partial batch dropped: exactly everything
            assert sorted(parts[0] + parts[1]) == sorted(_fingerprints(split))


def test_disk_cache_is_written_and_gives_the_same_images(image_folder, tmp_path):
    cached = load_dataset(_folder(image_folder, "data.cache=disk",
                                  f"data.cache_dir={tmp_path}"))
    assert cached.cache.kind == "disk" and cached.cache.directory == str(tmp_path)
    first = _fingerprints(cached.validation)
    assert list(tmp_path.glob("validation-*.index"))  # complete after one pass
    assert _fingerprints(cached.validation) == first
    plain = load_dataset(_folder(image_folder, "data.cache=none"))
    assert _fingerprints(plain.validation) == first
    assert load_dataset(_folder(image_folder)).cache.kind == "memory"


def test_pad_crop_and_flip_only_move_pixels():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (16, 8, 8, 3), dtype=np.uint8)
    out = crop_flip(tf.constant(images), "pad_crop", True, tf.constant([3, 4], tf.int64))
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)])
    flips = 0
    for image, result in zip(padded, out.numpy().astype(np.uint8)):
        views = {(dy, dx, flip): view[:, ::-1] if flip else view
                 for dy in range(3) for dx in range(3) for flip in (False, True)
                 for view in [image[dy:dy + 8, dx:dx + 8]]}
        matches = [key for key, view in views.items() if np.array_equal(view, result)]
        assert matches, "not a shifted (and maybe mirrored) copy of its input"
        flips += matches[0][2]
    assert 0 < flips < 16


def test_mixup_and_cutmix_mix_labels_in_proportion_to_pixels():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, 32)
    images = tf.constant(np.repeat(classes * 100.0, 16 * 16 * 3).reshape(32, 16, 16, 3),
                         tf.float32)  # each image one flat value: its class id * 100
    labels = tf.one_hot(classes, 3)
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0)):
        mixed, soft = mix(images, labels, tf.constant([1, 2], tf.int64), mixup, cutmix)
        np.testing.assert_allclose(tf.reduce_sum(soft, axis=1), 1.0, rtol=1e-5)
        # The mean pixel is the label-weighted mean of the class values, image by image.
        expected = tf.reduce_sum(soft * tf.constant([0.0, 100.0, 200.0]), axis=1)
        np.testing.assert_allclose(tf.reduce_mean(mixed, axis=[1, 2, 3]), expected, atol=1e-3)
        assert not np.allclose(soft, labels)  # something was mixed


def test_every_rand_augment_operation_keeps_shape_and_pixel_range():
    image = tf.constant(np.random.default_rng(0).uniform(60, 180, (40, 36, 3)), tf.float32)
    changed = 0
    for op in RAND_AUGMENT_OPS:
        for strength in (-0.9, 0.9):
            out = op(image, tf.constant(strength))
            assert out.shape == image.shape
            assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0
            changed += not np.allclose(out, image)
    assert changed == 2 * (len(RAND_AUGMENT_OPS) - 1)  # all but the identity do something
