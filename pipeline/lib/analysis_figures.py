"""The figures analyze draws: confusion matrix, per-class bars, mistakes, weight templates, PCA scatters."""

from __future__ import annotations

import math

import numpy as np

from pipeline.lib.figures import plt
from pipeline.lib.mnist import CLASS_NAMES


def confusion_figure(matrix: np.ndarray, title: str) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(7, 6))
    shown = axes.imshow(np.log1p(matrix), cmap="Blues")
    for (true, predicted), count in np.ndenumerate(matrix):
        colour = "white" if shown.norm(np.log1p(count)) > 0.6 else "black"
        axes.text(predicted, true, str(count), ha="center", va="center", fontsize=8, color=colour)
    ticks = range(len(CLASS_NAMES))
    axes.set(xticks=ticks, yticks=ticks, xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES)
    axes.set(xlabel="predicted digit", ylabel="true digit", title=title)
    return figure


def per_class_figure(per_class: dict[str, dict[str, float]], title: str) -> plt.Figure:
    """Precision and recall per digit, side by side, on an axis zoomed to where they differ."""
    figure, axes = plt.subplots(figsize=(9, 4), layout="constrained")
    positions = np.arange(len(per_class))
    lowest = min(min(scores["precision"], scores["recall"]) for scores in per_class.values())
    for offset, measure in ((-0.2, "precision"), (0.2, "recall")):
        values = [scores[measure] for scores in per_class.values()]
        bars = axes.bar(positions + offset, values, width=0.4, label=measure)
        axes.bar_label(bars, labels=[f"{100 * v:.1f}" for v in values], fontsize=7, padding=2)
    axes.set_xticks(positions, list(per_class))
    axes.set_ylim(max(0.0, lowest - 0.03), 1.005)
    axes.set(xlabel="digit", ylabel="precision, recall (bar labels in %)", title=title)
    axes.legend(loc="lower right", fontsize=8)
    return figure


def _grid(count: int, title: str) -> tuple[plt.Figure, np.ndarray]:
    """Up to 8 columns of small square panels, axes off, with no blank band above them."""
    columns = max(1, min(8, count))  # a perfect model has no mistakes to show
    rows = max(1, math.ceil(count / columns))
    figure, grid = plt.subplots(
        rows, columns, figsize=(columns * 1.3, rows * 1.45 + 0.4), squeeze=False, layout="constrained"
    )
    for axes in grid.flat:
        axes.axis("off")
    figure.suptitle(title)
    return figure, grid


def _square(row: np.ndarray) -> np.ndarray:
    side = math.isqrt(np.asarray(row).size)
    return np.asarray(row).reshape(side, side)


def digit_grid(images: np.ndarray, captions: list[str], title: str) -> plt.Figure:
    """Small multiples of images (or their flattened rows, e.g. 784 long), dark ink on white, each with a caption."""
    figure, grid = _grid(len(images), title)
    for axes, image, caption in zip(grid.flat, images, captions):
        axes.imshow(_square(image), cmap="gray_r")
        axes.set_title(caption, fontsize=8)
    return figure


def weight_templates(weights: np.ndarray, captions: list[str], title: str) -> plt.Figure:
    """Weight rows as square tiles of one image on one symmetric colour scale (red positive, blue
    negative), so that a faint template looks faint; the 99.5th percentile of |w| is the scale's end.
    One image rather than a panel per row, which matplotlib lays out far faster."""
    columns = max(1, min(8, len(weights)))
    rows = math.ceil(len(weights) / columns)
    side = math.isqrt(weights.shape[1])
    step, row_step = side + max(1, side // 8), side + max(2, side // 3)  # gaps: between tiles, and for captions
    mosaic = np.full((rows * row_step, columns * step), np.nan)
    figure, axes = plt.subplots(figsize=(columns * 1.3 + 1.2, rows * 1.5 + 0.5), layout="constrained")
    for number, (row, caption) in enumerate(zip(weights, captions)):
        top, left = divmod(number, columns)
        mosaic[top * row_step : top * row_step + side, left * step : left * step + side] = _square(row)
        axes.text(left * step + side / 2, top * row_step - 0.5, caption, ha="center", va="bottom", fontsize=8)
    limit = float(np.percentile(np.abs(weights), 99.5)) or 1.0
    image = axes.imshow(mosaic, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    axes.set_ylim(rows * row_step - (row_step - side) - 0.5, -(row_step - side) - 0.5)  # the first row's captions
    axes.axis("off")
    figure.suptitle(title)
    figure.colorbar(image, ax=axes, shrink=0.5, label="weight (one scale for all tiles)")
    return figure


def pca_figure(points: np.ndarray, labels: np.ndarray, explained: np.ndarray, title: str) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(8, 6), layout="constrained")
    colours = plt.get_cmap("tab10")
    for digit, name in enumerate(CLASS_NAMES):
        chosen = labels == digit
        axes.scatter(points[chosen, 0], points[chosen, 1], s=4, alpha=0.6, color=colours(digit), label=name)
    axes.legend(
        markerscale=3, title="digit", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8
    )  # beside, not over, the points
    axes.set(
        xlabel=f"PC1 ({explained[0]:.1%} of variance)",
        ylabel=f"PC2 ({explained[1]:.1%} of variance)",
        title=f"{title}\nexplained variance: PC1 {explained[0]:.1%}, PC2 {explained[1]:.1%}",
    )
    return figure
