"""Stage 1: fetch the four official MNIST .gz files, verified by MD5.

The output folder's own files are tried first (the stage reruns on any change to params.yaml, to
validate it: docs/params.md), then the folder or URL in $MNIST_MIRROR, then the public mirrors.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from pipeline.lib.atomic import atomic_path
from pipeline.lib.cli import PATH, run_stage, stage_command
from pipeline.lib.fetch import MIRROR_VARIABLE, fetch_all, mirrors_from_environment
from pipeline.lib.mnist import OFFICIAL_FILES
from pipeline.lib.params import Params


@click.option("--out", type=PATH, required=True, help="Folder to hold the four .gz files.")
@stage_command
def main(params: Params, out: Path) -> None:
    mirrors = mirrors_from_environment(os.environ.get(MIRROR_VARIABLE))
    if out.is_dir():
        mirrors.insert(0, str(out))
    with atomic_path(out) as folder:
        folder.mkdir()
        fetch_all(OFFICIAL_FILES, mirrors, folder, warn=lambda message: click.echo(message, err=True))
    click.echo(f"download: {len(OFFICIAL_FILES)} files verified in {out}")


if __name__ == "__main__":
    run_stage(main)
