"""``tfvision data benchmark``: is the input pipeline what limits training?

Measured side by side in one process: the training pipeline alone (decoding every image,
and from its cache when it has one), the model's training step on a constant in-memory batch
(what the model can consume), and the same step fed by the real pipeline. Steps are timed in
alternating rounds and summarized by their median, so a burst of load from other processes
hits both kinds of step alike and does not decide the verdict. Input is the bottleneck when
the real pipeline makes the median step more than 5% slower.
"""

import dataclasses
import itertools
import statistics
import time

import keras
import tensorflow as tf

SLOWDOWN_LIMIT = 0.05  # a real-pipeline step more than 5% slower: input-bound


@dataclasses.dataclass
class BenchmarkResult:
    decode_images_per_s: float
    cached_images_per_s: float | None
    constant_step_s: float
    pipeline_step_s: float
    batch_size: int

    @property
    def consumed_images_per_s(self) -> float:
        return self.batch_size / self.constant_step_s

    @property
    def slowdown(self) -> float:
        return self.pipeline_step_s / self.constant_step_s - 1.0

    @property
    def input_bound(self) -> bool:
        return self.slowdown > SLOWDOWN_LIMIT


def pipeline_rate(ds, batches, skip=0) -> float:
    """Images per second over ``batches`` batches, after ``skip`` batches not timed."""
    iterator = iter(ds.repeat())
    for _ in range(skip + 2):  # two more: the first batches pay for start-up
        next(iterator)
    images = 0
    start = time.perf_counter()
    for _ in range(batches):
        images += int(tf.shape(next(iterator)[0])[0])
    return images / (time.perf_counter() - start)


class _StepTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def step_times(model, ds, steps, warmup=3) -> list:
    """Seconds each of ``steps`` training steps took, after ``warmup`` untimed ones."""
    timer = _StepTimer()
    model.fit(ds.repeat(), steps_per_epoch=warmup + steps, epochs=1, verbose=0,
              shuffle=False, callbacks=[timer])
    ends = timer.ends[warmup - 1:]
    return [later - earlier for earlier, later in itertools.pairwise(ends)]


def run_benchmark(config, steps=10, batches=50, rounds=2, echo=print) -> list:
    """One ``BenchmarkResult`` per training phase (two for a fine-tuning config: the frozen
    backbone's steps are much cheaper, so input can limit one phase and not the other)."""
    from tfvision.data.dataset import load_dataset
    from tfvision.models import build_model, unfreeze
    from tfvision.training.trainer import compile_model, trainable_parameters

    keras.utils.set_random_seed(config.train.seed)
    data = load_dataset(config)
    batch = config.data.batch_size
    epoch_batches = -(-data.train_size // batch)
    height, width = config.image_hw
    echo(f"data: {config.data.source} {data.train_size} training images, "
         f"{len(data.class_names)} classes, {height}x{width}, batch {batch}, "
         f"augment {config.data.augment}, randaugment {config.data.randaugment}, "
         f"mixup {config.data.mixup}, cutmix {config.data.cutmix}; cache: {data.cache}")

    uncached = dataclasses.replace(config, data=dataclasses.replace(config.data, cache="none"))
    decode = pipeline_rate(load_dataset(uncached).train, batches)
    echo(f"pipeline alone, decoding every image:     {decode:9.1f} images/s")
    cached = None
    if data.cache.kind != "none":
        cached = pipeline_rate(data.train, batches, skip=epoch_batches)  # first pass fills it
        echo(f"pipeline alone, from its cache:           {cached:9.1f} images/s")

    model_cfg = dataclasses.replace(config.model, weights=None)  # speed does not need them
    model = build_model(model_cfg, len(data.class_names), (height, width, 3))
    constant = tf.data.Dataset.from_tensors(next(iter(data.train)))
    phases = [("", config.train.epochs)]
    if config.train.fine_tune_epochs:
        phases = [("phase 1 (head only): ", config.train.epochs),
                  ("phase 2 (fine-tuning): ", config.train.fine_tune_epochs)]
        echo(f"two training phases: {config.train.epochs} epochs of the head on a frozen "
             f"backbone, then {config.train.fine_tune_epochs} with it unfrozen from "
             f"{config.train.unfreeze_from}; each is timed")
    results = []
    for index, (label, epochs) in enumerate(phases):
        if index == 1:
            unfreeze(model, config.train.unfreeze_from,
                     freeze_batchnorm=config.model.pretrained is not None)
        compile_model(model, config.train, len(data.class_names), epoch_batches,
                      one_hot_labels=data.one_hot_labels)
        echo(f"{label}model: {config.model.name}, {model.count_params():,} parameters, "
             f"{trainable_parameters(model):,} trainable; {rounds} alternating rounds of {steps} timed "
             "steps per kind")
        times = {"constant": [], "pipeline": []}
        for _ in range(rounds):
            times["constant"] += step_times(model, constant, steps)
            times["pipeline"] += step_times(model, data.train, steps)
        result = BenchmarkResult(decode, cached, statistics.median(times["constant"]),
                                 statistics.median(times["pipeline"]), batch)
        _report(result, times, label, echo)
        results.append((result, epochs))
    if len(results) > 1:
        share = [r.pipeline_step_s * epochs for r, epochs in results]
        longer = share.index(max(share))
        echo(f"phase {longer + 1} takes {max(share) / sum(share):.0%} of the training time "
             "(epochs x step time): its verdict matters most")
    return [result for result, _ in results]


def _report(result, times, label, echo):
    decode, cached = result.decode_images_per_s, result.cached_images_per_s
    echo(f"{label}training step on a constant in-memory batch: {result.constant_step_s:.4f} "
         f"s/step (median) = {result.consumed_images_per_s:.1f} images/s consumed")
    echo(f"{label}training step fed by the pipeline: {result.pipeline_step_s:.4f} s/step "
         f"(median, {result.slowdown:+.1%}; mean {statistics.mean(times['pipeline']):.4f} "
         f"vs {statistics.mean(times['constant']):.4f})")
    best = max(decode, cached or 0.0)
    echo(f"pipeline alone vs what the model consumes: {decode / result.consumed_images_per_s:.1f}x "
         "decoding" + (f", {best / result.consumed_images_per_s:.1f}x from cache" if cached
                       else ""))
    if result.input_bound:
        echo(f"{label}verdict: input IS the bottleneck: the pipeline makes each step "
             f"{result.slowdown:.1%} slower (limit {SLOWDOWN_LIMIT:.0%}); try data.cache, "
             "a smaller data.image_size or lighter augmentation")
    else:
        echo(f"{label}verdict: input is NOT the bottleneck: steps fed by the pipeline are "
             f"within {SLOWDOWN_LIMIT:.0%} of steps on a constant batch ({result.slowdown:+.1%})")
