"""Classification metrics of test-set predictions, as plain JSON-ready numbers.

Written with NumPy from the confusion matrix (the definitions scikit-learn uses, zero where a
class is never predicted), sparing evaluate the import of sklearn.metrics.
"""

from __future__ import annotations

import numpy as np

from pipeline.lib.mnist import CLASS_NAMES

CLASSES = list(range(len(CLASS_NAMES)))


def classification_report(labels: np.ndarray, probabilities: np.ndarray) -> tuple[dict, dict]:
    """(summary, per-class): accuracy, cross-entropy loss and macro F1; per-class precision, recall, F1."""
    predictions = probabilities.argmax(1)
    exact = probabilities.astype(np.float64)
    exact /= exact.sum(1, keepdims=True)  # float32 softmax rows sum to 1 only within rounding
    matrix = confusion(labels, predictions)
    correct, support, predicted = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    precision = np.divide(correct, predicted, out=np.zeros(len(CLASSES)), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros(len(CLASSES)), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(CLASSES)), where=precision + recall > 0)
    true_class = np.clip(exact[np.arange(len(labels)), labels], np.finfo(np.float64).eps, 1)
    summary = {
        "accuracy": round(float((predictions == labels).mean()), 6),
        "errors": int((predictions != labels).sum()),
        "loss": round(float(-np.log(true_class).mean()), 6),
        "macro_f1": round(float(f1.mean()), 6),
    }
    per_class = {
        name: {
            "precision": round(float(precision[i]), 6),
            "recall": round(float(recall[i]), 6),
            "f1": round(float(f1[i]), 6),
            "support": int(support[i]),
        }
        for i, name in enumerate(CLASS_NAMES)
    }
    return summary, per_class


def confusion(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """(10, 10) counts, rows the true digit, columns the predicted one."""
    return np.bincount(labels * len(CLASSES) + predictions, minlength=len(CLASSES) ** 2).reshape(
        len(CLASSES), len(CLASSES)
    )


def most_confused_pairs(matrix: np.ndarray, count: int) -> list[dict]:
    """The off-diagonal cells with the most images, largest first (ties by true, then predicted digit);
    `pair` labels each bar of the plot dvc.yaml draws from them."""
    off_diagonal = [(int(matrix[t, p]), t, p) for t in CLASSES for p in CLASSES if t != p and matrix[t, p] > 0]
    off_diagonal.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [
        {
            "pair": f"{CLASS_NAMES[t]} as {CLASS_NAMES[p]}",
            "true": CLASS_NAMES[t],
            "predicted": CLASS_NAMES[p],
            "count": n,
            "share_of_true": round(n / matrix[t].sum(), 6),
        }
        for n, t, p in off_diagonal[:count]
    ]
