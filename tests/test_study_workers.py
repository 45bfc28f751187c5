"""The study's queue workers: a worker that stops while runs are still queued is started again, and
once no run is queued or running the workers are stopped (DVC's own stop themselves, which left
`dvc exp run --run-all --jobs 2` waiting forever)."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import dvc.repo
import pytest

from pipeline.commands.study import workers
from pipeline.lib.errors import PipelineError


class Worker:
    """A worker process as `start_worker` returns it; `stop()` makes it end on its own."""

    def __init__(self) -> None:
        self.returncode, self.signals = None, []

    def poll(self) -> int | None:
        return self.returncode

    def stop(self) -> None:
        self.returncode = 0

    def send_signal(self, signal_number: int) -> None:
        self.signals.append(signal_number)
        self.returncode = 0

    def wait(self) -> int:
        assert self.returncode is not None, "waited for a worker nobody stopped"
        return self.returncode


def entries(*names: str, baseline: str = "HEAD") -> list[SimpleNamespace]:
    return [SimpleNamespace(name=name, baseline_rev=baseline) for name in names]


@pytest.fixture
def queue_states(monkeypatch, tmp_path):
    """Each poll of the fake queue returns the next (queued, running) state and runs its event."""
    started: list[tuple[int, Worker]] = []
    states: list[tuple[list[str], list[str], object]] = []
    queue = SimpleNamespace(wdir=str(tmp_path), worker_status=lambda: {})  # no worker answers
    current = {}

    def next_state() -> None:
        queued, running, event = states.pop(0)
        current.update(queued=queued, running=running)
        if event:
            event(started)

    # Beside the study's own runs: another study's, and one of the same name queued on an older commit.
    queue.iter_queued = lambda: (
        next_state(),
        entries(*current["queued"], "another-study-run") + entries("a", baseline="older"),
    )[1]
    queue.iter_active = lambda: entries(*current["running"])

    class Repo:
        def __init__(self) -> None:
            self.experiments = SimpleNamespace(celery_queue=queue)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

    def start_worker(number: int, log_dir, threads: int) -> Worker:
        worker = Worker()
        started.append((number, worker))
        return worker

    monkeypatch.setattr(dvc.repo, "Repo", Repo)
    monkeypatch.setattr(workers, "start_worker", start_worker)
    monkeypatch.setattr(workers, "POLL_SECONDS", 0)
    return states, started


def test_a_worker_that_stops_while_runs_wait_is_started_again_and_all_are_stopped_at_the_end(queue_states, capsys):
    states, started = queue_states

    def stop_worker_2(started):  # as DVC's monitor makes a busy worker do
        return started[1][1].stop()

    states += [
        (["a", "b", "c"], [], None),
        (["c"], ["a", "b"], None),
        (["c"], ["a"], stop_worker_2),
        ([], ["a", "c"], None),
        ([], [], None),
    ]
    workers.run_queued({"a", "b", "c"}, "HEAD", jobs=2)
    assert [number for number, _ in started] == [1, 2, 2]
    first, stopped, restarted = (worker for _, worker in started)
    assert stopped.signals == [] and first.signals == restarted.signals == [signal.SIGTERM]
    progress = capsys.readouterr().err.splitlines()
    assert progress[0].startswith("study: 3 runs, 2 at a time with ")
    assert [line.split(" (")[0] for line in progress[1:]] == [
        "study: 1 of 3 runs finished",
        "study: 3 of 3 runs finished",
    ]


def test_nothing_starts_when_no_run_of_the_study_waits(queue_states):
    states, started = queue_states
    states.append(([], [], None))
    workers.run_queued({"a"}, "HEAD", jobs=2)
    assert started == []


def test_runs_marked_running_with_no_worker_left_are_one_line_with_the_fix(queue_states):
    states, started = queue_states
    states += [([], ["a"], None)] * workers.ORPHAN_POLLS  # e.g. its worker was killed; with one poll fewer it waits on
    with pytest.raises(PipelineError, match=r"^a: marked as running, but no queue worker is left .*`dvc queue kill a`"):
        workers.run_queued({"a", "b"}, "HEAD", jobs=2)
    assert started == []


def test_ctrl_c_stops_the_workers_after_their_runs_and_says_what_stays_queued(queue_states):
    states, started = queue_states

    def interrupt(started):
        raise KeyboardInterrupt

    states += [(["a", "b", "c"], [], None), (["c"], ["a", "b"], None), (["c"], ["a", "b"], interrupt)]
    with pytest.raises(
        PipelineError, match="interrupted: the runs under way finish in the background and 1 stay queued"
    ):
        workers.run_queued({"a", "b", "c"}, "HEAD", jobs=2)
    assert [worker.signals for _, worker in started] == [[signal.SIGTERM], [signal.SIGTERM]]
