"""Principal components with NumPy's SVD: analyze's two PCA views need only this, which spares the
stage the import of scikit-learn."""

from __future__ import annotations

import numpy as np


def principal_components(rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows projected on their first `count` principal axes, the fraction of the variance each
    explains). Each axis points so that its largest loading is positive, so that reruns agree."""
    centred = np.asarray(rows, dtype=np.float64) - np.mean(rows, axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:count]
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])[:, None]
    variance = singular**2
    return centred @ axes.T, variance[:count] / variance.sum()
