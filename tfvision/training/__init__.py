"""Training under tf.distribute strategies, evaluation, and run directories.

``train`` and ``evaluate`` are imported on first use, so the local cluster launcher
(``tfvision train --workers N``) starts its workers without importing TensorFlow itself.
"""

__all__ = ["evaluate", "train"]


def __getattr__(name):
    if name == "evaluate":
        from tfvision.evaluation import evaluate

        return evaluate
    if name in __all__:
        from tfvision.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'tfvision.training' has no attribute {name!r}")
