"""Serving figures of an export, measured side by side in one process.

Prints the export's size on disk, its load time, and the batch-1 latency of serving_default
(JPEG decode and resize included, as TF Serving runs it) against the in-memory Keras model:
called eagerly and through ``predict_on_batch`` on a ready pixel tensor, and called eagerly
after the same decode and resize.

    python scripts/bench_serving.py runs/quickstart [--calls 300]
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from tfvision.data.pipeline import decode_image, resize
from tfvision.export.versions import existing_versions
from tfvision.models import load_model
from tfvision.rundir import default_export_dir, load_run_config, resolve_model_path


def median_ms(fn, calls):
    for _ in range(20):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()

    model_path, run_dir = resolve_model_path(args.run_dir)
    config = load_run_config(run_dir)
    model_dir = default_export_dir(run_dir, config)
    export = model_dir / str(existing_versions(model_dir)[-1])
    size_mb = sum(p.stat().st_size for p in export.rglob("*") if p.is_file()) / 1e6

    start = time.perf_counter()
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    load_s = time.perf_counter() - start
    model = load_model(model_path)

    height, width = model.input_shape[1:3]
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    jpeg = tf.constant([tf.io.encode_jpeg(pixels).numpy()])
    ready = resize(decode_image(jpeg[0]), (height, width))[None]

    def eager_decode_and_model():
        return model(resize(decode_image(jpeg[0]), (height, width))[None], training=False)

    served = median_ms(lambda: serve(image_bytes=jpeg), args.calls)
    keras_ready = median_ms(lambda: model(ready, training=False), args.calls)
    keras_compiled = median_ms(lambda: model.predict_on_batch(ready), args.calls)
    keras_decode = median_ms(eager_decode_and_model, args.calls)

    print(f"export            {export}  ({size_mb:.2f} MB on disk)")
    print(f"load time         {load_s:.2f} s  (tf.saved_model.load)")
    print(f"batch-1 latency   serving_default, JPEG bytes in: {served:.2f} ms (median)")
    print(f"                  Keras model, decoded tensor in: {keras_ready:.2f} ms "
          f"(serving/keras = {served / keras_ready:.2f}x)")
    print(f"                  Keras predict_on_batch, tensor: {keras_compiled:.2f} ms "
          f"(serving/keras = {served / keras_compiled:.2f}x)")
    print(f"                  Keras model + eager decode:     {keras_decode:.2f} ms "
          f"(serving/keras = {served / keras_decode:.2f}x)")


if __name__ == "__main__":
    main()
