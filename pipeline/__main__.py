"""`python -m pipeline COMMAND`: the user commands beside the DVC stages.

Each command's module (pipeline/commands/NAME/command.py) is imported only when that command
runs, so `report` starts in a fraction of a second without importing torch.
"""

import importlib

import click

from pipeline.lib.cli import CONTEXT, DISTRIBUTION

COMMANDS = ("bench", "export", "params", "predict", "report", "share", "study", "verify")


class LazyCommands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return importlib.import_module(f"pipeline.commands.{name}.command").main if name in COMMANDS else None


@click.group(cls=LazyCommands, context_settings=CONTEXT)
@click.version_option(package_name=DISTRIBUTION)
def cli() -> None:
    """Train and study MLPs on MNIST. The stages run through `dvc repro`; these commands use their results."""


if __name__ == "__main__":
    cli()
