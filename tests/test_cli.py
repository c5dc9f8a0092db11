"""The CLI as a user meets it: fast help, one-line errors with exit code 2."""

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import run_cli
from imagedata import truncated_jpeg, write_folder


def test_help_is_instant_and_does_not_import_tensorflow():
    code = (
        "import sys, time; t = time.perf_counter(); from click.testing import CliRunner; "
        "from tfvision.cli import main; r = CliRunner().invoke(main, ['--help']); "
        "assert r.exit_code == 0, r.output; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
        "print(time.perf_counter() - t)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert time.perf_counter() - start < 1.0, out.stdout
    for command in ("train", "evaluate", "export", "predict"):
        assert command in run_cli("--help").stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
        (["train", "--set", "train.epochs=many"], "train.epochs must be int"),
        (["train", "-c", "no/such/config.yaml"], "config file 'no/such/config.yaml' not found"),
        (["evaluate", "no/such/run"], "no/such/run does not exist"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, args, expected):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # failed before any work


def test_predict_names_a_file_that_is_not_an_image(tmp_path, trained_run):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a JPEG")
    result = run_cli("predict", trained_run.run_dir / "model.keras", bad)
    assert result.returncode == 2
    assert f"{bad} is not a readable image" in result.stderr
    assert "Traceback" not in result.stderr


# A line TensorFlow's C++ code logs (I/W/E + date), absl's banner, or the CUDA probe.
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|cuda", re.MULTILINE)


def test_commands_print_no_tensorflow_logs_unless_asked(tmp_path, trained_run):
    """A CPU machine's cuInit error and TF's start-up lines are hidden; --verbose or the
    user's own TF_CPP_MIN_LOG_LEVEL brings them back."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(truncated_jpeg(np.random.default_rng(0)))
    export = trained_run.export_path
    quiet = subprocess.run([sys.executable, "-m", "tfvision.cli", "predict", export, truncated],
                           capture_output=True, text=True, env=env, check=False)
    assert quiet.returncode == 2
    assert quiet.stderr.splitlines() == [quiet.stderr.splitlines()[-1]], quiet.stderr
    assert quiet.stderr.startswith(f"error: {truncated}")  # nothing before it
    assert "Premature end of JPEG" not in quiet.stderr
    loud = subprocess.run([sys.executable, "-m", "tfvision.cli", "--verbose", "predict", export,
                           truncated], capture_output=True, text=True, env=env, check=False)
    assert TF_LOG_LINE.search(loud.stderr), loud.stderr


def _modules_after(*args):
    """Run ``tfvision ARGS`` in a fresh interpreter: (exit code, whether TF was imported)."""
    code = ("import atexit, sys; atexit.register(lambda: print('tensorflow' in sys.modules, "
            "file=sys.stderr)); from tfvision.cli import main; main(sys.argv[1:])")
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, check=False)
    return done.returncode, done.stderr.strip().splitlines()[-1] == "True", done


def test_commands_that_need_no_tensorflow_do_not_import_it(tmp_path):
    write_folder(tmp_path / "photos", kinds=["png", "jpeg"])
    image = next((tmp_path / "photos" / "flat").iterdir())
    for args in (["--help"], ["weights", "--help"], ["data", "--help"],
                 ["serving-request", image], ["data", "inspect", tmp_path / "photos"]):
        code, imported, done = _modules_after(*args)
        assert code == 0, done.stderr
        assert not imported, f"tfvision {args[0]} imported TensorFlow"


def test_public_api_names_resolve():
    import tfvision

    names = [n for n in tfvision.__all__ if n != "__version__"]
    assert names and all(callable(getattr(tfvision, name)) for name in names)
