"""The report's numbers, from logits and true labels alone (NumPy, no TensorFlow).

Everything is computed once the whole set has been predicted, so an export (which answers
logits through ``serving_default``) and a Keras model get the very same arithmetic.
"""

import numpy as np

ECE_BINS = 15  # equal-width bins on the top-1 score, as in Guo et al. 2017
TEMPERATURE_RANGE = (0.05, 20.0)  # searched for the NLL minimum; beyond it, it is clipped


def log_softmax(logits) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits) -> np.ndarray:
    return np.exp(log_softmax(logits))


def nll(logits, labels) -> float:
    """Mean negative log-likelihood of the true class: the cross-entropy loss."""
    return float(-log_softmax(logits)[np.arange(len(labels)), labels].mean())


def brier(probabilities, labels) -> float:
    """Mean squared distance between the probabilities and the one-hot truth (summed over
    classes, as Brier defined it)."""
    onehot = np.eye(probabilities.shape[1])[labels]
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


def reliability_bins(probabilities, labels, bins=ECE_BINS) -> dict:
    """Per equal-width bin of the top-1 score: count, mean score and accuracy (the
    reliability diagram); empty bins have count 0 and NaN means."""
    score = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # Bin i holds scores in (i/bins, (i+1)/bins]; a score of exactly 0 goes to the first.
    index = np.clip(np.ceil(score * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):
        confidence = np.bincount(index, weights=score, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=bins) / count
    return {"count": count, "confidence": confidence, "accuracy": accuracy}


def ece(probabilities, labels, bins=ECE_BINS) -> float:
    """Expected calibration error: the count-weighted gap between accuracy and mean score."""
    b = reliability_bins(probabilities, labels, bins)
    gaps = np.nan_to_num(np.abs(b["accuracy"] - b["confidence"]))
    return float((b["count"] * gaps).sum() / b["count"].sum())


def fit_temperature(logits, labels) -> float:
    """The temperature T minimising the NLL of softmax(logits / T).

    The NLL is convex in 1/T, so its derivative is monotonic: bisection on log(1/T) finds
    the minimum without SciPy, within ``TEMPERATURE_RANGE``.
    """
    z = np.asarray(logits, np.float64)
    true = z[np.arange(len(labels)), labels]

    def slope(beta):  # d NLL / d beta = E_p[z] - z_true, averaged
        return float(((softmax(beta * z) * z).sum(axis=1) - true).mean())

    low, high = np.log(1 / TEMPERATURE_RANGE[1]), np.log(1 / TEMPERATURE_RANGE[0])
    if slope(np.exp(low)) >= 0:
        return TEMPERATURE_RANGE[1]
    if slope(np.exp(high)) <= 0:
        return TEMPERATURE_RANGE[0]
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if slope(np.exp(middle)) < 0 else (low, middle)
    return float(1 / np.exp((low + high) / 2))


def confusion_matrix(labels, predicted, num_classes) -> np.ndarray:
    """Counts; rows are the true class, columns the predicted one."""
    return np.bincount(labels * num_classes + predicted,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class(confusion, class_names) -> list[dict]:
    """Precision, recall, F1 and support of each class (0 where undefined, as scikit-learn
    does with ``zero_division=0``)."""
    true_positive = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive),
                          where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive),
                       where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f),
             "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)]


def averages(rows) -> tuple[dict, dict]:
    """Macro (every class alike) and support-weighted averages of ``per_class`` rows."""
    support = np.array([r["support"] for r in rows], np.float64)
    macro, weighted = {}, {}
    for key in ("precision", "recall", "f1"):
        values = np.array([r[key] for r in rows])
        macro[key] = float(values.mean())
        weighted[key] = float((values * support).sum() / support.sum())
    return macro, weighted


def confused_pairs(confusion, class_names, limit=10) -> list[dict]:
    """The most frequent (true, predicted) mistakes, most frequent first."""
    off = confusion * (1 - np.eye(len(confusion), dtype=confusion.dtype))
    order = np.argsort(-off, axis=None, kind="stable")[:limit]
    pairs = []
    for flat in order:
        true, predicted = divmod(int(flat), len(confusion))
        if off[true, predicted] == 0:
            break
        pairs.append({"true": class_names[true], "predicted": class_names[predicted],
                      "count": int(off[true, predicted]),
                      "share_of_true": float(off[true, predicted] / confusion[true].sum())})
    return pairs


def top_k_accuracy(logits, labels, k) -> float:
    """Share of examples whose true class is among the ``k`` highest logits; a tie at the
    boundary counts as in, as ``tf.math.in_top_k`` (Keras' top-k metric) counts it."""
    z = np.asarray(logits)
    true = z[np.arange(len(labels)), labels]
    return float(((z > true[:, None]).sum(axis=1) < k).mean())


def calibration(logits, labels) -> dict:
    """ECE, Brier score and NLL, then the temperature minimising the NLL on this data and
    the ECE and NLL it gives."""
    probabilities = softmax(logits)
    temperature = fit_temperature(logits, labels)
    scaled = np.asarray(logits, np.float64) / temperature
    return {"ece": ece(probabilities, labels), "brier": brier(probabilities, labels),
            "nll": nll(logits, labels), "temperature": temperature,
            "ece_calibrated": ece(softmax(scaled), labels),
            "nll_calibrated": nll(scaled, labels)}


def summarize(logits, labels, class_names, top_k) -> dict:
    """Every number of report.json but the mistakes and the corruptions."""
    labels = np.asarray(labels, np.int64)
    predicted = np.asarray(logits).argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, len(class_names))
    rows = per_class(confusion, class_names)
    macro, weighted = averages(rows)
    return {
        "accuracy": float((predicted == labels).mean()),
        "top_k_accuracy": top_k_accuracy(logits, labels, min(top_k, len(class_names))),
        "top_k": min(top_k, len(class_names)),
        "loss": nll(logits, labels),
        "num_examples": len(labels),
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),
        "per_class": rows,
        "macro_avg": macro,
        "weighted_avg": weighted,
        "calibration": calibration(logits, labels),
        "confused_pairs": confused_pairs(confusion, class_names),
    }
