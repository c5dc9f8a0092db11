"""``load_dataset``: a config's data source, checked, through the one tf.data pipeline."""

import importlib
from dataclasses import dataclass

import tensorflow as tf

from tfvision.data.augment import mixes_labels
from tfvision.data.pipeline import CachePlan, Preset, make_pipeline, plan_cache
from tfvision.data.source import report_bad_files, require_examples

# data.source → "module:function" returning a source.SourceData; imported only when chosen.
SOURCES = {
    "digits": "tfvision.data.digits:load_digits",
    "folder": "tfvision.data.folder:load_folder",
    "tfrecord": "tfvision.data.tfrecord:load_tfrecord",
    "tfds": "tfvision.data.tfds_source:load_tfds",
}


@dataclass
class Dataset:
    """Batched train/validation pipelines and what the model and its export need to know.

    Sizes count the whole dataset (every worker's share). ``one_hot_labels``: labels are
    one-hot rows, not class ids (MixUp/CutMix or label smoothing on); compile the model's
    loss to match.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    class_names: list
    train_size: int
    validation_size: int
    cache: CachePlan
    one_hot_labels: bool = False
    validation_names: list | None = None  # file paths, in the validation batches' order


def describe_source(data_cfg) -> str:
    if data_cfg.source == "tfds":
        return f"TFDS dataset {data_cfg.name}"
    if data_cfg.source == "digits":
        return "the embedded digits"
    return f"{data_cfg.path}" + (f" and {data_cfg.validation_path}"
                                 if data_cfg.validation_path else "")


def load_source(config, input_context=None):
    """List and check the data of ``config.data`` (bad files reported): a SourceData."""
    data_cfg = config.data
    module, function = SOURCES[data_cfg.source].split(":")
    loader = getattr(importlib.import_module(module), function)
    source = loader(data_cfg, config.train.seed, input_context)
    where = describe_source(data_cfg)
    report_bad_files(source.bad_files, data_cfg.on_bad_file, where)
    require_examples(source.train.size, "train", where)
    require_examples(source.validation.size, "validation", where)
    return source


def load_dataset(config, global_batch_size=None, input_context=None) -> Dataset:
    """Build the train and validation pipelines for ``config`` (a tfvision Config).

    Bad files are found before anything is decoded: one warning names them all
    (``data.on_bad_file: skip``) or a DataError stops the run (``error``). With a
    ``tf.distribute.InputContext`` each input pipeline reads its own disjoint share and
    batches per replica; without one, each split carries the auto-shard policy that suits it
    (FILE for several TFRecord files, DATA otherwise).
    """
    data_cfg = config.data
    source = load_source(config, input_context)
    batch = global_batch_size or data_cfg.batch_size
    if input_context is not None:
        batch = input_context.get_per_replica_batch_size(batch)
    splits = {"train": source.train, "validation": source.validation}
    preset = Preset.of(config)
    one_hot = mixes_labels(data_cfg) or config.train.label_smoothing > 0
    cache = plan_cache(data_cfg, splits, preset)
    pipelines = {
        name: make_pipeline(
            split, data_cfg, preset, batch, training=name == "train",
            seed=config.train.seed, cache=cache.paths[name], num_classes=len(source.class_names),
            one_hot=one_hot,
            shard_policy=split.shard_policy if input_context is None
            else "off",  # already sharded at the source
        )
        for name, split in splits.items()
    }
    return Dataset(
        train=pipelines["train"],
        validation=pipelines["validation"],
        class_names=list(source.class_names),
        train_size=source.train.size,
        validation_size=source.validation.size,
        one_hot_labels=one_hot,
        cache=cache,
        validation_names=source.validation.names,
    )
