"""analyze's PCA: the same projection and explained variance as scikit-learn's, with fixed signs."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from pipeline.lib.projection import principal_components


def test_the_projection_is_scikit_learns_up_to_each_axis_sign():
    rows = np.random.default_rng(0).normal(size=(300, 20)) * np.linspace(5, 0.1, 20)
    points, explained = principal_components(rows, 2)
    reference = PCA(n_components=2, svd_solver="full")
    expected = reference.fit_transform(rows)
    assert np.allclose(np.abs(points), np.abs(expected)) and np.allclose(explained, reference.explained_variance_ratio_)
    assert points.shape == (300, 2) and 0 < explained[1] < explained[0] < 1


def test_each_axis_points_the_same_way_whatever_the_rows_sign():
    rows = np.random.default_rng(1).normal(size=(100, 10)) * np.linspace(3, 1, 10)
    points, _ = principal_components(rows, 2)
    flipped, _ = principal_components(-rows, 2)
    assert np.allclose(flipped, -points)  # negated data: the same axes, so negated coordinates
