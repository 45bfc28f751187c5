"""Stage 5: score the trained model on the untouched official test set."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.lib.atomic import atomic_paths, write_array, write_bytes, write_json
from pipeline.lib.cli import PATH, stage_command
from pipeline.lib.figures import confusion_figure, save_figure
from pipeline.lib.metrics import classification_report, confusion
from pipeline.lib.model import load_model, probabilities
from pipeline.lib.params import Params
from pipeline.lib.storage import read_pair


@click.option("--model", "model_path", type=PATH, required=True, help="Model file written by train.")
@click.option("--data", type=PATH, required=True, help="Folder of the preprocessed arrays (test set).")
@click.option("--metrics", type=PATH, required=True, help="JSON file for test accuracy, loss and macro F1.")
@click.option("--per-class", type=PATH, required=True, help="JSON file for per-digit precision, recall and F1.")
@click.option("--confusion-csv", type=PATH, required=True, help="Per-image actual,predicted rows for dvc plots.")
@click.option("--confusion-png", type=PATH, required=True, help="Rendered confusion matrix.")
@click.option("--predictions", type=PATH, required=True, help=".npy file of test-set class probabilities.")
@stage_command
def main(
    params: Params,
    model_path: Path,
    data: Path,
    metrics: Path,
    per_class: Path,
    confusion_csv: Path,
    confusion_png: Path,
    predictions: Path,
) -> None:
    network = load_model(model_path).network
    images, labels = read_pair(data, "test")
    probs = probabilities(network, images, params.evaluate.batch_size)
    predicted = probs.argmax(1)
    report, per_digit = classification_report(labels, probs)
    rows = "".join(f"{actual},{guess}\n" for actual, guess in zip(labels, predicted))
    figure = confusion_figure(confusion(labels, predicted), f"test accuracy {report['accuracy']:.2%}")
    # Every output appears together, and only once all of them are written.
    with atomic_paths(confusion_csv, confusion_png, predictions, per_class, metrics) as (csv, png, npy, per_digit_json, metrics_json):
        write_bytes(csv, ("actual,predicted\n" + rows).encode())
        save_figure(figure, png)
        write_array(npy, probs)
        write_json(per_digit_json, per_digit)
        write_json(metrics_json, report)
    click.echo(f"evaluate: test accuracy {report['accuracy']:.4f}, loss {report['loss']:.4f}")


if __name__ == "__main__":
    main()
