"""The tf.distribute strategy and accelerator settings a run trains under.

``resolve_distribute`` turns the ``auto`` values of the ``distribute`` section into the
choices for this machine; the trainer stores the resolved section in the run's config.yaml,
so re-running the same command on the same machine resolves identically and resumes.
``make_strategy`` builds the strategy; ``keras_multi_worker_fix`` is the one place where
Keras 3 is patched so that ``fit`` works under MultiWorkerMirroredStrategy.

Keras bugs are probed, not assumed from a version number: the multi-worker patch applies
only where the faulty code is still there, and refuses in one line where that code changed
shape; several steps per call under Mirrored are allowed where a two-step probe runs.
"""

import contextlib
import dataclasses
import functools
import inspect
import re

import keras
import tensorflow as tf

from tfvision.errors import ConfigError
from tfvision.host import onednn_status
from tfvision.training.cluster import current_task

MULTI_WORKER = "multi_worker_mirrored"
# Keras 3's multi-step training loop failed under these (keras-team/keras#19246: Keras 3.15.1
# and 3.16.0.dev, Mirrored over 2 CPUs); MultiWorkerMirrored shares its code path.
MIRRORED = ("mirrored", MULTI_WORKER)


def _tpu_resolver():
    """A TPU cluster resolver when a TPU is reachable (TPU VM, TPU_NAME), else None."""
    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver()
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        return None


def _auto_strategy(gpus):
    if _tpu_resolver() is not None:
        return "tpu", "a TPU was found"
    workers = current_task().num_workers
    if workers > 1:
        return MULTI_WORKER, f"TF_CONFIG names {workers} workers"
    if len(gpus) > 1:
        return "mirrored", f"{len(gpus)} GPUs"
    if gpus:
        return "one_device", "1 GPU"
    return "default", "no GPU, TPU or TF_CONFIG cluster"


def resolve_distribute(cfg):
    """``(resolved section, {key: why})``: every ``auto`` replaced by this machine's choice."""
    gpus = tf.config.list_physical_devices("GPU")
    why = {}
    strategy = cfg.strategy
    if strategy == "auto":
        strategy, why["strategy"] = _auto_strategy(gpus)
    device = "TPU" if strategy == "tpu" else "GPU" if gpus else "CPU"

    precision = cfg.mixed_precision
    if precision == "auto":
        precision = {"TPU": "mixed_bfloat16", "GPU": "mixed_float16"}.get(device, "float32")
        why["mixed_precision"] = device

    jit = cfg.jit_compile
    if jit == "auto":
        # TPUs compile everything with XLA anyway; on CPU XLA is slower for these models.
        jit, why["jit_compile"] = device == "GPU", device

    steps = cfg.steps_per_execution
    if steps == "auto":
        # Fewer Python round trips per step: 1.03-1.08x for the CNN on CPU (BENCHMARKS.md).
        steps, why["steps_per_execution"] = {"TPU": 32, "CPU": 16}.get(device, 1), device
    if steps > 1 and strategy in MIRRORED:
        failure = _multi_step_failure(strategy)
        if failure and cfg.steps_per_execution != "auto":
            raise ConfigError(
                f"distribute.steps_per_execution={steps} does not work with the {strategy} "
                f"strategy on Keras {keras.__version__} ({failure}; keras-team/keras#19246); "
                "use 1 or auto"
            )
        if failure:
            steps, why["steps_per_execution"] = 1, f"{strategy}: {failure}"
    resolved = dataclasses.replace(
        cfg, strategy=strategy, mixed_precision=precision, jit_compile=jit,
        steps_per_execution=steps,
    )
    return resolved, why


def describe(resolved, why, strategy, global_batch, learning_rate) -> str:
    """One line saying what the run trains with and which values ``auto`` chose."""
    parts = []
    for key in ("strategy", "mixed_precision", "jit_compile", "steps_per_execution"):
        value = getattr(resolved, key)
        parts.append(f"{key}={value}" + (f" (auto: {why[key]})" if key in why else ""))
    onednn, onednn_why = onednn_status()
    parts.append(f"oneDNN {'on' if onednn else 'off'} ({onednn_why})")
    replicas = strategy.num_replicas_in_sync
    parts.append(f"{replicas} replica{'s' if replicas > 1 else ''}, global batch {global_batch}, "
                 f"learning rate {learning_rate:g}")
    return "distribute: " + ", ".join(parts)


def _mirrored_strategy():
    """Mirrored over the GPUs; without GPUs, over the logical CPUs when the process split
    its CPU in several."""
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    devices = gpus or (cpus if len(cpus) > 1 else None)
    return tf.distribute.MirroredStrategy([d.name for d in devices] if devices else None)


@functools.cache
def _multi_step_failure(strategy_name) -> str | None:
    """Why several steps per call fail under ``strategy_name`` with this Keras, or None.

    Mirrored is probed once per process: a tiny model trains two steps per call on the
    devices the strategy would use (one replica never shows the bug). MultiWorkerMirrored is
    not: its strategy must exist before any other op, and a probe would need every worker's
    collectives.
    """
    if strategy_name == MULTI_WORKER:
        return "several steps per call are not probed across workers"
    strategy = _mirrored_strategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      steps_per_execution=2)
    data = tf.data.Dataset.from_tensors(([[0.0, 1.0]] * 4, [0, 1, 0, 1])).repeat(4)
    try:
        model.fit(data, epochs=1, verbose=0)
    except (tf.errors.OpError, ValueError, RuntimeError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "placeholder" in line), lines[0] if lines
                      else type(err).__name__)
        reason = re.sub(r"^\(\d+\)\s*\w+:\s*", "", re.sub(r" '[^']*'", "", reason))
        return f"a two-step probe fit failed: {reason[:160]}"
    return None


def make_strategy(cfg):
    """The strategy for a resolved ``distribute`` section (``auto`` is resolved first)."""
    name = cfg.strategy if cfg.strategy != "auto" else resolve_distribute(cfg)[0].strategy
    if name == MULTI_WORKER:  # before anything that initializes TensorFlow's runtime
        keras_multi_worker_fix()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        return _mirrored_strategy()
    if name == "tpu":
        resolver = _tpu_resolver()
        if resolver is None:
            raise ConfigError("distribute.strategy=tpu but no TPU was found; run on a TPU VM "
                              "or set TPU_NAME, or use distribute.strategy=auto")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"distribute.strategy={name!r} is not supported")


def is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._in_multi_worker_mode()
    )


def for_strategy(dataset, strategy):
    """Input pipeline options a strategy needs.

    Under several workers each one runs the whole pipeline and keeps its share of the
    elements (tf.data DATA auto-sharding), so every worker must produce the same order.
    """
    if not is_multi_worker(strategy):
        return dataset
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)


@contextlib.contextmanager
def dtype_policy(name):
    """Build models under the ``mixed_precision`` policy, restoring the previous one after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# The faulty code the fix below replaces (keras-team/keras#20585), by the private Keras
# function that holds it and that function's parameters, as in Keras 3.15.1 and 3.16.0.dev
# (two localhost workers then finish with identical weights: tests/test_distribute.py and
# tests/test_next_keras.py). Compared without whitespace.
MULTI_WORKER_FAULTS = {
    "Trainer._maybe_symbolic_build": (
        ("self", "iterator", "data_batch"),
        'self.distribute_strategy.reduce("MEAN",maybe_distributed_data_batch,'),
    "reduce_per_replica": (
        ("values", "strategy", "reduction"), 'strategy.reduce("MEAN",v,axis=0)'),
}
_fix_applied = False


def _backend_trainer(tf_trainer):
    """The TensorFlow trainer class ``keras.Model`` inherits from, whatever it is called
    (``TensorFlowTrainer`` in Keras 3.15, ``Trainer`` in 3.16)."""
    return next(c for c in keras.Model.__mro__ if c.__module__ == tf_trainer.__name__)


def _multi_worker_faults(tf_trainer) -> set:
    """The functions that still hold their faulty code (a function without it was fixed
    upstream and is left alone). One that changed shape (gone, other parameters) is refused
    in one line rather than patched blindly."""
    functions = {"Trainer._maybe_symbolic_build":
                 getattr(_backend_trainer(tf_trainer), "_maybe_symbolic_build", None),
                 "reduce_per_replica": getattr(tf_trainer, "reduce_per_replica", None)}
    faulty = set()
    for name, (parameters, fault) in MULTI_WORKER_FAULTS.items():
        function = functions[name]
        if function is None:
            changed = "it no longer exists"
        elif tuple(inspect.signature(function).parameters) != parameters:
            changed = f"its parameters are now {tuple(inspect.signature(function).parameters)}"
        else:
            if re.sub(r"\s", "", fault) in re.sub(r"\s", "", inspect.getsource(function)):
                faulty.add(name)
            continue
        raise ConfigError(
            f"distribute.strategy={MULTI_WORKER}: Keras {keras.__version__} changed {name} "
            f"({changed}), which tfvision's fix for keras-team/keras#20585 replaces; "
            "training is refused rather than run unverified. Use Keras 3.15.1, another "
            "strategy, or a tfvision release that knows this Keras"
        )
    return faulty


def keras_multi_worker_fix():
    """Make Keras 3 ``fit``/``evaluate`` work under MultiWorkerMirroredStrategy.

    Works around keras-team/keras#20585 and tensorflow/tensorflow#72388. In multi-worker
    mode, Keras' TensorFlow trainer
    1. ``Trainer._maybe_symbolic_build`` (``TensorFlowTrainer`` before 3.16) calls ``strategy.reduce`` on the first
       batch, a nested PerReplica structure MultiWorkerMirroredStrategy cannot reduce; the
       build only needs shapes, so one local replica's batch is used instead;
    2. ``reduce_per_replica`` calls ``strategy.reduce("MEAN", v, axis=0)`` on the scalar
       loss and metric results, which have no axis 0; scalars are averaged over the workers
       with ``axis=None``.
    Every other strategy, and every other value, goes through Keras unchanged; each part
    is applied only where Keras still holds the faulty code (``MULTI_WORKER_FAULTS``).
    """
    global _fix_applied
    if _fix_applied:
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    faulty = _multi_worker_faults(tf_trainer)

    trainer = _backend_trainer(tf_trainer)
    original_build = trainer._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not is_multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            first = next(it)
            break
        local = tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], first)
        return original_build(self, data_batch=local)

    def reduce_per_replica(values, strategy, reduction):
        if not (is_multi_worker(strategy) and reduction in ("auto", "mean")):
            return original_reduce(values, strategy, reduction)
        return tree.map_structure(
            lambda v: strategy.reduce("MEAN", v, axis=None)
            if v.shape.rank == 0 else original_reduce(v, strategy, reduction),
            values,
        )

    if "Trainer._maybe_symbolic_build" in faulty:
        trainer._maybe_symbolic_build = _maybe_symbolic_build
    if "reduce_per_replica" in faulty:
        tf_trainer.reduce_per_replica = reduce_per_replica
    _fix_applied = True
