"""`python -m pipeline COMMAND`: the user-facing commands beside the DVC stages."""

import click

from pipeline import bench, predict, verify


@click.group()
def cli() -> None:
    """Train and study MLPs on MNIST. The stages run through `dvc repro`; these commands use their results."""


cli.add_command(bench.main, "bench")
cli.add_command(predict.main, "predict")
cli.add_command(verify.main, "verify")

if __name__ == "__main__":
    cli()
