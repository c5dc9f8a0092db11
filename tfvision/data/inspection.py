"""``tfvision data inspect``: what a source holds, before training on it.

Classes, examples per split and class, image formats and size range (from headers: nothing
is decoded), and every bad file by name with the reason the decoders would reject it.
"""

from collections import Counter
from dataclasses import dataclass, field

from tfvision import fs
from tfvision.errors import DataError


@dataclass
class SplitReport:
    name: str
    per_class: Counter = field(default_factory=Counter)  # class id → examples
    formats: Counter = field(default_factory=Counter)
    heights: list = field(default_factory=list)
    widths: list = field(default_factory=list)

    def add(self, label, info):
        self.per_class[label] += 1
        if info.format:
            self.formats[info.format] += 1
            self.heights.append(info.height)
            self.widths.append(info.width)


@dataclass
class Report:
    kind: str
    where: str
    class_names: list
    splits: list
    bad: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def _folder(path: str) -> Report:
    from tfvision.data.folder import scan_folder

    scan = scan_folder(path, key="SOURCE")
    split = SplitReport("all")
    for label, info in zip(scan.labels, scan.infos):
        split.add(label, info)
    return Report("image folder", path, scan.class_names, [split], scan.bad,
                  [("training holds out data.validation_fraction of each class for validation "
                    "unless data.validation_path is set")])


def _tfrecords(files, where) -> Report:
    from tfvision.data.tfrecord import read_labels, scan_records

    groups = {}
    for f in files:
        name = fs.basename(f)
        groups.setdefault(name.split("-")[0] if "-" in name else "all", []).append(f)
    class_names = read_labels(None, files)
    splits, bad = [], []
    for name, members in sorted(groups.items(), key=lambda g: g[0] != "train"):
        scan = scan_records(members, "image/encoded", "image/class/label",
                            len(class_names) if class_names else None)
        split = SplitReport(f"{name} ({len(members)} files)")
        for label, info in zip(scan.labels, scan.infos):
            split.add(label, info)
        splits.append(split)
        bad += scan.bad
    if class_names is None:
        top = max((max(s.per_class, default=-1) for s in splits), default=-1)
        class_names = [str(i) for i in range(top + 1)]
    return Report("TFRecords", where, class_names, splits, bad,
                  [("feature keys image/encoded and image/class/label (data.image_key, "
                    "data.label_key)")])


def _tfds(name, data_dir) -> Report:
    from tfvision.data.tfds_source import supervised_keys, tfds_builder

    builder = tfds_builder(name, data_dir, download=False)
    image_key, label_key = supervised_keys(builder)
    shape = builder.info.features[image_key].shape
    splits = [SplitReport(f"{split} ({info.num_examples} examples)")
              for split, info in builder.info.splits.items()]
    return Report("TFDS", f"{name} {builder.version} in {builder.data_dir}",
                  list(builder.info.features[label_key].names), splits,
                  notes=[f"image shape {shape} (TFDS checks images when it prepares them)"])


def _digits() -> Report:
    from tfvision.data.digits import CLASS_NAMES, load_digits_arrays
    from tfvision.data.imagecheck import ImageInfo

    splits = []
    for name, (images, labels) in zip(("train", "validation"), load_digits_arrays()):
        split = SplitReport(name)
        for label in labels:
            split.add(int(label), ImageInfo("8-bit grey", *images.shape[1:3]))
        splits.append(split)
    return Report("embedded digits", "tfvision/data/digits.npz", CLASS_NAMES, splits)


def inspect_source(source: str, data_dir=None) -> Report:
    """SOURCE: ``digits``, an image folder, a folder of TFRecords (split by file-name
    prefix), a TFRecord file pattern, or a TFDS catalog name (never downloaded)."""
    path = fs.absolute(source)
    if source == "digits":
        return _digits()
    if fs.isdir(path):
        records = [fs.join(path, n) for n in fs.listdir(path) if ".tfrecord" in n
                   and not n.startswith(".")]
        return _tfrecords(records, path) if records else _folder(path)
    import tensorflow as tf  # a pattern may name gs:// files: only TensorFlow reads those
    files = sorted(tf.io.gfile.glob(source)) if any(c in source for c in "*?[") else []
    if files:
        return _tfrecords(files, source)
    if fs.isfile(path):
        raise DataError(f"{source} is neither an image folder nor TFRecords")
    if "/" in source:
        raise DataError(f"{source}: no such folder, and no files match it")
    return _tfds(source, data_dir)


def _range(values):
    return f"{min(values)}-{max(values)}" if values else "n/a"


def format_report(report: Report) -> str:
    names = report.class_names
    lines = [f"source: {report.kind} {report.where}",
             f"classes ({len(names)}): {', '.join(names)}"]
    for split in report.splits:
        total = sum(split.per_class.values())
        lines.append(f"split {split.name}: {total} readable images" if split.per_class
                     else f"split {split.name}")
        if split.per_class:
            counts = ", ".join(f"{names[k] if 0 <= k < len(names) else k}: {n}"
                               for k, n in sorted(split.per_class.items()))
            lines.append(f"  per class: {counts}")
            lines.append("  formats: " + ", ".join(f"{k} {n}" for k, n in
                                                   split.formats.most_common()))
            lines.append(f"  image size: height {_range(split.heights)}, "
                         f"width {_range(split.widths)}")
    lines += [f"note: {note}" for note in report.notes]
    if report.bad:
        lines.append(f"bad files ({len(report.bad)}):")
        lines += [f"  {bad.name}: {bad.reason}" for bad in report.bad]
    else:
        lines.append("bad files: none" if report.kind != "TFDS" else "bad files: not checked")
    return "\n".join(lines)
