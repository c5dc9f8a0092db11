"""The tf.distribute strategy and accelerator settings a run trains under.

``resolve_distribute`` turns the ``auto`` values of the ``distribute`` section into the
choices for this machine; the trainer stores the resolved section in the run's config.yaml,
so re-running the same command on the same machine resolves identically and resumes.
``make_strategy`` builds the strategy; ``keras_multi_worker_fix`` is the one place where
Keras 3 is patched so that ``fit`` works under MultiWorkerMirroredStrategy.
"""

import contextlib
import dataclasses

import keras
import tensorflow as tf

from tfvision.errors import ConfigError
from tfvision.training.cluster import current_task

MULTI_WORKER = "multi_worker_mirrored"
# Keras 3's multi-step training loop fails under these (keras-team/keras#19246; verified
# with Mirrored over 2 CPUs on Keras 3.15.1, MultiWorkerMirrored shares its code path).
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
    if steps == "auto" and strategy in MIRRORED:
        steps, why["steps_per_execution"] = 1, strategy
    elif steps == "auto":
        # Fewer Python round trips per step: 1.03-1.08x for the CNN on CPU (BENCHMARKS.md).
        steps, why["steps_per_execution"] = {"TPU": 32, "CPU": 16}.get(device, 1), device
    elif steps > 1 and strategy in MIRRORED:
        raise ConfigError(
            f"distribute.steps_per_execution={steps} does not work with the {strategy} "
            "strategy in Keras 3: fit fails with 'You must feed a value for placeholder "
            "tensor' (keras-team/keras#19246); use 1 or auto"
        )
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
    replicas = strategy.num_replicas_in_sync
    parts.append(f"{replicas} replica{'s' if replicas > 1 else ''}, global batch {global_batch}, "
                 f"learning rate {learning_rate:g}")
    return "distribute: " + ", ".join(parts)


def make_strategy(cfg):
    """The strategy for a resolved ``distribute`` section (``auto`` is resolved first)."""
    name = cfg.strategy if cfg.strategy != "auto" else resolve_distribute(cfg)[0].strategy
    if name == MULTI_WORKER:  # before anything that initializes TensorFlow's runtime
        keras_multi_worker_fix()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        # Without GPUs, mirror over the logical CPUs when the process split its CPU in several.
        cpus = tf.config.list_logical_devices("CPU")
        devices = gpus or (cpus if len(cpus) > 1 else None)
        return tf.distribute.MirroredStrategy([d.name for d in devices] if devices else None)
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


# Keras versions with which the fix below was verified: two localhost workers run `fit` to
# the end with identical weights (tests/test_distribute.py). It patches private Keras code,
# so any other version fails loudly rather than train wrongly.
KERAS_VERIFIED_FOR_MULTI_WORKER = ("3.15.1",)
_fix_applied = False


def keras_multi_worker_fix():
    """Make Keras 3 ``fit``/``evaluate`` work under MultiWorkerMirroredStrategy.

    Works around keras-team/keras#20585 and tensorflow/tensorflow#72388. In multi-worker
    mode, Keras' TensorFlow trainer
    1. ``TensorFlowTrainer._maybe_symbolic_build`` calls ``strategy.reduce`` on the first
       batch, a nested PerReplica structure MultiWorkerMirroredStrategy cannot reduce; the
       build only needs shapes, so one local replica's batch is used instead;
    2. ``reduce_per_replica`` calls ``strategy.reduce("MEAN", v, axis=0)`` on the scalar
       loss and metric results, which have no axis 0; scalars are averaged over the workers
       with ``axis=None``.
    Every other strategy, and every other value, goes through Keras unchanged.
    """
    global _fix_applied
    if _fix_applied:
        return
    if keras.__version__ not in KERAS_VERIFIED_FOR_MULTI_WORKER:
        raise ConfigError(
            f"distribute.strategy={MULTI_WORKER} needs tfvision's fix for Keras 3 multi-worker "
            f"training (keras-team/keras#20585), verified only with Keras "
            f"{', '.join(KERAS_VERIFIED_FOR_MULTI_WORKER)}; Keras {keras.__version__} is "
            f"installed. Install a verified version (pip install "
            f"keras=={KERAS_VERIFIED_FOR_MULTI_WORKER[-1]}) or use another strategy"
        )
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
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

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _fix_applied = True
