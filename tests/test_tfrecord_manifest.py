"""TFRecords are checked once: the result is remembered by the files' fingerprint, so later
runs (and the first run after `tfvision data convert`, which writes it) read no record before
training, and get exactly what a check would give; a changed file is checked again."""

import os
import uuid

import numpy as np
import pytest
import tensorflow as tf
from conftest import small_config
from imagedata import CLASSES, KINDS, encode, picture, truncated_jpeg, write_folder

from tfvision.data.dataset import load_source
from tfvision.data.imagecheck import ImageInfo
from tfvision.data.source import BadFilesWarning
from tfvision.data.tfrecord import convert_folder, image_example, load_tfrecord
from tfvision.errors import DataError

MANIFESTS = ".tfvision-verified-*.npz"


@pytest.fixture
def opened(monkeypatch):
    """Every TFRecord file opened while the test runs (by the check or by anything else)."""
    calls = []
    real = tf.data.TFRecordDataset

    def counting(filenames, *args, **kwargs):
        calls.append(filenames)
        return real(filenames, *args, **kwargs)

    monkeypatch.setattr(tf.data, "TFRecordDataset", counting)
    return calls


def _shards(rng=None):
    """Two shards of 12 JPEGs of the three classes; the second also holds a truncated JPEG
    (record 12) and a text (record 13)."""
    rng = rng or np.random.default_rng(2)
    shards = [[(encode(picture(rng, CLASSES[i % 3]), "jpeg")[0], i % 3) for i in range(12)]
              for _ in range(2)]
    shards[1] += [(truncated_jpeg(rng), 0), (b"<html>not an image</html>", 1)]
    return shards


def _write(folder, shards):
    for index, records in enumerate(shards):
        with tf.io.TFRecordWriter(f"{folder}/train-{index}.tfrecord") as writer:
            for r, (encoded, label) in enumerate(records):
                example = image_example(encoded, label, CLASSES[label],
                                        ImageInfo("jpeg", 1, 1), f"{index}-{r}.jpg")
                writer.write(example.SerializeToString())


def _config(path, *overrides):
    return small_config("data.source=tfrecord", f"data.path={path}",
                        "data.validation_fraction=0.25", *overrides)


def _load(config):
    return load_tfrecord(config.data, config.train.seed)


def _contents(source):
    """What a source hands training: class names, each split's (image bytes, label) and
    the bad records."""
    def records(split):
        return sorted((x.numpy(), int(y)) for x, y in split.items(False))

    return source.class_names, records(source.train), records(source.validation), \
        source.bad_files


def test_second_run_reads_no_record_and_gets_the_same_splits(tmp_path, opened):
    _write(tmp_path, _shards())
    config = _config(f"{tmp_path}/train-*.tfrecord")
    first = _load(config)
    assert opened  # checked
    checked = _contents(first)
    assert len(list(tmp_path.glob(MANIFESTS))) == 1

    opened.clear()
    second = _load(config)
    assert not opened  # not one record read: trusted
    assert (second.train.size, second.validation.size) == (first.train.size, 6)
    assert second.train.fingerprint == first.train.fingerprint  # the same disk cache
    assert _contents(second) == checked  # the same hold-out, labels and bad records
    assert [(bad.name, bad.reason.split(" (")[0]) for bad in second.bad_files] == [
        (f"{tmp_path}/train-1.tfrecord record 12 (1-12.jpg)", "truncated JPEG"),
        (f"{tmp_path}/train-1.tfrecord record 13 (1-13.jpg)", "not an image")]
    # data.on_bad_file means what it did: a warning naming them, or a stop.
    with pytest.warns(BadFilesWarning, match="skipped 2 unreadable items"):
        load_source(config)
    with pytest.raises(DataError, match=r"2 unreadable items.*\n.*record 12"):
        load_source(_config(f"{tmp_path}/train-*.tfrecord", "data.on_bad_file=error"))


def test_convert_writes_the_manifest_so_the_first_run_reads_no_record(tmp_path, opened):
    write_folder(tmp_path / "images", kinds=KINDS[:8])
    convert_folder(tmp_path / "images", tmp_path / "records", 2, 0.25, 0, "skip")
    link = tmp_path / "link"  # any spelling of the records' path will do
    link.symlink_to(tmp_path / "records")
    configs = [_config(f"{link}/train-*.tfrecord"),  # validation held out of train-*
               _config(f"{link}/train-*.tfrecord",
                       f"data.validation_path={link}/validation-*.tfrecord")]
    opened.clear()
    remembered = [_load(config) for config in configs]
    assert not opened
    assert remembered[1].train.size + remembered[1].validation.size == 8 * len(CLASSES)

    for path in (tmp_path / "records").glob(MANIFESTS):
        path.unlink()
    checked = [_load(config) for config in configs]
    assert opened
    # What convert said is what a check finds, down to which records are held out.
    assert list(map(_contents, remembered)) == list(map(_contents, checked))


def test_changed_file_is_checked_again(tmp_path, opened):
    shards = _shards()
    _write(tmp_path, shards)
    config = _config(f"{tmp_path}/train-*.tfrecord")
    before = _load(config)

    rng = np.random.default_rng(9)
    shards[0].append((encode(picture(rng, "flat"), "jpeg")[0], 0))  # a record more
    _write(tmp_path, shards)
    opened.clear()
    grown = _load(config)
    assert opened
    assert grown.train.size + grown.validation.size == before.train.size + 7

    shard = tmp_path / "train-0.tfrecord"
    stat = shard.stat()
    encoded, label = shards[0][3]
    shards[0][3] = (encoded[:-2] + b"\0\0", label)  # no end-of-image marker, same length
    _write(tmp_path, shards)
    assert shard.stat().st_size == stat.st_size and shard.stat().st_mtime_ns != stat.st_mtime_ns
    opened.clear()
    cut = _load(config)
    assert opened
    assert f"{shard} record 3 (0-3.jpg)" in [bad.name for bad in cut.bad_files]
    assert len(list(tmp_path.glob(MANIFESTS))) == 1  # stale ones overwritten, not piled up


def test_corrupt_manifest_is_checked_again_and_rewritten(tmp_path, opened):
    _write(tmp_path, _shards())
    config = _config(f"{tmp_path}/train-*.tfrecord")
    checked = _contents(_load(config))
    (path,) = tmp_path.glob(MANIFESTS)
    path.write_bytes(path.read_bytes()[:200])  # cut short
    opened.clear()
    again = _load(config)
    assert opened
    assert _contents(again) == checked
    opened.clear()
    _load(config)
    assert not opened  # rewritten whole, trusted again


def test_unwritable_folder_keeps_the_manifest_in_the_user_cache(tmp_path, opened, monkeypatch):
    """The records' folder refuses writes as a read-only bucket does (chmod would not stop
    root, who runs these tests in some containers)."""
    records = tmp_path / "records"
    records.mkdir()
    _write(records, _shards())
    real = tf.io.gfile.GFile

    def read_only(name, mode="r"):
        if "w" in mode and str(name).startswith(str(records)):
            raise tf.errors.PermissionDeniedError(None, None, f"{name}: read-only")
        return real(name, mode)

    monkeypatch.setattr(tf.io.gfile, "GFile", read_only)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    config = _config(f"{records}/train-*.tfrecord")
    checked = _contents(_load(config))
    assert not list(records.glob(MANIFESTS))
    assert len(list((tmp_path / "cache" / "tfvision" / "verified").glob(MANIFESTS))) == 1
    opened.clear()
    again = _load(config)
    assert not opened
    assert _contents(again) == checked


def test_records_on_ram_filesystem_are_trusted_the_second_time(opened):
    """Through tf.io.gfile, as on gs://; a pattern matching every file (``*``) does not pick
    up the manifest written beside the records."""
    folder = f"ram://tfvision-manifest-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(folder)
    _write(folder, _shards())
    config = _config(f"{folder}/*")
    checked = _contents(_load(config))
    assert len(tf.io.gfile.glob(f"{folder}/{MANIFESTS}")) == 1
    opened.clear()
    again = _load(config)
    assert not opened
    assert _contents(again) == checked
    assert os.path.basename(checked[3][0].name).startswith("train-1.tfrecord record 12")


def test_other_class_names_are_checked_again(tmp_path, opened):
    """The class count is part of the fingerprint: with two names, class id 2 is bad."""
    _write(tmp_path, _shards())
    _load(_config(f"{tmp_path}/train-*.tfrecord"))
    opened.clear()
    fewer = _load(_config(f"{tmp_path}/train-*.tfrecord", "data.labels=[flat, horizontal]"))
    assert opened
    assert sum("class id 2 but only 2 class names" in bad.reason
               for bad in fewer.bad_files) == 8
