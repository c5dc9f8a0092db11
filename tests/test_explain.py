"""Grad-CAM explanations: right where it matters, exact, sane, and the same in every door.

Localization trains small models on synthetic pictures whose class is decided by one object;
exactness compares with a Grad-CAM written here from a model split by hand; the sanity check
is Adebayo et al. (2018): a re-initialised model must not give the same maps.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, small_config
from PIL import Image
from tensorflow_serving.apis import prediction_log_pb2

import tfvision
from tfvision import rundir
from tfvision.config import load_config, override_config
from tfvision.data.digits import load_digits_arrays
from tfvision.data.pipeline import Preset, decode_image
from tfvision.errors import ConfigError, ModelError
from tfvision.explanations import overlay
from tfvision.export.serving import EXPLAIN_SIGNATURE, OUTPUT_NAMES
from tfvision.models import BACKBONES, resnet18, scratch_cnn, transfer_model
from tfvision.training import train

# Classes 0-2: a red, green or blue square somewhere on grey noise; class 3: noise alone, so
# no class can be told by the absence of the others' colours.
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.float32)
POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.Flatten)
SAVED_MODEL_CLI = Path(sys.executable).with_name("saved_model_cli")


def synthetic(count, size, side, seed):
    """(images [N, size, size, 3] in [0, 255], labels [N], top-left corners [N, 2])."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (count, size, size, 1)).repeat(3, -1).astype(np.float32)
    labels = rng.integers(0, len(COLOURS) + 1, count)
    corners = rng.integers(0, size - side + 1, (count, 2))
    for image, label, (y, x) in zip(images, labels, corners):
        if label < len(COLOURS):
            image[y:y + side, x:x + side] = COLOURS[label]
    return images, labels, corners


def share_on_object(heatmaps, corners, side, size):
    """Share of heatmaps whose hottest cell is on the object's box, with one cell of margin."""
    cell = size / heatmaps.shape[1]
    hits = []
    for heatmap, (y, x) in zip(heatmaps, corners):
        row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        rows = (y // cell - 1, (y + side - 1) // cell + 1)
        cols = (x // cell - 1, (x + side - 1) // cell + 1)
        hits.append(rows[0] <= row <= rows[1] and cols[0] <= col <= cols[1])
    return np.mean(hits)


def _ranks(values):
    """Ranks with ties averaged (the many zeros a ReLU leaves are ties)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, group = np.unique(values, return_inverse=True)
    return (np.bincount(group, ranks) / np.bincount(group))[group]


def spearman(a, b):
    """Spearman's rank correlation; 0 for a blank map, which ranks nothing."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return np.corrcoef(_ranks(a.ravel()), _ranks(b.ravel()))[0, 1]


def split_at_pooling(model):
    """The model as ``upper(lower(images))``, cut at the input of the global pooling or flatten
    layer of the model or of its nested backbone: the test's own view of "the layer"."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    backbone, before, after = model, [], []
    if nested:
        backbone = nested[0]
        position = model.layers.index(backbone)
        before, after = model.layers[1:position], model.layers[position + 1:]
    index = max(i for i, layer in enumerate(backbone.layers) if isinstance(layer, POOLING))
    inner = keras.Model(backbone.input, backbone.layers[index].input)

    def lower(x):
        for layer in before:
            x = layer(x)
        return inner(x, training=False)

    def upper(a):
        for layer in [*backbone.layers[index:], *after]:
            a = layer(a)
        return a

    return lower, upper


def independent_gradcam(model, images, class_ids):
    """ReLU(Σ_k mean(∂y/∂A_k) · A_k) / max, from a GradientTape over the model split by hand."""
    lower, upper = split_at_pooling(model)
    activation = lower(tf.constant(images))
    with tf.GradientTape() as tape:
        tape.watch(activation)
        score = tf.gather(upper(activation), class_ids, batch_dims=1)
    grads = tape.gradient(score, activation).numpy()
    activation = activation.numpy()
    cam = np.maximum(np.einsum("bhwk,bk->bhw", activation, grads.mean(axis=(1, 2))), 0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return cam / np.where(peak > 0, peak, 1)


def _pixels(count, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def assert_exact(model, size, tolerance=1e-5):
    """Heatmaps of every class on random pictures equal the independent Grad-CAM."""
    images = _pixels(4, size)
    class_ids = np.arange(4) % model.output_shape[-1]
    got = tfvision.explain(model, images, class_index=class_ids)
    want = independent_gradcam(model, images, class_ids)
    assert got.heatmaps.shape == want.shape
    np.testing.assert_allclose(got.heatmaps, want, atol=tolerance, rtol=0, err_msg=model.name)
    assert got.heatmaps.max() == pytest.approx(1.0) and got.heatmaps.std() > 0.05, "trivial"
    assert list(got.class_ids) == list(class_ids)
    return got


@pytest.mark.parametrize("build, size, layer", [
    (lambda: scratch_cnn((32, 32, 3), 4), 32, "relu2"),
    (lambda: resnet18(num_classes=4, input_shape=(128, 128, 3)), 128, "layer4.1.relu2"),
    (lambda: transfer_model("resnet18", 4, weights=None, input_shape=(128, 128, 3)), 128,
     "layer4.1.relu2"),
], ids=["scratch_cnn", "resnet18", "resnet18_nested"])
def test_heatmaps_equal_an_independent_gradcam(build, size, layer):
    assert assert_exact(build(), size).layer == layer


@pytest.mark.slow
def test_every_backbone_is_explained_at_its_last_feature_map():
    """Inside the nested keras.applications backbone too: no "Graph disconnected"."""
    for name in BACKBONES:
        keras.utils.set_random_seed(0)  # the same random weights whatever ran before
        model = transfer_model(name, 4, weights=None, input_shape=(64, 64, 3), freeze=False)
        # Up to 150 randomly initialised layers amplify float32 rounding (1.2e-5 was seen).
        got = assert_exact(model, 64, tolerance=1e-4)
        assert got.heatmaps.shape == (4, 2, 2), name


@pytest.mark.parametrize("backbone, size, conv", [
    ("resnet18", 96, "layer4.1.conv2"),  # its Normalization keeps bfloat16 constants
    ("convnexttiny", 64, "convnext_tiny_stem_conv"),  # nested Sequential models cast inputs
])
def test_mixed_precision_models_are_explained_in_float32(backbone, size, conv):
    float32 = transfer_model(backbone, 4, weights=None, input_shape=(size, size, 3))
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = transfer_model(backbone, 4, weights=None, input_shape=(size, size, 3))
    finally:
        keras.config.set_dtype_policy("float32")
    mixed.set_weights(float32.get_weights())
    images, class_ids = _pixels(4, size), np.arange(4)
    got = tfvision.explain(mixed, images, class_index=class_ids)
    want = tfvision.explain(float32, images, class_index=class_ids)
    assert got.heatmaps.dtype == np.float32
    np.testing.assert_allclose(got.heatmaps, want.heatmaps, atol=1e-5, rtol=0)
    assert want.heatmaps.std() > 0.05, "trivial"
    # The model itself still computes in bfloat16.
    nested = next(layer for layer in mixed.layers if isinstance(layer, keras.Model))
    inner = [layer for layer in nested.layers if isinstance(layer, keras.Sequential)]
    owner = inner[0] if inner else nested
    assert owner.get_layer(conv).compute_dtype == "bfloat16"


def test_a_chosen_layer_is_explained_and_a_wrong_one_lists_the_valid_ones():
    model = scratch_cnn((32, 32, 3), 4)
    assert tfvision.explain(model, _pixels(2, 32), layer="conv2").heatmaps.shape == (2, 16, 16)
    with pytest.raises(ModelError, match="no layer 'conv9'.*valid layers: rescale, conv1, "
                                         "pool1, relu1, conv2, pool2, relu2$"):
        tfvision.explain(model, _pixels(2, 32), layer="conv9")
    with pytest.raises(ModelError, match="class_index 4 is out of range"):
        tfvision.explain(model, _pixels(2, 32), class_index=4)


def test_overlay_colours_the_hot_cells_red_over_the_picture_at_its_own_size():
    picture = np.full((30, 40, 3), 128, np.uint8)
    heatmap = np.zeros((3, 4), np.float32)
    heatmap[0, 0] = 1.0
    blended = overlay(picture, heatmap)
    assert blended.shape == (30, 40, 3) and blended.dtype == np.uint8
    hot, cold = blended[2, 2].astype(int), blended[-3, -3].astype(int)
    assert hot[0] - max(hot[1:]) > 40, hot  # red where the heatmap is 1
    assert cold[2] - max(cold[:2]) > 40, cold  # blue where it is 0


@pytest.mark.parametrize("eval_resize", ["squash", "center_crop"])
def test_heatmaps_go_on_the_part_of_the_picture_the_model_sees(eval_resize):
    """Pixels coloured by their own coordinates: the corners the model sees are the
    region's corners."""
    height, width = 300, 200
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = np.stack([xs * 255 / (width - 1), ys * 255 / (height - 1), 0 * xs], -1)
    preset = Preset((64, 64), eval_resize)
    seen = preset(np.round(picture).astype(np.uint8)).numpy()
    top, left, h, w = preset.region(height, width)
    for row, col in ((0, 0), (63, 63), (0, 63)):
        y, x = top + (row + 0.5) * h / 64, left + (col + 0.5) * w / 64
        assert seen[row, col, 0] == pytest.approx(x * 255 / (width - 1), abs=3)
        assert seen[row, col, 1] == pytest.approx(y * 255 / (height - 1), abs=3)


def _write_image(path, height, width, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_explain_cli_writes_overlays_heatmaps_and_jsonl(trained_run, tmp_path):
    images = [_write_image(tmp_path / "wide.png", 24, 40, 0),
              _write_image(tmp_path / "tall.jpg", 50, 20, 1)]
    originals = [p.read_bytes() for p in images]
    out = tmp_path  # beside the images, which must survive it
    result = run_cli("explain", trained_run.run_dir, *images, "--out", out, "--class", "3",
                     "--method", "gradcam++")
    assert result.returncode == 0, result.stderr
    assert [p.read_bytes() for p in images] == originals
    records = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in images]
    model = trained_run.model
    preset = Preset.of(rundir.load_run_config(trained_run.run_dir))
    batch = tf.stack([preset(decode_image(tf.constant(p.read_bytes()))) for p in images])
    want = tfvision.explain(model, batch, class_index=3, method="gradcam++")
    for record, image, heatmap, score in zip(records, images, want.heatmaps, want.scores):
        assert record["class_name"] == "3"
        assert record["score"] == pytest.approx(float(score), abs=1e-6)
        np.testing.assert_allclose(np.load(record["heatmap"]), heatmap, atol=1e-6)
        row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        h, w = heatmap.shape
        assert record["peak"] == pytest.approx([(row + 0.5) / h, (col + 0.5) / w])
        with Image.open(record["overlay"]) as drawn:
            assert drawn.size == Image.open(image).size and drawn.mode == "RGB"
    assert f"{images[0]}: 3 (" in result.stdout


def test_explain_cli_overlays_only_the_centre_a_center_crop_run_sees(trained_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "class_names.txt"):
        (run / name).write_bytes((trained_run.run_dir / name).read_bytes())
    config = rundir.load_run_config(trained_run.run_dir)
    override_config(config, ["data.eval_resize=center_crop"]).save(run / "config.yaml")
    image = _write_image(tmp_path / "tall.png", 60, 20, 2)
    result = run_cli("explain", run, image, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in (tmp_path / "out" / "explanations.jsonl").open()]
    top, _, height, _ = Preset((16, 16), "center_crop").region(60, 20)
    assert top > 0 and top / 60 <= record["peak"][0] <= (top + height) / 60
    original = np.asarray(Image.open(image))
    drawn = np.asarray(Image.open(record["overlay"]))
    below = round(top + height) + 1
    np.testing.assert_array_equal(drawn[below:], original[below:])  # not seen: untouched
    assert np.abs(drawn[30].astype(int) - original[30]).max() > 20  # seen: coloured


def test_explain_cli_names_bad_images_classes_and_layers(trained_run, tmp_path):
    good = _write_image(tmp_path / "good.png", 16, 16, 0)
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a JPEG")
    cases = {
        (bad,): f"{bad} is not a readable image",
        (good, "--class", "cat"): "unknown class 'cat'; classes: 0, 1, 2",
        (good, "--layer", "fc1"): "has no layer 'fc1' with a 4-D output; valid layers: rescale",
    }
    for args, expected in cases.items():
        result = run_cli("explain", trained_run.run_dir, *args, "--out", tmp_path / "out")
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def _localization(model, size, side, epochs, learning_rate, train_count):
    """Train ``model`` on synthetic pictures; (held-out accuracy, share of heatmaps on the
    object for each method, and the held-out pictures with an object)."""
    images, labels, _ = synthetic(train_count, size, side, seed=0)
    held_out, held_labels, corners = synthetic(100, size, side, seed=1)
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, batch_size=32, epochs=epochs, verbose=0)
    accuracy = np.mean(model.predict(held_out, verbose=0).argmax(1) == held_labels)
    with_object = held_labels < len(COLOURS)
    on_object = {
        method: share_on_object(
            tfvision.explain(model, held_out[with_object], method=method).heatmaps,
            corners[with_object], side, size)
        for method in ("gradcam", "gradcam++")
    }
    return accuracy, on_object, held_out[with_object]


def assert_sane(model, images):
    """Adebayo et al.: maps of the same classes from re-initialised weights rank differently."""
    trained = tfvision.explain(model, images)
    random = tfvision.explain(keras.models.clone_model(model), images,
                              class_index=trained.class_ids)
    assert random.heatmaps.std() > 0.01, "the re-initialised maps are not all blank"
    correlations = [spearman(a, b) for a, b in zip(trained.heatmaps, random.heatmaps)]
    assert np.mean(correlations) < 0.5, correlations


@pytest.mark.slow
def test_scratch_cnn_heatmaps_find_the_object_and_fail_the_sanity_check_when_random():
    keras.utils.set_random_seed(0)
    model = scratch_cnn((32, 32, 3), 4, filters=(16, 32), dense_units=32)
    accuracy, on_object, images = _localization(model, 32, 8, epochs=5, learning_rate=1e-3,
                                                train_count=1000)
    assert accuracy >= 0.95
    assert min(on_object.values()) >= 0.90, on_object  # on relu2's 8×8 cells
    assert_sane(model, images)


@pytest.mark.slow
def test_nested_mobilenet_heatmaps_find_the_object_and_fail_the_sanity_check_when_random():
    """The smallest keras.applications backbone, from random weights (no downloads here)."""
    keras.utils.set_random_seed(1)
    model = transfer_model("mobilenetv3small", 4, weights=None, input_shape=(192, 192, 3),
                           freeze=False)
    for layer in model.get_layer("MobileNetV3Small").layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9  # statistics that settle within the few steps trained
    accuracy, on_object, images = _localization(model, 192, 24, epochs=4, learning_rate=3e-3,
                                                train_count=768)
    assert accuracy >= 0.95
    assert min(on_object.values()) >= 0.90, on_object  # on its 6×6 last feature map
    assert_sane(model, images)


@pytest.fixture(scope="module")
def explain_export(trained_run, tmp_path_factory):
    """``tfvision export RUN --explain``: the small run's model with serving_explain."""
    export_dir = tmp_path_factory.mktemp("explain_export") / "digits"
    result = run_cli("export", trained_run.run_dir, "--explain", "--export-dir", export_dir)
    assert result.returncode == 0, result.stderr
    return export_dir / "1"


def _encoded_digits(count):
    _, (images, _) = load_digits_arrays()
    return [tf.io.encode_png(image).numpy() for image in images[:count]]


def _explained(model, encoded):
    preset = Preset(tuple(model.input_shape[1:3]))  # the small run's: squashed
    images = tf.stack([preset(decode_image(tf.constant(e))) for e in encoded])
    return tfvision.explain(model, images)


def test_serving_explain_answers_what_and_where_like_explain(explain_export, trained_run):
    encoded = _encoded_digits(6)
    loaded = tf.saved_model.load(str(explain_export))
    out = loaded.signatures[EXPLAIN_SIGNATURE](image_bytes=tf.constant(encoded))
    assert set(out) == {*OUTPUT_NAMES, "heatmaps"}
    want = _explained(trained_run.model, encoded)
    np.testing.assert_allclose(out["heatmaps"].numpy(), want.heatmaps, atol=1e-4, rtol=0)
    assert list(out["class_ids"].numpy()[:, 0]) == list(want.class_ids)
    assert out["heatmaps"].numpy().max() == pytest.approx(1.0)
    default = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
    np.testing.assert_allclose(out["probabilities"], default["probabilities"], atol=1e-6)
    # Warmup records cover it, and the default export stays without it.
    path = explain_export / "assets.extra" / "tf_serving_warmup_requests"
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))]
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request
                for log in logs}
    assert EXPLAIN_SIGNATURE in requests
    inputs = {k: tf.make_ndarray(v) for k, v in requests[EXPLAIN_SIGNATURE].inputs.items()}
    assert loaded.signatures[EXPLAIN_SIGNATURE](**inputs)["heatmaps"].shape[0] == 1
    default_export = tf.saved_model.load(str(trained_run.export_path))
    assert EXPLAIN_SIGNATURE not in default_export.signatures


@pytest.mark.slow
def test_saved_model_cli_run_on_serving_explain_gives_the_heatmaps_of_explain(
    explain_export, trained_run, tmp_path
):
    encoded = _encoded_digits(4)
    np.save(tmp_path / "in.npy", np.array(encoded, dtype=object), allow_pickle=True)
    subprocess.run(
        [str(SAVED_MODEL_CLI), "run", "--dir", str(explain_export), "--tag_set", "serve",
         "--signature_def", EXPLAIN_SIGNATURE, "--inputs", f"image_bytes={tmp_path / 'in.npy'}",
         "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, check=True,
    )
    heatmaps = np.load(tmp_path / "out" / "heatmaps.npy")
    want = _explained(trained_run.model, encoded)
    assert heatmaps.dtype == np.float32 and heatmaps.shape == want.heatmaps.shape
    np.testing.assert_allclose(heatmaps, want.heatmaps, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "class_ids.npy")[:, 0],
                                  want.class_ids)


def test_export_explain_is_a_validated_config_key_that_training_exports_with(tmp_path):
    assert load_config("quickstart").export.explain is False
    with pytest.raises(ConfigError, match="export.explain must be true or false, got 'maybe'"):
        load_config("quickstart", ["export.explain=maybe"])
    result = train(small_config("export.explain=true", "train.epochs=1"), tmp_path / "run",
                   verbose=0)
    assert EXPLAIN_SIGNATURE in tf.saved_model.load(str(result.export_path)).signatures
