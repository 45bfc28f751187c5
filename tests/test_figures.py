"""analyze's figures: weight templates on one scale, chosen by norm; legends beside the points."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.lib.analysis_figures import pca_figure, weight_templates
from pipeline.lib.model import build_model
from pipeline.lib.params import Params
from pipeline.stages.analyze import MAX_TEMPLATES, weight_view

from conftest import small_params


def test_templates_share_one_symmetric_scale_with_a_colourbar():
    weights = np.random.default_rng(0).normal(size=(5, 784)) * np.array([[1], [2], [3], [4], [100]])
    figure = weight_templates(weights, [f"unit {i}" for i in range(5)], "t")
    limits = {image.get_clim() for axes in figure.axes for image in axes.get_images()}
    assert len(limits) == 1
    low, high = limits.pop()
    assert low == -high and high > 0
    assert any(axes.get_label() == "<colorbar>" for axes in figure.axes)


def test_an_mlp_shows_its_units_of_largest_norm_first():
    params = Params.model_validate(small_params(model={"hidden_sizes": [100]}))
    network = build_model(params.model)
    with torch.no_grad():
        network[0].weight[37] *= 50
        network[0].weight[3] *= 20
    rows, captions, title = weight_view(network, params.model)
    assert captions[:2] == ["unit 37", "unit 3"] and len(rows) == MAX_TEMPLATES
    assert np.array_equal(rows[0], network[0].weight[37].detach().numpy())
    assert f"{MAX_TEMPLATES} of 100 units of largest norm" in title


def test_logistic_regression_shows_one_template_per_class():
    params = Params.model_validate(small_params(model={"hidden_sizes": []}))
    _, captions, _ = weight_view(build_model(params.model), params.model)
    assert captions == [str(digit) for digit in range(10)]


def test_the_pca_legend_sits_outside_the_points():
    points = np.random.default_rng(0).normal(size=(100, 2))
    figure = pca_figure(points, np.arange(100) % 10, np.array([0.1, 0.05]), "t")
    figure.canvas.draw()
    legend, plot = figure.axes[0].get_legend().get_window_extent(), figure.axes[0].get_window_extent()
    assert legend.x0 >= plot.x1
