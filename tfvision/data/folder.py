"""Image folders: one subfolder per class, any mix of JPEG, PNG, GIF, BMP and WebP.

Class names are the subfolder names, sorted. Every file is checked once, up front, by its
header (``imagecheck``); files are read by content, not by extension, so a PNG named
``.jpg`` is fine and a text file named ``.jpg`` is reported. Hidden files are ignored.
"""

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tfvision import fs
from tfvision.data.imagecheck import ImageInfo, check_file
from tfvision.data.source import BadFile, SourceData, Split, hold_out
from tfvision.errors import DataError

_SCAN_THREADS = 16  # checking reads a few bytes per file: bound by I/O latency, not CPU


@dataclass
class FolderScan:
    """The readable images of a class folder tree, with what their headers say."""

    root: str
    class_names: list
    paths: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    infos: list = field(default_factory=list)
    stats: list = field(default_factory=list)  # (size, mtime_ns), for the cache fingerprint
    bad: list = field(default_factory=list)


def _visible_files(directory):
    for dirpath, dirnames, filenames in fs.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield fs.join(dirpath, name)


def _check(path) -> tuple[ImageInfo, tuple]:
    try:
        return check_file(path), fs.stamp(path)
    except OSError as err:
        return ImageInfo(problem=f"cannot read ({err.strerror or err})"), (0, 0)


def scan_folder(root, class_names=None, key="data.path") -> FolderScan:
    """List and check every file under ``root``'s class folders.

    With ``class_names`` (a validation folder), subfolders must be among the training
    classes and labels follow that list; otherwise classes whose folder holds no readable
    image are left out and reported.
    """
    root = fs.absolute(root)
    if not fs.isdir(root):
        raise DataError(f"{key}={str(root)!r} is not a folder; give a folder with one "
                        "subfolder of images per class")
    entries = [n for n in fs.listdir(root) if not n.startswith(".")]
    folders = [n for n in entries if fs.isdir(fs.join(root, n))]
    if not folders:
        raise DataError(f"{root} has no class subfolders; put each class's images in a "
                        f"subfolder of its own ({root}/cats/1.jpg, {root}/dogs/2.jpg)")
    bad = [BadFile(fs.join(root, n), "not inside a class folder")
           for n in entries if n not in folders]
    if class_names is not None:
        unknown = [name for name in folders if name not in class_names]
        if unknown:
            raise DataError(f"{root} has class folders the training data does not: "
                            f"{', '.join(unknown)} (training classes: {', '.join(class_names)})")
    files = {name: list(_visible_files(fs.join(root, name))) for name in folders}
    with ThreadPoolExecutor(_SCAN_THREADS) as pool:
        checked = {name: list(pool.map(_check, paths)) for name, paths in files.items()}

    scan = FolderScan(root, list(class_names) if class_names is not None else [], bad=bad)
    for name in folders:
        good = [(path, info, stat) for path, (info, stat) in zip(files[name], checked[name])
                if info.ok]
        scan.bad += [BadFile(path, info.problem)
                     for path, (info, _) in zip(files[name], checked[name]) if not info.ok]
        if class_names is None:
            if not good:
                what = "empty class folder" if not files[name] else "no readable images"
                scan.bad.append(BadFile(fs.join(root, name, ""), f"{what}; class left out"))
                continue
            scan.class_names.append(name)
        label = scan.class_names.index(name)
        for path, info, stat in good:
            scan.paths.append(path)
            scan.labels.append(label)
            scan.infos.append(info)
            scan.stats.append(stat)
    return scan


def _split(scan: FolderScan, index, seed, input_context) -> Split:
    # TensorFlow only from here on: `data inspect` scans a folder without it.
    import tensorflow as tf

    from tfvision.data.pipeline import decode_image

    paths = np.asarray(scan.paths, dtype=str)[index]
    labels = np.asarray(scan.labels, dtype=np.int64)[index]
    digest = hashlib.sha1()
    for i in index:
        digest.update(f"{scan.paths[i]}|{scan.labels[i]}|{scan.stats[i]}\n".encode())

    def items(shuffle):
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        if input_context is not None:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        if shuffle:
            ds = ds.shuffle(max(len(paths), 1), seed=seed, reshuffle_each_iteration=True)
        return ds

    def to_image(path):
        return decode_image(tf.io.read_file(path))

    return Split(items, to_image, len(paths), f"folder:{digest.hexdigest()}",
                 to_encoded=tf.io.read_file,
                 names=paths.tolist() if input_context is None else None)


def load_folder(data_cfg, seed, input_context=None) -> SourceData:
    if not data_cfg.path:
        raise DataError("data.source: folder needs data.path, a folder with one subfolder "
                        "of images per class")
    train = scan_folder(data_cfg.path)
    if not train.class_names:
        raise DataError(f"no readable images under {train.root}:\n" + "\n".join(
            f"  {bad.name}: {bad.reason}" for bad in train.bad))
    everything = np.arange(len(train.paths))
    if data_cfg.validation_path:
        val = scan_folder(data_cfg.validation_path, train.class_names, "data.validation_path")
        train_split = _split(train, everything, seed, input_context)
        val_split = _split(val, np.arange(len(val.paths)), seed, input_context)
        bad = train.bad + val.bad
    else:
        held = hold_out(train.labels, data_cfg.validation_fraction, seed)
        train_split = _split(train, everything[~held], seed, input_context)
        val_split = _split(train, everything[held], seed, input_context)
        bad = train.bad
    return SourceData(train_split, val_split, train.class_names, bad)
