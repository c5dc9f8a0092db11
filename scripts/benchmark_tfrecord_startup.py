"""TFRecord start-up to the first training step, cold (records scanned) and warm (manifest).

Writes --records small records (8x8 PNGs in the Model Garden layout, --shards shards and a
labels.txt), then times, each in a fresh process, ``load_dataset`` + the first training
batch (the part of start-up the record check affects; importing TensorFlow is timed apart).
Of ``load_dataset``, the source (listing, checking or recalling the records, the hold-out) is
timed apart too: the rest builds the tf.data pipelines.

- before (with --before DIR: the tfvision package in DIR, e.g. an older commit's, from
  ``git archive COMMIT tfvision | tar -x -C DIR``): as that code starts;
- cold: no verification manifest, so every record is read and header-checked (the run then
  writes one);
- warm: the manifest the cold run wrote is trusted; no record is read until training.

They take turns --repeats times, in a rotating order (warm uses the latest cold run's
manifest); medians are printed with the CPU they ran on and the cores
other processes took meanwhile (a busy machine slows every side).

    python scripts/benchmark_tfrecord_startup.py [--records 100000] [--shards 16] [--before DIR]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import clocks, load, machine  # scripts/ is not a package

RESULT = "RESULT "
CLASSES = 10


def write_records(out: Path, count: int, shards: int) -> None:
    """``count`` distinct 8x8 PNGs with random labels, as ``tfvision data convert`` lays out."""
    import tensorflow as tf

    from tfvision.data.imagecheck import ImageInfo
    from tfvision.data.tfrecord import LABELS_FILE, image_example, shard_name

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, count)
    encoded = tf.data.Dataset.from_tensor_slices(images).map(
        tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator()
    names = [f"class_{c}" for c in range(CLASSES)]
    out.mkdir(parents=True, exist_ok=True)
    info = ImageInfo("png", 8, 8)
    for index, part in enumerate(np.array_split(np.arange(count), shards)):
        with tf.io.TFRecordWriter(str(out / shard_name("train", index, shards))) as writer:
            for i in part:
                example = image_example(next(encoded), int(labels[i]), names[labels[i]], info,
                                        f"{i}.png")
                writer.write(example.SerializeToString())
    (out / LABELS_FILE).write_text("\n".join(names) + "\n")


def worker(records: Path) -> None:
    """One start-up: import, load_dataset, first batch; prints a RESULT line."""
    started = time.perf_counter()
    import tensorflow as tf  # noqa: F401  (timed apart: the same cold or warm)

    from tfvision.config import load_config

    try:
        from tfvision.data import dataset
    except ImportError:  # --before code, from when load_dataset lived in tfvision.data
        import tfvision.data as dataset

    imported = time.perf_counter()
    source_s = []
    load_source = dataset.load_source

    def timed_source(*args):
        began = time.perf_counter()
        try:
            return load_source(*args)
        finally:
            source_s.append(time.perf_counter() - began)

    dataset.load_source = timed_source
    config = load_config("quickstart", ["data.source=tfrecord", "data.image_size=8",
                                        f"data.path={records}/train-*.tfrecord"])
    start = clocks()
    data = dataset.load_dataset(config)
    loaded = time.perf_counter()
    next(iter(data.train))
    end = clocks()
    print(RESULT + json.dumps({"import_s": imported - started, "source_s": source_s[0],
                               "load_s": loaded - start[0],
                               "first_batch_s": end[0] - loaded, "total_s": end[0] - start[0],
                               "train_size": data.train_size, **load(start, end)}), flush=True)


def measure(records: Path, cache_home: str, code=None) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "XDG_CACHE_HOME": cache_home}
    if code:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, __file__, "--worker", str(records)], env=env,
                          capture_output=True, text=True, check=True)
    (line,) = [x for x in done.stdout.splitlines() if x.startswith(RESULT)]
    return json.loads(line[len(RESULT):])


def forget(records: Path, cache_home: str) -> None:
    """Remove every verification manifest, beside the records and in the user cache."""
    for path in [*records.glob(".tfvision-verified-*"), *Path(cache_home).rglob("*")]:
        if path.is_file():
            path.unlink()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="where the records go (default: a temp dir)")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a folder holding an older tfvision package")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    print(json.dumps(machine()))
    with tempfile.TemporaryDirectory() as tmp:
        records = args.dir or Path(tmp) / "records"
        cache_home = str(Path(tmp) / "cache")
        began = time.perf_counter()
        write_records(records, args.records, args.shards)
        print(f"wrote {args.records} records in {args.shards} shards to {records} "
              f"({time.perf_counter() - began:.1f} s)")
        code = {"before": args.before} if args.before else {}
        kinds = [*code, "cold", "warm"]
        runs = {kind: [] for kind in kinds}
        for repeat in range(args.repeats):
            # The order rotates: here a run right after another ran up to 1.6x slower.
            turn = repeat % len(kinds)
            for kind in kinds[turn:] + kinds[:turn]:
                if kind == "cold":
                    forget(records, cache_home)
                result = measure(records, cache_home, code.get(kind))
                runs[kind].append(result)
                print(f"{kind}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float)
                                              else f"{k} {v}" for k, v in result.items()))
    median = {kind: {key: statistics.median(r[key] for r in results)
                     for key in ("import_s", "source_s", "load_s", "first_batch_s", "total_s")}
              for kind, results in runs.items()}
    other = max(r["other_cores"] for results in runs.values() for r in results)
    print(f"\nmedian of {args.repeats} (start-up = load_dataset + first batch; import apart):")
    for kind, m in median.items():
        print(f"  {kind}: start-up {m['total_s']:.2f} s (load_dataset {m['load_s']:.2f} s, of "
              f"which the source {m['source_s']:.3f} s; first batch {m['first_batch_s']:.2f} s; "
              f"import {m['import_s']:.2f} s)")
    for kind in runs:
        if kind != "warm":
            print(f"  warm/{kind}: start-up {median['warm']['total_s'] / median[kind]['total_s']:.2f}"
                  f", source {median['warm']['source_s'] / median[kind]['source_s']:.3f}")
    print(f"  other processes took up to {other:.2f} cores during the runs")


if __name__ == "__main__":
    main()
