"""TFRecords in the TF Model Garden layout: read as a source, written by ``data convert``.

Each record is a ``tf.train.Example`` with the encoded image under ``image/encoded`` and the
class id under ``image/class/label`` (both keys configurable). Records are checked by their
image headers before training, once: the result is remembered in a verification manifest
(``manifest``; ``data convert`` writes it with the records) and later runs start without
reading a record until training does, while the files stay the same. A record is known by
(file index, record index), which stays the same whatever order parallel reading delivers it
in, so the held-out validation records and the bad ones can be filtered out exactly.
"""

import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfvision import fs, rundir
from tfvision.data import imagecheck, manifest
from tfvision.data.folder import scan_folder
from tfvision.data.pipeline import decode_image
from tfvision.data.source import (
    BadFile,
    SourceData,
    Split,
    hold_out,
    report_bad_files,
)
from tfvision.errors import DataError

LABELS_FILE = "labels.txt"
IMAGE_KEY, LABEL_KEY, FILENAME_KEY = "image/encoded", "image/class/label", "image/filename"
_TRAIN, _VALIDATION, _BAD = 0, 1, 2


def shard_name(split: str, index: int, count: int) -> str:
    """``train-00001-of-00004.tfrecord``: ``train-*.tfrecord`` selects a split's shards."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def list_records(pattern, key="data.path") -> list[str]:
    """The files ``pattern`` matches, sorted; hidden ones (manifests, half-written shards)
    left out, as the folder source leaves them out."""
    files = sorted(f for f in tf.io.gfile.glob(str(pattern))
                   if not fs.basename(f).startswith("."))
    if files:
        return files
    hint = ""
    if tf.io.gfile.isdir(str(pattern)):
        hint = f"; it is a folder: give a file pattern such as {fs.join(pattern, 'train-*.tfrecord')}"
    raise DataError(f"{key}={str(pattern)!r} matches no TFRecord files{hint}")


def _key(file_index, record_index):
    return file_index * (1 << 32) + record_index


def _file_list(files):
    return tf.data.Dataset.from_tensor_slices((np.arange(len(files), dtype=np.int64), files))


def _enumerated(file_index, path):
    """Records of one file, each with the file's index and its own."""
    return tf.data.TFRecordDataset(path).enumerate().map(
        lambda record_index, record: (file_index, record_index, record))


def _records(file_list):
    """Several files read in parallel: (file index, record index, serialized example)."""
    return file_list.interleave(_enumerated, num_parallel_calls=tf.data.AUTOTUNE)


@dataclass
class RecordScan:
    """What checking every record of some TFRecord files found, in file and record order.

    The good records' ``keys`` and ``labels``; the bad ones' ``bad_keys``, ``bad_origins``
    (the filename a record stores, or "") and ``bad_reasons``. ``infos``: each good record's
    header, for ``data inspect``; None when the result comes from a manifest.
    """

    files: list
    keys: np.ndarray
    labels: np.ndarray
    bad_keys: np.ndarray
    bad_origins: np.ndarray
    bad_reasons: np.ndarray
    infos: list | None = None

    @property
    def bad(self) -> list:
        """The bad records as BadFiles, named by this scan's spelling of their file."""
        named = []
        for key, origin, reason in zip(self.bad_keys, self.bad_origins, self.bad_reasons):
            file_index, record_index = divmod(int(key), 1 << 32)
            origin = f" ({origin})" if origin else ""
            named.append(BadFile(f"{self.files[file_index]} record {record_index}{origin}",
                                 str(reason)))
        return named


_REMEMBERED = ("keys", "labels", "bad_keys", "bad_origins", "bad_reasons")


@functools.cache
def _checker() -> str:
    """A digest of the code that judges records (this module and ``imagecheck``): a
    manifest made under other rules is not trusted."""
    digest = hashlib.sha256()
    for source in (__file__, imagecheck.__file__):
        with open(source, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def _identity(image_key, label_key, num_classes) -> list:
    """Besides the files, what a check's result depends on."""
    return [image_key, label_key, num_classes, _checker()]


def _check_keys(files, image_key, label_key):
    """Fail with the keys that exist when the configured ones are missing."""
    for record in tf.data.TFRecordDataset(files[0]).take(1):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        missing = [k for k in (image_key, label_key) if k not in features]
        if missing:
            raise DataError(
                f"{files[0]}: records have no feature {', '.join(map(repr, missing))}; set "
                f"data.image_key / data.label_key (features found: {', '.join(sorted(features))})"
            )


def scan_records(files, image_key, label_key, num_classes=None) -> RecordScan:
    """Read every record once and check its image header and label."""
    _check_keys(files, image_key, label_key)
    spec = {
        image_key: tf.io.FixedLenFeature([], tf.string, default_value=""),
        label_key: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        FILENAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    ds = _records(_file_list(files)).batch(256).map(
        lambda i, j, records: (i, j, tf.io.parse_example(records, spec)),
        num_parallel_calls=tf.data.AUTOTUNE)
    keys, labels, infos, bad_keys, bad_origins, bad_reasons = [], [], [], [], [], []
    try:
        for i, j, parsed in ds.as_numpy_iterator():
            for f, r, encoded, label, name in zip(i, j, parsed[image_key], parsed[label_key],
                                                  parsed[FILENAME_KEY]):
                info = imagecheck.check_bytes(encoded)
                problem = info.problem if encoded else f"no image in {image_key}"
                if problem is None and label < 0:
                    problem = f"no class id in {label_key}"
                elif problem is None and num_classes is not None and label >= num_classes:
                    problem = f"class id {label} but only {num_classes} class names"
                if problem is None:
                    keys.append(_key(int(f), int(r)))
                    labels.append(int(label))
                    infos.append(info)
                else:
                    bad_keys.append(_key(int(f), int(r)))
                    bad_origins.append(name.decode(errors="replace"))
                    bad_reasons.append(problem)
    except tf.errors.OpError as err:
        raise DataError(f"cannot read TFRecords {files[0]}...: {err.message.splitlines()[0]}; "
                        f"is {label_key} an int64 feature and every file a TFRecord?") from None
    # Parallel reading's order is tf.data's choice (its cycle length, by the cores); file
    # order is not: the hold-out by seed, and convert's manifest, match it on every machine.
    good, bad = np.argsort(keys), np.argsort(bad_keys)
    return RecordScan(files, np.asarray(keys, np.int64)[good], np.asarray(labels, np.int64)[good],
                      np.asarray(bad_keys, np.int64)[bad], np.asarray(bad_origins, str)[bad],
                      np.asarray(bad_reasons, str)[bad], [infos[k] for k in good])


def _remember(stamps, scan: RecordScan, image_key, label_key, num_classes) -> None:
    manifest.write(stamps, _identity(image_key, label_key, num_classes),
                   {name: getattr(scan, name) for name in _REMEMBERED})


def verify_records(files, stamps, image_key, label_key, num_classes=None) -> RecordScan:
    """``scan_records``, or its remembered result while the files (as ``stamps``, taken
    before), keys, class count and checking code are all the same: then no record is read."""
    known = manifest.read(stamps, _identity(image_key, label_key, num_classes))
    if known is not None:
        return RecordScan(files, **known)
    scan = scan_records(files, image_key, label_key, num_classes)
    _remember(stamps, scan, image_key, label_key, num_classes)
    return scan


def read_labels(labels, files) -> list | None:
    """Class names from ``labels`` (``data.labels``: a list or a file) or else from
    labels.txt beside the records; None when there is neither."""
    if isinstance(labels, list):
        return list(labels)
    path = labels or fs.join(fs.dirname(files[0]), LABELS_FILE)
    if not tf.io.gfile.exists(path):
        if labels:
            raise DataError(f"data.labels={labels!r}: no such file")
        return None
    with tf.io.gfile.GFile(path) as f:
        return [line.strip() for line in f if line.strip()]


@dataclass
class _Reader:
    """Builds splits of TFRecord files for one config: keys, seed and worker."""

    image_key: str
    label_key: str
    seed: int
    input_context: object = None

    def parse(self, file_index, record_index, record):
        spec = {self.image_key: tf.io.FixedLenFeature([], tf.string),
                self.label_key: tf.io.FixedLenFeature([], tf.int64)}
        example = tf.io.parse_single_example(record, spec)
        return example[self.image_key], example[self.label_key]

    def split(self, files, stamps, roles, want, members, part) -> Split:
        """The records of ``files`` whose role in ``roles`` (``_roles``; default: train) is
        ``want``: ``members``, their keys. The dataset asserts it yields exactly this worker's
        share of them, so a record lost on the way fails loudly instead of vanishing."""
        table = None
        if len(roles[0]):
            table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(*roles),
                                              _TRAIN)
        ctx = self.input_context
        shard_files = ctx is not None and len(files) >= ctx.num_input_pipelines
        members = np.asarray(members, dtype=np.int64)
        mine = members
        if ctx is not None:
            owner = (members >> 32) if shard_files else members
            mine = members[owner % ctx.num_input_pipelines == ctx.input_pipeline_id]

        def items(shuffle):
            file_list = _file_list(files)
            if shard_files:
                file_list = file_list.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
            if shuffle:
                file_list = file_list.shuffle(len(files), seed=self.seed,
                                              reshuffle_each_iteration=True)
            ds = _records(file_list)
            if table is not None:
                ds = ds.filter(lambda i, j, record: table.lookup(_key(i, j)) == want)
            if ctx is not None and not shard_files:
                ds = ds.filter(lambda i, j, record: _key(i, j) % ctx.num_input_pipelines
                               == ctx.input_pipeline_id)
            ds = ds.map(self.parse, num_parallel_calls=tf.data.AUTOTUNE)
            return ds.apply(tf.data.experimental.assert_cardinality(len(mine)))

        return Split(items, decode_image, len(members), f"tfrecord:{stamps}|{part}",
                     "file" if len(files) > 1 else "data", to_encoded=tf.identity)


def _roles(bad_keys, validation_keys=()) -> tuple:
    """(keys, roles) of the records that are not for training, as arrays: the filter's table
    is built from them in a millisecond (from Python lists of 20,000 keys: 30 ms a split)."""
    validation_keys = np.asarray(validation_keys, np.int64)
    return (np.concatenate([bad_keys, validation_keys]),
            np.repeat(np.array([_BAD, _VALIDATION], np.int64),
                      [len(bad_keys), len(validation_keys)]))


def load_tfrecord(data_cfg, seed, input_context=None) -> SourceData:
    if not data_cfg.path:
        raise DataError("data.source: tfrecord needs data.path, a TFRecord file pattern "
                        "such as records/train-*.tfrecord")
    files = list_records(data_cfg.path)
    class_names = read_labels(data_cfg.labels, files)
    n_classes = len(class_names) if class_names else None
    keys = data_cfg.image_key, data_cfg.label_key
    stamps = manifest.stamp(files)
    train = verify_records(files, stamps, *keys, n_classes)
    if class_names is None:
        class_names = [str(i) for i in range(train.labels.max(initial=-1) + 1)]
    reader = _Reader(*keys, seed, input_context)
    if data_cfg.validation_path:
        val_files = list_records(data_cfg.validation_path, "data.validation_path")
        val_stamps = manifest.stamp(val_files)
        val = verify_records(val_files, val_stamps, *keys, len(class_names))
        splits = (reader.split(files, stamps, _roles(train.bad_keys), _TRAIN, train.keys, "all"),
                  reader.split(val_files, val_stamps, _roles(val.bad_keys), _TRAIN, val.keys,
                               "all"))
        bad = train.bad + val.bad
    else:
        held = hold_out(train.labels, data_cfg.validation_fraction, seed)
        roles = _roles(train.bad_keys, train.keys[held])
        splits = (reader.split(files, stamps, roles, _TRAIN, train.keys[~held], f"train{seed}"),
                  reader.split(files, stamps, roles, _VALIDATION, train.keys[held],
                               f"validation{seed}"))
        bad = train.bad
    return SourceData(*splits, class_names, bad)


def image_example(encoded: bytes, label: int, class_name: str, info, filename: str):
    """A Model Garden style ``tf.train.Example`` around the image's original bytes."""
    def _bytes(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    return tf.train.Example(features=tf.train.Features(feature={
        IMAGE_KEY: _bytes(encoded),
        "image/format": _bytes(info.format.encode()),
        "image/height": _int(info.height),
        "image/width": _int(info.width),
        LABEL_KEY: _int(label),
        "image/class/text": _bytes(class_name.encode()),
        FILENAME_KEY: _bytes(filename.encode()),
    }))


def _write_shards(out_dir: str, split, scan, order, shards):
    """Write ``split``'s shards and their manifest; returns the file names.

    Every record is a file the folder scan passed, by the rules the record scan applies, so
    the manifest says what a scan would find, and the first training run reads no record
    before training."""
    parts = np.array_split(order, shards)
    names = []
    for index, part in enumerate(parts):
        name = shard_name(split, index, shards)
        # Hidden until complete: a pattern (list_records) never sees half a file.
        with (rundir.atomic_write(fs.join(out_dir, name)) as tmp,
              tf.io.TFRecordWriter(tmp) as writer):
            for i in part:
                path, label = scan.paths[i], scan.labels[i]
                with fs.open_file(path) as f:
                    data = f.read()
                relative = path[len(fs.join(scan.root, "")):]
                example = image_example(data, label, scan.class_names[label], scan.infos[i],
                                        relative)
                writer.write(example.SerializeToString())
        names.append(name)
    files = [fs.join(out_dir, name) for name in names]
    keys = np.concatenate([_key(f, np.arange(len(part))) for f, part in enumerate(parts)])
    written = RecordScan(files, keys, np.asarray(scan.labels, np.int64)[np.concatenate(parts)],
                         np.zeros(0, np.int64), np.zeros(0, str), np.zeros(0, str))
    _remember(manifest.stamp(files), written, IMAGE_KEY, LABEL_KEY, len(scan.class_names))
    return names


def convert_folder(src, out_dir, shards, validation_fraction, seed, on_bad_file) -> dict:
    """Image folder → ``train-*.tfrecord``, ``validation-*.tfrecord`` and ``labels.txt``.

    Each image's bytes are stored exactly as they are in its file (no re-encoding); examples
    are shuffled so every shard holds a mix of classes. Returns counts and file names.
    """
    scan = scan_folder(src, key="SRC_FOLDER")
    report_bad_files(scan.bad, on_bad_file, str(scan.root))
    if not scan.paths:
        raise DataError(f"no readable images under {scan.root}")
    out_dir = str(out_dir)
    existing = sorted(tf.io.gfile.glob(fs.join(out_dir, "*.tfrecord")))
    if existing:
        raise DataError(f"{out_dir} already holds TFRecords ({fs.basename(existing[0])}, ...); "
                        "choose an empty output folder")
    tf.io.gfile.makedirs(out_dir)
    held = hold_out(scan.labels, validation_fraction, seed)
    rng = np.random.default_rng(seed)
    result = {"class_names": scan.class_names, "skipped": len(scan.bad)}
    for split, members in (("train", ~held), ("validation", held)):
        order = rng.permutation(np.flatnonzero(members))
        if len(order) == 0:
            continue
        count = shards if split == "train" else max(1, round(shards * held.mean() / (1 - held.mean())))
        count = min(count, len(order))
        result[split] = {"examples": len(order),
                         "files": _write_shards(out_dir, split, scan, order, count)}
    rundir.write_text(fs.join(out_dir, LABELS_FILE), "\n".join(scan.class_names) + "\n")
    return result
