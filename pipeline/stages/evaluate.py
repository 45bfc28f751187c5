"""Stage 5: score the trained model on the untouched official test set, and per digit on the
training images it learned from (un-augmented), as the sources' train and test classification reports.
Its accuracy on the training pool (every image the split left for training, before a train_subset
drew from it) is what a notebook that scores its whole training set would call train accuracy.

Numbers only (its figures are analyze's), so a study's runs pay for no plotting here.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from pipeline.lib.atomic import atomic_paths, write_array, write_bytes, write_json
from pipeline.lib.cli import PATH, run_stage, stage_command
from pipeline.lib.metrics import classification_report
from pipeline.lib.model import probabilities
from pipeline.lib.model_file import load_model
from pipeline.lib.params import Params
from pipeline.lib.storage import read_pair


@click.option("--model", "model_path", type=PATH, required=True, help="Model file written by train.")
@click.option("--data", type=PATH, required=True, help="Folder of the preprocessed arrays (test set).")
@click.option(
    "--metrics", type=PATH, required=True, help="JSON file for test accuracy, loss and macro F1 (as test.accuracy ...)."
)
@click.option("--per-class", type=PATH, required=True, help="JSON file for per-digit precision, recall and F1.")
@click.option("--split", type=PATH, required=True, help="Folder of the split arrays (training and left-out images).")
@click.option("--per-class-train", type=PATH, required=True, help="JSON file for the same on the training images.")
@click.option("--confusion-csv", type=PATH, required=True, help="Per-image actual,predicted rows for dvc plots.")
@click.option("--predictions", type=PATH, required=True, help=".npy file of test-set class probabilities.")
@stage_command
def main(
    params: Params,
    model_path: Path,
    data: Path,
    metrics: Path,
    per_class: Path,
    split: Path,
    per_class_train: Path,
    confusion_csv: Path,
    predictions: Path,
) -> None:
    network = load_model(model_path).network
    images, labels = read_pair(data, "test")
    probs = probabilities(network, images, params.evaluate.batch_size)
    predicted = probs.argmax(1)
    report, per_digit = classification_report(labels, probs)
    train_images, train_labels = read_pair(split, "train")
    left_out_images, left_out_labels = read_pair(split, "left_out")
    train_probs = probabilities(network, train_images, params.evaluate.batch_size)
    left_out_probs = probabilities(network, left_out_images, params.evaluate.batch_size)
    _, per_digit_train = classification_report(train_labels, train_probs)
    pool, _ = classification_report(
        np.concatenate([train_labels, left_out_labels]), np.concatenate([train_probs, left_out_probs])
    )
    rows = "".join(f"{actual},{guess}\n" for actual, guess in zip(labels, predicted))
    # Every output appears together, and only once all of them are written.
    outputs = (confusion_csv, predictions, per_class, per_class_train, metrics)
    with atomic_paths(*outputs) as (csv, npy, per_digit_json, per_digit_train_json, metrics_json):
        write_bytes(csv, ("actual,predicted\n" + rows).encode())
        write_array(npy, probs)
        write_json(per_digit_json, per_digit)
        write_json(per_digit_train_json, per_digit_train)
        write_json(metrics_json, {"test": report, "training_pool": pool})
    click.echo(f"evaluate: test accuracy {report['accuracy']:.4f}, loss {report['loss']:.4f}")


if __name__ == "__main__":
    run_stage(main)
