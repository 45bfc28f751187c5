"""Stage 6: confusion matrix, per-class bars, error analysis, PCA views of inputs and hidden
activations, first-layer weight templates."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from pipeline.lib.analysis_figures import confusion_figure, digit_grid, pca_figure, per_class_figure, weight_templates
from pipeline.lib.atomic import atomic_path, write_json
from pipeline.lib.cli import PATH, run_stage, stage_command
from pipeline.lib.figures import save_figure
from pipeline.lib.metrics import classification_report, confusion, most_confused_pairs
from pipeline.lib.mnist import CLASS_NAMES
from pipeline.lib.model import CONV_FEATURES, CONV_KERNEL, first_layer_weights, last_hidden
from pipeline.lib.model_file import load_model
from pipeline.lib.params import Params
from pipeline.lib.projection import principal_components
from pipeline.lib.storage import read_array, read_pair

MAX_TEMPLATES = 64


def weight_view(network, architecture) -> tuple[np.ndarray, list[str], str]:
    """(rows, captions, title) of the first layer: convolution kernels; for an MLP, the
    MAX_TEMPLATES units of largest weight norm (the ones the network leans on); for logistic
    regression, each class's template."""
    weights = first_layer_weights(network)
    if architecture.architecture == "cnn":
        return (
            weights,
            [f"kernel {i}" for i in range(len(weights))],
            f"first-layer {CONV_KERNEL}x{CONV_KERNEL} convolution kernels",
        )
    if not architecture.hidden_sizes:
        return weights, list(CLASS_NAMES), "weights of each class as 28x28 templates"
    chosen = np.argsort(-np.linalg.norm(weights, axis=1), kind="stable")[:MAX_TEMPLATES]
    title = f"first-layer weights as 28x28 templates: the {len(chosen)} of {len(weights)} units of largest norm"
    return weights[chosen], [f"unit {i}" for i in chosen], title


def pca_view(rows: np.ndarray, labels: np.ndarray, title: str, path: Path) -> None:
    points, explained = principal_components(rows, 2)
    save_figure(pca_figure(points, labels, explained, title), path)


@click.option("--model", "model_path", type=PATH, required=True, help="Model file written by train.")
@click.option("--data", type=PATH, required=True, help="Folder of the preprocessed arrays (test set).")
@click.option("--predictions", type=PATH, required=True, help="Test-set probabilities written by evaluate.")
@click.option("--out", type=PATH, required=True, help="Folder for the analysis JSON and figures.")
@stage_command
def main(params: Params, model_path: Path, data: Path, predictions: Path, out: Path) -> None:
    settings = params.analyze
    model = load_model(model_path)
    network, architecture = model.network, model.architecture
    images, labels = read_pair(data, "test")
    probs = read_array(predictions)
    predicted, confidence = probs.argmax(1), probs.max(1)

    mistakes = np.flatnonzero(predicted != labels)
    worst = mistakes[np.argsort(-confidence[mistakes], kind="stable")][: settings.gallery_size]
    captions = [f"true {labels[i]}, said {predicted[i]}\np={confidence[i]:.3f}" for i in worst]

    sample = np.sort(np.random.default_rng(0).choice(len(labels), min(settings.pca_points, len(labels)), replace=False))
    hidden_sizes, convolutional = architecture.hidden_sizes, architecture.architecture == "cnn"
    if hidden_sizes:
        layer = f"last hidden layer ({hidden_sizes[-1]} units)"
    else:
        layer = f"convolution features ({CONV_FEATURES})" if convolutional else "inputs (no hidden layer)"

    with atomic_path(out) as folder:
        folder.mkdir()
        matrix = confusion(labels, predicted)
        write_json(folder / "confused_pairs.json", most_confused_pairs(matrix, settings.confused_pairs))
        summary = f"test set: {len(mistakes)} mistakes, accuracy {(predicted == labels).mean():.2%}"
        save_figure(confusion_figure(matrix, f"{summary} (colour: log of the count)"), folder / "confusion.png")
        save_figure(
            per_class_figure(classification_report(labels, probs)[1], f"{summary}: precision and recall per digit"),
            folder / "per_class.png",
        )
        save_figure(
            digit_grid(images[worst], captions, f"{len(worst)} most confident of {len(mistakes)} mistakes"),
            folder / "mistakes.png",
        )
        pca_view(images[sample], labels[sample], f"test images, PCA of {len(sample)} inputs", folder / "pca_inputs.png")
        pca_view(
            last_hidden(network, images[sample], 4096), labels[sample], f"PCA of the {layer}", folder / "pca_hidden.png"
        )
        save_figure(weight_templates(*weight_view(network, architecture)), folder / "first_layer_weights.png")
    click.echo(f"analyze: {len(mistakes)} mistakes; figures in {out}")


if __name__ == "__main__":
    run_stage(main)
