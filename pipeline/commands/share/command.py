"""`python -m pipeline share [--remote NAME]`: send this machine's stage runs to a DVC remote, so
that another machine returning to params already run restores their outputs instead of training.

`dvc push --run-cache` sends DVC's records of the runs and the workspace's cached outputs, but not
the git-tracked outputs (metrics, plots, figures) of the runs the workspace no longer holds, and DVC
restores a run only with all of its outputs at hand. This sends those too. On the other machine,
`dvc pull --run-cache` then `dvc repro --pull` restores any shared run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import click

from pipeline.lib.cli import user_command
from pipeline.lib.remotes import remote_failure


def recorded_runs(runs_folder: Path) -> list[tuple[str, str]]:
    """(key, value) of every run DVC's run-cache holds: runs/<key[:2]>/<key>/<value>."""
    return sorted((entry.parent.name, entry.name) for entry in runs_folder.glob("*/*/*") if entry.is_file())


def push_run_outputs(remote: str | None) -> tuple[int, int]:
    """Push the output files of every recorded run to `remote` (None: the default remote):
    (runs, files sent)."""
    from dvc.repo import Repo  # DVC's Python API, slow to import: only this command needs it

    with Repo() as repo:
        runs = recorded_runs(Path(repo.stage_cache.cache_dir))
        used = repo.stage_cache.get_used_objs(runs)
        files = {obj for objects in used.values() for obj in objects}
        try:
            result = repo.cloud.push(files, remote=remote)
        except Exception as error:  # DVC's and its filesystems' errors share no base class
            raise remote_failure(remote, "pushing the runs' outputs", str(error)) from error
    if result.failed:
        raise remote_failure(remote, "pushing the runs' outputs", f"{len(result.failed)} files failed to upload")
    return len(runs), len(result.transferred)


@user_command()
@click.option("--remote", "-r", default=None, help="The DVC remote to send to  [default: the default remote]")
def main(remote: str | None) -> None:
    """Send the stage runs DVC recorded here (dvc push --run-cache, and every run's outputs)."""
    pushed = subprocess.run(
        ["dvc", "push", "--run-cache", *(["--remote", remote] if remote else [])], capture_output=True, text=True
    )
    if pushed.returncode:
        raise remote_failure(remote, "dvc push --run-cache", pushed.stderr + pushed.stdout)
    runs, sent = push_run_outputs(remote)
    click.echo(f"share: {runs} recorded runs; {sent} of their files sent, the rest were there already")
