"""Stage 2: decode IDX, fit the standardization on the training images only, apply it to both sets."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.lib.atomic import atomic_paths, write_json
from pipeline.lib.cli import PATH, run_stage, stage_command
from pipeline.lib.mnist import load_official
from pipeline.lib.normalization import Normalization
from pipeline.lib.params import Params
from pipeline.lib.storage import write_pair


@click.option("--raw", type=PATH, required=True, help="Folder of the four official .gz files.")
@click.option("--out", type=PATH, required=True, help="Folder for standardized train and test arrays.")
@click.option("--stats", type=PATH, required=True, help="JSON file for the mean and std used.")
@stage_command
def main(params: Params, raw: Path, out: Path, stats: Path) -> None:
    train, test = load_official(raw, "train"), load_official(raw, "test")
    normalization = Normalization.fit(train.images, params.preprocess)
    with atomic_paths(out, stats) as (folder, stats_file):
        folder.mkdir()
        write_pair(folder, "train", normalization.apply(train.images), train.labels)
        write_pair(folder, "test", normalization.apply(test.images), test.labels)
        write_json(stats_file, normalization.to_json())
    click.echo(f"preprocess: {len(train.labels)} train and {len(test.labels)} test images, {normalization.mode}")


if __name__ == "__main__":
    run_stage(main)
