"""The report's pictures, as PNG files (matplotlib, the ``report`` extra).

Figures are drawn on ``matplotlib.figure.Figure`` directly, not through pyplot, so nothing
depends on (or changes) a global backend.
"""

import csv
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tfvision.evaluation import metrics

MAX_CLASSES = 50  # confusion matrix axes stay readable up to here; above, the most confused
DPI = 100


def _save(figure, path) -> str:
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return Path(path).name


def confusion_matrix(report, path) -> str:
    """Row-normalized (each true class sums to 1), class names on both axes; above
    ``MAX_CLASSES`` classes, the ``MAX_CLASSES`` classes with the most mistakes."""
    counts = np.asarray(report["confusion_matrix"], np.float64)
    names = report["class_names"]
    shown = np.arange(len(names))
    title = "confusion matrix (rows: true class, normalized)"
    if len(names) > MAX_CLASSES:
        errors = counts.sum(0) + counts.sum(1) - 2 * np.diag(counts)
        shown = np.sort(np.argsort(-errors, kind="stable")[:MAX_CLASSES])
        title += f", the {MAX_CLASSES} most confused of {len(names)} classes"
    rows = counts[shown]
    normalized = np.divide(rows, rows.sum(1, keepdims=True), out=np.zeros_like(rows),
                           where=rows.sum(1, keepdims=True) > 0)[:, shown]
    side = max(4.0, 0.28 * len(shown) + 2)
    figure = Figure(figsize=(side + 1, side))
    ax = figure.add_subplot()
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(shown))
    labels = [names[i] for i in shown]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=8)
    ax.set_yticks(ticks, labels, fontsize=8)
    if len(shown) <= 15:
        for (i, j), value in np.ndenumerate(normalized):
            if value >= 0.005:
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(figure, path)


def reliability(found, temperature, path) -> str:
    """Accuracy against mean top-1 score per bin, before and after temperature scaling."""
    figure = Figure(figsize=(9, 4.2))
    edges = np.linspace(0, 1, metrics.ECE_BINS + 1)
    for ax, scale, name in zip(figure.subplots(1, 2), (1.0, temperature),
                               ("before", f"after temperature scaling (T={temperature:.2f})")):
        probabilities = metrics.softmax(found.logits / scale)
        bins = metrics.reliability_bins(probabilities, found.labels)
        filled = bins["count"] > 0
        ax.bar(edges[:-1][filled], bins["accuracy"][filled], width=1 / metrics.ECE_BINS,
               align="edge", edgecolor="black", color="tab:blue", label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        centres = edges[:-1] + 0.5 / metrics.ECE_BINS
        ax.plot(centres[filled], bins["confidence"][filled], "o", color="tab:orange",
                label="mean top-1 score of the bin")
        error = metrics.ece(probabilities, found.labels)
        ax.set_title(f"{name}\nECE {error:.4f}", fontsize=10)
        ax.set_xlabel("top-1 score")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", fontsize=8)
    return _save(figure, path)


def curves(history_csv, path) -> str | None:
    """Loss and accuracy per epoch from history.csv, training and validation."""
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    epochs = [int(r["epoch"]) + 1 for r in rows]
    figure = Figure(figsize=(9, 3.8))
    for ax, key in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = [float(r[prefix + key]) if r.get(prefix + key) else np.nan for r in rows]
            ax.plot(epochs, values, style, markersize=3, label=f"{prefix or 'train_'}{key}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _save(figure, path)


def mistakes(report, thumbnails, path, overlay=None) -> str | None:
    """A gallery of the most confident mistakes, with true and predicted names.

    ``overlay(image, class_id) -> RGB uint8 image`` (optional; Grad-CAM from
    ``tfvision.explain``, for instance) draws an explanation of the predicted class beside
    each thumbnail.
    """
    items = report["mistakes"]
    if not items:
        return None
    names = report["class_names"]
    columns = 6 if overlay is None else 3
    rows = -(-len(items) // columns)
    per = 1 if overlay is None else 2
    figure = Figure(figsize=(1.7 * columns * per, 1.95 * rows))
    axes = np.atleast_2d(figure.subplots(rows, columns * per, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    for n, (item, image) in enumerate(zip(items, thumbnails)):
        row, col = divmod(n, columns)
        ax = axes[row, col * per]
        ax.imshow(image, interpolation="nearest")
        ax.set_title(f"true {item['true']}\npred {item['predicted']} ({item['score']:.2f})",
                     fontsize=8, color="darkred")
        if overlay is not None:
            axes[row, col * per + 1].imshow(overlay(image, names.index(item["predicted"])))
    figure.suptitle("most confident mistakes", fontsize=10)
    return _save(figure, path)


def corruptions(report, path) -> str:
    """Accuracy per corruption against severity, with the clean accuracy for reference."""
    found = report["corruptions"]
    figure = Figure(figsize=(6.5, 4))
    ax = figure.add_subplot()
    for name, rows in found["results"].items():
        ax.plot([r["severity"] for r in rows], [r["accuracy"] for r in rows], "-o",
                markersize=3, label=name.replace("_", " "))
    ax.axhline(found["clean_accuracy"], color="black", linestyle="--", label="clean")
    ax.set_xticks(found["severities"])
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"corruptions: mean accuracy {found['mean_accuracy']:.3f} "
                 f"(drop {found['drop']:.3f})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(figure, path)


def draw_all(out, report, found, thumbnails, history_csv, overlay=None) -> dict:
    """Every picture that applies, written into ``out``: ``{name: file name}``."""
    out = Path(out)
    drawn = {
        "confusion_matrix": confusion_matrix(report, out / "confusion_matrix.png"),
        "reliability": reliability(found, report["calibration"]["temperature"],
                                   out / "reliability.png"),
    }
    if history_csv is not None and history_csv.exists():
        drawn["curves"] = curves(history_csv, out / "curves.png")
    drawn["mistakes"] = mistakes(report, thumbnails, out / "mistakes.png", overlay)
    if "corruptions" in report:
        drawn["corruptions"] = corruptions(report, out / "corruptions.png")
    return {name: file for name, file in drawn.items() if file}
