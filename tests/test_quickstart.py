"""Acceptance of the foundation: the README's quickstart, end to end, as a user runs it."""

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, run_cli

from tfvision.config import load_config
from tfvision.data.digits import load_digits_arrays


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """`tfvision train` with no arguments, in a fresh directory, timed."""
    cwd = tmp_path_factory.mktemp("quickstart")
    start = time.perf_counter()
    result = run_cli("train", cwd=cwd, process=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "runs" / "quickstart", time.perf_counter() - start, result


def test_quickstart_is_fast_accurate_and_complete(quickstart):
    run_dir, seconds, result = quickstart
    assert seconds < 120, f"quickstart took {seconds:.0f}s"
    _assert_complete(run_dir, result)


@pytest.mark.slow
def test_quickstart_runs_on_the_next_keras(tmp_path, next_keras):
    result = run_cli("train", cwd=tmp_path, env=next_keras)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_complete(tmp_path / "runs" / "quickstart", result)


def _assert_complete(run_dir, result):
    """Every epoch once, the accuracy the quickstart promises, every file, an export."""
    with (run_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(load_config().train.epochs))
    assert float(rows[-1]["val_accuracy"]) >= 0.97
    for name in ("config.yaml", "model.keras", "best.keras", "class_names.txt", "logs"):
        assert (run_dir / name).exists(), name
    assert (run_dir / "export" / "quickstart" / "1" / "saved_model.pb").exists()
    assert "exported:" in result.stdout


def test_evaluate_reports_the_trained_accuracy(quickstart):
    run_dir, _, _ = quickstart
    result = run_cli("evaluate", run_dir)
    assert result.returncode == 0, result.stderr
    metrics = dict(line.split(": ") for line in result.stdout.strip().splitlines())
    with (run_dir / "history.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert abs(float(metrics["accuracy"]) - float(last["val_accuracy"])) < 1e-3
    assert float(metrics["top_k_accuracy"]) >= float(metrics["accuracy"])


def test_evaluate_takes_config_overrides(quickstart):
    run_dir, _, _ = quickstart
    result = run_cli("evaluate", run_dir, "--set", "data.batch_size=7", "--set", "train.top_k=1")
    assert result.returncode == 0, result.stderr
    metrics = dict(line.split(": ") for line in result.stdout.strip().splitlines())
    with (run_dir / "history.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert abs(float(metrics["accuracy"]) - float(last["val_accuracy"])) < 1e-3
    assert metrics["top_k_accuracy"] == metrics["accuracy"]  # k=1: the override was used
    assert float(last["val_top_k_accuracy"]) > float(last["val_accuracy"])
    bad = run_cli("evaluate", run_dir, "--set", "data.batch_sise=7")
    assert bad.returncode == 2 and "unknown config key 'data.batch_sise'" in bad.stderr


def test_export_lists_serving_default(quickstart):
    run_dir, _, _ = quickstart
    cli = Path(sys.executable).with_name("saved_model_cli")
    export = run_dir / "export" / "quickstart" / "1"
    out = subprocess.run([str(cli), "show", "--dir", str(export), "--all"],
                         capture_output=True, text=True, check=True).stdout
    assert "signature_def['serving_default']" in out
    assert "inputs['image_bytes']" in out


def test_predict_json_names_the_right_digits(quickstart, tmp_path):
    run_dir, _, _ = quickstart
    _, (images, labels) = load_digits_arrays()
    paths = []
    for i in range(20):
        png = tf.io.encode_png(tf.image.grayscale_to_rgb(tf.constant(images[i]))).numpy()
        paths.append(tmp_path / f"digit{i}.png")
        paths[-1].write_bytes(png)
    result = run_cli("predict", run_dir / "export" / "quickstart" / "1", *paths, "--json",
                     "--top-k", "2")
    assert result.returncode == 0, result.stderr
    predictions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["image"] for p in predictions] == [str(p) for p in paths]
    assert all(len(p["class_names"]) == 2 and p["scores"][0] >= p["scores"][1]
               for p in predictions)
    correct = np.mean([p["class_names"][0] == str(y) for p, y in zip(predictions, labels)])
    assert correct >= 0.9


def test_rerunning_a_finished_run_trains_nothing(quickstart):
    run_dir, _, _ = quickstart
    result = run_cli("train", "--run-dir", run_dir, cwd=run_dir.parent.parent)
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stdout
    assert "Epoch" not in result.stdout


def test_resuming_with_another_config_is_refused(quickstart):
    run_dir, _, _ = quickstart
    result = run_cli("train", "--run-dir", run_dir, "--set", "train.epochs=3")
    assert result.returncode == 2
    assert "train.epochs changed" in result.stderr


def _readme_blocks(section, lang):
    """The ``lang`` code blocks of README.md's ``## section``."""
    text = (REPO / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", body, flags=re.DOTALL)


def test_readme_python_example_runs_as_written(tmp_path):
    example = _readme_blocks("Python API", "python")[0]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "exports" / "digits" / "1" / "saved_model.pb").exists()


def test_readme_saved_model_cli_recipe_runs_as_written(quickstart):
    """The Command line section's digit.png one-liner, then Deploy's saved_model_cli run."""
    run_dir, _, _ = quickstart
    (make_digit,) = [line for block in _readme_blocks("Command line", "bash")
                     for line in block.splitlines() if "open('digit.png', 'wb')" in line]
    (recipe,) = [b for b in _readme_blocks("Deploy with TF Serving", "bash")
                 if "saved_model_cli run" in b]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-ec", f"{make_digit}\n{recipe}"], cwd=run_dir.parent.parent,
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Result for output key class_names:\n[[b'9'" in done.stdout, done.stdout


def test_ci_runs_exactly_the_readme_test_command():
    (test_command,) = [b.strip() for b in _readme_blocks("Quickstart", "bash") if "pytest" in b]
    assert test_command in (REPO / ".ci" / "run").read_text()
