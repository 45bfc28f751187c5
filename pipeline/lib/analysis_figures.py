"""The figures analyze draws: confusion matrix, digit galleries and weight templates, PCA scatters."""

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


def digit_grid(images: np.ndarray, captions: list[str], title: str, diverging: bool = False) -> plt.Figure:
    """Small multiples of square images (or their flattened rows, e.g. 784 long), each with a caption.

    `diverging` draws signed values (weights) red for positive, blue for negative, centred on 0.
    """
    columns = max(1, min(8, len(images)))  # a perfect model has no mistakes to show
    rows = max(1, math.ceil(len(images) / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.5), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, image, caption in zip(grid.flat, images, captions):
        side = math.isqrt(np.asarray(image).size)
        picture = np.asarray(image).reshape(side, side)
        if diverging:
            limit = float(np.abs(picture).max()) or 1.0
            axes.imshow(picture, cmap="RdBu_r", vmin=-limit, vmax=limit)
        else:
            axes.imshow(picture, cmap="gray_r")
        axes.set_title(caption, fontsize=8)
    figure.suptitle(title)
    return figure


def pca_figure(points: np.ndarray, labels: np.ndarray, explained: np.ndarray, title: str) -> plt.Figure:
    figure, axes = plt.subplots(figsize=(7, 6))
    colours = plt.get_cmap("tab10")
    for digit, name in enumerate(CLASS_NAMES):
        chosen = labels == digit
        axes.scatter(points[chosen, 0], points[chosen, 1], s=4, alpha=0.6, color=colours(digit), label=name)
    axes.legend(markerscale=3, title="digit", loc="best", fontsize=8)
    axes.set(
        xlabel=f"PC1 ({explained[0]:.1%} of variance)",
        ylabel=f"PC2 ({explained[1]:.1%} of variance)",
        title=f"{title}\nexplained variance: PC1 {explained[0]:.1%}, PC2 {explained[1]:.1%}",
    )
    return figure
