"""What the evaluation report and ``tfvision predict`` cost, side by side with Keras, in one run.

1. Evaluating N images (default 10,000, a folder of PNGs) with the report's pass (every
   logit, the most confident mistakes, then every metric) against ``model.evaluate`` on
   the same, already cached pipeline; plotting excluded. Then both cold, from the folder:
   ``tfvision.evaluate(RUN, data=FOLDER)`` against ``load_dataset`` + ``model.evaluate``.
2. ``predict_stream`` over a folder of M JPEGs (default 2,000 of 224x224; header checks,
   model load, tracing and ranking included) against a warm ``model.predict`` on the same
   tf.data pipeline (files read, decoded and resized in parallel, batched, prefetched).

The model is the seed's CNN at 32x32 with 10 classes (untrained: speed does not depend on
the weights). Rounds alternate and the best of each counts. Prints the CPU model and its
avx2 / avx512f / avx512_bf16 flags.

    python scripts/benchmark_evaluation.py [--images 10000] [--jpegs 2000] [--jpeg-size 224]
                                           [--rounds 3]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu() -> str:
    from tfvision.host import cpu as host_cpu

    host = host_cpu()
    return (f"{host.model}, {host.cores} cores, flags: "
            f"{' '.join(host.reported_flags()) or 'none of them'}")


def write_images(root: Path, count, fmt, size, classes=10, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
    for i in range(count):
        label = i % classes
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        image[:, :, label % 3] //= 2
        (folder / f"{i:05d}.{fmt}").write_bytes(encode(image).numpy())


def make_run(run_dir: Path):
    """A run directory holding an untrained seed CNN (config, class names, model.keras)."""
    import keras

    from tfvision import rundir
    from tfvision.config import load_config
    from tfvision.models import build_model

    config = load_config("quickstart")
    keras.utils.set_random_seed(0)
    model = build_model(config.model, 10, (*config.image_hw, 3))
    rundir.save_config(run_dir, config)
    rundir.write_class_names(run_dir, [str(i) for i in range(10)])
    rundir.save_model(model, rundir.run_file(run_dir, "model"))
    return config, model


def best(rounds, *functions):
    """Alternate the functions ``rounds`` times; the best time of each."""
    times = [[] for _ in functions]
    for _ in range(rounds):
        for spent, function in zip(times, functions):
            start = time.perf_counter()
            function()
            spent.append(time.perf_counter() - start)
    return [min(t) for t in times]


def bench_evaluation(work: Path, images, rounds):
    from tfvision.data.dataset import load_dataset
    from tfvision.evaluation import evaluate, metrics, targets
    from tfvision.evaluation.collect import collect
    from tfvision.training.trainer import compile_model

    folder = work / "eval_images"
    write_images(folder, images, "png", 32)
    run_dir = work / "run"
    config, model = make_run(run_dir)
    target = targets.resolve(run_dir, data=str(folder), model=model)
    data = load_dataset(target.config)
    compile_model(model, target.config.train, 10, 1)
    pipeline = targets.batches(target, dataset=data).clean
    model.evaluate(data.validation, verbose=0)  # fills the cache, builds the functions

    def report_pass():
        found = collect(target.logits_of, pipeline)
        metrics.summarize(found.logits, found.labels, target.class_names, 5)

    report_pass()
    keras_time, report_time = best(rounds, lambda: model.evaluate(data.validation, verbose=0),
                                   report_pass)
    print(f"\nevaluation of {data.validation_size} images (cached pipeline, batch "
          f"{config.data.batch_size}):")
    print(f"  model.evaluate        {keras_time:7.3f} s  {images / keras_time:8.0f} images/s")
    print(f"  report pass + metrics {report_time:7.3f} s  {images / report_time:8.0f} images/s")
    print(f"  report costs {100 * (report_time / keras_time - 1):+.1f} % (target: <= +15 %)")

    def cold_keras():
        fresh = load_dataset(target.config)
        model.evaluate(fresh.validation, verbose=0)

    cold_keras_time, cold_report_time = best(
        rounds, cold_keras, lambda: evaluate(run_dir, data=str(folder)))
    print(f"  cold, from the folder: load_dataset + model.evaluate {cold_keras_time:.3f} s, "
          f"tfvision.evaluate {cold_report_time:.3f} s "
          f"({100 * (cold_report_time / cold_keras_time - 1):+.1f} %)")


def bench_predict(work: Path, jpegs, side, rounds):
    import tensorflow as tf

    from tfvision import rundir
    from tfvision.data.pipeline import AUTOTUNE, decode_image, resize
    from tfvision.inference import predict_stream
    from tfvision.models import load_model

    folder = work / "jpegs"
    write_images(folder, jpegs, "jpg", side, seed=1)
    model_path = Path(rundir.run_file(work / "run", "model"))
    model = load_model(model_path)
    size = model.input_shape[1:3]
    files = sorted(str(p) for p in folder.rglob("*.jpg"))
    def load(path):
        return resize(decode_image(tf.io.read_file(path)), size)

    pipeline = (tf.data.Dataset.from_tensor_slices(files)
                .map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
                .batch(64).prefetch(AUTOTUNE))
    model.predict(pipeline, verbose=0)

    def stream():
        assert sum(1 for _ in predict_stream(model_path, [folder], batch_size=64)) == jpegs

    stream()
    keras_time, predict_time = best(rounds, lambda: model.predict(pipeline, verbose=0), stream)
    print(f"\npredict over a folder of {jpegs} JPEGs ({side}x{side} -> 32x32, batch 64):")
    print(f"  model.predict (warm)    {keras_time:7.3f} s  {jpegs / keras_time:8.0f} images/s")
    print(f"  tfvision predict_stream {predict_time:7.3f} s  {jpegs / predict_time:8.0f} "
          "images/s (model load and header checks included)")
    print(f"  predict reaches {100 * keras_time / predict_time:.0f} % of model.predict "
          "(target: >= 80 %)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--jpegs", type=int, default=2000)
    parser.add_argument("--jpeg-size", type=int, default=224, help="side of the JPEGs")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu()}")
    with tempfile.TemporaryDirectory(prefix="tfvision-bench-") as work:
        bench_evaluation(Path(work), args.images, args.rounds)
        bench_predict(Path(work), args.jpegs, args.jpeg_size, args.rounds)


if __name__ == "__main__":
    main()
