"""Experiment configuration: five dataclass sections, loaded from YAML plus ``--set`` overrides.

Every key is declared here with its type and its rules (choices, range, list length), and a
section checks every value when it is made: by ``load_config``, by ``dataclasses.replace`` and
by Python code alike. So a typo or a bad value fails at load, before anything is written, and
the message names the key, what was given and what is valid. The resolved config is written
into the run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import operator
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import yaml

from tfvision import fs
from tfvision.errors import ConfigError

PACKAGED_CONFIGS = Path(__file__).parent / "configs"
RANDAUGMENT_MAX_MAGNITUDE = 10  # RandAugment magnitudes run from 0 to 10, as in the paper


class _Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where ``1e-4`` and ``1e30`` are strings; read them as the
    floats every user means (YAML 1.2 does)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def _read_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _opt(default, choices=None, minimum=None, maximum=None, below=None, length=None, help=""):
    """A config field with its validation rules kept beside its default.

    In a union each rule applies to the member it fits: ``choices`` to a string, the range
    (``minimum`` and ``maximum`` inclusive, ``below`` exclusive) to a number or to each item
    of a list, ``length`` to a list. So ``str | int`` with ``choices=("epoch",), minimum=1``
    reads "epoch or int >= 1".
    """
    meta = {"choices": choices, "minimum": minimum, "maximum": maximum, "below": below,
            "length": length, "help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


class _Section:
    """A config section: checks each value when it is made, so nothing downstream meets a
    bad one (an int given for a float key becomes a float, as Keras wants some of them)."""

    def __post_init__(self):
        hints = _hints(type(self))
        section = next(name for name, cls in SECTIONS.items() if cls is type(self))
        for f in dataclasses.fields(self):
            key = f"{section}.{f.name}"
            setattr(self, f.name, _checked(key, getattr(self, f.name), hints[f.name], f.metadata))


# Where a source reads a separate validation set; without one, it holds out
# data.validation_fraction of the training data.
_VALIDATION_SET = {"tfds": "validation_split", "folder": "validation_path",
                   "tfrecord": "validation_path"}


@dataclass
class DataConfig(_Section):
    source: str = _opt("digits", choices=("digits", "tfds", "folder", "tfrecord"))
    name: str | None = _opt(None, help="TFDS catalog name (source: tfds)")
    path: str | None = _opt(None, help="image folder or TFRecord file pattern")
    validation_path: str | None = _opt(
        None, help="validation image folder or TFRecord pattern; none: hold out "
        "validation_fraction of the training data (by train.seed)"
    )
    labels: str | list[str] | None = _opt(
        None, help="tfrecord class names: a labels file (default: labels.txt beside the "
        "records, as `tfvision data convert` writes) or a list"
    )
    image_key: str = _opt("image/encoded", help="tfrecord feature holding the encoded image")
    label_key: str = _opt("image/class/label", help="tfrecord feature holding the class id")
    data_dir: str | None = _opt(None, help="TFDS data_dir")
    download: bool = _opt(True, help="let TFDS download and prepare missing data")
    train_split: str = _opt("train")
    validation_split: str | None = _opt(
        None, help="source split for validation; none: hold out validation_fraction of train"
    )
    validation_fraction: float = _opt(0.2, minimum=0.0, below=1.0)
    image_size: int | list[int] = _opt(32, minimum=1, length=2, help="side, or [height, width]")
    batch_size: int = _opt(64, minimum=1, help="per replica")
    shuffle_buffer: int = _opt(10000, minimum=1)
    augment: str = _opt(
        "none", choices=("none", "flip", "crop_flip", "pad_crop_flip", "resized_crop_flip"),
        help="training only; crop_flip: pad-and-crop up to 64 px, random resized crop above",
    )
    crop_scale: list[float] = _opt(
        [0.08, 1.0], minimum=0.0, maximum=1.0, length=2,
        help="random resized crops: the range of their share of the original's area "
        "(torchvision's RandomResizedCrop)")
    crop_ratio: list[float] = _opt(
        [3 / 4, 4 / 3], minimum=0.01, length=2,
        help="random resized crops: the range of their width / height")
    randaugment: int = _opt(0, minimum=0, help="RandAugment operations per image (0: off)")
    randaugment_magnitude: int = _opt(
        9, minimum=0, maximum=RANDAUGMENT_MAX_MAGNITUDE, help="RandAugment strength, 0 to 10"
    )
    mixup: float = _opt(0.0, minimum=0.0, help="MixUp beta alpha (0: off; labels become soft)")
    cutmix: float = _opt(0.0, minimum=0.0, help="CutMix beta alpha (0: off; labels become soft)")
    eval_resize: str = _opt(
        "auto", choices=("auto", "squash", "center_crop"),
        help="evaluation and serving: squash to image_size, or resize the shorter side to "
        "image_size / crop_fraction and crop the centre (torchvision's eval preset); auto: "
        "center_crop for ResNet-18/34 with ImageNet or torchvision weights, else squash",
    )
    crop_fraction: float = _opt(
        0.875, minimum=0.05, maximum=1.0, help="center_crop: the crop's share of the resized "
        "shorter side (torchvision: 224 / 256)"
    )
    cache: str = _opt(
        "auto", choices=("auto", "memory", "disk", "none"),
        help="decoded images: auto picks memory, else disk, else none by their size",
    )
    cache_dir: str | None = _opt(
        None, help="disk cache directory, reused across runs (default: a temporary one)"
    )
    deterministic: bool = _opt(False, help="same batches for the same seed (slower)")
    autotune: str | bool = _opt(
        "auto", choices=("auto",), help="tf.data autotuning: auto (off on CPU-only hosts, "
        "where it takes cores from training; see BENCHMARKS.md), true or false"
    )
    on_bad_file: str = _opt(
        "skip", choices=("skip", "error"),
        help="skip: leave unreadable images out with one warning naming them; error: stop",
    )

    def __post_init__(self):
        super().__post_init__()
        other = _VALIDATION_SET.get(self.source)
        if self.validation_fraction == 0 and not (other and getattr(self, other)):
            instead = f", or give data.{other}" if other else ""
            raise ConfigError(f"data.validation_fraction=0 leaves data.source={self.source} no "
                              f"validation examples; set it above 0{instead}")


@dataclass
class ModelConfig(_Section):
    name: str = _opt("cnn", help="cnn, or a backbone name for transfer learning")
    filters: list[int] = _opt([32, 64], minimum=1)
    dense_units: int = _opt(128, minimum=1)
    pooling: str = _opt("max", choices=("max", "avg", "none"))
    dropout: float = _opt(0.0, minimum=0.0, below=1.0)
    weights: str | None = _opt(None, help="imagenet, a local weights file, or none")
    freeze: bool = _opt(
        True, help="transfer: phase 1 (train.epochs) trains only the new head on a frozen backbone"
    )

    @property
    def pretrained(self) -> str | None:
        """``weights`` with ``none`` (as YAML users write it) read as None."""
        return None if self.weights in (None, "none") else self.weights


@dataclass
class TrainConfig(_Section):
    epochs: int = _opt(10, minimum=1)
    optimizer: str = _opt("sgd", choices=("sgd", "momentum", "adam", "adamw"))
    learning_rate: float = _opt(0.01, minimum=0.0)
    momentum: float = _opt(0.9, minimum=0.0, maximum=1.0, help="for optimizer: momentum")
    weight_decay: float = _opt(0.0, minimum=0.0)
    schedule: str = _opt("constant", choices=("constant", "cosine", "step"))
    step_epochs: int = _opt(10, minimum=1, help="schedule: step decays every this many epochs")
    step_gamma: float = _opt(0.1, minimum=0.0)
    seed: int = _opt(42)
    top_k: int = _opt(5, minimum=1)
    label_smoothing: float = _opt(
        0.0, minimum=0.0, below=1.0, help="share of each label spread over all classes "
        "(torchvision's recipe: 0.1); labels then travel as one-hot rows")
    fine_tune_epochs: int = _opt(
        0, minimum=0, help="transfer: phase 2 epochs, backbone unfrozen, after train.epochs"
    )
    fine_tune_learning_rate: float | None = _opt(
        None, minimum=0.0, help="phase 2 learning rate (default: learning_rate / 10)"
    )
    unfreeze_from: str | int = _opt(
        "all", minimum=1, help="phase 2 trains the backbone from: all, a layer-name prefix "
        "(layer4, conv5, block6) or N (its last N blocks)"
    )
    backup_freq: str | int = _opt(
        "epoch", choices=("epoch",), minimum=1,
        help="back up for resuming every epoch, or every this many steps",
    )


@dataclass
class DistributeConfig(_Section):
    strategy: str = _opt(
        "auto",
        choices=("auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu"),
    )
    mixed_precision: str = _opt(
        "auto",
        choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"),
        help="auto: mixed_float16 on GPU, mixed_bfloat16 on TPU, float32 on CPU",
    )
    jit_compile: str | bool = _opt(
        "auto", choices=("auto",), help="XLA: auto (on for GPU), true or false"
    )
    steps_per_execution: str | int = _opt(
        "auto", choices=("auto",), minimum=1, help="training steps per tf.function call: auto "
        "(32 on TPU, 16 on CPU, 1 on GPU; under Mirrored only where a probe fit runs it) or a "
        "number"
    )
    scale_learning_rate: bool = _opt(
        False, help="multiply train.learning_rate by the number of replicas (linear scaling)"
    )


@dataclass
class ExportConfig(_Section):
    enabled: bool = _opt(True, help="export a SavedModel when training finishes")
    top_k: int = _opt(5, minimum=1)


@dataclass
class Config:
    name: str = "quickstart"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distribute: DistributeConfig = field(default_factory=DistributeConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path) -> None:
        with fs.open_file(path, "w") as f:
            f.write(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @property
    def image_hw(self) -> tuple[int, int]:
        size = self.data.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def eval_resize(self) -> str:
        """``data.eval_resize`` with ``auto`` resolved: torchvision's preset where the
        weights are torchvision's (what they were trained and measured with)."""
        if self.data.eval_resize != "auto":
            return self.data.eval_resize
        torchvision = self.model.name in TORCHVISION_MODELS and self.model.pretrained is not None
        return "center_crop" if torchvision else "squash"


# The models whose weights come from torchvision (tfvision.models.resnet).
TORCHVISION_MODELS = ("resnet18", "resnet34")


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "distribute": DistributeConfig,
    "export": ExportConfig,
}


def _suggest(word, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _members(annotation) -> tuple:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _type_ok(value, annotation) -> bool:
    if annotation is type(None):
        return value is None
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


_BOUNDS = (("minimum", ">=", operator.ge), ("maximum", "<=", operator.le),
           ("below", "<", operator.lt))


def _in_range(value, meta) -> bool:
    return all(meta[key] is None or ok(value, meta[key]) for key, _, ok in _BOUNDS)


def _conforms(value, member, meta) -> bool:
    if member is str:
        return not meta["choices"] or value in meta["choices"]
    if typing.get_origin(member) is list:
        return meta["length"] in (None, len(value)) and all(_in_range(v, meta) for v in value)
    return member not in (int, float) or _in_range(value, meta)


_NAMES = {int: ("int", "ints"), float: ("float", "floats"), str: ("string", "strings")}


def _valid(annotation, meta) -> str:
    """What a key accepts, in words: ``epoch or int >= 1``, ``auto, true or false``."""
    bounds = " and ".join(f"{op} {meta[key]}" for key, op, _ in _BOUNDS if meta[key] is not None)
    bounds = f" {bounds}" if bounds else ""
    forms = []
    for member in _members(annotation):
        if member is type(None):
            forms.append("null")
        elif member is bool:
            forms += ["true", "false"]
        elif member is str:
            forms += meta["choices"] or ["string"]
        elif typing.get_origin(member) is list:
            (item,) = typing.get_args(member)
            count = f"{meta['length']} " if meta["length"] else ""
            forms.append(f"a list of {count}{_NAMES[item][1]}{bounds if item is not str else ''}")
        else:
            forms.append(_NAMES[member][0] + bounds)
    return forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} or {forms[-1]}"


def _checked(key: str, value, annotation, meta):
    """``value``, an int given for a float as a float; a ConfigError naming ``key`` if it is
    not valid."""
    member = next((m for m in _members(annotation) if _type_ok(value, m)), None)
    if member is not None and _conforms(value, member, meta):
        return float(value) if member is float else value
    hint = _suggest(value, meta["choices"]) if isinstance(value, str) and meta["choices"] else ""
    raise ConfigError(f"{key} must be {_valid(annotation, meta)}, got {value!r}"
                      + (f"; {hint.rstrip()}" if hint else ""))


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _build_section(section: str, values) -> object:
    cls = SECTIONS[section]
    if not isinstance(values, dict):
        raise ConfigError(f"section {section!r} must be a mapping of keys to values")
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in fields:
            raise ConfigError(
                f"unknown config key '{section}.{key}'; {_suggest(key, fields)}"
                f"valid keys in {section}: {', '.join(fields)}"
            )
    return cls(**values)


def config_from_dict(raw: dict, name: str = "custom") -> Config:
    """Validate a nested dict (as read from YAML) into a Config."""
    raw = dict(raw or {})
    name = raw.pop("name", name)
    for section in raw:
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown config section {section!r}; {_suggest(section, SECTIONS)}"
                f"valid sections: name, {', '.join(SECTIONS)}"
            )
    return Config(name=name, **{s: _build_section(s, raw.get(s, {})) for s in SECTIONS})


def parse_override(text: str) -> tuple[str, str, object]:
    """``section.key=value`` with the value parsed as YAML (so 3 is an int, [1, 2] a list)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    path, raw_value = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    try:
        value = _read_yaml(raw_value)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from None
    return section, key, value


def resolve_config_path(config: str) -> str:
    """A path to a YAML file (local or a URL), or the name of a config shipped with tfvision."""
    if fs.isfile(config):
        return config
    packaged = PACKAGED_CONFIGS / f"{config}.yaml"
    if Path(config).suffix == "" and packaged.is_file():
        return str(packaged)
    shipped = sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))
    raise ConfigError(
        f"config file {config!r} not found; give a path to a YAML file or one of: "
        f"{', '.join(shipped)}"
    )


def load_config(config: str | Path | None = None, overrides=()) -> Config:
    """Read a YAML config (default: the quickstart) and apply ``section.key=value`` overrides."""
    path = resolve_config_path(str(config) if config is not None else "quickstart")
    try:
        with fs.open_file(path, "r") as f:
            raw = _read_yaml(f.read()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    name = fs.basename(path).rsplit(".", 1)[0]
    return config_from_dict(_apply_overrides(raw, overrides, path), name=name)


def override_config(config: Config, overrides=()) -> Config:
    """``config`` with ``section.key=value`` overrides applied, validated as at load."""
    if not overrides:
        return config
    return config_from_dict(_apply_overrides(config.to_dict(), overrides, "the config"),
                            name=config.name)


def _apply_overrides(raw: dict, overrides, where) -> dict:
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"section {section!r} in {where} must be a mapping")
        raw[section][key] = value
    return raw


def diff_configs(old: Config, new: Config) -> list[str]:
    """Keys whose values differ, as ``section.key``: to refuse resuming a run with another config."""
    changed = []
    old_d, new_d = old.to_dict(), new.to_dict()
    for section in SECTIONS:
        for key, value in new_d[section].items():
            if old_d[section].get(key) != value:
                changed.append(f"{section}.{key}")
    return changed
