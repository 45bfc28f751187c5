"""The report's two figures: both revisions' learning curves on shared axes, and both confusion
matrices with their difference. PNGs, since a pull-request comment shows images, not HTML."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np

CLASSES = 10


@dataclass(frozen=True)
class CurvePlot:
    """A plot of dvc.yaml's top-level `plots`: a title, the x field, and each TSV file's y field."""

    title: str
    x: str
    y: dict[str, str]


def curve_plots(plots: list) -> list[CurvePlot]:
    """The plots of dvc.yaml that draw fields of data files (not images)."""
    found = []
    for entry in plots:
        if isinstance(entry, dict):
            ((title, spec),) = entry.items()
            if isinstance(spec, dict) and isinstance(spec.get("y"), dict):
                found.append(CurvePlot(title, spec.get("x", "step"), spec["y"]))
    return found


def read_tsv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def curves_figure(plots: list[CurvePlot], revisions: Mapping[str, Callable[[str], str | None]]) -> plt.Figure:
    """One panel per plot; each revision's lines in its own style (`revisions`: label -> reader)."""
    figure, panels = plt.subplots(1, len(plots), figsize=(5.5 * len(plots), 4), squeeze=False)
    styles = ["--", "-"]
    for axes, plot in zip(panels[0], plots):
        after_start = []  # the first step (an untrained model) would flatten every later difference
        for color, (path, field) in enumerate(plot.y.items()):
            for style, (label, read) in zip(styles, revisions.items()):
                text = read(path)
                if text is None:
                    continue
                xs, ys = zip(*((float(row[plot.x]), float(row[field])) for row in read_tsv(text)))
                axes.plot(xs, ys, style, color=f"C{color}", marker=".", label=f"{_curve_name(path)} ({label})")
                after_start += [y for x, y in zip(xs, ys) if x > min(xs)]
        if after_start:
            low, high = min(after_start), max(after_start)
            axes.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
        axes.set(title=f"{plot.title} (after step 0)", xlabel=plot.x)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    return figure


def _curve_name(path: str) -> str:
    """reports/train/plots/metrics/val/loss.tsv -> val."""
    parts = path.split("/")
    return parts[-2] if len(parts) > 1 else parts[-1]


def confusion_counts(text: str, actual: str, predicted: str) -> np.ndarray:
    """The matrix (rows actual, columns predicted) from a CSV of one row per test image."""
    matrix = np.zeros((CLASSES, CLASSES), dtype=np.int64)
    for row in csv.DictReader(io.StringIO(text)):
        matrix[int(row[actual]), int(row[predicted])] += 1
    return matrix


def confusion_figure(matrices: Mapping[str, np.ndarray]) -> plt.Figure:
    """Each revision's off-diagonal counts on one colour scale, then the last minus the first."""
    labels, values = list(matrices), list(matrices.values())
    errors = [np.where(np.eye(CLASSES, dtype=bool), 0, matrix) for matrix in values]
    figure, panels = plt.subplots(1, len(values) + 1, figsize=(5 * (len(values) + 1), 4.4))
    top = max(1, *(int(matrix.max()) for matrix in errors))
    for axes, label, matrix in zip(panels, labels, errors):
        _heatmap(axes, matrix, "Reds", 0, top, f"mistakes at {label} ({int(matrix.sum())} in all)")
    difference = errors[-1] - errors[0]
    bound = max(1, int(np.abs(difference).max()))
    _heatmap(panels[-1], difference, "coolwarm", -bound, bound, f"{labels[-1]} minus {labels[0]}")
    return figure


def _heatmap(axes: plt.Axes, matrix: np.ndarray, colours: str, low: int, high: int, title: str) -> None:
    axes.imshow(matrix, cmap=colours, vmin=low, vmax=high)
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            axes.text(column, row, str(count), ha="center", va="center", fontsize=7)
    axes.set(title=title, xlabel="predicted", ylabel="actual", xticks=range(CLASSES), yticks=range(CLASSES))
