"""PNG figures with matplotlib's Agg backend, and the learning curves every training run draws.

PNGs carry no timestamp and no software version, so reruns give the same bytes. analyze's own
figures are in analysis_figures.py, so that changing them does not touch train's dependencies.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.lib.atomic import atomic_path  # noqa: E402


def save_figure(figure: plt.Figure, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100, metadata={"Software": None}, bbox_inches="tight")
    plt.close(figure)


CURVES = {
    "train": ("train (clean pass)", "-"),
    "val": ("validation", "-"),
    "batch": ("training batches, running mean", ":"),
}


def learning_curves(epochs: list[dict], kept_epoch: int) -> plt.Figure:
    """Loss and error rate per epoch from epoch 0 (log scales: epoch 0 is at chance), with the kept epoch marked.

    `epochs` are rows with `epoch` and `<curve>_loss`, `<curve>_accuracy` for each of CURVES.
    """
    figure, panels = plt.subplots(1, 2, figsize=(11, 4))
    for axes, measure in zip(panels, ("loss", "error")):
        for curve, (label, style) in CURVES.items():
            values = [(row["epoch"], row[f"{curve}_loss"], row[f"{curve}_accuracy"]) for row in epochs]
            points = [
                (epoch, loss if measure == "loss" else 1 - accuracy)
                for epoch, loss, accuracy in values
                if loss is not None
            ]
            if points:  # no validation curve without a validation set
                axes.plot(*zip(*points), style, marker=".", label=label)
        axes.axvline(kept_epoch, color="grey", linewidth=0.8, linestyle="--", label=f"kept epoch {kept_epoch}")
        axes.set(
            xlabel="epoch",
            ylabel=f"{measure} (log scale)",
            title=f"{measure} per epoch" if measure == "loss" else "error rate (1 - accuracy) per epoch",
        )
        axes.grid(alpha=0.3)
        axes.set_yscale("log")
    panels[1].legend(loc="upper right", fontsize=8)
    return figure
