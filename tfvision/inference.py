"""Predictions from an export (its ``serving_default``) or a ``.keras`` model, on image files.

An export answers exactly as TF Serving would: the encoded file bytes go into the graph.
Answers are ranked from the model's probabilities for every class, so ``top_k`` is not
limited by the ``top_k`` the export was written with. Files stream through tf.data in
batches (read and decoded in parallel), so a whole test set costs what ``model.predict``
costs; files that cannot be read are named and skipped, never silently lost.
"""

import functools
import glob
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfvision import fs, rundir
from tfvision.data.imagecheck import check_file, read_image_files
from tfvision.data.pipeline import AUTOTUNE, Preset, decode_image
from tfvision.errors import DataError, ModelError
from tfvision.export.loaded import is_export, latest_version, load_export
from tfvision.export.versions import GRAPH_FILE
from tfvision.host import cpu, lone_image_is_slow, onednn_status
from tfvision.models import load_model

# Header checks read a few bytes per file. On an object store that is bound by latency, so
# threads help; local files are mostly in the page cache, where threads only contend for
# the GIL (2,000 JPEGs: 0.11 s in one thread, 0.20 s in 16).
_CHECK_THREADS = 16


class TopKWarning(UserWarning):
    """``top_k`` asked for more classes than the model has; all of them are given."""


@dataclass(frozen=True)
class Skipped:
    """A path given to predict that gave no prediction, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        if self.reason.startswith(("no such", "matches no")):
            return f"{self.path}: {self.reason}"
        return f"{self.path} is not a readable image: {self.reason}"


def _glob(pattern) -> list[str]:
    if fs.is_url(pattern):
        return sorted(p for p in tf.io.gfile.glob(pattern) if fs.isfile(p))
    return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))


def expand_paths(paths) -> tuple[list[str], list[Skipped]]:
    """Files as given, folders searched recursively (hidden entries left out), globs
    (``**`` recursive on local disks) expanded, each sorted; a path that names nothing is
    skipped. Local paths or URLs."""
    files, skipped = [], []
    for text in map(str, paths):
        if fs.isdir(text):
            for root, dirs, names in fs.walk(text):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files += [fs.join(root, n) for n in sorted(names) if not n.startswith(".")]
        elif fs.isfile(text):
            files.append(text)
        elif glob.has_magic(text):
            found = _glob(text)
            files += found
            if not found:
                skipped.append(Skipped(text, "matches no file"))
        else:
            skipped.append(Skipped(text, "no such image file"))
    return files, skipped


def _check(paths) -> tuple[list[str], list[Skipped]]:
    """The files whose headers say TensorFlow can decode them (``imagecheck``), in order."""
    def problem(path):
        try:
            return check_file(path).problem
        except (OSError, tf.errors.OpError) as err:
            return f"cannot read ({getattr(err, 'strerror', None) or err})"

    if any(map(fs.is_url, paths)):
        with ThreadPoolExecutor(_CHECK_THREADS) as pool:
            problems = list(pool.map(problem, paths))
    else:
        problems = list(map(problem, paths))
    return ([p for p, bad in zip(paths, problems) if not bad],
            [Skipped(p, bad) for p, bad in zip(paths, problems) if bad])


def read_images(paths) -> list:
    """Each file decoded (uint8 RGB ``[H, W, 3]``), checked by header first
    (``read_image_files``), so a bad file stops the work before it starts, named with its
    reason (``explain``)."""
    pictures = []
    for path, data in zip(paths, read_image_files(paths)):
        try:
            pictures.append(decode_image(tf.constant(data)).numpy())
        except (tf.errors.InvalidArgumentError, ValueError):
            raise DataError(f"{path} is not a readable image: corrupt image data, TensorFlow "
                            "cannot decode it") from None
    return pictures


def keras_preset(model, path) -> Preset:
    """How a ``.keras`` model at ``path`` sees images: its run's own preset, as the run's
    validation and exports use it, or squashed to its input size outside a run."""
    try:
        return Preset.of(rundir.load_run_config(fs.dirname(path)))
    except ModelError:
        return Preset(tuple(model.input_shape[1:3]))


@dataclass
class _Model:
    class_names: list
    probabilities: object  # batch of inputs -> NumPy probabilities
    load: object  # file path tensor -> one input (encoded bytes, or pixels)


def _lone_images_in_pairs(probabilities):
    """``probabilities`` that answers a batch of one by sending it twice where oneDNN would
    answer it five times slower (``host.lone_image_is_slow``): a last batch, or one image."""
    if not lone_image_is_slow(cpu(), onednn_status()[0], os.environ):
        return probabilities

    def paired(inputs):
        if inputs.shape[0] != 1:
            return probabilities(inputs)
        return probabilities(tf.concat([inputs, inputs], 0))[:1]

    return paired


def _load_model(model: str) -> _Model:
    if is_export(model):
        export = load_export(model)
        return _Model(export.class_names,
                      _lone_images_in_pairs(lambda encoded: export(encoded)["probabilities"]
                                            .numpy()),
                      tf.io.read_file)
    if model.endswith(".keras") and fs.isfile(model):
        keras_model = load_model(model)
        preset = keras_preset(keras_model, model)
        call = tf.function(lambda images: tf.nn.softmax(
            tf.cast(keras_model(images, training=False), tf.float32)))
        class_names = rundir.class_names_or_ids(fs.dirname(model), keras_model.output_shape[-1])
        return _Model(class_names, _lone_images_in_pairs(lambda images: call(images).numpy()),
                      lambda path: preset(decode_image(tf.io.read_file(path))))
    raise ModelError(f"{model} is neither a SavedModel (or a folder of versions of one) nor "
                     "a .keras file")


@functools.lru_cache(maxsize=2)
def _loaded(path: str, stamp: tuple) -> _Model:
    return _load_model(path)


def _model_at(path: str) -> _Model:
    """The model at ``path``, loaded again only when its file changes (``fs.stamp`` of the
    export's graph, or of the ``.keras`` file): a ResNet-18 export took 0.6-1.0 s to load
    and a call after its first 0.1 s, so a loop of one-image ``predict`` calls would mostly
    load."""
    graph = fs.join(path, GRAPH_FILE)
    file = graph if tf.io.gfile.exists(graph) else path
    if not fs.isfile(file):
        return _load_model(path)  # the ModelError that names it
    return _loaded(fs.absolute(path), fs.stamp(file))


def _batches(model: _Model, files, batch_size):
    """``(indices, probabilities)`` per batch; a file that fails to decode (its header
    was fine) is dropped, and its index is missing from the batches."""
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(files)), files))
    ds = ds.map(lambda i, path: (i, model.load(path)), num_parallel_calls=AUTOTUNE,
                deterministic=True)
    ds = ds.ignore_errors().batch(batch_size).prefetch(AUTOTUNE)
    for indices, inputs in ds:
        try:
            yield indices.numpy(), model.probabilities(inputs)
        except tf.errors.InvalidArgumentError:  # an export decodes inside: one at a time
            for i, one in zip(indices.numpy(), inputs):
                try:
                    yield np.array([i]), model.probabilities(one[None])
                except tf.errors.InvalidArgumentError:
                    continue


def predict_stream(model, paths, top_k=5, batch_size=64, skipped=None, progress=None):
    """Yield ``{"image", "class_names", "scores"}`` per readable image of ``paths`` (files,
    folders, globs), best first, in order; the others are appended to ``skipped`` (a list
    of ``Skipped``). ``progress(done, total)`` follows the files. A DataError if no file is
    readable. With ``top_k`` above the number of classes, every class, and a TopKWarning.
    """
    skipped = [] if skipped is None else skipped
    files, missing = expand_paths(paths)
    files, bad = _check(files)
    skipped += missing + bad
    if not files:
        raise DataError(str(skipped[0]) if len(skipped) == 1 else
                        "no readable image among the paths given:\n" +
                        "\n".join(f"  {s}" for s in skipped))
    model = _model_at(latest_version(model))  # a model folder: its latest version
    count = len(model.class_names)
    if top_k > count:
        warnings.warn(f"top_k={top_k} but the model has {count} classes; showing all {count}",
                      TopKWarning, stacklevel=2)
    expected = 0
    for indices, probabilities in _batches(model, files, batch_size):
        skipped += [Skipped(files[i], "corrupt image data, TensorFlow cannot decode it")
                    for i in range(expected, indices[0])]
        expected = indices[-1] + 1
        # Stable, so ties rank as tf.math.top_k ranks them (lower class id first).
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        for i, row, probs in zip(indices, order, probabilities):
            yield {"image": files[i], "class_names": [model.class_names[c] for c in row],
                   "scores": [float(s) for s in np.take(probs, row)]}
        if progress:
            progress(expected, len(files))
    skipped += [Skipped(files[i], "corrupt image data, TensorFlow cannot decode it")
                for i in range(expected, len(files))]


def predict(model, images, top_k=5, batch_size=64) -> list[dict]:
    """``[{"image": path, "class_names": [...], "scores": [...]}, ...]``, best first.

    ``model``: an export version, a model folder of versions (the latest is used), or a
    ``.keras`` file. A path that cannot be read is a DataError naming it (the CLI's
    ``predict`` skips it instead). With ``top_k`` above the number of classes, every class
    is given and a ``TopKWarning`` says so.
    """
    skipped = []
    results = list(predict_stream(model, images, top_k, batch_size, skipped))
    if skipped:
        raise DataError(str(skipped[0]))
    return results
