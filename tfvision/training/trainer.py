"""Training and evaluation: config → data → model under a strategy → ``model.fit`` → run dir.

A run directory holds everything a run made (``tfvision.rundir``); re-running the same
command on it resumes from the last backup, and on a finished one does nothing.
"""

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from tfvision import fs, rundir
from tfvision.config import Config
from tfvision.data.dataset import load_dataset
from tfvision.data.pipeline import Preset, resolve_autotune
from tfvision.evaluation.report import evaluate
from tfvision.export.savedmodel import export_model
from tfvision.models import build_model, first_unfrozen, load_model, unfreeze
from tfvision.training.callbacks import backed_up_epochs, read_history, run_callbacks
from tfvision.training.cluster import (
    DIGEST_LABEL,
    WORKER_DONE,
    current_task,
    side_effect_dir,
    weights_digest,
)
from tfvision.training.strategy import (
    describe,
    dtype_policy,
    for_strategy,
    make_strategy,
    resolve_distribute,
)


@dataclass
class TrainResult:
    """Paths are ``pathlib.Path`` for local ones, the URL string for others (pathlib would
    fold ``gs://`` into ``gs:/``)."""

    run_dir: Path | str
    model: keras.Model
    class_names: list
    metrics: dict
    export_path: Path | str | None

    def __post_init__(self):
        self.run_dir = fs.user_path(self.run_dir)
        self.export_path = self.export_path and fs.user_path(self.export_path)


def resolve_run_dir(config: Config, run_dir=None) -> str:
    """This process' run dir: ``run_dir`` (default ``runs/<config name>``), or its own one
    beside it on a non-chief worker."""
    return current_task().run_dir(run_dir or rundir.default_run_dir(config))


def resume_point(run_dir, config: Config) -> str:
    """Where re-running the same command picks ``run_dir`` up: from its last backup."""
    backup = rundir.run_file(run_dir, "backup")
    done = backed_up_epochs(fs.join(backup, FINE_TUNE_BACKUP))
    if done is None:
        done = (config.train.epochs if tf.io.gfile.exists(fs.join(backup, PHASE1_MODEL))
                else backed_up_epochs(backup))
    if done is None:
        return "from its first epoch (no backup was written yet)"
    total = config.train.epochs + config.train.fine_tune_epochs
    return f"at epoch {done + 1} of {total}, from its last backup"


def make_optimizer(train_cfg, steps_per_epoch):
    lr = train_cfg.learning_rate
    total = max(train_cfg.epochs * steps_per_epoch, 1)
    if train_cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=total)
    elif train_cfg.schedule == "step":
        lr = keras.optimizers.schedules.ExponentialDecay(
            lr, train_cfg.step_epochs * steps_per_epoch, train_cfg.step_gamma, staircase=True
        )
    decay = train_cfg.weight_decay or None
    if train_cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, weight_decay=decay)
    if train_cfg.optimizer == "momentum":
        return keras.optimizers.SGD(lr, momentum=train_cfg.momentum, weight_decay=decay)
    if train_cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr, weight_decay=decay)
    return keras.optimizers.AdamW(lr, weight_decay=train_cfg.weight_decay or 0.004)


def compile_model(model, train_cfg, num_classes, steps_per_epoch, one_hot_labels=False,
                  **compile_options):
    """Cross-entropy on logits; ``one_hot_labels`` when the data's labels are one-hot rows
    (``Dataset.one_hot_labels``: MixUp/CutMix make them soft; label smoothing needs them),
    else class ids."""
    top_k = min(train_cfg.top_k, num_classes)
    if one_hot_labels:
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=train_cfg.label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                   keras.metrics.TopKCategoricalAccuracy(k=top_k, name="top_k_accuracy")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                   keras.metrics.SparseTopKCategoricalAccuracy(k=top_k, name="top_k_accuracy")]
    model.compile(optimizer=make_optimizer(train_cfg, steps_per_epoch), loss=loss,
                  metrics=metrics, **compile_options)


REPORT_DIR = "report"  # the evaluation report on the validation split, when training ends
PHASE1_MODEL = "phase1.keras"  # resume state: kept in the backup dir, deleted with it
FINE_TUNE_BACKUP = "fine_tune"


def fit_phases(model, fit, config, train_cfg, backup_dir, strategy, steps_per_epoch,
               **compile_options):
    """Phase 1 (``train.epochs``), then, with ``train.fine_tune_epochs``, phase 2: the
    transfer model's backbone unfrozen from ``train.unfreeze_from`` (a pretrained one's
    BatchNorm kept frozen) and recompiled at ``train.fine_tune_learning_rate``.

    ``fit(model, phase_cfg, backup_dir, initial_epoch)`` runs one phase. Phase 2 always
    starts from the phase-1 model saved atomically in the backup dir, so a run resumed past
    the boundary skips phase 1 and takes the same path as an uninterrupted one. Phase 2 has
    its own backup and numbers its epochs on from phase 1's.
    """
    if not train_cfg.fine_tune_epochs:
        fit(model, train_cfg, backup_dir, 0)
        return model
    first_unfrozen(model, train_cfg.unfreeze_from)  # a bad value fails now, not after phase 1
    phase1 = fs.join(backup_dir, PHASE1_MODEL)
    if tf.io.gfile.exists(phase1):
        print(f"phase 1 finished earlier ({phase1}); going on with phase 2 (fine-tuning)")
    else:
        print(f"phase 1 of 2: {train_cfg.epochs} epochs, {trainable_parameters(model)} trainable "
              "parameters")
        fit(model, train_cfg, backup_dir, 0)
        tf.io.gfile.makedirs(backup_dir)
        rundir.save_model(model, phase1)
    learning_rate = train_cfg.fine_tune_learning_rate
    if learning_rate is None:
        learning_rate = train_cfg.learning_rate / 10
    elif config.distribute.scale_learning_rate:
        learning_rate *= strategy.num_replicas_in_sync
    fine_cfg = dataclasses.replace(
        train_cfg, epochs=train_cfg.fine_tune_epochs, learning_rate=learning_rate
    )
    with strategy.scope():
        model = load_model(phase1)
        unfreeze(model, train_cfg.unfreeze_from,
                 freeze_batchnorm=config.model.pretrained is not None)
        compile_model(model, fine_cfg, model.output_shape[-1], steps_per_epoch,
                      **compile_options)
    print(f"phase 2 of 2: {fine_cfg.epochs} epochs at learning rate {learning_rate:g}, "
          f"backbone unfrozen from {train_cfg.unfreeze_from}: {trainable_parameters(model)} trainable "
          "parameters")
    fit(model, fine_cfg, fs.join(backup_dir, FINE_TUNE_BACKUP), train_cfg.epochs)
    return model


def trainable_parameters(model) -> int:
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def _final_metrics(run_dir):
    rows = read_history(rundir.run_file(run_dir, "history"))
    return {k: float(v) for k, v in rows[-1].items() if k != "epoch" and v} if rows else {}


def train(config: Config, run_dir=None, verbose=None) -> TrainResult:
    """Train ``config`` in ``run_dir`` (default ``runs/<config name>``), resuming if unfinished."""
    task = current_task()
    run_dir = resolve_run_dir(config, run_dir)
    distribute, auto_choices = resolve_distribute(config.distribute)
    data_cfg = dataclasses.replace(config.data, autotune=resolve_autotune(config.data.autotune))
    config = dataclasses.replace(config, distribute=distribute, data=data_cfg)
    rundir.save_config(run_dir, config)
    model_path = rundir.run_file(run_dir, "model")
    if not task.is_chief and tf.io.gfile.exists(fs.join(run_dir, WORKER_DONE)):
        print(f"{run_dir}: worker {task.index} already finished this run; nothing to train.")
        return TrainResult(run_dir, None, [], {}, None)
    if tf.io.gfile.exists(model_path):
        print(f"{run_dir} is already complete ({fs.basename(model_path)} exists); "
              "nothing to train.")
        model = load_model(model_path)
        class_names = rundir.read_class_names(run_dir)
        return TrainResult(run_dir, model, class_names, _final_metrics(run_dir), None)

    strategy = make_strategy(distribute)  # first: MultiWorkerMirrored must precede other ops
    keras.utils.set_random_seed(config.train.seed)
    replicas = strategy.num_replicas_in_sync
    global_batch = config.data.batch_size * replicas
    data = load_dataset(config, global_batch_size=global_batch)
    steps_per_epoch = max(data.train_size // global_batch, 1)  # training drops the remainder
    train_cfg = config.train
    if distribute.scale_learning_rate:
        train_cfg = dataclasses.replace(train_cfg, learning_rate=train_cfg.learning_rate * replicas)
    print(describe(distribute, auto_choices, strategy, global_batch, train_cfg.learning_rate))
    print(f"data: {data.train_size} training and {data.validation_size} validation images; "
          f"cache {data.cache}; tf.data autotune {'on' if data_cfg.autotune else 'off'}")
    with strategy.scope(), dtype_policy(distribute.mixed_precision):
        model = build_model(config.model, len(data.class_names), (*config.image_hw, 3))
        compile_model(model, train_cfg, len(data.class_names), steps_per_epoch,
                      one_hot_labels=data.one_hot_labels, jit_compile=distribute.jit_compile,
                      steps_per_execution=distribute.steps_per_execution)
    rundir.write_class_names(run_dir, data.class_names)

    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    with side_effect_dir(run_dir, task) as out_dir:  # a temporary dir on non-chief workers
        def fit(model, phase_cfg, backup_dir, initial_epoch):
            model.fit(
                for_strategy(data.train, strategy),
                validation_data=data.validation,
                shuffle=False,  # the pipeline shuffles, with the run's seed
                initial_epoch=initial_epoch,
                epochs=initial_epoch + phase_cfg.epochs,
                callbacks=run_callbacks(out_dir, backup_dir, config.train.backup_freq),
                verbose=verbose,
            )

        backup_dir = rundir.run_file(run_dir, "backup")
        model = fit_phases(model, fit, config, train_cfg, backup_dir, strategy,
                           steps_per_epoch, one_hot_labels=data.one_hot_labels,
                           jit_compile=distribute.jit_compile,
                           steps_per_execution=distribute.steps_per_execution)
        rundir.save_model(model, rundir.run_file(out_dir, "model"))
        export_path = None
        if config.export.enabled:
            export_path = export_model(
                model, rundir.default_export_dir(out_dir, config), data.class_names,
                top_k=config.export.top_k, preset=Preset.of(config),
                explain=config.export.explain,
            )
        metrics = _final_metrics(out_dir)
        if task.is_chief:
            report_dir = fs.join(out_dir, REPORT_DIR)
            evaluate(out_dir, config, model=model, dataset=data, report_dir=report_dir,
                     pictures="auto")
            print(f"report: {report_dir}")
    fs.rmtree(backup_dir)  # kept until model.keras exists
    if task.num_workers > 1:
        digest = weights_digest(model)
        print(f"{DIGEST_LABEL} {digest}")
        if not task.is_chief:
            rundir.write_text(fs.join(run_dir, WORKER_DONE), digest + "\n")
            export_path = None
    return TrainResult(run_dir, model, data.class_names, metrics, export_path)
