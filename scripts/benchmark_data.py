"""The data pipeline's performance acceptance, measured with `tfvision data benchmark`.

Makes two image folders of photo-like pictures (smooth colour fields plus sensor-like noise),
then runs the benchmark commands it prints:

1. JPEG folder, 375x500 images (ImageNet's typical size) read at 224x224 with augmentation,
   against ResNet-18: the pipeline must deliver >= 2x the images/s the training step consumes
   (full training step, and the cheaper frozen-backbone step of transfer phase 1, the latter
   also with data.cache=none: decoding beside the step every epoch, as for data too big to
   cache);
2. 32x32 PNG folder (CIFAR-like) against the seed's CNN: a step fed by the real pipeline
   must be within 5% of a step on a constant in-memory batch;
3. the random-resized-crop step alone on the 375x500 JPEGs at 224, images/s: tfvision's
   (``decode_and_crop_jpeg``: only the crop is decoded) against decoding the whole JPEG and
   then cropping, on the same boxes.

    python scripts/benchmark_data.py [--dir /tmp/tfvision-bench] [--steps 10]
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def photo_like(rng, height, width):
    """A smooth random colour field with fine noise: decodes like a photo, not like static."""
    import tensorflow as tf

    coarse = rng.uniform(0, 255, (1, 6, 8, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, (height, width), method="bicubic")[0].numpy()
    noise = rng.normal(0, 8, (height, width, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def make_folder(root: Path, classes, per_class, size, encode):
    if root.is_dir() and sum(1 for _ in root.rglob("*.*")) == classes * per_class:
        return
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = photo_like(rng, *size)
            data = tf.io.encode_jpeg(image, quality=90) if encode == "jpg" else tf.io.encode_png(
                image)
            (folder / f"{i:04d}.{encode}").write_bytes(data.numpy())


def crop_step_rates(folder: Path, size=224, batch=32, rounds=8) -> dict:
    """Images/s of random resized crops from the JPEGs' bytes, two ways, best of ``rounds``."""
    import time

    import tensorflow as tf

    from tfvision.data import augment
    from tfvision.data.pipeline import resize

    encoded = [p.read_bytes() for p in sorted(folder.rglob("*.jpg"))]
    size = (size, size)

    def whole_then_crop(batch_bytes, seed):
        # The boxes original_crops draws (its seeds, split the same way), cut after a full decode.
        box_seed = tf.random.experimental.stateless_split(seed, num=2)[0]
        per_image = tf.random.experimental.stateless_split(box_seed, num=tf.shape(batch_bytes)[0])

        def one(args):
            e, one_seed = args
            image = tf.io.decode_jpeg(e, channels=3)
            shape = tf.shape(image)
            t, l, hh, ww = (v[0] for v in augment.crop_boxes(shape[:1], shape[1:2], one_seed))
            return tf.cast(resize(image[t:t + hh, l:l + ww], size), tf.uint8)

        return tf.map_fn(one, (batch_bytes, per_image), parallel_iterations=8,
                         fn_output_signature=tf.TensorSpec([*size, 3], tf.uint8))

    ways = {
        "decode_and_crop_jpeg (tfvision)": lambda b, seed: augment.original_crops(
            b, size, False, seed, (0.08, 1.0), (3 / 4, 4 / 3), resize),
        "decode whole, then crop": whole_then_crop,
    }
    rates = {}
    for name, crop in ways.items():
        ds = tf.data.Dataset.from_tensor_slices(encoded).batch(batch).map(
            lambda b, crop=crop: crop(b, tf.constant([1, 2], tf.int64)),
            num_parallel_calls=tf.data.AUTOTUNE)
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            count = sum(int(images.shape[0]) for images in ds)
            best = max(best, count / (time.perf_counter() - start))
        rates[name] = best
    return rates


def run(args):
    print("$", " ".join(args), flush=True)
    subprocess.run(args, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    print(flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/tfvision-bench", type=Path)
    parser.add_argument("--steps", default=10, type=int)
    args = parser.parse_args()
    jpeg, small = args.dir / "jpeg375x500", args.dir / "png32"
    make_folder(jpeg, 10, 100, (375, 500), "jpg")
    make_folder(small, 10, 500, (32, 32), "png")
    tfvision = [sys.executable, "-m", "tfvision.cli", "data", "benchmark"]
    steps = ["--steps", str(args.steps)]
    folder224 = ["--set", "data.source=folder", "--set", f"data.path={jpeg}",
                 "--set", "data.image_size=224", "--set", "data.batch_size=32",
                 "--set", "data.augment=crop_flip", "--set", "model.name=resnet18",
                 "--set", "model.weights=none"]
    for freeze, cache in (("false", "auto"), ("true", "auto"), ("true", "none")):
        run([*tfvision, *folder224, "--set", f"model.freeze={freeze}",
             "--set", f"data.cache={cache}", *steps])
    run([*tfvision, "-c", "quickstart", "--set", "data.source=folder",
         "--set", f"data.path={small}", "--set", "data.image_size=32",
         "--set", "data.batch_size=64", "--set", "data.augment=crop_flip",
         "--steps", str(max(args.steps, 30))])
    sys.path.insert(0, str(Path(__file__).parent))
    from benchmark import machine

    print("machine:", machine())
    rates = crop_step_rates(jpeg)
    base = rates["decode whole, then crop"]
    for name, rate in rates.items():
        print(f"random resized crops at 224, {name}: {rate:.0f} images/s ({rate / base:.2f}x)")


if __name__ == "__main__":
    main()
