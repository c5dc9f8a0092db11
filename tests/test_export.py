"""Exports: integer versions, never overwritten, never half-visible; models.config; TFLite."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import run_cli
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfvision.errors import ExportError
from tfvision.export import serving
from tfvision.export.savedmodel import export_model
from tfvision.export.tflite import VARIANTS, load_interpreter, tflite_logits
from tfvision.export.versions import existing_versions


def _served_models(root):
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((root / "models.config").read_text(), config)
    return {c.name: (c.base_path, c.model_platform) for c in config.model_config_list.config}


def test_versions_count_up_are_never_overwritten_and_listed_in_models_config(
    trained_run, tmp_path
):
    root = tmp_path / "models"
    model_dir = root / "digits"
    for expected in (1, 2):
        result = run_cli("export", trained_run.run_dir, "--export-dir", model_dir)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"exported: {model_dir / str(expected)}"
    first = (model_dir / "1" / "saved_model.pb").read_bytes()

    result = run_cli("export", trained_run.run_dir, "--export-dir", model_dir, "--version", 1)
    assert result.returncode == 2
    assert "already exists" in result.stderr and str(model_dir / "1") in result.stderr
    assert existing_versions(model_dir) == [1, 2]
    assert (model_dir / "1" / "saved_model.pb").read_bytes() == first
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"], "no leftovers"

    export_model(trained_run.model, root / "other", trained_run.class_names, version=7)
    assert existing_versions(root / "other") == [7]
    assert _served_models(root) == {
        "digits": ("/models/digits", "tensorflow"),
        "other": ("/models/other", "tensorflow"),
    }


@pytest.mark.slow
def test_an_export_killed_mid_write_leaves_no_version(trained_run, tmp_path):
    model_dir = tmp_path / "models" / "digits"
    process = subprocess.Popen(
        [sys.executable, "-m", "tfvision.cli", "export", str(trained_run.run_dir),
         "--export-dir", str(model_dir)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # Kill it at the riskiest moment: the SavedModel is written but not yet checked and renamed.
    deadline = time.monotonic() + 120
    while not list(model_dir.glob(".tmp-*/saved_model.pb")) and time.monotonic() < deadline:
        assert process.poll() is None, "the export finished before it could be killed"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(model_dir.glob(".tmp-*/saved_model.pb")), "killed while writing"
    assert existing_versions(model_dir) == []

    path = export_model(trained_run.model, model_dir, trained_run.class_names)
    assert path == model_dir / "1"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1"], "the leftover is cleaned up"


def test_a_model_that_does_not_match_its_class_names_is_refused(trained_run, tmp_path):
    with pytest.raises(ExportError, match="10 outputs but 3 class names"):
        export_model(trained_run.model, tmp_path / "m", ["a", "b", "c"])
    assert existing_versions(tmp_path / "m") == []


def test_without_tensorflow_serving_api_the_export_still_works(
    trained_run, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(serving, "have_serving_api", lambda: False)
    path = export_model(trained_run.model, tmp_path / "m", trained_run.class_names)
    assert (path / "saved_model.pb").exists()
    assert not (path / serving.WARMUP_FILE).exists()
    assert not (tmp_path / "models.config").exists()
    assert "pip install 'tfvision[serving]'" in capsys.readouterr().err


def test_tflite_export_prints_the_accuracy_of_both_variants(trained_run, tmp_path):
    model_dir = tmp_path / "tflite"
    result = run_cli("export", trained_run.run_dir, "--format", "tflite",
                     "--export-dir", model_dir)
    assert result.returncode == 0, result.stderr
    accuracy = {
        m[1]: (float(m[2]), float(m[3]))
        for m in re.finditer(r"validation accuracy (\w+): ([\d.]+) "
                             r"\(difference to keras: ([-+][\d.]+)\)", result.stdout)
    }
    assert set(accuracy) == {"keras", *VARIANTS}
    keras_accuracy = accuracy["keras"][0]
    assert abs(keras_accuracy - trained_run.metrics["val_accuracy"]) < 1e-3
    for value, difference in accuracy.values():
        assert abs(value - keras_accuracy - difference) < 1e-4
    assert abs(accuracy["float32"][1]) < 0.005
    assert abs(accuracy["dynamic_range"][1]) < 0.05

    # The float32 file answers like the Keras model on real validation images.
    images = np.concatenate([x.numpy() for x, _ in _validation_batches(trained_run)])
    interpreter = load_interpreter(model_dir / "1" / VARIANTS["float32"][0])
    np.testing.assert_allclose(tflite_logits(interpreter, images),
                               trained_run.model(images).numpy(), rtol=1e-4, atol=1e-4)
    quantized = model_dir / "1" / VARIANTS["dynamic_range"][0]
    assert quantized.stat().st_size < (model_dir / "1" / VARIANTS["float32"][0]).stat().st_size


def _validation_batches(trained_run):
    from tfvision.data.dataset import load_dataset
    from tfvision.rundir import load_run_config

    return list(load_dataset(load_run_config(trained_run.run_dir)).validation.take(2))


def test_the_export_check_scales_with_the_outputs_and_refuses_a_real_difference():
    from tfvision.export.savedmodel import check_close
    from tfvision.models import scratch_cnn

    model = scratch_cnn(input_shape=(8, 8, 3))
    # A diverged run's float32 logits: rounding near 1e6 moves a smaller entry by 0.2.
    want = np.array([[14662.596, -754232.06, 999919.0]], np.float32)
    check_close(want + [[0.198, -0.3, 0.5]], want, model, "logits")
    with pytest.raises(ExportError, match=r"the logits differ from the in-memory model by up "
                                          r"to 2\.00e\+01 .*nothing exported"):
        check_close(want + [[20.0, 0.0, 0.0]], want, model, "the logits")
