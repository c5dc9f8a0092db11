"""The report's numbers against independent references: scikit-learn, the ECE written from
its definition, a grid search for the temperature, and a case worked out by hand."""

import math

import numpy as np
import pytest
from sklearn.metrics import (
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from tfvision.evaluation import metrics

CLASSES = [f"c{i}" for i in range(7)]


@pytest.fixture(scope="module")
def logits_labels():
    """600 examples of 7 classes; class 6 is never predicted (precision 0/0)."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, 600)
    logits = rng.normal(0, 1, (600, 7)) + 2.5 * np.eye(7)[labels]
    logits[:, 6] -= 10
    return logits.astype(np.float32), labels


def _ece_by_definition(probabilities, labels, bins=15):
    """ECE = sum over bins B_m = (m/15, (m+1)/15] of |B_m|/n * |acc(B_m) - conf(B_m)|."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    total = 0.0
    for m in range(bins):
        inside = (confidence > m / bins) & (confidence <= (m + 1) / bins)
        if inside.any():
            total += inside.sum() / len(labels) * abs(correct[inside].mean()
                                                      - confidence[inside].mean())
    return total


def test_summary_matches_scikit_learn(logits_labels):
    logits, labels = logits_labels
    report = metrics.summarize(logits, labels, CLASSES, top_k=3)
    predicted = logits.argmax(axis=1)
    assert report["num_examples"] == 600
    assert report["confusion_matrix"] == confusion_matrix(labels, predicted,
                                                          labels=range(7)).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=range(7), zero_division=0)
    rows = report["per_class"]
    assert [r["class"] for r in rows] == CLASSES
    np.testing.assert_allclose([r["precision"] for r in rows], precision)
    np.testing.assert_allclose([r["recall"] for r in rows], recall)
    np.testing.assert_allclose([r["f1"] for r in rows], f1)
    assert [r["support"] for r in rows] == support.tolist()
    assert rows[6]["precision"] == 0 and rows[6]["support"] > 0  # the never-predicted class
    for average in ("macro", "weighted"):
        want = precision_recall_fscore_support(labels, predicted, labels=range(7),
                                               average=average, zero_division=0)
        got = report[f"{average}_avg"]
        np.testing.assert_allclose([got["precision"], got["recall"], got["f1"]], want[:3])
    assert report["accuracy"] == pytest.approx((predicted == labels).mean())
    assert report["top_k_accuracy"] == pytest.approx(
        top_k_accuracy_score(labels, logits, k=3, labels=range(7)))
    probabilities = metrics.softmax(logits)
    assert report["loss"] == pytest.approx(log_loss(labels, probabilities, labels=range(7)),
                                           rel=1e-6)
    assert report["calibration"]["ece"] == pytest.approx(
        _ece_by_definition(probabilities, labels), abs=1e-12)
    brier = ((probabilities - np.eye(7)[labels]) ** 2).sum(axis=1).mean()
    assert report["calibration"]["brier"] == pytest.approx(brier)


def test_confused_pairs_are_the_largest_off_diagonal_counts(logits_labels):
    logits, labels = logits_labels
    counts = confusion_matrix(labels, logits.argmax(axis=1), labels=range(7))
    pairs = metrics.confused_pairs(counts, CLASSES, limit=5)
    np.fill_diagonal(counts, 0)
    assert [p["count"] for p in pairs] == sorted(counts.ravel(), reverse=True)[:5]
    for pair in pairs:
        assert counts[CLASSES.index(pair["true"]), CLASSES.index(pair["predicted"])] == \
            pair["count"]


def test_a_case_worked_out_by_hand():
    logits = np.array([[2.0, 0, 0], [0, 3, 0], [0, 0, 1], [1, 0, 0]])
    labels = np.array([0, 1, 0, 2])  # right, right, 0 taken for 2, 2 taken for 0
    report = metrics.summarize(logits, labels, ["a", "b", "c"], top_k=2)
    e = math.e
    assert report["accuracy"] == 0.5
    assert report["confusion_matrix"] == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert [(r["precision"], r["recall"], r["support"]) for r in report["per_class"]] == [
        (0.5, 0.5, 2), (1.0, 1.0, 1), (0.0, 0.0, 1)]
    assert report["macro_avg"]["f1"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert report["top_k_accuracy"] == 1.0  # ties at the boundary count, as in_top_k does
    top = [e**2 / (e**2 + 2), e**3 / (e**3 + 2), e / (e + 2), e / (e + 2)]
    # Bins (8/15, 9/15] holds both wrong answers, (11/15, 12/15] and (13/15, 14/15] one each.
    ece = 2 / 4 * top[2] + 1 / 4 * (1 - top[0]) + 1 / 4 * (1 - top[1])
    assert report["calibration"]["ece"] == pytest.approx(ece)
    nll = -(math.log(top[0]) + math.log(top[1]) + 2 * math.log(1 / (e + 2))) / 4
    assert report["loss"] == pytest.approx(nll)
    assert {(p["true"], p["predicted"]) for p in report["confused_pairs"]} == {("a", "c"),
                                                                               ("c", "a")}


def test_the_fitted_temperature_is_the_nll_minimum_of_a_grid():
    """Overconfident logits (right 70 % of the time, always near-certain): T well above 1,
    and no temperature on a fine grid beats it."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 2000)
    guess = np.where(rng.random(2000) < 0.7, labels, rng.integers(0, 5, 2000))
    logits = 8 * np.eye(5)[guess] + rng.normal(0, 1, (2000, 5))
    temperature = metrics.fit_temperature(logits, labels)
    grid = np.geomspace(0.05, 20, 4000)
    best = grid[np.argmin([metrics.nll(logits / t, labels) for t in grid])]
    assert temperature > 2
    assert temperature == pytest.approx(best, rel=3e-3)
    calibrated = metrics.calibration(logits, labels)
    assert calibrated["nll_calibrated"] < calibrated["nll"] - 0.1
    assert calibrated["ece_calibrated"] < calibrated["ece"] / 2


def test_a_confusion_matrix_of_many_classes_shows_the_most_confused():
    from tfvision.evaluation.plots import MAX_CLASSES, shown_classes

    rng = np.random.default_rng(5)
    counts = np.diag(rng.integers(50, 100, 80))
    confused = rng.choice(80, 30, replace=False)
    for true in confused:  # each sends mistakes to a class among the confused ones
        counts[true, rng.choice(confused[confused != true])] += 10
    shown = shown_classes(counts)
    assert len(shown) == MAX_CLASSES == 50
    assert set(confused) <= set(shown)
    assert list(shown_classes(counts[:40, :40])) == list(range(40))  # few classes: all
