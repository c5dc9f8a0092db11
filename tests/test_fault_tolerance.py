"""Runs that survive being killed, and a diverging loss that stops with the backup kept."""

import json
import re
import signal

import keras
import numpy as np
import pytest
import yaml
from conftest import BackgroundCLI, run_cli, small_cli_args, small_config
from imagedata import write_folder

from tfvision.errors import ConfigError, DataError, TrainingError
from tfvision.training.callbacks import Backup, read_history

EPOCHS = 8


def _first_epoch_shown(output):
    return int(re.search(r"^Epoch (\d+)/", output, re.MULTILINE).group(1))


@pytest.mark.slow
def test_ctrl_c_says_where_it_resumes_then_sigkill_then_rerun_resumes(tmp_path, keras_env):
    from tfvision.training import train

    args = ["train", *small_cli_args(f"train.epochs={EPOCHS}"), "--run-dir", tmp_path / "run"]
    first = BackgroundCLI(*args, cwd=tmp_path, env=keras_env)
    # Keras prints "Epoch 3/" once every callback has finished epoch 2, the backup included.
    first.wait_for(f"Epoch 3/{EPOCHS}")
    first.proc.send_signal(signal.SIGINT)
    assert first.finish(timeout=30) == 130
    assert (f"interrupted: re-run the same command to resume {tmp_path / 'run'} at epoch 3 of "
            f"{EPOCHS}, from its last backup") in first.output
    assert "Aborted!" not in first.output and "Traceback" not in first.output

    second = BackgroundCLI(*args, cwd=tmp_path, env=keras_env)  # the same command again
    second.wait_for(f"Epoch 5/{EPOCHS}")
    second.proc.send_signal(signal.SIGKILL)
    assert second.finish(timeout=30) == -signal.SIGKILL
    assert _first_epoch_shown(second.output) == 3  # resumed, not from epoch 1
    assert not (tmp_path / "run" / "model.keras").exists()

    third = run_cli(*args, cwd=tmp_path, env=keras_env)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert _first_epoch_shown(third.stdout) == 5
    rows = read_history(tmp_path / "run" / "history.csv")
    assert [int(row["epoch"]) for row in rows] == list(range(EPOCHS))
    assert not (tmp_path / "run" / "backup").exists()  # removed once model.keras exists
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["distribute"]
    assert saved["strategy"] == "default" and saved["jit_compile"] is False

    uninterrupted = train(small_config(f"train.epochs={EPOCHS}"), tmp_path / "ref", verbose=0)
    resumed = float(rows[-1]["val_accuracy"])
    assert resumed > 0.9
    assert abs(resumed - uninterrupted.metrics["val_accuracy"]) < 0.04


@pytest.mark.slow
def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_backup(tmp_path):
    # A fine first epoch, then the learning rate times 10^30, and float32 overflow (inf)
    # from the third epoch on: the run must stop at epoch 2 or 3, by the loss or by the
    # weights, whichever shows it first, and never back up what diverged.
    diverging = ["train.epochs=4", "train.schedule=step", "train.step_epochs=1",
                 "train.step_gamma=1e30"]
    run_dir = tmp_path / "run"
    done = run_cli("train", *small_cli_args(*diverging), "--run-dir", run_dir, cwd=tmp_path)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    message = done.stderr.strip().splitlines()[-1]
    stopped = re.match(r"error: training stopped: (the loss became (nan|inf)|the weights became "
                       r"non-finite) at epoch (\d+)", message)
    assert stopped, message
    epoch = int(stopped.group(3))
    assert epoch in (2, 3)
    assert (f"the last good backup (after epoch {epoch - 1}) is kept in {run_dir / 'backup'}"
            in message)
    assert "lower train.learning_rate" in message
    assert "Traceback" not in done.stderr
    assert not (run_dir / "model.keras").exists()

    model = keras.saving.load_model(run_dir / "best.keras")  # same architecture as the backup
    model.load_weights(run_dir / "backup" / "latest.weights.h5")
    assert all(np.isfinite(w).all() for w in model.get_weights())
    metadata = json.loads((run_dir / "backup" / "training_metadata.json").read_text())
    assert metadata["epoch"] == epoch - 1


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


def test_step_backups_resume_inside_the_interrupted_epoch(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")

    def fit(interrupt_at):
        seen = keras.callbacks.History()
        with pytest.raises(KeyboardInterrupt):
            model.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[
                Backup(tmp_path, save_freq=3), seen, _Interrupt(*interrupt_at)])
        return json.loads((tmp_path / "training_metadata.json").read_text())["epoch"]

    assert fit((1, 6)) == 1
    # Resumed in epoch 1 and interrupted in it again: the backup still says epoch 1
    # (Keras' own callback would record epoch 0 here and restart from the beginning).
    assert fit((1, 6)) == 1
    assert fit((2, 4)) == 2


class _Overflow(keras.callbacks.Callback):
    """Makes the weights infinite at the end of one epoch, as a diverging step would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.set_weights([np.full_like(w, np.inf) for w in self.model.get_weights()])


def test_a_backup_is_never_written_from_non_finite_weights(tmp_path):
    x = np.ones((16, 4), "float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    kept = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: setattr(model, "backed_up", model.get_weights()))
    with pytest.raises(TrainingError, match=r"the weights became non-finite at epoch 2; the "
                       r"last good backup \(after epoch 1\) is kept"):
        model.fit(x, x[:, :1], epochs=3, verbose=0,
                  callbacks=[_Overflow(1), Backup(tmp_path), kept])
    assert json.loads((tmp_path / "training_metadata.json").read_text())["epoch"] == 1
    restored = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    restored.load_weights(tmp_path / "latest.weights.h5")
    assert all(np.isfinite(w).all() for w in restored.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(restored.get_weights(), model.backed_up))


def test_a_run_that_failed_before_training_takes_the_corrected_config(tmp_path):
    from tfvision.training import train

    run_dir = tmp_path / "run"
    missing = tmp_path / "photos"
    with pytest.raises(DataError, match="is not a folder"):
        train(small_config("data.source=folder", f"data.path={missing}"), run_dir, verbose=0)
    assert (run_dir / "config.yaml").exists()
    write_folder(missing, kinds=["png"] * 5)
    fixed = small_config("data.source=folder", f"data.path={missing}", "train.epochs=1",
                         "data.image_size=8")  # two keys changed: still accepted
    result = train(fixed, run_dir, verbose=0)
    assert len(read_history(run_dir / "history.csv")) == 1 and result.class_names == [
        "flat", "horizontal", "vertical"]
    # Now it holds training state, and another config is refused again.
    with pytest.raises(ConfigError, match=r"holds a run with a different config \(train.epochs"):
        train(small_config("data.source=folder", f"data.path={missing}", "train.epochs=2",
                           "data.image_size=8"), run_dir, verbose=0)


def test_backup_refuses_a_keras_whose_backup_internals_changed(tmp_path, monkeypatch):
    """Backup overrides private BackupAndRestore code; a Keras without it gets one line
    naming what changed, before any training (a backup that cannot resume is worse)."""
    from tfvision.training import callbacks

    def on_epoch_end(self, epoch, logs=None):  # a Keras that saves some other way
        self._write_checkpoint(epoch)

    callbacks._check_keras_backup.cache_clear()
    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", on_epoch_end)
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with pytest.raises(TrainingError) as err:
        Backup(tmp_path)
    assert str(err.value).startswith("Keras 3.99.0 changed BackupAndRestore.on_epoch_end (no "
                                     "longer has self._save_model())")
    monkeypatch.undo()
    callbacks._check_keras_backup.cache_clear()
    Backup(tmp_path)  # this Keras has what Backup needs
