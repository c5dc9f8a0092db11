"""An export answers TF Serving's way: read by saved_model_cli, fed PredictRequests and REST bodies.

TF Serving itself cannot be installed here (see DESIGN.md), so the export is checked the way
the server reads it: ``saved_model_cli`` in a subprocess (TF1 session loading, like the C++
server), signatures called by keyword with tensors from ``tf.make_ndarray``.
"""

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, small_config
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from tfvision.data.digits import load_digits_arrays
from tfvision.data.pipeline import decode_image, resize
from tfvision.export import serving
from tfvision.export.serving import OUTPUT_NAMES

SIGNATURES = {  # name: (input, dtype, shape) as saved_model_cli prints them
    "serving_default": ("image_bytes", "DT_STRING", "(-1)"),
    "serving_image_tensor": ("images", "DT_UINT8", "(-1, -1, -1, 3)"),
    "serving_tf_example": ("examples", "DT_STRING", "(-1)"),
}
SAVED_MODEL_CLI = Path(sys.executable).with_name("saved_model_cli")


def keras_probabilities(model, encoded):
    """What the in-memory model says about encoded images, preprocessed as in evaluation."""
    size = model.input_shape[1:3]
    images = tf.stack([resize(decode_image(tf.constant(e)), size) for e in encoded])
    return tf.nn.softmax(model(images, training=False)).numpy()


@pytest.fixture(scope="module")
def export(trained_run):
    return trained_run.export_path


@pytest.fixture(scope="module")
def loaded(export):
    return tf.saved_model.load(str(export))


@pytest.fixture(scope="module")
def digit_files(trained_run, tmp_path_factory):
    """A grayscale 8×8 PNG and a 24×24 RGB JPEG of two validation digits the model tells apart."""
    _, (images, _) = load_digits_arrays()
    encoded = [tf.io.encode_png(images[0]).numpy()]
    for image in images[1:]:
        rgb = np.repeat(np.kron(image, np.ones((3, 3, 1), np.uint8)), 3, axis=-1)
        jpeg = tf.io.encode_jpeg(rgb, quality=95).numpy()
        top1 = keras_probabilities(trained_run.model, [encoded[0], jpeg]).argmax(1)
        if top1[0] != top1[1]:
            encoded.append(jpeg)
            break
    folder = tmp_path_factory.mktemp("digits")
    paths = [folder / "digit.png", folder / "digit.jpg"]
    for path, data in zip(paths, encoded):
        path.write_bytes(data)
    return paths


def _signature_blocks(text):
    """``{signature name: (its text, its method name)}`` from ``saved_model_cli show --all``."""
    pattern = r"signature_def\['(\w+)'\]:\n(.*?)Method name is: ([^\n]*)"
    return {m[1]: (m[2], m[3]) for m in re.finditer(pattern, text, re.DOTALL)}


def test_saved_model_cli_shows_three_fully_typed_predict_signatures(export, trained_run):
    out = subprocess.run([str(SAVED_MODEL_CLI), "show", "--dir", str(export), "--all"],
                         capture_output=True, text=True, check=True).stdout
    blocks = _signature_blocks(out)
    num_classes = len(trained_run.class_names)
    k = min(small_config().export.top_k, num_classes)
    for name, (input_name, dtype, shape) in SIGNATURES.items():
        body, method = blocks[name]
        assert method == "tensorflow/serving/predict", name
        tensors = re.findall(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+"
                             r"shape: (\([^)]*\))", body)
        assert ("inputs", input_name, dtype, shape) in tensors
        outputs = {n: (d, s) for kind, n, d, s in tensors if kind == "outputs"}
        assert outputs == {
            "probabilities": ("DT_FLOAT", f"(-1, {num_classes})"),
            "logits": ("DT_FLOAT", f"(-1, {num_classes})"),
            "class_ids": ("DT_INT32", f"(-1, {k})"),
            "scores": ("DT_FLOAT", f"(-1, {k})"),
            "class_names": ("DT_STRING", f"(-1, {k})"),
        }, name
        assert len(tensors) == 1 + len(OUTPUT_NAMES)


def test_saved_model_cli_run_answers_a_png_and_a_jpeg_like_the_model(
    export, trained_run, digit_files, tmp_path
):
    encoded = [p.read_bytes() for p in digit_files]
    np.save(tmp_path / "in.npy", np.array(encoded, dtype=object), allow_pickle=True)
    subprocess.run(
        [str(SAVED_MODEL_CLI), "run", "--dir", str(export), "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"image_bytes={tmp_path / 'in.npy'}",
         "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, check=True,
    )
    class_ids = np.load(tmp_path / "out" / "class_ids.npy")
    class_names = np.load(tmp_path / "out" / "class_names.npy", allow_pickle=True)
    expected = keras_probabilities(trained_run.model, encoded).argmax(1)
    assert list(class_ids[:, 0]) == list(expected)
    assert [n.decode() for n in class_names[:, 0]] == [trained_run.class_names[i]
                                                        for i in expected]


def _through_the_wire(request):
    """Serialize and parse, then feed the inputs to the signature by keyword, as the server does."""
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    return {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}


def test_predict_requests_for_bytes_tensor_and_example_give_the_same_top1(
    loaded, trained_run, digit_files
):
    encoded = [p.read_bytes() for p in digit_files]
    expected = keras_probabilities(trained_run.model, encoded).argmax(1)
    for image, want in zip(encoded, expected):
        pixels = decode_image(tf.constant(image)).numpy()[None]
        requests = {
            "serving_default": serving.string_inputs("serving_default", [image]),
            "serving_tf_example": serving.string_inputs("serving_tf_example", [image]),
            "serving_image_tensor": {"images": pixels},
        }
        for name, inputs in requests.items():
            request = serving.predict_request("digits", name, inputs)
            out = loaded.signatures[name](**_through_the_wire(request))
            assert int(out["class_ids"][0, 0]) == want, name
            assert out["class_names"][0, 0].numpy().decode() == trained_run.class_names[want]
            scores = out["scores"].numpy()[0]
            assert np.all(np.diff(scores) <= 0), "top-k scores are best first"


def test_serving_request_prints_a_rest_body_and_writes_a_grpc_request(digit_files, tmp_path):
    result = run_cli("serving-request", *digit_files)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["signature_name"] == "serving_default"
    assert [base64.b64decode(i["b64"]) for i in body["instances"]] == [
        p.read_bytes() for p in digit_files
    ]
    result = run_cli("serving-request", digit_files[0], "--grpc", tmp_path / "req.pb",
                     "--model-name", "digits")
    assert result.returncode == 0, result.stderr
    request = predict_pb2.PredictRequest.FromString((tmp_path / "req.pb").read_bytes())
    assert request.model_spec.name == "digits"
    assert request.model_spec.signature_name == "serving_default"
    assert list(tf.make_ndarray(request.inputs["image_bytes"])) == [digit_files[0].read_bytes()]


def test_rest_body_for_tf_examples_wraps_the_image_bytes(digit_files):
    image = digit_files[1].read_bytes()
    body = serving.rest_body("serving_tf_example", [image])
    example = tf.train.Example.FromString(base64.b64decode(body["instances"][0]["b64"]))
    assert example.features.feature["image/encoded"].bytes_list.value == [image]


def test_non_image_bytes_fail_with_a_decoding_error(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        loaded.signatures["serving_default"](image_bytes=tf.constant([b"this is not an image"]))
    message = str(err.value)
    assert "Unknown image file format" in message
    assert "DecodeImage" in message


def test_grayscale_and_rgba_pngs_are_answered_like_rgb(loaded, trained_run):
    _, (images, _) = load_digits_arrays()
    digit = images[5]
    rgb = np.repeat(digit, 3, axis=-1)
    alpha = np.random.default_rng(0).integers(0, 256, digit.shape, dtype=np.uint8)
    pngs = {
        "gray": tf.io.encode_png(digit).numpy(),
        "rgba": tf.io.encode_png(np.concatenate([rgb, alpha], -1)).numpy(),
    }
    size = trained_run.model.input_shape[1:3]
    want = tf.nn.softmax(trained_run.model(resize(rgb[None], size))).numpy()[0]
    for kind, png in pngs.items():
        out = loaded.signatures["serving_default"](image_bytes=tf.constant([png]))
        np.testing.assert_allclose(out["probabilities"].numpy()[0], want, atol=1e-5,
                                   err_msg=kind)


def test_warmup_records_parse_as_prediction_logs_and_replay(export, loaded):
    path = export / "assets.extra" / "tf_serving_warmup_requests"
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))]
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == set(SIGNATURES)
    for log in logs:
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        inputs = {name: tf.make_ndarray(p) for name, p in request.inputs.items()}
        if "image_bytes" in inputs:
            assert tf.io.is_jpeg(inputs["image_bytes"][0]), "a real encoded image"
        out = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert set(out) == set(OUTPUT_NAMES)
        np.testing.assert_allclose(out["probabilities"].numpy().sum(1), 1.0, atol=1e-5)


def test_predict_cli_on_an_export_folder_uses_its_serving_default(trained_run, digit_files):
    result = run_cli("predict", trained_run.export_path.parent, *digit_files, "--json")
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    probabilities = keras_probabilities(trained_run.model, [p.read_bytes() for p in digit_files])
    for answer, probs in zip(answers, probabilities):
        assert answer["class_names"][0] == trained_run.class_names[probs.argmax()]
        assert abs(answer["scores"][0] - probs.max()) < 1e-5


def test_the_export_stores_each_weight_once(export, trained_run):
    stored = tf.train.list_variables(str(export / "variables" / "variables"))
    values = sum(int(np.prod(shape)) for name, shape in stored if name.endswith("VALUE"))
    assert values == trained_run.model.count_params()


def test_the_export_scores_the_validation_split_as_evaluation_does(loaded, trained_run):
    """Raw validation digits sent as PNG bytes and as uint8 pixels: the accuracy of training."""
    _, (images, labels) = load_digits_arrays()
    rgb = np.repeat(images, 3, axis=-1)
    pngs = [tf.io.encode_png(image).numpy() for image in images]
    answers = {
        "serving_default": loaded.signatures["serving_default"](image_bytes=tf.constant(pngs)),
        "serving_image_tensor": loaded.signatures["serving_image_tensor"](images=rgb),
    }
    for name, out in answers.items():
        accuracy = np.mean(out["class_ids"].numpy()[:, 0] == labels)
        assert abs(accuracy - trained_run.metrics["val_accuracy"]) < 1e-6, name


def test_one_image_alone_gets_the_answer_it_gets_within_a_batch(loaded, digit_files):
    """A lone image takes its own path through the signature (no map_fn loop)."""
    images = [p.read_bytes() for p in digit_files]
    signature = loaded.signatures["serving_default"]
    together = signature(image_bytes=tf.constant(images))
    for i, image in enumerate(images):
        alone = signature(image_bytes=tf.constant([image]))
        np.testing.assert_allclose(alone["probabilities"][0], together["probabilities"][i],
                                   atol=1e-6)
        names = (alone["class_names"][0], together["class_names"][i])
        assert names[0].numpy().tolist() == names[1].numpy().tolist()


FROZEN_WEIGHTS_SERVER = """
import json, sys
import numpy as np
import tensorflow as tf
signature = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
batches = json.loads(sys.argv[2])
images = [open(p, "rb").read() for p in json.loads(sys.argv[3])]
print(json.dumps([signature(image_bytes=tf.constant([images[i] for i in batch]))
                  ["probabilities"].numpy().tolist() for batch in batches]))
"""


def test_weights_assumed_frozen_as_readme_advises_servers_change_no_answer(
    export, loaded, digit_files
):
    """README's serving setting (oneDNN reorders each convolution's weights once, on the
    first request) in a process that only loads the export, over requests of several sizes."""
    batches = [[0], [0, 1], [1], [1, 0, 1]]
    env = {**os.environ, "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": "1", "TF_ENABLE_ONEDNN_OPTS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", FROZEN_WEIGHTS_SERVER, str(export), json.dumps(batches),
         json.dumps([str(p) for p in digit_files])],
        capture_output=True, text=True, env=env, check=True,
    )
    got = json.loads(out.stdout.splitlines()[-1])
    images = [p.read_bytes() for p in digit_files]
    for batch, answer in zip(batches, got):
        want = loaded.signatures["serving_default"](
            image_bytes=tf.constant([images[i] for i in batch]))["probabilities"].numpy()
        np.testing.assert_allclose(np.array(answer), want, atol=1e-5, err_msg=str(batch))
