"""`python -m pipeline COMMAND`: the user commands beside the DVC stages."""

import click

from pipeline.commands.bench.command import main as bench
from pipeline.commands.export.command import main as export
from pipeline.commands.predict.command import main as predict
from pipeline.commands.study.command import main as study
from pipeline.commands.verify.command import main as verify


@click.group()
def cli() -> None:
    """Train and study MLPs on MNIST. The stages run through `dvc repro`; these commands use their results."""


cli.add_command(bench, "bench")
cli.add_command(export, "export")
cli.add_command(predict, "predict")
cli.add_command(study, "study")
cli.add_command(verify, "verify")

if __name__ == "__main__":
    cli()
