"""What every data source hands the pipeline, and the rules all sources share.

A source lists and checks its data once, up front (so bad files are named before training),
holds out a validation split when it has none, and returns undecoded items: file paths,
encoded bytes or, for the embedded digits, pixels. Decoding happens later, in parallel, in
the one pipeline (``pipeline.py``).
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tfvision.errors import DataError


class BadFilesWarning(UserWarning):
    """Files left out of training under ``data.on_bad_file: skip`` (named in the message)."""


@dataclass(frozen=True)
class BadFile:
    name: str  # a path, "shard.tfrecord record 17", or a class folder
    reason: str


@dataclass
class Split:
    """One split, undecoded.

    ``items(shuffle)`` yields ``(x, int64 label)``; with ``shuffle`` the source reshuffles its
    file order every epoch (cheap, before any decoding). ``to_image`` turns one ``x`` into a
    uint8 image [H, W, C]; the pipeline runs it in parallel. ``fingerprint`` identifies the
    content, so a disk cache is never reused for other data. ``shard_policy``: how
    tf.distribute splits it between workers, a ``tf.data.experimental.AutoShardPolicy`` name:
    ``"file"`` for a split in several TFRecord files (each worker reads its own files; needs
    at least as many files as workers), else ``"data"``. (A name, so this module and the
    folder scan need no TensorFlow.) ``to_encoded`` turns one ``x`` into the original's
    encoded bytes, for crops cut from originals; None where there are none (pixels).
    ``names``: a readable name per item in the order of ``items(False)`` (file paths), for
    sources that have one; reports name examples by it.
    """

    items: Callable  # (shuffle: bool) -> tf.data.Dataset
    to_image: Callable
    size: int
    fingerprint: str
    shard_policy: str = "data"
    to_encoded: Callable | None = None
    names: list | None = None


@dataclass
class SourceData:
    train: Split
    validation: Split
    class_names: list
    bad_files: list = field(default_factory=list)


def hold_out(labels, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the validation examples: ``fraction`` of each class, chosen by ``seed``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        mask[rng.permutation(members)[: round(len(members) * fraction)]] = True
    return mask


def report_bad_files(bad_files, on_bad_file: str, where: str) -> None:
    """One warning (skip) or one error (error) naming every bad file, with their count."""
    if not bad_files:
        return
    listing = "\n".join(f"  {bad.name}: {bad.reason}" for bad in bad_files)
    count = f"{len(bad_files)} unreadable item{'s' if len(bad_files) > 1 else ''}"
    if on_bad_file == "error":
        raise DataError(
            f"{count} in {where} (data.on_bad_file is error; fix or remove them, or set "
            f"data.on_bad_file: skip to train without them):\n{listing}"
        )
    warnings.warn(f"skipped {count} in {where} (data.on_bad_file: skip):\n{listing}",
                  BadFilesWarning, stacklevel=3)


def require_examples(size: int, split: str, where: str) -> None:
    if size == 0:
        hint = ("set data.validation_fraction above 0 or give data.validation_path"
                if split == "validation" else "check data.path")
        raise DataError(f"the {split} split of {where} holds no readable examples; {hint}")
