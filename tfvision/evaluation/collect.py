"""One pass over a set: every logit and label, and the most confident mistakes with their
pictures.

Only the logits are kept for every example (a few floats each); pictures are kept for the
few worst mistakes alone, so the pass costs what ``model.evaluate`` costs, at any set size.
"""

from dataclasses import dataclass

import numpy as np

from tfvision.evaluation.metrics import softmax

MISTAKES = 24  # the gallery's size


@dataclass
class Mistake:
    index: int  # position in the evaluated set
    true: int
    predicted: int
    score: float  # the (wrong) top-1 probability
    image: np.ndarray  # the model's input: pixels, or encoded bytes for an export


@dataclass
class Predictions:
    logits: np.ndarray  # [N, classes] float32
    labels: np.ndarray  # [N] int64 class ids
    mistakes: list  # Mistake, most confident first


def collect(logits_of, batches, keep=MISTAKES) -> Predictions:
    """Run ``logits_of(inputs)`` (float32 NumPy logits back) on every ``(inputs, class
    ids)`` batch, keeping the ``keep`` most confident mistakes."""
    all_logits, all_labels, mistakes = [], [], []
    done = 0
    for inputs, labels in batches:
        logits = logits_of(inputs)
        labels = labels.numpy()
        all_logits.append(logits)
        all_labels.append(labels)
        predicted = logits.argmax(axis=1)
        wrong = np.flatnonzero(predicted != labels)
        if keep and len(wrong):  # scores for the wrong rows only: the pass stays cheap
            score = softmax(logits[wrong]).max(axis=1)
            floor = mistakes[-1].score if len(mistakes) == keep else -1.0
            for i, s in zip(wrong, score):
                if s > floor:
                    mistakes.append(Mistake(done + int(i), int(labels[i]), int(predicted[i]),
                                            float(s), inputs[i].numpy()))
            mistakes = sorted(mistakes, key=lambda m: -m.score)[:keep]
        done += len(labels)
    if not all_logits:
        return Predictions(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), [])
    return Predictions(np.concatenate(all_logits), np.concatenate(all_labels).astype(np.int64),
                       mistakes)
