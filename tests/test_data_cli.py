"""`tfvision data inspect` and `tfvision data benchmark`, run as a user runs them."""

import re

import numpy as np
from conftest import run_cli
from imagedata import CLASSES, KINDS, truncated_jpeg, write_folder
from PIL import Image


def test_inspect_folder_and_its_tfrecords(tmp_path):
    root = tmp_path / "images"
    written = write_folder(root, kinds=KINDS[:6] + ["png", "gif", "bmp"])
    (root / "vertical" / "broken.jpg").write_bytes(truncated_jpeg(np.random.default_rng(0)))
    (root / "empty").mkdir()
    sizes = [Image.open(path).size for path in written]  # (width, height)

    done = run_cli("data", "inspect", root)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"classes (3): {', '.join(CLASSES)}" in out
    assert f"split all: {len(written)} readable images" in out
    assert "per class: flat: 9, horizontal: 9, vertical: 9" in out
    assert "formats: jpeg 18, png 3, gif 3, bmp 3" in out
    heights, widths = [h for _, h in sizes], [w for w, _ in sizes]
    assert (f"image size: height {min(heights)}-{max(heights)}, "
            f"width {min(widths)}-{max(widths)}") in out
    assert "bad files (2):" in out
    assert f"{root / 'vertical' / 'broken.jpg'}: truncated JPEG" in out
    assert f"{root / 'empty'}/: empty class folder" in out

    records = tmp_path / "records"
    assert run_cli("data", "convert", root, records, "--shards", "2").returncode == 0
    done = run_cli("data", "inspect", records)
    assert done.returncode == 0, done.stderr
    counts = dict(re.findall(r"split (\w+) \(\d+ files\): (\d+) readable images", done.stdout))
    assert {k: int(v) for k, v in counts.items()} == {"train": 21, "validation": 6}
    assert "bad files: none" in done.stdout  # convert left the broken one out


def test_convert_refuses_a_folder_that_already_holds_records(tmp_path):
    root = tmp_path / "images"
    write_folder(root, kinds=["png", "png"])
    assert run_cli("data", "convert", root, tmp_path / "out").returncode == 0
    done = run_cli("data", "convert", root, tmp_path / "out")
    assert done.returncode == 2
    assert "already holds TFRecords" in done.stderr


def test_benchmark_reports_rates_beside_the_training_step_and_a_verdict():
    done = run_cli("data", "benchmark", "--set", "data.image_size=16", "--steps", "3",
                   "--batches", "5", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    decoding = float(re.search(r"decoding every image: +([\d.]+) images/s", out).group(1))
    consumed = float(re.search(r"= ([\d.]+) images/s consumed", out).group(1))
    assert decoding > 0 and consumed > 0
    assert re.search(r"training step fed by the pipeline: +[\d.]+ s/step", out)
    assert re.search(r"^verdict: input (IS|is NOT) the bottleneck", out, re.MULTILINE)



def test_benchmark_of_a_fine_tuning_config_times_both_phases():
    done = run_cli("data", "benchmark", "-c", "digits_resnet18", "--set", "data.image_size=16",
                   "--steps", "3", "--batches", "5", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    frozen = int(re.search(r"phase 1 .*, ([\d,]+) trainable", out).group(1).replace(",", ""))
    tuned = int(re.search(r"phase 2 .*, ([\d,]+) trainable", out).group(1).replace(",", ""))
    assert frozen < tuned / 100  # the head alone, then (nearly) the whole network
    steps = [float(t) for t in re.findall(r"constant in-memory batch: ([\d.]+) s/step", out)]
    assert len(steps) == 2 and steps[1] > steps[0]
    assert len(re.findall(r"^phase \d .*verdict: input (IS|is NOT)", out, re.MULTILINE)) == 2
    assert re.search(r"^phase 2 takes \d+% of the training time", out, re.MULTILINE)