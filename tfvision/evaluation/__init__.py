"""Evaluation reports: per-class metrics, confusion, calibration, robustness, pictures.

``metrics`` is plain NumPy on logits and labels; ``targets`` and ``collect`` get those from
a Keras model or an export; ``corruptions`` makes the robustness sweep; ``report`` ties them
together and writes ``report.json``, ``plots`` and ``page`` the PNGs and ``report.html``.
``evaluate`` is imported on first use, so ``metrics`` stays free of TensorFlow.
"""

__all__ = ["evaluate"]


def __getattr__(name):
    if name in __all__:
        from tfvision.evaluation import report

        return getattr(report, name)
    raise AttributeError(f"module 'tfvision.evaluation' has no attribute {name!r}")
