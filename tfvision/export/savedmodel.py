"""Versioned SavedModel exports that TF Serving answers as written.

Each version holds the signatures of ``tfvision.export.signatures`` (three, and
``serving_explain`` when asked for), warmup records
with real encoded images, and is reloaded and compared with the in-memory model before it
is renamed into place; ``models.config`` beside the model folder then names it.
"""

import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfvision import fs
from tfvision.data.pipeline import Preset, decode_image
from tfvision.errors import ExportError
from tfvision.explanations import explain as explain_images
from tfvision.export import serving
from tfvision.export.loaded import write_metadata
from tfvision.export.serving import (
    BYTES_SIGNATURE,
    EXAMPLE_SIGNATURE,
    EXPLAIN_SIGNATURE,
    HEATMAPS,
    INPUT_NAMES,
    TENSOR_SIGNATURE,
)
from tfvision.export.signatures import serving_functions
from tfvision.export.versions import new_version

# A reloaded export runs the same math in another op order. How far that moves the logits
# depends on the compute dtype: bfloat16 keeps 8 mantissa bits (a 9e-3 difference was
# measured on the mixed_bfloat16 CNN), float32 stays within 1e-5. Rounding in a sum grows
# with its terms, not its result, so the bound scales with the largest output (a diverged
# run's logits near 1e6 differed by 0.2 on an entry of 1.5e4, with oneDNN on AVX2).
TOLERANCES = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}


def check_close(got, want, model, what) -> None:
    """Refuse an export whose ``what`` differ from ``model``'s beyond its dtype's tolerance."""
    dtypes = {layer.dtype_policy.compute_dtype for layer in model.layers}
    tolerance = max(TOLERANCES.get(d, TOLERANCES["float32"]) for d in dtypes | {"float32"})
    bound = tolerance * max(1.0, float(np.abs(want).max()))
    if np.abs(got - want).max() > bound:
        raise ExportError(
            f"{what} differ from the in-memory model by up to {np.abs(got - want).max():.2e} "
            f"(> {bound:.3g}: {tolerance:g} of the largest output); nothing exported"
        )


def probe_images(size) -> list[bytes]:
    """Two real encoded pictures (an RGB JPEG at ``size``, a larger RGBA PNG), deterministic."""
    height, width = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height * 2 + 1, 0:width + 3].astype(np.float32)
    picture = np.stack([xx / xx.max(), yy / yy.max(), (xx + yy) / (xx + yy).max()], -1) * 200
    picture = (picture + rng.uniform(0, 55, picture.shape)).astype(np.uint8)
    alpha = np.full(picture.shape[:2] + (1,), 255, np.uint8)
    return [
        tf.io.encode_jpeg(picture[:height, :width]).numpy(),
        tf.io.encode_png(np.concatenate([picture, alpha], -1)).numpy(),
    ]


def probe_inputs(encoded, explain=False) -> dict:
    """Inputs for every signature built from the same encoded images (one image per call)."""
    pixels = [decode_image(tf.constant(e)).numpy()[None] for e in encoded]
    strings = (BYTES_SIGNATURE, EXAMPLE_SIGNATURE, *([EXPLAIN_SIGNATURE] if explain else []))
    return {
        **{name: [serving.string_inputs(name, [e]) for e in encoded] for name in strings},
        TENSOR_SIGNATURE: [{INPUT_NAMES[TENSOR_SIGNATURE]: p} for p in pixels],
    }


def _check_export(path, model, class_names, encoded, preset, explain, temperature) -> None:
    """Reload ``path`` and compare every signature with the in-memory model on ``encoded``."""
    images = tf.stack([preset(decode_image(tf.constant(e))) for e in encoded])
    logits = tf.cast(model(images, training=False), tf.float32).numpy()
    expected = {"logits": logits, "probabilities": tf.nn.softmax(logits / temperature).numpy()}
    heatmaps = {HEATMAPS: explain_images(model, images).heatmaps} if explain else {}
    loaded = tf.saved_model.load(str(path))
    for name, calls in probe_inputs(encoded, explain).items():
        outputs = [loaded.signatures[name](**call) for call in calls]
        for key, want in {**expected, **(heatmaps if name == EXPLAIN_SIGNATURE else {})}.items():
            got = np.concatenate([o[key].numpy() for o in outputs])
            check_close(got, want, model, f"the reloaded {name} signature's {key}")
        for out in outputs:
            names = [n.decode() for n in out["class_names"].numpy().ravel()]
            if names != [class_names[i] for i in out["class_ids"].numpy().ravel()]:
                raise ExportError(f"the {name} signature's class_names do not match class_ids")


def export_model(model, export_dir, class_names, version=None, top_k=5,
                 preset=None, explain=False, temperature=1.0) -> Path | str:
    """Write ``model`` as the next (or the given) version under ``export_dir``; return its path
    (a ``Path`` when local, else the URL). ``preset`` (a ``pipeline.Preset``, default: squash
    to the model's input size) is how its signatures fit images to the model; ``explain`` adds
    the ``serving_explain`` signature (the answers plus Grad-CAM heatmaps).

    ``temperature`` is baked into ``probabilities`` and ``scores``; it and the preset are
    recorded in ``assets.extra/tfvision.json`` (``tfvision.export.loaded``).
    """
    preset = preset or Preset(tuple(model.input_shape[1:3]))
    if model.output_shape[-1] != len(class_names):
        raise ExportError(f"the model has {model.output_shape[-1]} outputs but "
                          f"{len(class_names)} class names were given")
    encoded = probe_images(model.input_shape[1:3])
    has_api = serving.have_serving_api()
    with new_version(export_dir, version) as (written, tmp):
        # No archive.track(model): the endpoints' variables are tracked anyway, and tracking
        # the model as well stores every weight twice (keras-team/keras#23553).
        archive = keras.export.ExportArchive()
        for name, fn in serving_functions(model, class_names, top_k, preset, explain,
                                          temperature).items():
            archive.add_endpoint(name, fn)
        archive.write_out(str(tmp), verbose=False)
        if has_api:
            model_name = fs.basename(fs.absolute(export_dir))
            serving.write_warmup(tmp, [
                serving.predict_request(model_name, name, calls[0])
                for name, calls in probe_inputs(encoded[:1], explain).items()
            ])
        write_metadata(tmp, temperature, preset)
        _check_export(tmp, model, class_names, encoded, preset, explain, temperature)
    if has_api:
        serving.update_models_config(export_dir)
    else:
        print(f"warning: {serving.MISSING_API}; exported without warmup requests and "
              f"{serving.MODELS_CONFIG}", file=sys.stderr)
    return fs.user_path(fs.join(export_dir, str(written)))
