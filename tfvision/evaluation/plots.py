"""The report's pictures, as PNG files (matplotlib, the ``report`` extra).

Figures are drawn on ``matplotlib.figure.Figure`` directly, not through pyplot, so nothing
depends on (or changes) a global backend.
"""

import csv

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tfvision import fs
from tfvision.evaluation import metrics

MAX_CLASSES = 50  # confusion matrix axes stay readable up to here; above, the most confused
DPI = 100


def _save(figure, path) -> str:
    with fs.open_file(path, "wb") as f:  # a local path or a URL
        figure.savefig(f, format="png", dpi=DPI, bbox_inches="tight")
    return fs.basename(path)


def shown_classes(counts, limit=MAX_CLASSES) -> np.ndarray:
    """Every class id, or above ``limit`` classes the ``limit`` most often confused
    (mistakes made on them plus mistakes made for them), in class order."""
    if len(counts) <= limit:
        return np.arange(len(counts))
    errors = counts.sum(0) + counts.sum(1) - 2 * np.diag(counts)
    return np.sort(np.argsort(-errors, kind="stable")[:limit])


def confusion_matrix(report, path) -> str:
    """Row-normalized (each true class sums to 1), class names on both axes; above
    ``MAX_CLASSES`` classes, the ``MAX_CLASSES`` classes with the most mistakes."""
    counts = np.asarray(report["confusion_matrix"], np.float64)
    names = report["class_names"]
    shown = shown_classes(counts)
    title = "confusion matrix (rows: true class, normalized)"
    if len(shown) < len(names):
        title += f", the {len(shown)} most confused of {len(names)} classes"
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
    with fs.open_file(history_csv, "r") as f:
        rows = list(csv.DictReader(f.read().splitlines()))
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


TILE = 96  # pixels per thumbnail in the gallery
_BAND = 30  # pixels above each thumbnail for its caption


def _tile(image) -> np.ndarray:
    """``image`` resampled (nearest) to TILE x TILE, RGB uint8: small digits stay crisp."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    rows = np.arange(TILE) * image.shape[0] // TILE
    cols = np.arange(TILE) * image.shape[1] // TILE
    return np.broadcast_to(image[rows][:, cols], (TILE, TILE, 3)).astype(np.uint8)


def mistakes(report, thumbnails, path, overlays=None) -> str | None:
    """A gallery of the most confident mistakes, with true and predicted names.

    ``overlays`` (optional: one RGB uint8 image per mistake, Grad-CAM of the predicted class
    by default, see ``report.write``) are drawn beside the thumbnails. The gallery is one mosaic image, so it draws in a fraction of a
    second whatever its size.
    """
    items = report["mistakes"]
    if not items:
        return None
    per = 1 if overlays is None else 2
    columns = 6 if overlays is None else 3
    rows = -(-len(items) // columns)
    cell_w, cell_h = per * TILE + 8, TILE + _BAND
    mosaic = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    figure = Figure(figsize=(mosaic.shape[1] / DPI, mosaic.shape[0] / DPI + 0.35))
    ax = figure.add_axes([0, 0, 1, mosaic.shape[0] / (mosaic.shape[0] + 0.35 * DPI)])
    for n, (item, image) in enumerate(zip(items, thumbnails)):
        row, col = divmod(n, columns)
        top, left = row * cell_h + _BAND, col * cell_w + 4
        pictures = [image]
        if overlays is not None:
            pictures.append(overlays[n])
        mosaic[top:top + TILE, left:left + per * TILE] = np.concatenate(
            [_tile(p) for p in pictures], axis=1)
        ax.text(left + per * TILE / 2, top - 3,
                f"true {item['true']}\npred {item['predicted']} ({item['score']:.2f})",
                ha="center", va="bottom", fontsize=7, color="darkred")
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
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


def draw_all(out, report, found, thumbnails, history_csv, overlays=None) -> dict:
    """Every picture that applies, written into the folder ``out``: ``{name: file name}``."""
    drawn = {
        "confusion_matrix": confusion_matrix(report, fs.join(out, "confusion_matrix.png")),
        "reliability": reliability(found, report["calibration"]["temperature"],
                                   fs.join(out, "reliability.png")),
    }
    if history_csv is not None and fs.isfile(history_csv):
        drawn["curves"] = curves(history_csv, fs.join(out, "curves.png"))
    drawn["mistakes"] = mistakes(report, thumbnails, fs.join(out, "mistakes.png"), overlays)
    if "corruptions" in report:
        drawn["corruptions"] = corruptions(report, fs.join(out, "corruptions.png"))
    return {name: file for name, file in drawn.items() if file}
