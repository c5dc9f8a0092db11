"""What an explanation costs: Grad-CAM of a batch against a forward pass of the same batch.

ResNet-18 (random weights: the cost does not depend on them), a batch of --batch pictures at
--size², float32 on this CPU. Timed side by side, alternating, --repeats times after a
warm-up, medians printed:

- forward: ``model(images, training=False)`` eagerly, as ``tfvision.explain`` runs;
- forward (tf.function): the same call traced, as a served model runs it;
- explain: ``tfvision.explain(model, images)`` (top-1 class, Grad-CAM, eager);
- explain (tf.function): the ``serving_explain`` path, traced.

The issue's target is explain ≤ 3× forward. The cores other processes took meanwhile are
printed too: a busy machine slows every side, so compare the ratios, not the seconds.

    python scripts/benchmark_explain.py [--batch 32] [--size 224] [--repeats 5]
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import clocks, load, machine  # the CPU and clocks, as every benchmark

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
TARGET = 3.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import tensorflow as tf

    import tfvision
    from tfvision.explanations import default_layer, gradcam

    info = machine()
    print(f"cpu: {info['cpu']} ({info['cores']} cores), flags: {' '.join(info['cpu_flags'])}")
    print(f"tensorflow {info['tensorflow']}, keras {info['keras']}")
    model = tfvision.resnet18(num_classes=10, input_shape=(args.size, args.size, 3))
    images = tf.constant(np.random.default_rng(0).uniform(
        0, 255, (args.batch, args.size, args.size, 3)).astype(np.float32))
    layer = default_layer(model)
    traced_forward = tf.function(lambda x: model(x, training=False))
    traced_explain = tf.function(lambda x: gradcam(model, x, layer)[0])
    calls = {
        "forward": lambda: model(images, training=False).numpy(),
        "forward (tf.function)": lambda: traced_forward(images).numpy(),
        "explain": lambda: tfvision.explain(model, images),
        "explain (tf.function)": lambda: traced_explain(images).numpy(),
    }
    for call in calls.values():  # warm-up: tracing, oneDNN kernel choice
        call()
    times = {name: [] for name in calls}
    others = []
    for _ in range(args.repeats):
        for name, call in calls.items():
            start = clocks()
            call()
            end = clocks()
            times[name].append(end[0] - start[0])
            others.append(load(start, end)["other_cores"])
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"ResNet-18, batch {args.batch} at {args.size}x{args.size}, float32, median of "
          f"{args.repeats}:")
    for name, seconds in medians.items():
        print(f"  {name:24s} {seconds * 1000:8.1f} ms")
    eager = medians["explain"] / medians["forward"]
    traced = medians["explain (tf.function)"] / medians["forward (tf.function)"]
    print(f"explain / forward: {eager:.2f}x eager, {traced:.2f}x traced "
          f"(target <= {TARGET:g}x: {'met' if max(eager, traced) <= TARGET else 'NOT met'})")
    print(f"cores used by other processes meanwhile: median {statistics.median(others):.2f}")


if __name__ == "__main__":
    main()
