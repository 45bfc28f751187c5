"""Every reported number against scikit-learn's definitions, on random predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

from pipeline.lib.metrics import CLASSES, classification_report, confusion, most_confused_pairs


def random_predictions(seed: int, count: int = 500, skipped: int | None = None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    logits = rng.normal(size=(count, 10)) + 2.0 * np.eye(10)[labels]  # better than chance, far from perfect
    if skipped is not None:
        logits[:, skipped] = -np.inf  # a digit never predicted: precision 0, as sklearn sets it
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    return labels, (probabilities / probabilities.sum(1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("seed, skipped", [(0, None), (1, None), (2, 7)])
def test_the_report_matches_scikit_learn(seed, skipped):
    labels, probabilities = random_predictions(seed, skipped=skipped)
    predictions = probabilities.argmax(1)
    summary, per_class = classification_report(labels, probabilities)
    assert summary["accuracy"] == pytest.approx(accuracy_score(labels, predictions), abs=1e-6)
    assert summary["errors"] == int((labels != predictions).sum())
    exact = probabilities.astype(np.float64)
    exact /= exact.sum(1, keepdims=True)
    assert summary["loss"] == pytest.approx(log_loss(labels, exact, labels=CLASSES), abs=1e-6)
    assert summary["macro_f1"] == pytest.approx(
        f1_score(labels, predictions, average="macro", zero_division=0), abs=1e-6
    )
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=CLASSES, zero_division=0
    )
    for digit, row in enumerate(per_class.values()):
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
            (precision[digit], recall[digit], f1[digit]), abs=1e-6
        )
        assert row["support"] == support[digit]


def test_confusion_counts_and_most_confused_pairs():
    labels, probabilities = random_predictions(3)
    predictions = probabilities.argmax(1)
    matrix = confusion(labels, predictions)
    assert np.array_equal(matrix, confusion_matrix(labels, predictions, labels=CLASSES))
    pairs = most_confused_pairs(matrix, 3)
    off_diagonal = sorted(
        ((matrix[t, p], t, p) for t in CLASSES for p in CLASSES if t != p), key=lambda c: (-c[0], c[1], c[2])
    )
    assert [(pair["count"], int(pair["true"]), int(pair["predicted"])) for pair in pairs] == [
        (int(n), t, p) for n, t, p in off_diagonal[:3]
    ]
    assert pairs[0]["pair"] == f"{off_diagonal[0][1]} as {off_diagonal[0][2]}"
    assert pairs[0]["share_of_true"] == pytest.approx(off_diagonal[0][0] / matrix[off_diagonal[0][1]].sum(), abs=1e-6)
