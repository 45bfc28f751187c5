"""Stage 3: a seeded, stratified train/validation split of the official training set.

With a training subset it also writes the images the subset left out, so that evaluate can score a
model trained on a few images on all those it could have been trained on.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.lib.atomic import atomic_paths, write_json
from pipeline.lib.cli import PATH, run_stage, stage_command
from pipeline.lib.params import Params
from pipeline.lib.splitting import class_counts, left_out, split_indices
from pipeline.lib.storage import read_pair, write_pair


@click.option("--data", type=PATH, required=True, help="Folder of the preprocessed arrays.")
@click.option("--out", type=PATH, required=True, help="Folder for the train, val and left_out arrays.")
@click.option("--counts", type=PATH, required=True, help="JSON file for per-class counts of each split.")
@stage_command
def main(params: Params, data: Path, out: Path, counts: Path) -> None:
    images, labels = read_pair(data, "train")
    train, validation = split_indices(labels, params.split)
    unused = left_out(len(labels), train, validation)
    with atomic_paths(out, counts) as (folder, counts_file):
        folder.mkdir()
        write_pair(folder, "train", images[train], labels[train])
        write_pair(folder, "val", images[validation], labels[validation])
        write_pair(folder, "left_out", images[unused], labels[unused])
        write_json(
            counts_file,
            {
                "train": {"total": len(train), "per_class": class_counts(labels[train])},
                "val": {"total": len(validation), "per_class": class_counts(labels[validation])},
                "left_out": {"total": len(unused), "per_class": class_counts(labels[unused])},
            },
        )
    click.echo(f"split: {len(train)} train, {len(validation)} validation, {len(unused)} left-out images")


if __name__ == "__main__":
    run_stage(main)
