"""``tfvision evaluate``, the report training writes, calibrated exports and corruptions,
on the small trained run of conftest."""

import csv
import json
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli

from tfvision.data.digits import load_digits_arrays
from tfvision.evaluation import corruptions, evaluate, metrics
from tfvision.evaluation.report import calibrate
from tfvision.export.loaded import load_export
from tfvision.models import load_model

KEYS = {"accuracy", "top_k_accuracy", "loss", "num_examples", "class_names",
        "confusion_matrix", "per_class", "macro_avg", "weighted_avg", "calibration",
        "mistakes", "confused_pairs"}
PNG = b"\x89PNG\r\n\x1a\n"


def _last_history(run_dir):
    with (run_dir / "history.csv").open() as f:
        return list(csv.DictReader(f))[-1]


def test_training_writes_a_report_on_the_validation_split(trained_run):
    report_dir = trained_run.run_dir / "report"
    report = json.loads((report_dir / "report.json").read_text())
    assert KEYS <= set(report)
    last = _last_history(trained_run.run_dir)
    assert report["accuracy"] == pytest.approx(float(last["val_accuracy"]), abs=1e-3)
    assert report["loss"] == pytest.approx(float(last["val_loss"]), rel=1e-3)
    assert report["num_examples"] == 359  # the digits' validation split
    assert np.sum(report["confusion_matrix"]) == 359
    for name in ("confusion_matrix", "reliability", "curves", "mistakes"):
        assert (report_dir / f"{name}.png").read_bytes().startswith(PNG), name
    assert "data:image/png;base64," in (report_dir / "report.html").read_text()


def test_an_export_and_its_keras_model_give_the_same_report(trained_run):
    from_keras = evaluate(trained_run.run_dir / "model.keras")
    from_export = evaluate(trained_run.export_path)
    assert from_export["num_examples"] == from_keras["num_examples"] == 359
    assert from_export["accuracy"] == from_keras["accuracy"]
    assert from_export["confusion_matrix"] == from_keras["confusion_matrix"]
    assert from_export["loss"] == pytest.approx(from_keras["loss"], rel=1e-4)
    assert [m["score"] for m in from_export["mistakes"]] == pytest.approx(
        [m["score"] for m in from_keras["mistakes"]], rel=1e-4)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """Validation 3s and 7s as files, some in nested folders, PNG and JPEG."""
    root = tmp_path_factory.mktemp("test_digits")
    _, (images, labels) = load_digits_arrays()
    files = {"3": [], "7": []}
    for i in np.flatnonzero(np.isin(labels, [3, 7])):
        folder = root / str(labels[i]) / ("nested" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        rgb = tf.image.grayscale_to_rgb(tf.constant(images[i]))
        path = folder / (f"{i}.png" if i % 2 else f"{i}.jpg")
        path.write_bytes((tf.io.encode_png if i % 2 else tf.io.encode_jpeg)(rgb).numpy())
        files[str(labels[i])].append(path)
    return root, files


def test_data_folder_counts_every_image_and_matches_classes_by_name(trained_run, digit_folder):
    root, files = digit_folder
    done = run_cli("evaluate", trained_run.run_dir, "--data", root, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["num_examples"] == sum(len(f) for f in files.values())
    support = {r["class"]: r["support"] for r in report["per_class"]}
    assert support == {name: len(files.get(name, [])) for name in trained_run.class_names}
    # The same files through predict, a separate path: the same accuracy.
    from tfvision.inference import predict

    paths = [p for group in files.values() for p in group]
    answers = predict(trained_run.run_dir / "model.keras", paths, top_k=1)
    right = [a["class_names"][0] == p.parent.name.replace("nested", "") or
             a["class_names"][0] == p.parent.parent.name and p.parent.name == "nested"
             for a, p in zip(answers, paths)]
    assert report["accuracy"] == pytest.approx(np.mean(right))
    assert all(m["image"].startswith(str(root)) for m in report["mistakes"])
    from_export = evaluate(trained_run.export_path, data=str(root))  # JPEGs through the export
    assert from_export["num_examples"] == report["num_examples"]
    assert from_export["confusion_matrix"] == report["confusion_matrix"]


def test_data_with_a_class_the_model_does_not_know_is_an_error(trained_run, tmp_path):
    (tmp_path / "cat").mkdir()
    image = tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy()
    (tmp_path / "cat" / "1.png").write_bytes(image)
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "1.png").write_bytes(image)
    done = run_cli("evaluate", trained_run.run_dir, "--data", tmp_path)
    assert done.returncode == 2
    assert "the data has classes the model does not know: cat" in done.stderr


def test_temperature_scaling_lowers_the_validation_nll(trained_run):
    fitted = calibrate(trained_run.run_dir)
    assert fitted["nll_calibrated"] < fitted["nll"]
    report = evaluate(trained_run.run_dir)
    assert report["calibration"]["temperature"] == pytest.approx(fitted["temperature"])
    assert report["calibration"]["nll"] == pytest.approx(fitted["nll"])


def test_a_calibrated_export_answers_softmax_of_logits_over_t(trained_run, tmp_path):
    """An overconfident model (the trained run's logits times 4: exact in floating point) is
    cooled by a temperature above 2; the trained run's own temperature ranged 0.89-1.26 over
    twelve seeds, once within 1.5e-3 of 1, too close to tell a fitted temperature from none."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir)
    model = load_model(run_dir / "model.keras")
    head = model.get_layer("fc2")
    head.set_weights([4 * w for w in head.get_weights()])
    model.save(run_dir / "overconfident.keras")
    done = run_cli("export", run_dir / "overconfident.keras", "--calibrate",
                   "--export-dir", tmp_path / "export")
    assert done.returncode == 0, done.stderr
    printed = float(done.stdout.split("temperature: ")[1].split()[0])
    export = load_export(tmp_path / "export" / "1")
    assert export.temperature == pytest.approx(printed, abs=5e-5)
    assert export.temperature > 2
    _, (images, _) = load_digits_arrays()
    encoded = [tf.io.encode_png(tf.image.grayscale_to_rgb(tf.constant(x))).numpy()
               for x in images[:16]]
    out = export(tf.constant(encoded))
    logits = out["logits"].numpy()
    want = metrics.softmax(logits / export.temperature)
    np.testing.assert_allclose(out["probabilities"].numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["scores"].numpy(), -np.sort(-want, axis=1)[:, :5],
                               rtol=1e-5, atol=1e-6)
    raw = load_export(trained_run.export_path)(tf.constant(encoded))["logits"].numpy()
    np.testing.assert_allclose(logits, 4 * raw, rtol=1e-5, atol=1e-5)  # logits stay raw
    # Its report judges what it serves: calibrated already, so a temperature of 1 is best.
    nll_after = float(done.stdout.split(" -> ")[1].split(")")[0])
    calibration = evaluate(tmp_path / "export")["calibration"]
    assert calibration["nll"] == pytest.approx(nll_after, abs=1e-4)
    assert calibration["temperature"] == pytest.approx(1, abs=1e-3)


def test_pictures_without_matplotlib_name_the_extra(trained_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    done = run_cli("evaluate", trained_run.run_dir, "--report", tmp_path / "r")
    assert done.returncode == 2
    assert 'pip install "tfvision[report]"' in done.stderr
    evaluate(trained_run.run_dir, report_dir=tmp_path / "auto", pictures="auto")
    assert [p.name for p in (tmp_path / "auto").iterdir()] == ["report.json"]


def test_corruptions_are_seeded_and_grow_with_severity():
    rng = np.random.default_rng(1)
    images = tf.constant(rng.integers(0, 256, (4, 32, 32, 3)).astype(np.float32))
    batches = tf.data.Dataset.from_tensors((images, tf.zeros([4], tf.int64)))
    for name in corruptions.CORRUPTIONS:
        changes = []
        for severity in corruptions.SEVERITIES:
            (once,), (again,) = ([x for x, _ in corruptions.corrupt(batches, name, severity, 7)]
                                 for _ in range(2))
            np.testing.assert_array_equal(once, again)  # seeded
            assert once.shape == images.shape
            assert 0 <= once.numpy().min() and once.numpy().max() <= 255
            changes.append(float(tf.reduce_mean(tf.abs(once - images))))
        assert changes[0] > 0.5, name
        assert changes == sorted(changes), (name, changes)
    (seven,), (eight,) = ([x for x, _ in corruptions.corrupt(batches, "gaussian_noise", 3, s)]
                          for s in (7, 8))
    assert not np.array_equal(seven, eight)


@pytest.mark.slow
def test_corruption_sweep_reports_every_corruption_and_severity(trained_run, tmp_path):
    done = run_cli("evaluate", trained_run.run_dir, "--corruptions", "--report", tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    found = report["corruptions"]
    assert set(found["results"]) == {"gaussian_noise", "gaussian_blur", "jpeg_compression",
                                      "brightness", "contrast", "pixelate"}
    accuracies = [r["accuracy"] for rows in found["results"].values() for r in rows]
    assert all([r["severity"] for r in rows] == [1, 2, 3, 4, 5]
               for rows in found["results"].values())
    assert found["mean_accuracy"] == pytest.approx(np.mean(accuracies))
    assert found["drop"] == pytest.approx(report["accuracy"] - found["mean_accuracy"])
    assert found["drop"] > 0
    contrast = [r["accuracy"] for r in found["results"]["contrast"]]
    assert contrast[-1] < contrast[0] - 0.3  # a nearly flat image is hard to read
    assert (tmp_path / "corruptions.png").read_bytes().startswith(PNG)
    assert "corruption_accuracy: " in done.stdout
    # The export, fed the same corrupted pixels as PNGs, answers the same.
    from_export = evaluate(trained_run.export_path, corruptions=True)["corruptions"]
    def accuracies(sweep):
        return {name: [r["accuracy"] for r in rows] for name, rows in sweep["results"].items()}

    assert accuracies(from_export) == accuracies(found)


def test_the_mistakes_gallery_draws_an_overlay_per_mistake(trained_run, tmp_path):
    """The hook for explanations (Grad-CAM from tfvision.explain): called with each
    mistake's picture and its predicted class id, drawn beside it."""
    calls = []

    def overlay(image, class_id):
        calls.append((image.shape, class_id))
        return 255 - image

    report = evaluate(trained_run.run_dir, report_dir=tmp_path, overlay=overlay)
    names = report["class_names"]
    assert calls == [((16, 16, 3), names.index(m["predicted"])) for m in report["mistakes"]]
    assert (tmp_path / "mistakes.png").read_bytes().startswith(PNG)


def test_the_mistakes_gallery_shows_grad_cam_of_the_wrong_class_by_default(
        trained_run, tmp_path, monkeypatch):
    """A Keras model's report explains each mistake with tfvision.explain, for the class it
    wrongly gave; an export (no Keras model) gets no overlay."""
    from tfvision import explanations

    explained, real = [], explanations.explain

    def explain(model, images, class_index=None, **kwargs):
        explained.extend(int(c) for c in class_index)
        return real(model, images, class_index=class_index, **kwargs)

    monkeypatch.setattr(explanations, "explain", explain)
    report = evaluate(trained_run.run_dir, report_dir=tmp_path / "keras")
    names = report["class_names"]
    assert report["mistakes"] and explained == [names.index(m["predicted"])
                                                for m in report["mistakes"]]
    explained.clear()
    evaluate(trained_run.export_path, report_dir=tmp_path / "export")
    assert explained == []


def test_data_tfrecords_counts_every_record_of_the_pattern(trained_run, digit_folder, tmp_path):
    root, files = digit_folder
    converted = run_cli("data", "convert", root, tmp_path, "--shards", 2)
    assert converted.returncode == 0, converted.stderr
    report = evaluate(trained_run.run_dir, data=f"{tmp_path}/*.tfrecord")  # train + validation
    assert report["num_examples"] == sum(len(f) for f in files.values())
    folder = evaluate(trained_run.run_dir, data=str(root))
    assert report["accuracy"] == pytest.approx(folder["accuracy"])
