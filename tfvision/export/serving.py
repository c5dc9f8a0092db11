"""What TF Serving's clients see and what it reads besides the SavedModel: the signature and
tensor names, requests, warmup records, ``models.config``.

The protocol buffers come from ``tensorflow-serving-api`` (``pip install 'tfvision[serving]'``).
Exports still work without it; they just lack warmup records and ``models.config``.
TensorFlow is imported only by what builds its protos, so a REST body for image files
(``tfvision serving-request``) is written without it.
"""

import base64
import importlib.util
from pathlib import Path

import numpy as np

from tfvision.errors import ExportError

BYTES_SIGNATURE = "serving_default"
TENSOR_SIGNATURE = "serving_image_tensor"
EXAMPLE_SIGNATURE = "serving_tf_example"
INPUT_NAMES = {
    BYTES_SIGNATURE: "image_bytes",
    TENSOR_SIGNATURE: "images",
    EXAMPLE_SIGNATURE: "examples",
}
OUTPUT_NAMES = ("probabilities", "logits", "class_ids", "scores", "class_names")
IMAGE_FEATURE = "image/encoded"


def image_example(encoded: bytes) -> bytes:
    """A serialized tf.Example holding one encoded image under ``image/encoded``."""
    import tensorflow as tf

    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
    return tf.train.Example(
        features=tf.train.Features(feature={IMAGE_FEATURE: feature})
    ).SerializeToString()


WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MODELS_CONFIG = "models.config"
SERVING_ROOT = "/models"  # where scripts/serve_docker.sh mounts the folder holding models.config
MISSING_API = "tensorflow-serving-api is not installed (pip install 'tfvision[serving]')"


def have_serving_api() -> bool:
    return importlib.util.find_spec("tensorflow_serving") is not None


def string_inputs(signature: str, encoded_images) -> dict:
    """The string input of ``signature`` (bytes or tf.Example) for a list of encoded images."""
    if signature == EXAMPLE_SIGNATURE:
        values = [image_example(e) for e in encoded_images]
    elif signature == BYTES_SIGNATURE:
        values = list(encoded_images)
    else:
        raise ExportError(f"{signature} does not take encoded images")
    return {INPUT_NAMES[signature]: np.array(values, dtype=object)}


def rest_body(signature: str, encoded_images) -> dict:
    """The JSON body of a REST ``:predict`` call; binary strings travel as ``{"b64": ...}``."""
    (values,) = string_inputs(signature, encoded_images).values()
    return {
        "signature_name": signature,
        "instances": [{"b64": base64.b64encode(v).decode("ascii")} for v in values],
    }


def predict_request(model_name: str, signature: str, inputs: dict):
    """A gRPC ``PredictRequest`` with each input as a TensorProto."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def write_warmup(version_dir, requests) -> str:
    """``assets.extra/tf_serving_warmup_requests``: TF Serving replays these before serving."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from tfvision import fs

    path = fs.join(version_dir, *WARMUP_FILE.parts)
    tf.io.gfile.makedirs(fs.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def update_models_config(export_dir) -> str:
    """Add or refresh ``export_dir``'s entry in the ``models.config`` of its parent folder.

    The parent is the folder TF Serving mounts as ``/models``; the model is served under the
    name of ``export_dir``, every other entry is kept as it was.
    """
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from tfvision import fs, rundir  # TensorFlow's file I/O: not needed for a REST body

    parent, name = fs.split(fs.absolute(export_dir))
    path = fs.join(parent, MODELS_CONFIG)
    config = model_server_config_pb2.ModelServerConfig()
    if tf.io.gfile.exists(path):
        try:
            text_format.Parse(rundir.read_text(path), config)
        except text_format.ParseError as err:
            raise ExportError(f"{path} is not a valid TF Serving model config: {err}") from None
    entries = config.model_config_list.config
    entry = next((e for e in entries if e.name == name), None) or entries.add()
    entry.name = name
    entry.base_path = f"{SERVING_ROOT}/{name}"
    entry.model_platform = "tensorflow"

    # TF Serving may poll this file: never show it half-written.
    rundir.write_text(path, text_format.MessageToString(config))
    return path
