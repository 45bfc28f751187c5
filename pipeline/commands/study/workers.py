"""Run DVC's experiment queue with `jobs` workers at a time, each given its share of the cores.

`dvc exp run --run-all --jobs N` leaves its workers to DVC, and they stop themselves: every 10 s a
worker's monitor asks it for its tasks and gives it one second to answer, and on a busy machine
(two runs training on two cores) the answer can come late, so the worker shuts down after its run
while others still wait in the queue; `--run-all` then waits forever. Here the workers are this
process's children: one that ends while this study's runs are still queued is started again, and
once none is queued or running they are stopped, without waiting for them to idle out. They run in
a session of their own, so Ctrl-C reaches this process alone: it stops the workers after the runs
under way, which finish in the background, and leaves the rest queued.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Collection, Iterable
from pathlib import Path

import click

from pipeline.lib.errors import PipelineError

POLL_SECONDS = 2.0
ORPHAN_POLLS = 3  # polls in a row with runs marked running and no worker anywhere before giving up on them


def threads_per_run(jobs: int) -> int:
    return max(1, len(os.sched_getaffinity(0)) // jobs)


def start_worker(number: int, log_dir: Path, threads: int) -> subprocess.Popen:
    """`dvc exp queue-worker` as DVC starts it, with OMP_NUM_THREADS for the stages it runs (the
    results do not depend on it: docs/reproducibility.md); its log beside DVC's own."""
    command = ["dvc", "exp", "queue-worker", f"study-{os.getpid()}-{number}@localhost"]
    if number == 1:
        command.append("--clean")  # as DVC's first worker: tidy the queue's control messages on the way out
    environment = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with (log_dir / f"study-worker-{number}.out").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True)


def ours(entries: Iterable, names: Collection[str], baseline: str) -> list[str]:
    """The names of the queue entries among `names` that run on top of the commit `baseline`."""
    return [entry.name for entry in entries if entry.name in names and entry.baseline_rev == baseline]


def queued_or_running(names: Collection[str], baseline: str) -> set[str]:
    """Those of `names` in DVC's queue that have not finished, e.g. after an interrupted study."""
    from dvc.repo import Repo

    with Repo() as repo:
        queue = repo.experiments.celery_queue
        return set(ours([*queue.iter_queued(), *queue.iter_active()], names, baseline))


def run_queued(names: Collection[str], baseline: str, jobs: int) -> None:
    """Run the queued experiments `names` on top of the commit `baseline` with `jobs` workers;
    return once none is queued or running.

    Progress is a line whenever runs finish; each run's own output is `dvc queue logs <name>`.
    """
    from dvc.repo import Repo

    threads = threads_per_run(jobs)
    click.echo(
        f"study: {len(names)} runs, {jobs} at a time with {threads} thread{'s' if threads > 1 else ''} each", err=True
    )
    with Repo() as repo:
        queue = repo.experiments.celery_queue
        log_dir = Path(queue.wdir)
        log_dir.mkdir(parents=True, exist_ok=True)
        workers: dict[int, subprocess.Popen] = {}
        started, finished, queued, unanswered = time.perf_counter(), 0, list(names), 0
        try:
            while True:
                queued, running = ours(queue.iter_queued(), names, baseline), ours(queue.iter_active(), names, baseline)
                if (now_finished := len(names) - len(queued) - len(running)) != finished:
                    finished = now_finished
                    click.echo(
                        f"study: {finished} of {len(names)} runs finished ({time.perf_counter() - started:.0f} s)",
                        err=True,
                    )
                if not queued and not running:
                    break
                for number in range(1, jobs + 1):
                    if queued and (number not in workers or workers[number].poll() is not None):
                        workers[number] = start_worker(number, log_dir, threads)
                orphaned = (
                    not queued
                    and all(worker.poll() is not None for worker in workers.values())
                    and not queue.worker_status()
                )
                unanswered = unanswered + 1 if orphaned else 0
                if unanswered == ORPHAN_POLLS:  # a busy worker may miss one inquiry, as DVC's monitor shows
                    raise PipelineError(
                        f"{', '.join(sorted(running))}: marked as running, but no queue worker is left to run them: "
                        f"`dvc queue kill {' '.join(sorted(running))}` marks them failed, then run the study again"
                    )
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            stop(workers)
            raise PipelineError(
                f"interrupted: the runs under way finish in the background and {len(queued)} stay "
                "queued (dvc queue status); "
                "the same command again goes on from there"
            ) from None
    stop(workers)
    for worker in workers.values():
        worker.wait()


def stop(workers: dict[int, subprocess.Popen]) -> None:
    """Celery's warm shutdown: a worker ends once its run (if any) has finished."""
    for worker in workers.values():
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
