"""Callbacks that make a run directory complete and resumable."""

import csv
import functools
import inspect
import io
import json
import math
import re

import keras
import numpy as np
import tensorflow as tf

from tfvision import fs, rundir
from tfvision.errors import TrainingError


def read_history(path):
    """Rows of a history.csv as dicts (empty when absent)."""
    if not tf.io.gfile.exists(str(path)):
        return []
    return list(csv.DictReader(io.StringIO(rundir.read_text(path))))


def best_so_far(path, monitor):
    """Best value of ``monitor`` recorded in history.csv, so a resumed run keeps its best checkpoint."""
    values = [float(row[monitor]) for row in read_history(path) if row.get(monitor)]
    return max(values) if values else None


def backed_up_epochs(backup_dir) -> int | None:
    """How many epochs the backup in ``backup_dir`` has finished (None: no backup)."""
    path = fs.join(backup_dir, "training_metadata.json")
    if not tf.io.gfile.exists(path):
        return None
    return json.loads(rundir.read_text(path))["epoch"]


class HistoryCSV(keras.callbacks.Callback):
    """history.csv with each epoch exactly once, even when a run is killed and resumed.

    Keras' CSVLogger appends blindly, so an epoch logged just before a kill is logged again
    when it is re-run. This callback drops, when the first epoch of a ``fit`` begins, the
    rows at or past that epoch (the one training resumes from), then writes the file anew,
    atomically, after each finished epoch and before the backup of that epoch is written.
    Rewriting, not appending: object stores (``gs://``) cannot append, and the file is small.
    """

    def __init__(self, path):
        super().__init__()
        self.path = str(path)
        self._rows = None

    def on_train_begin(self, logs=None):
        self._rows = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._rows is None:
            self._rows = [row for row in read_history(self.path) if int(row["epoch"]) < epoch]
            self._write()

    def on_epoch_end(self, epoch, logs=None):
        self._rows.append({"epoch": epoch,
                           **{k: f"{float(v):.6g}" for k, v in (logs or {}).items()}})
        self._write()

    def _write(self):
        text = io.StringIO()
        if self._rows:
            writer = csv.DictWriter(text, fieldnames=list(self._rows[0]), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self._rows)
        rundir.write_text(self.path, text.getvalue())


class Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that writes atomically and is deleted by the trainer.

    Four fixes over Keras' callback: each file is written beside the backup and renamed
    over it (Keras writes in place, so a kill during the first backup left a corrupt file
    that made the run unresumable); the epoch in progress is recorded for step-based backups
    (Keras only updates it at epoch end, so after a resume a mid-epoch backup would claim
    epoch 0); non-finite weights stop the run instead of replacing the last good backup;
    and the backup survives ``on_train_end``: the trainer deletes it once ``model.keras`` is
    safely written, so a kill in between never restarts from scratch.
    """

    def __init__(self, backup_dir, save_freq="epoch"):
        _check_keras_backup()
        super().__init__(str(backup_dir), save_freq=save_freq, delete_checkpoint=False)

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._where = f"epoch {self._current_epoch + 1}, step {batch + 1}"
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._where = f"epoch {epoch + 1}"
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        if not all(np.isfinite(w).all() for w in self.model.get_weights()):
            # The loss a step reports can stay finite while weights overflow (dead ReLUs
            # hide them); such a backup could never resume, so the good one is kept.
            raise diverged(self.model, self.backup_dir, "the weights became non-finite",
                           self._where)
        tf.io.gfile.makedirs(self.backup_dir)
        with rundir.atomic_write(self._weights_path) as tmp:
            self.model.save_weights(tmp)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        rundir.write_text(self._training_metadata_path, json.dumps(metadata))


# What Backup relies on in Keras' BackupAndRestore (Keras 3.15.1 and 3.16.0.dev): where
# each private name must appear, compared without whitespace.
BACKUP_CONTRACT = {
    "__init__": ("self._current_epoch=0", "self._last_batch_seen=0", "self._weights_path=",
                 "self._training_metadata_path="),
    "on_epoch_end": ("self._save_model()",),
    "on_train_batch_end": ("self._save_model()",),
    "_should_save_on_batch": ("self._last_batch_seen=batch",),
    "_load_model": ('training_metadata["epoch"]', "self.model.load_weights(self._weights_path)"),
}


@functools.cache
def _check_keras_backup() -> None:
    """Refuse, in one line, a Keras whose BackupAndRestore no longer has the private code
    ``Backup`` overrides and reads: resuming would otherwise break silently."""
    for method, needles in BACKUP_CONTRACT.items():
        function = getattr(keras.callbacks.BackupAndRestore, method, None)
        source = re.sub(r"\s", "", inspect.getsource(function)) if function else ""
        missing = [n for n in needles if re.sub(r"\s", "", n) not in source]
        if missing:
            raise TrainingError(
                f"Keras {keras.__version__} changed BackupAndRestore.{method} (no longer "
                f"has {missing[0]}), which tfvision's resumable backups build on; refusing to "
                "train with backups that might not resume. Use Keras 3.15.1 or a tfvision "
                "release that knows this Keras"
            )


class StopOnNaN(keras.callbacks.Callback):
    """Stop with a TrainingError when the loss stops being finite, keeping the last backup
    (``Backup`` refuses non-finite weights the loss did not reveal).

    Keras' TerminateOnNaN ends training gracefully, which runs ``on_train_end`` and lets the
    final save overwrite good files with NaN weights. Raising skips all of that; this
    callback must come before Backup so NaN weights are never backed up.
    """

    def __init__(self, backup_dir):
        super().__init__()
        self.backup_dir = str(backup_dir)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"epoch {self._epoch + 1}, step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, f"epoch {epoch + 1}")

    def _check(self, logs, where):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        raise diverged(self.model, self.backup_dir, f"the loss became {float(loss)}", where)


def diverged(model, backup_dir, what, where):
    """The TrainingError of a diverged run: what happened, where, and which backup is kept."""
    done = backed_up_epochs(backup_dir)
    kept = (f"the last good backup (after epoch {done}) is kept in {backup_dir}"
            if done is not None else "no backup was written yet")
    learning_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    return TrainingError(
        f"training stopped: {what} at {where}; {kept}. The learning rate ({learning_rate:g} "
        "at that step) is probably too high: lower train.learning_rate and train in a new "
        "--run-dir, or re-run the same command to resume from the backup"
    )


def run_callbacks(out_dir, backup_dir, backup_freq="epoch", monitor="val_accuracy"):
    """The callbacks of a ``fit``: outputs in ``out_dir``, this worker's backup in ``backup_dir``.

    Order matters, as Keras calls them in list order: the NaN check first (nothing is saved
    after a NaN), history before the backup (a kill in between re-runs the epoch and rewrites
    its row, instead of leaving it out), then the rest.
    """
    best = keras.callbacks.ModelCheckpoint(
        rundir.run_file(out_dir, "best"), monitor=monitor, mode="max", save_best_only=True
    )
    previous_best = best_so_far(rundir.run_file(out_dir, "history"), monitor)
    if previous_best is not None:
        best.best = previous_best
    return [
        StopOnNaN(backup_dir),
        HistoryCSV(rundir.run_file(out_dir, "history")),
        Backup(backup_dir, backup_freq),  # train.backup_freq is Keras' save_freq
        best,
        keras.callbacks.TensorBoard(rundir.run_file(out_dir, "logs")),
    ]
