"""Run DVC's experiment queue with `jobs` workers at a time, each given its share of the cores.

`dvc exp run --run-all --jobs N` leaves its workers to DVC, and they stop themselves: every 10 s a
worker's monitor asks it for its tasks and gives it one second to answer, and on a busy machine
(two runs training on two cores) the answer can come late, so the worker shuts down after its run
while others still wait in the queue; `--run-all` then waits forever. Here the workers are this
process's children: one that ends while this study's runs are still queued is started again, and
once none is queued or running they are stopped, without waiting for them to idle out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Collection
from pathlib import Path

import click

POLL_SECONDS = 2.0


def threads_per_run(jobs: int) -> int:
    return max(1, len(os.sched_getaffinity(0)) // jobs)


def start_worker(number: int, log_dir: Path, threads: int) -> subprocess.Popen:
    """`dvc exp queue-worker` as DVC starts it, with OMP_NUM_THREADS for the stages it runs (the
    results do not depend on it: README, "Reproducibility"); its log beside DVC's own."""
    command = ["dvc", "exp", "queue-worker", f"study-{os.getpid()}-{number}@localhost"]
    if number == 1:
        command.append("--clean")  # as DVC's first worker: tidy the queue's control messages on the way out
    environment = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with (log_dir / f"study-worker-{number}.out").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)


def queued_or_running(names: Collection[str]) -> set[str]:
    """Those of `names` in DVC's queue that have not finished, e.g. after an interrupted study."""
    from dvc.repo import Repo

    with Repo() as repo:
        queue = repo.experiments.celery_queue
        return {entry.name for entry in [*queue.iter_queued(), *queue.iter_active()] if entry.name in names}


def run_queued(names: Collection[str], jobs: int) -> None:
    """Run the queued experiments `names` with `jobs` workers; return once none is queued or running.

    Progress is a line whenever runs finish; each run's own output is `dvc queue logs <name>`.
    Interrupted, the runs already started finish in the background and the rest stay queued.
    """
    from dvc.repo import Repo

    threads = threads_per_run(jobs)
    click.echo(f"study: {len(names)} runs, {jobs} at a time with {threads} thread{'s' if threads > 1 else ''} each", err=True)
    with Repo() as repo:
        queue = repo.experiments.celery_queue
        log_dir = Path(queue.wdir)
        log_dir.mkdir(parents=True, exist_ok=True)
        workers: dict[int, subprocess.Popen] = {}
        started, finished = time.perf_counter(), 0
        while True:
            queued = [entry.name for entry in queue.iter_queued() if entry.name in names]
            running = [entry.name for entry in queue.iter_active() if entry.name in names]
            if (now_finished := len(names) - len(queued) - len(running)) != finished:
                finished = now_finished
                click.echo(f"study: {finished} of {len(names)} runs finished ({time.perf_counter() - started:.0f} s)", err=True)
            if not queued and not running:
                break
            for number in range(1, jobs + 1):
                if queued and (number not in workers or workers[number].poll() is not None):
                    workers[number] = start_worker(number, log_dir, threads)
            time.sleep(POLL_SECONDS)
    for worker in workers.values():
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # idle now: Celery's warm shutdown ends it at once
    for worker in workers.values():
        worker.wait()
