"""``tfvision.predict`` ranks every class, whatever ``top_k`` the export was written with."""

import csv
import io
import json
import warnings

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli
from PIL import Image

from tfvision import inference, rundir
from tfvision.data.digits import load_digits_arrays
from tfvision.inference import TopKWarning, predict
from tfvision.models import load_model


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory):
    """Three validation digits as files: lossless WebP, PNG, lossy WebP."""
    root = tmp_path_factory.mktemp("digits")
    _, (images, _) = load_digits_arrays()
    paths = []
    for i, (suffix, options) in enumerate([(".webp", {"lossless": True}), (".png", {}),
                                           (".webp", {"quality": 90})]):
        buffer = io.BytesIO()
        Image.fromarray(images[i, ..., 0]).convert("RGB").save(buffer, suffix[1:], **options)
        paths.append(root / f"digit{i}{suffix}")
        paths[-1].write_bytes(buffer.getvalue())
    return paths


def _serving_default(export_path, paths):
    signature = tf.saved_model.load(str(export_path)).signatures["serving_default"]
    out = signature(image_bytes=tf.constant([p.read_bytes() for p in paths]))
    return {k: v.numpy() for k, v in out.items()}


def test_top_k_beyond_the_export_top_k_ranks_every_class(trained_run, digit_files):
    out = _serving_default(trained_run.export_path, digit_files)
    names = trained_run.class_names
    k = len(names)
    assert out["class_names"].shape[1] < k  # the export itself answers fewer classes
    want_order = np.argsort(-out["probabilities"], axis=1, kind="stable")
    want_scores = np.take_along_axis(out["probabilities"], want_order, axis=1)
    for model in (trained_run.export_path, trained_run.run_dir / "model.keras"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", TopKWarning)
            answers = predict(model, digit_files, top_k=k)
        for answer, order, scores, top in zip(answers, want_order, want_scores,
                                              out["class_names"]):
            assert len(answer["scores"]) == k
            np.testing.assert_allclose(answer["scores"], scores, rtol=1e-5, atol=1e-6)
            assert answer["class_names"][0] == names[order[0]] == top[0].decode()
            assert sorted(answer["class_names"]) == sorted(names)
    export_answers = predict(trained_run.export_path, digit_files, top_k=k)
    assert [a["class_names"] for a in export_answers] == [[names[i] for i in o]
                                                          for o in want_order]
    assert [a["scores"] for a in export_answers] == want_scores.tolist()


def test_top_k_above_the_class_count_gives_every_class_and_says_so(trained_run, digit_files):
    count = len(trained_run.class_names)
    for model in (trained_run.export_path, trained_run.run_dir / "model.keras"):
        with pytest.warns(TopKWarning) as record:
            answers = predict(model, digit_files[:1], top_k=count + 2)
        assert [str(w.message) for w in record] == [
            f"top_k={count + 2} but the model has {count} classes; showing all {count}"]
        assert len(answers[0]["class_names"]) == len(answers[0]["scores"]) == count


def test_the_cli_prints_the_top_k_warning_as_a_warning_line(trained_run, digit_files):
    count = len(trained_run.class_names)
    done = run_cli("predict", trained_run.export_path, digit_files[0], "--top-k", count + 2,
                   process=True)
    assert done.returncode == 0, done.stderr
    assert (f"warning: top_k={count + 2} but the model has {count} classes; showing all "
            f"{count}\n") in done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith(f"{digit_files[0]}: ") and line.count("(") == count


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    """30 validation digits in a folder tree (PNG and JPEG), a text file named .jpg and a
    hidden file among them."""
    root = tmp_path_factory.mktemp("test_set")
    _, (images, labels) = load_digits_arrays()
    paths = []
    for i in range(30):
        folder = root / ("a" if i < 10 else "b/c")
        folder.mkdir(parents=True, exist_ok=True)
        rgb = tf.image.grayscale_to_rgb(tf.constant(images[i]))
        paths.append(folder / (f"{i:02d}.png" if i % 2 else f"{i:02d}.jpg"))
        paths[-1].write_bytes((tf.io.encode_png if i % 2 else tf.io.encode_jpeg)(rgb).numpy())
    (root / "b" / "notes.jpg").write_text("not an image")
    (root / "a" / ".hidden.png").write_bytes(paths[1].read_bytes())
    return root, paths, labels[:30]


def test_predict_a_folder_to_csv_names_and_skips_the_bad_file(trained_run, test_set, tmp_path):
    root, paths, labels = test_set
    out = tmp_path / "predictions.csv"
    done = run_cli("predict", trained_run.export_path, root, "--output", out, "--top-k", 2,
                   "--batch-size", 7)
    assert done.returncode == 1  # some were skipped
    assert f"warning: skipped {root / 'b' / 'notes.jpg'} is not a readable image" in done.stderr
    assert f"wrote 30 predictions to {out}" in done.stdout
    with out.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "class_name", "score", "class_1", "score_1", "class_2",
                       "score_2"]
    assert sorted(r[0] for r in rows[1:]) == sorted(map(str, paths))
    # The same answers as tfvision.predict, file by file.
    want = {a["image"]: a for a in predict(trained_run.export_path, paths, top_k=2)}
    for image, name, score, *top in rows[1:]:
        assert name == top[0] == want[image]["class_names"][0]
        assert float(score) == pytest.approx(want[image]["scores"][0], rel=1e-5)
        assert top[2] == want[image]["class_names"][1]
    right = np.mean([want[str(p)]["class_names"][0] == str(y) for p, y in zip(paths, labels)])
    assert right > 0.8


@pytest.mark.slow
def test_a_keras_model_loads_in_a_new_process(trained_run, test_set):
    """A fresh process has built no model, so nothing has registered tfvision's own layers
    (the CNN's Conv2D) with Keras yet: loading the file must do it."""
    root, _, _ = test_set
    done = run_cli("predict", trained_run.run_dir / "model.keras", root / "a" / "00.jpg",
                   process=True)
    assert done.returncode == 0, done.stderr
    assert f"{root / 'a' / '00.jpg'}: " in done.stdout


def test_predict_globs_and_jsonl_from_a_keras_model(trained_run, test_set, tmp_path):
    root, paths, _ = test_set
    out = tmp_path / "p.jsonl"
    done = run_cli("predict", trained_run.run_dir / "model.keras", f"{root}/**/*.png",
                   root / "a" / "00.jpg", "--output", out)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    pngs = sorted(str(p) for p in paths if p.suffix == ".png")
    assert [line["image"] for line in lines] == [*pngs, str(root / "a" / "00.jpg")]
    assert all(len(line["class_names"]) == 3 for line in lines)


def test_predict_with_nothing_readable_is_an_error(trained_run, tmp_path):
    done = run_cli("predict", trained_run.export_path, f"{tmp_path}/*.png")
    assert done.returncode == 2
    assert f"error: {tmp_path}/*.png: matches no file" in done.stderr


def test_predict_in_its_own_process_answers_as_here_with_weights_frozen(trained_run, digit_files):
    """A ``tfvision predict`` process lets oneDNN keep each convolution's weights reordered
    (tfvision/host.py); this process does not. The answers agree, over a last batch of one."""
    for model in (trained_run.export_path, trained_run.run_dir / "model.keras"):
        done = run_cli("predict", model, *digit_files, "--json", "--batch-size", "2",
                       process=True)
        assert done.returncode == 0, done.stderr
        got = [json.loads(line) for line in done.stdout.splitlines()]
        want = predict(model, digit_files, top_k=3)
        assert [g["class_names"] for g in got] == [w["class_names"] for w in want]
        np.testing.assert_allclose([g["scores"] for g in got], [w["scores"] for w in want],
                                   atol=1e-5)


@pytest.mark.parametrize("paired", [False, True])
def test_a_lone_image_gets_its_own_answer_whether_or_not_it_is_sent_twice(
        trained_run, digit_files, monkeypatch, paired):
    """Where oneDNN answers a batch of one slowly, predict sends it twice (tfvision/host.py).
    Both ways, a lone image and a last batch of one get the answers of a full batch (within
    float32 rounding: oneDNN picks other kernels for a batch of one)."""
    monkeypatch.setattr(inference, "lone_image_is_slow", lambda *args: paired)
    for model in (trained_run.export_path, trained_run.run_dir / "model.keras"):
        want = predict(model, digit_files, top_k=3)
        alone = predict(model, digit_files[:1], top_k=3)
        last_of_one = predict(model, digit_files, top_k=3, batch_size=2)
        for got in (alone, last_of_one):
            assert [g["image"] for g in got] == [w["image"] for w in want[:len(got)]]
            assert [g["class_names"] for g in got] == [w["class_names"] for w in want[:len(got)]]
            np.testing.assert_allclose([g["scores"] for g in got],
                                       [w["scores"] for w in want[:len(got)]], atol=1e-5)


def test_a_model_is_loaded_once_and_again_when_its_file_changes(
        trained_run, digit_files, tmp_path, monkeypatch):
    loads = []
    load = inference._load_model
    monkeypatch.setattr(inference, "_load_model", lambda path: loads.append(path) or load(path))
    model_file = tmp_path / "model.keras"
    model_file.write_bytes((trained_run.run_dir / "model.keras").read_bytes())
    first = predict(model_file, digit_files, top_k=1)
    assert predict(model_file, digit_files, top_k=1) == first
    predict(trained_run.export_path, digit_files[:1])
    predict(trained_run.export_path, digit_files[1:])
    assert len(loads) == 2, loads  # once each
    # The same file rewritten by another run: its answers, not the remembered model's.
    keras_model = load_model(model_file)
    bias = keras_model.layers[-1].bias
    bias.assign(np.where(np.arange(bias.shape[0]) == 7, 100.0, 0.0).astype(np.float32))
    rundir.save_model(keras_model, model_file)
    assert [r["class_names"] for r in predict(model_file, digit_files, top_k=1)] == [["7"]] * 3
    assert len(loads) == 3
