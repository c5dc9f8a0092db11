"""Training under tf.distribute strategies: Mirrored, two local workers, mixed precision."""

import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import keras
import pytest
import yaml
from conftest import (
    MIRRORED_SCRIPT,
    BackgroundCLI,
    pretend_gpus,
    run_cli,
    small_cli_args,
    small_config,
)

from tfvision.config import DistributeConfig
from tfvision.errors import ConfigError
from tfvision.training import strategy as strategy_module
from tfvision.training.callbacks import read_history
from tfvision.training.strategy import resolve_distribute

# Two logical CPUs only exist if they are configured before TensorFlow initializes its
# devices, so this runs in a fresh interpreter.


def _val_accuracy(run_dir):
    return float(read_history(run_dir / "history.csv")[-1]["val_accuracy"])


def _sha256_of_weights(model):
    return hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_reaches_the_default_strategy_accuracy(
    tmp_path, trained_run, keras_env
):
    # 16 per replica × 2 replicas: the same global batch of 32 as the default-strategy run.
    config = small_config("distribute.strategy=mirrored", "data.batch_size=16")
    config.save(tmp_path / "mirrored.yaml")
    run_dir = tmp_path / "mirrored"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **keras_env}
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path / "mirrored.yaml"), str(run_dir)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "strategy=mirrored" in done.stdout
    assert "2 replicas, global batch 32" in done.stdout
    # Several steps per call are probed (keras-team/keras#19246), not refused by rule: auto
    # and an explicit value follow the probe.
    probed = re.search(r"steps_per_execution=(\d+) \(auto: ([^)]*)", done.stdout)
    if probed.group(1) == "1":
        assert probed.group(2).startswith("mirrored: a two-step probe fit failed: You must "
                                          "feed a value for placeholder tensor")
        assert re.search(r"refused: distribute.steps_per_execution=4 does not work with the "
                         r"mirrored strategy on Keras \S+ \(a two-step probe fit failed.*"
                         r"keras-team/keras#19246\); use 1 or auto", done.stdout)
    else:
        assert (probed.groups(), "steps_per_execution=4 accepted" in done.stdout) == (
            ("16", "CPU"), True)
    mirrored = _val_accuracy(run_dir)
    default = trained_run.metrics["val_accuracy"]
    assert mirrored > 0.85
    assert abs(mirrored - default) < 0.05, (mirrored, default)


@pytest.mark.slow
def test_two_local_workers_end_identical_and_only_the_chief_writes(tmp_path, keras_env):
    tmp = tmp_path / "tmp"  # the workers' temporary directories go here
    tmp.mkdir()
    run_dir = tmp_path / "runs" / "quickstart"
    done = run_cli("train", "--workers", "2", *small_cli_args(), "--run-dir", run_dir,
                   cwd=tmp_path, env={"TMPDIR": str(tmp), **keras_env})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "strategy=multi_worker_mirrored (auto: TF_CONFIG names 2 workers)" in done.stdout
    assert "all 2 workers ended with identical weights" in done.stdout

    # Identical weights: the chief's saved model against the digest worker 1 recorded.
    worker_dir = run_dir.with_name("quickstart.worker-1")
    # compile=False: the next Keras saves loss options (label_smoothing) 3.15 cannot read.
    chief_model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    assert (worker_dir / "worker-complete.txt").read_text().strip() == (
        _sha256_of_weights(chief_model))
    assert _val_accuracy(run_dir) > 0.8

    # Only the chief's run directory holds checkpoints, logs and exports.
    assert (run_dir / "best.keras").is_file()
    assert list((run_dir / "export").glob("*/1/saved_model.pb"))
    assert list((run_dir / "logs").rglob("events.out.tfevents.*"))
    assert sorted(p.name for p in worker_dir.iterdir()) == [
        "class_names.txt", "config.yaml", "worker-complete.txt"]
    assert {p.parent for p in tmp_path.rglob("*.keras")} == {run_dir}
    assert list(tmp.iterdir()) == []  # the worker's temporary outputs were removed


@pytest.mark.slow
def test_a_killed_worker_makes_the_launcher_stop_the_others(tmp_path):
    cli = BackgroundCLI("train", "--workers", "2", *small_cli_args("train.epochs=200"),
                        "--run-dir", tmp_path / "run", cwd=tmp_path)
    cli.wait_for("Epoch 2/")
    pids = dict(re.findall(r"started worker (\d) \(pid (\d+)\)", cli.output))
    os.kill(int(pids["1"]), signal.SIGKILL)
    killed = time.monotonic()
    code = cli.finish(timeout=60)
    assert time.monotonic() - killed < 20
    assert code != 0
    assert "worker 1 was killed by signal 9; stopped the other workers" in cli.output
    with pytest.raises(ProcessLookupError):
        os.kill(int(pids["0"]), 0)


def test_mixed_bfloat16_trains_on_cpu_with_float32_logits(tmp_path, trained_run):
    from tfvision.training import train

    config = small_config("distribute.mixed_precision=mixed_bfloat16")
    result = train(config, tmp_path / "bf16", verbose=0)
    model = result.model
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"
    assert str(model(keras.ops.zeros((1, 16, 16, 3))).dtype) == "<dtype: 'float32'>"
    assert result.metrics["val_accuracy"] > trained_run.metrics["val_accuracy"] - 0.05
    saved = yaml.safe_load((tmp_path / "bf16" / "config.yaml").read_text())
    assert saved["distribute"]["mixed_precision"] == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the process' policy is restored
    assert (result.export_path / "saved_model.pb").exists()  # checked within bf16 tolerance


@pytest.mark.parametrize(("gpus", "expected"), [
    (0, ("default", "float32", False, 16)),
    (1, ("one_device", "mixed_float16", True, 1)),
    (2, ("mirrored", "mixed_float16", True, 1)),
])
def test_auto_settings_resolve_for_the_host(gpus, expected, monkeypatch):
    """What ``auto`` picks on a CPU host and on GPU hosts, whichever this machine is."""
    monkeypatch.delenv("TF_CONFIG", raising=False)
    pretend_gpus(monkeypatch, gpus)
    resolved, why = resolve_distribute(DistributeConfig())
    assert (resolved.strategy, resolved.mixed_precision, resolved.jit_compile,
            resolved.steps_per_execution) == expected
    assert set(why) == {"strategy", "mixed_precision", "jit_compile", "steps_per_execution"}


def test_explicit_and_cluster_settings(monkeypatch):
    pretend_gpus(monkeypatch, 0)

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, '
                                    '"task": {"type": "worker", "index": 1}}')
    assert resolve_distribute(DistributeConfig())[0].strategy == "multi_worker_mirrored"
    resolved, why = resolve_distribute(DistributeConfig())
    assert resolved.steps_per_execution == 1
    assert why["steps_per_execution"] == ("multi_worker_mirrored: several steps per call are "
                                          "not probed across workers")
    with pytest.raises(ConfigError, match=r"steps_per_execution=4 does not work with the "
                       r"multi_worker_mirrored strategy.*keras-team/keras#19246"):
        resolve_distribute(DistributeConfig(strategy="multi_worker_mirrored",
                                            steps_per_execution=4))

    chosen = DistributeConfig(strategy="default", mixed_precision="mixed_bfloat16",
                              jit_compile=True, steps_per_execution=4)
    assert resolve_distribute(chosen) == (chosen, {})
    with pytest.raises(ConfigError, match="distribute.jit_compile must be auto, true or false"):
        resolve_distribute(DistributeConfig(jit_compile="yes"))


def test_multi_worker_fix_finds_the_faults_it_replaces_in_this_keras():
    from keras.src.backend.tensorflow import trainer as tf_trainer

    assert strategy_module._multi_worker_faults(tf_trainer) == set(
        strategy_module.MULTI_WORKER_FAULTS)


def test_multi_worker_fix_refuses_keras_code_of_another_shape(monkeypatch):
    """A Keras whose patched function changed shape gets one line, not a patched run."""
    from keras.src.backend.tensorflow import trainer as tf_trainer

    monkeypatch.setattr(strategy_module, "_fix_applied", False)
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", lambda values, strategy: values)
    with pytest.raises(ConfigError) as err:
        strategy_module.keras_multi_worker_fix()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("distribute.strategy=multi_worker_mirrored: Keras 3.99.0 changed "
                              "reduce_per_replica (its parameters are now ('values', "
                              "'strategy')), which tfvision's fix for keras-team/keras#20585")
    assert strategy_module._backend_trainer(tf_trainer)._maybe_symbolic_build.__module__ == (
        tf_trainer.__name__)  # nothing was patched


def test_multi_worker_fix_leaves_code_alone_once_upstream_fixed_it(monkeypatch):
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def reduce_per_replica(values, strategy, reduction):  # the fix upstream might make
        return strategy.reduce("MEAN", values, axis=None)

    monkeypatch.setattr(tf_trainer, "reduce_per_replica", reduce_per_replica)
    assert strategy_module._multi_worker_faults(tf_trainer) == {"Trainer._maybe_symbolic_build"}


def test_workers_refuse_a_single_process_strategy(tmp_path):
    done = run_cli("train", "--workers", "2", "--strategy", "mirrored", cwd=tmp_path)
    assert done.returncode == 2
    assert "--workers needs distribute.strategy auto or multi_worker_mirrored" in done.stderr
    assert not (tmp_path / "runs").exists()
