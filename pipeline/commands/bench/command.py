"""`python -m pipeline bench`: training speed side by side (speed.py), what the pinned numerics cost
(numerics.py), then each stage's peak memory, `dvc repro` times and what a study's experiment costs
beyond its training (stages.py).

Run it from the project root after `dvc repro`. It only reads this project (the download's and the
split's outputs, params.yaml): the `dvc` part runs in a throwaway copy, so no output, dvc.lock or
report here changes.
"""

from __future__ import annotations

import click

from pipeline.commands.bench.numerics import numerics_cost
from pipeline.commands.bench.speed import print_speed, speed_table
from pipeline.commands.bench.stages import dvc_table
from pipeline.lib.cli import user_command
from pipeline.lib.device import resolve_device
from pipeline.lib.params import load_params


@user_command()
@click.option("--repeats", default=2, show_default=True, help="Runs of each timing; the fastest is kept.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where the training-speed table runs.",
)
@click.option("--skip-dvc", is_flag=True, help="Only the training-speed table.")
def main(repeats: int, device: str, skip_dvc: bool) -> None:
    """Measure training speed against the canonical idiom and the compute floor, and stage memory and time."""
    where = resolve_device(device, setting="--device")
    params = load_params()
    timings, images = speed_table(params, repeats, where)
    print_speed(timings, images, params.train.backward, where)
    if where.type == "cpu":
        numerics_cost(repeats, params.train.batch_size)
    if not skip_dvc:
        dvc_table()
