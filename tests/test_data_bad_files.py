"""Bad input is named, never silently lost: skipped with one warning, or a stop before training.

The up-front header check must agree with what TensorFlow's decoders actually do, so a file
it passes never fails mid-epoch and a file it rejects could not have been used.
"""

import io
import warnings

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, small_config
from imagedata import CLASSES, KINDS, encode, picture, truncated_jpeg, write_folder
from PIL import Image

from tfvision.data.dataset import load_dataset
from tfvision.data.imagecheck import check_bytes
from tfvision.data.inspection import inspect_source
from tfvision.data.pipeline import decode_image
from tfvision.data.source import BadFilesWarning
from tfvision.errors import DataError
from tfvision.inference import predict
from tfvision.training import train


@pytest.fixture(scope="module")
def corrupt_folder(tmp_path_factory):
    """Good images of three classes plus a truncated JPEG, a text file named .jpg and an
    empty class folder."""
    root = tmp_path_factory.mktemp("corrupt")
    good = write_folder(root, kinds=KINDS[:12])
    bad = [root / "flat" / "cut_short.jpg", root / "horizontal" / "notes.jpg",
           root / "zebra"]
    bad[0].write_bytes(truncated_jpeg(np.random.default_rng(1)))
    bad[1].write_text("not a picture, just a text file\n")
    bad[2].mkdir()
    return root, good, bad


def _folder_config(root, *overrides):
    return small_config("data.source=folder", f"data.path={root}", "data.batch_size=8",
                        *overrides)


def test_skip_trains_on_with_one_warning_naming_every_bad_file(corrupt_folder, tmp_path):
    root, good, bad = corrupt_folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(_folder_config(root, "train.epochs=1"), tmp_path / "run", verbose=0)
    ours = [w for w in caught if issubclass(w.category, BadFilesWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "skipped 3 unreadable items" in message
    for path in bad:
        assert str(path) in message
    assert "truncated JPEG" in message and "text file" in message and "empty" in message
    assert (tmp_path / "run" / "model.keras").exists()
    assert "zebra" not in result.class_names
    with pytest.warns(BadFilesWarning):
        data = load_dataset(_folder_config(root))
    assert data.train_size + data.validation_size == len(good)  # every good file used


def test_error_stops_before_training_naming_every_bad_file(corrupt_folder, tmp_path):
    root, _, bad = corrupt_folder
    run = tmp_path / "run"
    done = run_cli("train", "--run-dir", run, "--set", "data.source=folder",
                   "--set", f"data.path={root}", "--set", "data.on_bad_file=error",
                   "--set", "data.image_size=16", "--set", "train.epochs=1")
    assert done.returncode == 2
    assert "3 unreadable items" in done.stderr
    for path in bad:
        assert str(path) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (run / "history.csv").exists() and not (run / "model.keras").exists()


def _example(encoded, label):
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    })).SerializeToString()


def _fingerprints(ds):
    return [hash(image.tobytes()) for images, _ in ds.as_numpy_iterator() for image in images]


def test_bad_tfrecord_records_are_named_and_left_out(tmp_path):
    rng = np.random.default_rng(2)
    names = ("flat", "horizontal", "vertical")
    good = 0
    for shard in range(2):
        with tf.io.TFRecordWriter(str(tmp_path / f"train-{shard}.tfrecord")) as writer:
            for i in range(12):
                label = i % 3
                writer.write(_example(encode(picture(rng, names[label]), "jpeg")[0], label))
                good += 1
            if shard == 1:  # records 12 and 13 of the second file
                writer.write(_example(truncated_jpeg(rng), 0))
                writer.write(_example(b"<html>not an image</html>", 1))
    config = small_config("data.source=tfrecord", f"data.path={tmp_path}/train-*.tfrecord",
                          "data.validation_fraction=0.25", "data.batch_size=4")
    with pytest.warns(BadFilesWarning) as record:
        data = load_dataset(config)
    (message,) = [str(w.message) for w in record if issubclass(w.category, BadFilesWarning)]
    assert "skipped 2 unreadable items" in message
    assert "train-1.tfrecord record 12: truncated JPEG" in message
    assert "train-1.tfrecord record 13: not an image" in message
    assert data.train_size + data.validation_size == good
    val_images = _fingerprints(data.validation)
    assert len(val_images) == data.validation_size
    train_images = _fingerprints(data.train)
    assert not set(val_images) & set(train_images)  # the held-out records stay out


def _webp(image, **options) -> bytes:
    """``image`` as WebP, written by Pillow (TensorFlow cannot write WebP)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "WEBP", **options)
    return buffer.getvalue()


# Every WebP variant TensorFlow's decoder treats differently: simple lossless (VP8L) and lossy
# (VP8), extended (VP8X, here for an ICC profile), with alpha, animated.
WEBP_KINDS = {
    "webp_lossless": lambda im: _webp(im, lossless=True),
    "webp_lossy": lambda im: _webp(im, quality=80),
    "webp_extended": lambda im: _webp(im, quality=80, icc_profile=b"\0" * 128),
    "webp_alpha": lambda im: _webp(np.dstack([im, np.full(im.shape[:2], 99, np.uint8)]),
                                   lossless=True),
    "webp_animated": lambda im: _webp(im, lossless=True, save_all=True, duration=100,
                                      append_images=[Image.fromarray(255 - im)]),
}


def _encode(image, kind) -> bytes:
    return WEBP_KINDS[kind](image) if kind in WEBP_KINDS else encode(image, kind)[0]


def _reference_rgb(data, kind):
    """The picture a file holds: Pillow's reading, or for JPEG TensorFlow's own reading of the
    intact file (JPEG decoders legitimately differ by a few levels; Pillow and TensorFlow
    decode WebP, lossy too, with libwebp: the same pixels)."""
    if kind.startswith("jpeg"):
        return decode_image(tf.constant(data)).numpy().astype(int)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


CUTS = {"intact": lambda d: d, "half": lambda d: d[: len(d) // 2],
        "last byte missing": lambda d: d[:-1], "header only": lambda d: d[:20]}


@pytest.mark.parametrize("cut", CUTS)
@pytest.mark.parametrize("kind", sorted(set(KINDS)) + ["bmp_palette", *WEBP_KINDS])
def test_header_check_agrees_with_the_decoder(kind, cut):
    """A file passes the check exactly when TensorFlow decodes it to the right picture.
    (TensorFlow refuses animated WebP, and WebP with alpha, as RGB.)"""
    original = _encode(picture(np.random.default_rng(5), "vertical", 24, 30), kind)
    data = CUTS[cut](original)
    try:
        decoded = decode_image(tf.constant(data)).numpy().astype(int)
        faithful = np.array_equal(decoded, _reference_rgb(original, kind))
    except tf.errors.InvalidArgumentError:
        faithful = False
    info = check_bytes(data)
    assert info.ok == faithful, info.problem
    if info.ok:
        assert (info.height, info.width) == (24, 30)


@pytest.mark.parametrize("data", [b"", b"just some text\n", b"RIFF\x00\x00\x00\x00WEBPVP8 "])
def test_non_images_are_named_as_such(data):
    info = check_bytes(data)
    assert not info.ok
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_image(tf.constant(data)).numpy()


@pytest.fixture(scope="module")
def webp_folder(tmp_path_factory):
    """JPEGs and WebPs (lossless, lossy) of three classes, plus a truncated WebP."""
    root = tmp_path_factory.mktemp("webp")
    rng = np.random.default_rng(3)
    good = write_folder(root, kinds=KINDS[:4])
    for name in CLASSES:
        for kind in ("webp_lossless", "webp_lossy"):
            path = root / name / f"{kind}.webp"
            path.write_bytes(WEBP_KINDS[kind](picture(rng, name, 21, 35)))
            good[path] = name
    cut = root / "flat" / "cut_short.webp"
    cut.write_bytes(WEBP_KINDS["webp_lossless"](picture(rng, "flat"))[:-10])
    return root, good, cut


def test_webp_is_read_like_the_other_formats(webp_folder):
    root, good, cut = webp_folder
    report = inspect_source(str(root))
    (split,) = report.splits
    assert split.formats["webp"] == 6 and sum(split.per_class.values()) == len(good)
    assert list(zip(split.heights, split.widths)).count((21, 35)) == 6
    ((name, reason),) = [(bad.name, bad.reason) for bad in report.bad]
    assert name == str(cut) and reason.startswith("truncated WebP")
    with pytest.warns(BadFilesWarning, match=r"cut_short\.webp: truncated WebP"):
        data = load_dataset(_folder_config(root, "data.validation_fraction=0.5",
                                           "data.batch_size=3"))
    assert data.train_size + data.validation_size == len(good)  # the WebPs are in
    decoded = _fingerprints(data.train) + _fingerprints(data.validation)  # as fit reads them
    assert len(decoded) == len(good)


def test_predict_names_a_truncated_webp(webp_folder, trained_run):
    _, good, cut = webp_folder
    with pytest.raises(DataError, match=rf"{cut} is not a readable image: truncated WebP"):
        predict(trained_run.export_path, [*good][-2:] + [cut])


@pytest.mark.parametrize(("kind", "reason"), [("webp_animated", "animated WebP"),
                                              ("webp_alpha", "WebP with an alpha channel")])
def test_webp_tensorflow_refuses_is_named_with_its_reason(kind, reason):
    info = check_bytes(WEBP_KINDS[kind](picture(np.random.default_rng(6), "flat")))
    assert info.problem.startswith(reason)
