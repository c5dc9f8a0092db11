"""Shared fixtures: a small trained run reused by every test that needs a model."""

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest

from tfvision.config import load_config

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, timeout=600, env=None, process=False):
    """Run ``tfvision ARGS`` as a user would; returns a CompletedProcess.

    By default in this process, through click's test runner: the same command and the same
    output, without paying for TensorFlow's import again (5-7 s a call on some CPUs).
    ``process=True`` (implied by ``env``) starts a real subprocess, for what only a process
    shows: its start-up, signals, warnings and the log lines of TensorFlow's C++ code.
    """
    if process or env:
        return subprocess.run(
            [sys.executable, "-m", "tfvision.cli", *map(str, args)], cwd=cwd,
            env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
            check=False,
        )
    from click.testing import CliRunner

    from tfvision.cli import main

    previous = os.getcwd()
    os.chdir(cwd or previous)
    try:
        result = CliRunner().invoke(main, [str(a) for a in args])
    finally:
        os.chdir(previous)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, stderr)


def pretend_gpus(monkeypatch, count):
    """Make this host look like one with ``count`` GPUs and no TPU, whatever it really has,
    so tests of what ``auto`` picks hold on CPU and GPU machines alike."""
    import tensorflow as tf

    from tfvision.training import strategy

    real = tf.config.list_physical_devices
    gpus = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(count)]

    def list_physical_devices(device_type=None):
        others = [d for d in real(device_type) if d.device_type not in ("GPU", "TPU")]
        return gpus if device_type == "GPU" else others + (gpus if device_type is None else [])

    monkeypatch.setattr(tf.config, "list_physical_devices", list_physical_devices)
    monkeypatch.setattr(strategy, "_tpu_resolver", lambda: None)


NEXT_KERAS = "keras-nightly"  # the next Keras, published daily; pure Python


@pytest.fixture(scope="session")
def next_keras(tmp_path_factory):
    """The next Keras installed beside the TensorFlow we have (``--no-deps --target``, no
    second TensorFlow): the environment under which a subprocess runs it."""
    target = tmp_path_factory.mktemp("next-keras")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), NEXT_KERAS], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"cannot install {NEXT_KERAS} from the package index: {done.stderr[-2000:]}")
    env = {"PYTHONPATH": str(target)}
    probe = subprocess.run(
        [sys.executable, "-c",
         "import keras, tensorflow; print(keras.__version__, keras.__file__, tensorflow.__file__)"],
        env={**os.environ, **env},
        capture_output=True, text=True, timeout=300, check=True)
    version, keras_file, tf_file = probe.stdout.split()
    assert ".dev" in version and keras_file.startswith(str(target)), probe.stdout
    assert not tf_file.startswith(str(target)), "a second TensorFlow came with keras-nightly"
    return env


@pytest.fixture(params=["installed_keras", "next_keras"])
def keras_env(request):
    """Environment for a test's tfvision processes: the installed Keras, then the next one."""
    return {} if request.param == "installed_keras" else request.getfixturevalue("next_keras")


# Trains a config (argv[1]) into a run dir (argv[2]) under Mirrored over 2 logical CPUs, then
# tells whether several steps per call are accepted there.
MIRRORED_SCRIPT = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfvision.config import DistributeConfig, load_config
from tfvision.errors import ConfigError
from tfvision.training import train
from tfvision.training.strategy import resolve_distribute
train(load_config(sys.argv[1]), sys.argv[2], verbose=0)
try:
    resolve_distribute(DistributeConfig(strategy="mirrored", steps_per_execution=4))
    print("steps_per_execution=4 accepted")
except ConfigError as err:
    print(f"refused: {err}")
"""


SMALL_OVERRIDES = ("data.image_size=16", "train.epochs=3", "train.learning_rate=0.05")


def small_cli_args(*overrides):
    """``--set`` arguments that give ``tfvision train`` the run of ``small_config``."""
    return [arg for text in (*SMALL_OVERRIDES, *overrides) for arg in ("--set", text)]


def pytest_configure(config):
    """Ctrl-C reaches a test's tfvision as in a terminal. pytest-xdist's workers ignore
    SIGINT, and an ignored signal is inherited through exec: Python started that way never
    raises KeyboardInterrupt."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class BackgroundCLI:
    """``tfvision ARGS`` running in the background, its output read line by line as it comes,
    for tests that act in the middle of a run (kill a worker, SIGKILL after an epoch)."""

    def __init__(self, *args, cwd=None, env=None):
        env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfvision.cli", *map(str, args)], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text, timeout=300):
        """Block until ``text`` appears in the output; fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None, f"ended before {text!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{self.output}"
            time.sleep(0.05)

    def finish(self, timeout=300) -> int:
        """Wait for the process to end (killing it after ``timeout``); its exit code."""
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(timeout=5)


def small_config(*overrides):
    """The quickstart, shrunk so a run takes seconds (16×16 digits, 3 epochs)."""
    return load_config(
        "quickstart",
        [*SMALL_OVERRIDES, *overrides],
    )


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A finished small run directory (model.keras, history.csv, export/1, ...)."""
    from tfvision.training import train

    run_dir = tmp_path_factory.mktemp("runs") / "small"
    result = train(small_config(), run_dir, verbose=0)
    return result
