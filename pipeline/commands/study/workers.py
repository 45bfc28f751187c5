"""Run a study's experiments `jobs` at a time, each `dvc exp run --temp` in a process of its own.

Each run is a DVC experiment made in a temporary copy of the workspace (under `.dvc/tmp/exps`),
as DVC's queue makes them, but started by this process instead of the queue's Celery workers:
no broker and no worker to start, watch or stop. A run's output goes to LOG_DIR/<name>.log.
The runs start in a session of their own, so Ctrl-C reaches this process alone: it stops the runs
under way and keeps those recorded; the same command again runs the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import click

from pipeline.commands.study.plan import Run
from pipeline.lib.cores import available_cores
from pipeline.lib.errors import PipelineError

LOG_DIR = Path("build/studies/logs")
POLL_SECONDS = 0.5
STOP_SECONDS = 30  # how long a run interrupted by Ctrl-C gets to clean up its temporary copy

NEEDS_PROCESS_GROUPS = (
    "a study's runs need process groups, to stop each run's dvc and its stage together (Linux, macOS); "
    "on Windows, run studies in WSL"
)


def require_process_groups() -> None:
    """Before any run starts: Windows has no process groups (os.killpg), so stop() could not stop a run."""
    if not hasattr(os, "killpg"):
        raise PipelineError(NEEDS_PROCESS_GROUPS)


def threads_per_run(jobs: int) -> int:
    return max(1, available_cores() // jobs)


def experiment_command(run: Run) -> list[str]:
    """The run as a DVC experiment up to its last stage, in a temporary copy of the workspace; the
    lock wait lets runs that start together take DVC's repository lock in turn."""
    overrides = [word for override in run.overrides_as_text() for word in ("-S", override)]
    return ["dvc", "--wait-for-lock", "exp", "run", "--temp", "--name", run.name, *overrides, run.last_stage]


def log_path(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def start(run: Run, environment: dict[str, str]) -> subprocess.Popen:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with log_path(run.name).open("wb") as log:
        return subprocess.Popen(
            experiment_command(run), stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )


def run_all(runs: list[Run], jobs: int) -> list[str]:
    """Run every one of `runs`, `jobs` at a time with OMP_NUM_THREADS at their share of the cores
    (the results do not depend on it: docs/reproducibility.md); the names of those that failed.

    Progress is a line whenever a run ends.
    """
    require_process_groups()
    threads = threads_per_run(jobs)
    click.echo(
        f"study: {len(runs)} runs, {jobs} at a time with {threads} thread{'s' if threads > 1 else ''} each; "
        f"each run's output in {LOG_DIR}/<name>.log",
        err=True,
    )
    environment = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    waiting, running, failed, started = list(runs), {}, [], time.perf_counter()
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                run = waiting.pop(0)
                running[run.name] = start(run, environment)
            time.sleep(POLL_SECONDS)
            for name, process in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                if process.returncode:
                    failed.append(name)
                ended = len(runs) - len(waiting) - len(running)
                outcome = f"; {name} failed ({log_path(name)})" if process.returncode else ""
                click.echo(
                    f"study: {ended} of {len(runs)} runs ended ({time.perf_counter() - started:.0f} s){outcome}",
                    err=True,
                )
    except KeyboardInterrupt:
        stop(list(running.values()))
        raise PipelineError(
            f"interrupted: {len(running)} runs under way stopped and {len(waiting)} never started; the runs "
            "recorded stay, and the same command again runs the rest"
        ) from None
    return failed


def stop(processes: list[subprocess.Popen]) -> None:
    """Ctrl-C for each run (DVC removes its temporary copy), then SIGKILL for any that lingers."""
    for process in processes:
        os.killpg(process.pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
