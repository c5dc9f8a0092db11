"""The run directory: its layout, its config.yaml, its model files, and atomic writes.

Everything a run makes lives in one directory (``RUN_FILES``); training writes it, and
export, evaluation, inference and the CLI read it, all through this module, which imports
none of them (see the layer order in ``tests/test_layers.py``). Paths go through
``tf.io.gfile``, so a run directory may be local or on any filesystem TensorFlow reads
(``gs://`` on TPU VMs and cloud jobs).
"""

import uuid
from contextlib import contextmanager

import tensorflow as tf
import yaml

from tfvision import fs
from tfvision.config import Config, config_from_dict, diff_configs
from tfvision.errors import ConfigError, ModelError
from tfvision.fs import join

RUN_FILES = {
    "config": "config.yaml",
    "model": "model.keras",
    "best": "best.keras",
    "history": "history.csv",
    "class_names": "class_names.txt",
    "backup": "backup",
    "logs": "logs",
    "export": "export",
    "tflite": "tflite",
}
# What shows that training got going: a run holding any of these is resumed, not restarted.
TRAINING_STATE = ("backup", "history", "best", "model")


def run_file(run_dir, key) -> str:
    return join(run_dir, RUN_FILES[key])


def default_run_dir(config: Config) -> str:
    return join("runs", config.name)


def default_export_dir(run_dir, config: Config, fmt="saved_model") -> str:
    """``RUN_DIR/export/<config name>`` (a TF Serving model folder, so ``RUN_DIR/export`` can
    be served) or, for TFLite, ``RUN_DIR/tflite/<config name>``."""
    return join(run_file(run_dir, "export" if fmt == "saved_model" else "tflite"), config.name)


@contextmanager
def atomic_write(path):
    """Yield a temporary path beside ``path``; once the body has written it, rename it over
    ``path``. A reader never sees half a file: a killed writer leaves only a hidden temporary.

    On a local disk the rename is atomic. Object stores have none: ``tf.io.gfile.rename``
    copies, then deletes, so a reader may see the old file until the new one is complete,
    never a partial one.
    """
    path = str(path)
    head, name = fs.split(path)
    tmp = join(head or ".", f".{uuid.uuid4().hex[:8]}.tmp-{name}")
    try:
        yield tmp
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


def write_text(path, text: str) -> None:
    with atomic_write(path) as tmp, tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)


def read_text(path) -> str:
    with tf.io.gfile.GFile(str(path)) as f:
        return f.read()


def holds_training_state(run_dir) -> bool:
    return any(tf.io.gfile.exists(run_file(run_dir, key)) for key in TRAINING_STATE)


def load_run_config(run_dir) -> Config:
    path = run_file(run_dir, "config")
    if not tf.io.gfile.exists(path):
        raise ModelError(f"{run_dir} is not a tfvision run directory (no {RUN_FILES['config']})")
    name = fs.basename(run_dir)
    return config_from_dict(yaml.safe_load(read_text(path)), name=name)


def save_config(run_dir, config: Config) -> None:
    """Write config.yaml; refuse a run dir that holds another config's training.

    A run that stopped before training (a missing folder, a bad file) holds nothing to
    resume, so the corrected config its error asked for simply replaces the old one.
    """
    tf.io.gfile.makedirs(str(run_dir))
    if tf.io.gfile.exists(run_file(run_dir, "config")):
        changed = diff_configs(load_run_config(run_dir), config)
        if changed and holds_training_state(run_dir):
            raise ConfigError(
                f"{run_dir} holds a run with a different config ({', '.join(changed)} "
                "changed); use another --run-dir, or the same settings to resume it"
            )
        if changed:
            print(f"{run_dir}: never trained, so its config is replaced "
                  f"({', '.join(changed)} changed)")
    write_text(run_file(run_dir, "config"), yaml.safe_dump(config.to_dict(), sort_keys=False))


def write_class_names(run_dir, class_names) -> None:
    write_text(run_file(run_dir, "class_names"), "\n".join(class_names) + "\n")


def read_class_names(run_dir) -> list:
    path = run_file(run_dir, "class_names")
    if not tf.io.gfile.exists(path):
        raise ModelError(f"{run_dir} has no {RUN_FILES['class_names']}")
    return read_text(path).splitlines()


def class_names_or_ids(run_dir, count) -> list:
    """The run's class names; ``"0"``, ``"1"``, ... for a model file outside a run."""
    try:
        return read_class_names(run_dir)
    except ModelError:
        return [str(i) for i in range(count)]


def resolve_model_path(target) -> tuple[str, str]:
    """``(model file, run dir)`` for a run directory or a ``.keras`` file inside one."""
    target = str(target).rstrip("/")
    if not tf.io.gfile.exists(target):
        raise ModelError(f"{target} does not exist; give a run directory or a .keras model file")
    if tf.io.gfile.isdir(target):
        for key in ("model", "best"):
            if tf.io.gfile.exists(run_file(target, key)):
                return run_file(target, key), target
        raise ModelError(f"{target} holds no trained model ({RUN_FILES['model']} or "
                         f"{RUN_FILES['best']}); train it first with `tfvision train`")
    if not target.endswith(".keras"):
        raise ModelError(f"{target} is not a .keras model file or a run directory")
    return target, fs.dirname(target) or "."


def save_model(model, path) -> None:
    """Write a ``.keras`` file so that a killed process never leaves a half-written one."""
    with atomic_write(path) as tmp:  # keeps the .keras suffix Keras insists on
        model.save(tmp)
