"""Grad-CAM explanations: where in the picture the model looked, for every model tfvision builds.

The keras.io recipe builds ``Model(inputs, [layer.output, model.output])``. For a layer inside
a nested backbone (every transfer model) that fails with "Graph disconnected"
(tensorflow/tensorflow#44462, keras-team/keras#16355): the layer's output belongs to the
backbone's own graph. Here the model's graph is run layer by layer instead, descending into
nested functional models, so the explained activation is a tensor of the same forward pass and
one GradientTape gives its gradient. The same function runs eagerly (``explain``) and inside
the export's ``serving_explain`` signature.

A mixed-precision model is explained through a float32 copy with the same weights, so
gradients neither underflow in float16 nor lose bits in bfloat16.
"""

import inspect
import io
import json
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfvision import fs
from tfvision.errors import DataError, MissingExtraError, ModelError

METHODS = ("gradcam", "gradcam++")
# The layers that turn the feature map into a vector: the explained activation is their input.
_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
            keras.layers.Flatten)


class Explanation(NamedTuple):
    """What ``explain`` answers, one entry per image."""

    heatmaps: np.ndarray  # [B, h, w] float32 in [0, 1], at the explained layer's resolution
    class_ids: np.ndarray  # [B] the class explained for each image
    scores: np.ndarray  # [B] the model's probability of that class
    layer: str  # the explained layer's name


def _is_graph(layer) -> bool:
    """A functional model, whose layers can be run one by one."""
    return isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph")


def _flat_layers(model):
    """The model's layers and operations (``a + b`` in a model is an ``add`` operation) in
    graph order, with nested functional models replaced by theirs."""
    for layer in model.operations:
        if _is_graph(layer):
            yield from _flat_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


def _producer(tensor):
    """The layer whose output ``tensor`` is, looking through a nested model's output."""
    layer = tensor._keras_history.operation
    return _producer(layer.output) if _is_graph(layer) else layer


def feature_layers(model) -> list[str]:
    """Names of the layers ``explain`` can take: those with a 4-D ([B, h, w, C]) output."""
    if not _is_graph(model):
        raise ModelError(f"cannot explain {type(model).__name__} {model.name!r}: explanations "
                         "need a functional Keras model (every model tfvision builds is one)")
    return [layer.name for layer in _flat_layers(model)
            if len(getattr(layer.output, "shape", ())) == 4]  # (a list for several outputs)


def default_layer(model) -> str:
    """The last 4-D activation before the global pooling or flatten that ends the features."""
    names = feature_layers(model)
    pools = [layer for layer in _flat_layers(model) if isinstance(layer, _POOLING)
             and len(layer.input.shape) == 4]
    if not pools:
        raise ModelError(f"{model.name!r} has no global pooling or flatten layer to find the "
                         f"feature map by; give a layer, one of: {', '.join(names)}")
    return _producer(pools[-1].input).name


def resolve_layer(model, layer=None) -> str:
    """``layer`` if the model has a 4-D layer of that name, else the default; a ModelError
    listing the valid names for a wrong one."""
    if layer is None:
        return default_layer(model)
    names = feature_layers(model)
    if layer not in names:
        raise ModelError(f"{model.name!r} has no layer {layer!r} with a 4-D output; valid "
                         f"layers: {', '.join(names)}")
    return layer


def _takes_training(layer) -> bool:
    return "training" in inspect.signature(layer.call).parameters


def _run(model, inputs, visit):
    """``model(inputs)`` in inference mode, layer by layer through nested functional models;
    ``visit(layer, output)`` sees every layer's output as it is made."""

    def operation_fn(op):
        if _is_graph(op):
            return lambda x, **_: _run(op, x, visit)

        def call(*args, **kwargs):
            if _takes_training(op):
                kwargs["training"] = False
            out = op(*args, **kwargs)
            visit(op, out)
            return out

        return call

    return model._run_through_graph(inputs, operation_fn=operation_fn)


_HALF = {"float16", "bfloat16", "mixed_float16", "mixed_bfloat16"}


def _float32_config(config):
    """A layer or model config with every half or mixed precision dtype made float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and config["config"]["name"] in _HALF:
            return "float32"
        return {key: "float32" if key == "dtype" and str(value) in _HALF
                else _float32_config(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_config(value) for value in config]
    return config


def in_float32(model):
    """``model`` if every layer computes in float32, else a float32 copy with its weights.

    A copy rebuilt from its config, not the same layers with their dtype policy switched: some
    layers keep constants in their compute dtype from when they were built (``Normalization``'s
    mean and variance), and nested models cast their inputs to theirs.
    """
    layers = [op for op in _flat_layers(model) if isinstance(op, keras.layers.Layer)]
    if all(layer.compute_dtype == "float32" for layer in layers):
        return model
    copy = model.__class__.from_config(_float32_config(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def _normalise(cam):
    """Each map divided by its maximum; a map with nothing positive stays zero."""
    peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    return cam / tf.where(peak > 0, peak, tf.ones_like(peak))


@tf.autograph.experimental.do_not_convert  # Python control flow only: nothing to convert
def gradcam(model, images, layer, method="gradcam", class_ids=None):
    """``(heatmaps [B, h, w], logits [B, N], class_ids [B])`` as float32/int32 tensors.

    Grad-CAM: ReLU(Σ_k mean_hw(∂y_c/∂A_k) · A_k), normalised per image, where A is ``layer``'s
    output and y_c the logit of class ``class_ids`` (default: the top-1). Grad-CAM++ weighs the
    positive gradients by its closed-form alphas instead. Runs eagerly or in a tf.function;
    ``model`` should compute in float32 (see ``in_float32``).
    """
    taken = []
    with tf.GradientTape(watch_accessed_variables=False) as tape:

        def visit(op, output):
            if op.name == layer:
                tape.watch(output)
                taken.append(output)

        logits = tf.cast(_run(model, tf.cast(images, tf.float32), visit), tf.float32)
        if class_ids is None:
            class_ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
        score = tf.gather(logits, class_ids, batch_dims=1)
    activation = taken[-1]
    grads = tape.gradient(score, activation)
    if method == "gradcam":
        weights = tf.reduce_mean(grads, axis=[1, 2])
    else:
        squared = tf.square(grads)
        denominator = 2 * squared + tf.reduce_sum(activation, axis=[1, 2], keepdims=True) \
            * squared * grads
        alphas = squared / tf.where(denominator != 0, denominator, tf.ones_like(denominator))
        weights = tf.reduce_sum(alphas * tf.nn.relu(grads), axis=[1, 2])
    cam = tf.nn.relu(tf.einsum("bhwk,bk->bhw", activation, weights))
    return _normalise(cam), logits, class_ids


def _class_ids(class_index, count, num_classes):
    if class_index is None:
        return None
    ids = np.broadcast_to(np.asarray(class_index), (count,)).astype(np.int32)
    bad = ids[(ids < 0) | (ids >= num_classes)]
    if bad.size:
        raise ModelError(f"class_index {int(bad[0])} is out of range: the model has "
                         f"{num_classes} classes (0 to {num_classes - 1})")
    return tf.constant(ids)


def explain(model, images, class_index=None, layer=None, method="gradcam") -> Explanation:
    """Grad-CAM heatmaps of ``model`` on ``images`` (pixels in [0, 255], [B, H, W, 3] at the
    model's input size), for ``class_index`` (an int or one per image; default: each image's
    top-1 class) at ``layer`` (default: the last feature map, see ``default_layer``).

    ``method`` is ``"gradcam"`` or ``"gradcam++"``. Returns an ``Explanation``: heatmaps
    [B, h, w] in [0, 1] at the layer's resolution, the class explained and its probability.
    """
    if method not in METHODS:
        raise ModelError(f"unknown explanation method {method!r}; methods: {', '.join(METHODS)}")
    layer = resolve_layer(model, layer)
    images = tf.convert_to_tensor(images, tf.float32)
    want = tuple(model.input_shape[1:])
    if images.shape.rank != 4 or any(w not in (None, g) for w, g in zip(want, images.shape[1:])):
        raise DataError(f"explain takes a batch of images shaped [B, {', '.join(map(str, want))}]"
                        f" (pixels in [0, 255]), got {list(images.shape)}")
    ids = _class_ids(class_index, images.shape[0], model.output_shape[-1])
    heatmaps, logits, ids = gradcam(in_float32(model), images, layer, method, ids)
    probabilities = tf.nn.softmax(logits).numpy()
    ids = ids.numpy()
    return Explanation(heatmaps.numpy(), ids, probabilities[np.arange(len(ids)), ids], layer)


def peak(heatmap) -> list[float]:
    """``[y, x]`` of the heatmap's hottest cell, its centre, relative to height and width."""
    height, width = heatmap.shape
    y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    return [(y + 0.5) / height, (x + 0.5) / width]


def _jet(values):
    """The classic Grad-CAM colour map (blue → cyan → yellow → red) for values in [0, 1]."""
    return np.stack([np.clip(1.5 - np.abs(4 * values - c), 0, 1) for c in (3, 2, 1)], -1)


def overlay(image, heatmap, alpha=0.4) -> np.ndarray:
    """``heatmap`` ([h, w] in [0, 1]) coloured and blended over ``image`` (uint8 RGB [H, W, 3]),
    upsampled to the image's own resolution: a uint8 RGB [H, W, 3] picture."""
    image = np.asarray(image)
    heat = tf.image.resize(np.asarray(heatmap, np.float32)[..., None], image.shape[:2]).numpy()
    colours = _jet(np.clip(heat[..., 0], 0, 1)) * 255
    blended = (1 - alpha) * image[..., :3].astype(np.float32) + alpha * colours
    return np.round(blended).clip(0, 255).astype(np.uint8)


def _caption(picture, text) -> np.ndarray:
    """``text`` written in the top-left corner of ``picture``, at its own resolution."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("tfvision explain writes its captions with matplotlib: "
                                "pip install 'tfvision[report]'") from None
    height, width = picture.shape[:2]
    # One dot per pixel: the canvas is exactly the picture, font sizes are in pixels * 72.
    figure = Figure(figsize=(width, height), dpi=1)
    figure.figimage(picture, origin="upper")
    size = max(7.0, min(height, width) / 14)
    box = {"facecolor": "black", "alpha": 0.6, "linewidth": 0, "pad": size * 72 / 5}
    figure.text(size / 3 / width, 1 - size / 3 / height, text, color="white", va="top",
                fontsize=size * 72, parse_math=False, bbox=box)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _unique_stems(paths) -> list[str]:
    """File stems for the outputs, numbered where two images share one."""
    seen, stems = {}, []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def _placed(picture, heatmap, region):
    """The picture with ``heatmap`` overlaid on ``region`` (the part the model saw)."""
    top, left, height, width = (round(v) for v in region)
    placed = picture.copy()
    placed[top:top + height, left:left + width] = overlay(
        picture[top:top + height, left:left + width], heatmap)
    return placed


def write_explanations(model, class_names, paths, pictures, out_dir, preset, class_name=None,
                       layer=None, method="gradcam") -> list[dict]:
    """For each image file (``paths``, decoded as ``pictures``, fitted to the model by
    ``preset``): ``OUT_DIR/<stem>-<method>.png``, the heatmap over the picture at its own size
    with the class and score written on it, and ``<stem>-<method>.npy``, the heatmap; one
    line each in ``OUT_DIR/explanations.jsonl``, with the peak relative to the picture.
    ``OUT_DIR`` may be local or a URL."""
    class_index = None
    if class_name is not None:
        if class_name not in class_names:
            raise ModelError(f"unknown class {class_name!r}; classes: {', '.join(class_names)}")
        class_index = class_names.index(class_name)
    images = tf.stack([preset(p) for p in pictures])
    result = explain(model, images, class_index, layer, method)
    out_dir = str(out_dir)
    tf.io.gfile.makedirs(out_dir)
    records = []
    for path, stem, picture, heatmap, class_id, score in zip(
        paths, _unique_stems(paths), pictures, *result[:3]
    ):
        name = class_names[class_id]
        region = preset.region(*picture.shape[:2])
        drawn = _caption(_placed(picture, heatmap, region), f"{name} {score:.2f}")
        # Named after the method too, so that --out beside the images overwrites none of them.
        png, npy = (fs.join(out_dir, f"{stem}-{method}{suffix}") for suffix in (".png", ".npy"))
        tf.io.write_file(png, tf.io.encode_png(drawn))
        saved = io.BytesIO()
        np.save(saved, heatmap)
        tf.io.write_file(npy, saved.getvalue())
        y, x = peak(heatmap)
        top, left, height, width = region
        records.append({"image": str(path), "class_name": name, "score": float(score),
                        "peak": [(top + y * height) / picture.shape[0],
                                 (left + x * width) / picture.shape[1]],
                        "heatmap": npy, "overlay": png})
    lines = "".join(json.dumps(r) + "\n" for r in records)
    tf.io.write_file(fs.join(out_dir, "explanations.jsonl"), lines)
    return records
