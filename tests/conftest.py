"""Shared fixtures: a small trained run reused by every test that needs a model."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tfvision.config import load_config

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, timeout=600, env=None):
    """Run ``tfvision ARGS`` in a subprocess, as a user would; returns CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tfvision.cli", *map(str, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False,
    )


SMALL_OVERRIDES = ("data.image_size=16", "train.epochs=3", "train.learning_rate=0.05")


def small_cli_args(*overrides):
    """``--set`` arguments that give ``tfvision train`` the run of ``small_config``."""
    return [arg for text in (*SMALL_OVERRIDES, *overrides) for arg in ("--set", text)]


class BackgroundCLI:
    """``tfvision ARGS`` running in the background, its output read line by line as it comes,
    for tests that act in the middle of a run (kill a worker, SIGKILL after an epoch)."""

    def __init__(self, *args, cwd=None):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
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
