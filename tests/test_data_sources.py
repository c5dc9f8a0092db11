"""Each source, from real files on disk, trained through: folder, TFRecords written by
`tfvision data convert`, a TFDS dataset prepared into a local data_dir, the embedded digits."""

import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import run_cli, small_config
from imagedata import CLASSES, KINDS, encode, picture, write_folder
from PIL import Image

from tfvision.data.dataset import load_dataset
from tfvision.data.pipeline import decode_image
from tfvision.data.tfrecord import FILENAME_KEY
from tfvision.errors import DataError
from tfvision.inference import predict
from tfvision.training import evaluate, train

LEARNT = 0.85  # validation accuracy that shows the classes were learnt (chance: 1/3)
TRAINING = ("data.batch_size=8", "train.epochs=6", "train.schedule=cosine",
            "train.optimizer=adam", "train.learning_rate=0.002")  # learns in 2 epochs


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, write_folder(root, kinds=KINDS * 2)


def _val_accuracy(result):
    return result.metrics["val_accuracy"]


def test_folder_source_trains_on_every_format_and_names_classes(image_folder, tmp_path):
    root, written = image_folder
    config = small_config("data.source=folder", f"data.path={root}", *TRAINING)
    data = load_dataset(config)
    assert data.class_names == sorted(CLASSES)
    assert data.train_size + data.validation_size == len(written)  # no file lost
    images, _ = next(iter(data.train))
    assert images.shape[1:] == (16, 16, 3) and images.dtype == tf.float32

    result = train(config, tmp_path / "run", verbose=0)
    assert _val_accuracy(result) >= LEARNT
    assert (tmp_path / "run" / "class_names.txt").read_text().split() == sorted(CLASSES)
    # evaluate --data tfds:NAME[:SPLIT] reads all of that split (default: test).
    for source, count in (("tfds:tfvision_tiny_stripes:train", 120),
                          ("tfds:tfvision_tiny_stripes", 24)):
        report = evaluate(tmp_path / "run", data=source)
        assert report["num_examples"] == count, source
        assert [r["support"] for r in report["per_class"]] == [count // 3] * 3
    # Class names reach the export: it answers with them.
    stripes = tmp_path / "stripes.png"
    stripes.write_bytes(tf.io.encode_png(picture(np.random.default_rng(7), "vertical")).numpy())
    (answer,) = predict(result.export_path, [stripes], top_k=1)
    assert answer["class_names"] == ["vertical"]


def test_convert_writes_original_bytes_and_tfrecords_train(image_folder, tmp_path):
    root, written = image_folder
    out = tmp_path / "records"
    done = run_cli("data", "convert", root, out, "--shards", "3")
    assert done.returncode == 0, done.stderr
    train_files = sorted(out.glob("train-*.tfrecord"))
    assert [f.name for f in train_files] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert list(out.glob("validation-*.tfrecord"))
    assert (out / "labels.txt").read_text().split() == sorted(CLASSES)

    stored = {}
    for record in tf.data.TFRecordDataset([str(f) for f in sorted(out.glob("*.tfrecord"))]):
        example = tf.train.Example.FromString(record.numpy()).features.feature
        name = example[FILENAME_KEY].bytes_list.value[0].decode()
        stored[name] = (example["image/encoded"].bytes_list.value[0],
                        example["image/class/label"].int64_list.value[0])
    assert len(stored) == len(written)
    for path, class_name in written.items():
        encoded, label = stored[str(path.relative_to(root))]
        assert encoded == path.read_bytes()  # kept as it was, not re-encoded
        assert label == sorted(CLASSES).index(class_name)

    config = small_config("data.source=tfrecord", f"data.path={out}/train-*.tfrecord",
                          f"data.validation_path={out}/validation-*.tfrecord",
                          "data.augment=crop_flip", *TRAINING)
    result = train(config, tmp_path / "run", verbose=0)
    assert result.class_names == sorted(CLASSES)  # from labels.txt
    assert _val_accuracy(result) >= LEARNT


def test_mixup_and_cutmix_train_with_soft_labels(image_folder, tmp_path):
    root, _ = image_folder
    config = small_config("data.source=folder", f"data.path={root}", "data.mixup=0.2",
                          "data.cutmix=1.0", *TRAINING)
    data = load_dataset(config)
    assert data.one_hot_labels
    _, labels = next(iter(data.train))
    assert labels.shape[1:] == (len(CLASSES),)
    np.testing.assert_allclose(tf.reduce_sum(labels, axis=1), 1.0, rtol=1e-5)
    result = train(config, tmp_path / "run", verbose=0)
    assert _val_accuracy(result) >= LEARNT
    assert evaluate(tmp_path / "run")["accuracy"] == pytest.approx(_val_accuracy(result),
                                                                   abs=1e-6)


class TfvisionTinyStripes(tfds.core.GeneratorBasedBuilder):
    """A real TFDS dataset (PNG-encoded TFRecords, dataset_info.json) built from arrays."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=sorted(CLASSES)),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 40), "test": self._generate_examples(1, 8)}

    def _generate_examples(self, seed, per_class):
        rng = np.random.default_rng(seed)
        for label, name in enumerate(sorted(CLASSES)):
            for i in range(per_class):
                yield f"{name}{i}", {"image": picture(rng, name), "label": label}


def test_tfds_dataset_in_local_data_dir_trains_without_download(tmp_path):
    data_dir = tmp_path / "tfds"
    TfvisionTinyStripes(data_dir=str(data_dir)).download_and_prepare()
    # A fresh process, which knows the dataset only from its files in data_dir.
    done = run_cli("train", "--run-dir", tmp_path / "run", "--set", "data.source=tfds",
                   "--set", "data.name=tfvision_tiny_stripes",
                   "--set", f"data.data_dir={data_dir}", "--set", "data.download=false",
                   "--set", "data.validation_split=test", "--set", "data.image_size=16",
                   *[arg for setting in TRAINING for arg in ("--set", setting)])
    assert done.returncode == 0, done.stderr
    accuracy = float(done.stdout.split("val_accuracy=")[1].split(",")[0])
    assert accuracy >= LEARNT
    assert (tmp_path / "run" / "class_names.txt").read_text().split() == sorted(CLASSES)


def test_tfds_catalog_name_not_prepared_with_download_off_is_a_clear_error(tmp_path):
    config = small_config("data.source=tfds", "data.name=mnist",
                          f"data.data_dir={tmp_path}", "data.download=false")
    with pytest.raises(DataError, match="'mnist' is not prepared in .*data.download: false"):
        load_dataset(config)


def test_digits_source_trains(trained_run):
    assert trained_run.class_names == [str(i) for i in range(10)]
    assert trained_run.metrics["val_accuracy"] >= 0.8


def test_every_colour_mode_decodes_to_the_same_rgb_as_pillow(tmp_path):
    image = picture(np.random.default_rng(3), "vertical", 12, 14)
    for kind in sorted(set(KINDS)):
        data, _ = encode(image, kind)
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        decoded = decode_image(tf.constant(data)).numpy()
        difference = np.abs(decoded.astype(int) - expected)
        if kind.startswith("jpeg"):  # JPEG decoders differ by a few levels: close, not equal
            assert difference.mean() < 4, kind
        else:  # lossless: exactly Pillow's RGB
            assert difference.max() == 0, kind
        if "grey" in kind:
            assert (decoded == decoded[..., :1]).all(), kind  # grey copied to R, G and B
