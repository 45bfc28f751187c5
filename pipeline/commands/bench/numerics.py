"""What the pinned numerics cost: the project loop with pinned, native and portable numerics, each
in a process of its own (MKL and ATen read their settings once), started as
`python -m pipeline.commands.bench.numerics EPOCHS`, which prints its fastest epoch's seconds."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import torch

from pipeline.commands.bench.speed import load_training_sets, without_augmentation
from pipeline.commands.bench.timers import project_epoch
from pipeline.lib.params import load_params
from pipeline.lib.pinning import MODES, PINNED, PORTABLE, VARIABLE


def plain_loop_seconds(epochs: int) -> float:
    """The fastest of `epochs` project-loop epochs without augmentation, on the CPU, in this process's numerics."""
    train_set, val_set, background = load_training_sets(torch.device("cpu"))
    plain = without_augmentation(load_params())
    return min(project_epoch(train_set, val_set, plain, background) for _ in range(epochs))


def numerics_cost(repeats: int, batch_size: int) -> None:
    """Pinned against native and portable numerics: each is a process of its own (MKL and ATen read
    their settings once), run in alternation so that a slow spell on a shared machine slows all."""
    # This process's environment holds the pinned values: the native child runs without them.
    machine_defaults = {name: value for name, value in os.environ.items() if name not in PINNED}
    environments = {mode: machine_defaults | {VARIABLE: mode} for mode in MODES} | {
        "portable": machine_defaults | PORTABLE
    }
    fastest = dict.fromkeys(environments, float("inf"))
    for round_number in range(1, repeats + 1):
        for name, environment in environments.items():
            click.echo(f"bench: numerics, round {round_number}/{repeats}: {name}", err=True)
            measured = subprocess.run(
                [sys.executable, "-m", __name__, "3"], env=environment, capture_output=True, text=True, check=True
            )
            fastest[name] = min(fastest[name], float(measured.stdout))
    pinned, native, portable = fastest["pinned"], fastest["native"], fastest["portable"]
    click.echo(
        f"\nnumerics (project loop, batch {batch_size}, no augmentation, best of {repeats} x 3 epochs): "
        f"pinned {pinned:.3f} s/epoch, native {native:.3f} s/epoch, pinned/native {pinned / native:.2f}x; "
        f"portable (pinned with MKL_CBWR=COMPATIBLE) {portable:.3f} s/epoch, portable/pinned {portable / pinned:.2f}x"
    )


if __name__ == "__main__":
    print(plain_loop_seconds(int(sys.argv[1])))
