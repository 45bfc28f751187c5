"""Stage 3: a seeded, stratified train/validation split of the official training set."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.lib.atomic import atomic_paths, write_json
from pipeline.lib.cli import PATH, run_stage, stage_command
from pipeline.lib.params import Params
from pipeline.lib.splitting import class_counts, split_indices
from pipeline.lib.storage import read_pair, write_pair


@click.option("--data", type=PATH, required=True, help="Folder of the preprocessed arrays.")
@click.option("--out", type=PATH, required=True, help="Folder for the train and val arrays.")
@click.option("--counts", type=PATH, required=True, help="JSON file for per-class counts of each split.")
@stage_command
def main(params: Params, data: Path, out: Path, counts: Path) -> None:
    images, labels = read_pair(data, "train")
    train, validation = split_indices(labels, params.split)
    with atomic_paths(out, counts) as (folder, counts_file):
        folder.mkdir()
        write_pair(folder, "train", images[train], labels[train])
        write_pair(folder, "val", images[validation], labels[validation])
        write_json(
            counts_file,
            {
                "train": {"total": len(train), "per_class": class_counts(labels[train])},
                "val": {"total": len(validation), "per_class": class_counts(labels[validation])},
            },
        )
    click.echo(f"split: {len(train)} train, {len(validation)} validation images")


if __name__ == "__main__":
    run_stage(main)
