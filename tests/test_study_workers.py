"""How a study runs its experiments: `jobs` at a time, each a named `dvc exp run --temp` up to the
results stage, the failed ones named, and Ctrl-C stopping the runs under way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from pipeline.commands.study import workers
from pipeline.commands.study.plan import Run
from pipeline.lib.errors import PipelineError
from pipeline.lib.layout import RESULTS_STAGE

needs_process_groups = pytest.mark.skipif(not hasattr(os, "killpg"), reason="no process groups (Windows)")


def planned(*names: str) -> list[Run]:
    return [Run("s", name, 0, {"train.seed": 0, "model.hidden_sizes": [10, 5]}) for name in names]


class FakeRun:
    """A run that ends with `code` after `polls` polls."""

    def __init__(self, code: int, polls: int = 2) -> None:
        self.code, self.polls, self.returncode = code, polls, None

    def poll(self) -> int | None:
        self.polls -= 1
        if self.polls <= 0:
            self.returncode = self.code
        return self.returncode


@needs_process_groups
def test_runs_go_jobs_at_a_time_each_once_and_the_failed_ones_are_named(monkeypatch, capsys):
    started: dict[str, FakeRun] = {}

    def start(run: Run, environment: dict[str, str]) -> FakeRun:
        assert sum(process.returncode is None for process in started.values()) < 2  # never more than jobs
        assert environment["OMP_NUM_THREADS"] == str(workers.threads_per_run(2))
        started[run.name] = FakeRun(code=1 if run.arm == "b" else 0)
        return started[run.name]

    monkeypatch.setattr(workers, "start", start)
    monkeypatch.setattr(workers, "POLL_SECONDS", 0)
    assert workers.run_all(planned("a", "b", "c", "d"), jobs=2) == ["s-b-s0"]
    assert list(started) == ["s-a-s0", "s-b-s0", "s-c-s0", "s-d-s0"]
    progress = capsys.readouterr().err.splitlines()
    assert progress[0].startswith("study: 4 runs, 2 at a time with ")
    assert [line.split(" (")[0] for line in progress[1:]] == [f"study: {n} of 4 runs ended" for n in (1, 2, 3, 4)]
    assert progress[2].endswith(f"; s-b-s0 failed ({workers.LOG_DIR}/s-b-s0.log)")


def test_a_run_is_a_named_temporary_experiment_up_to_the_results_stage():
    (run,) = planned("a")
    assert workers.experiment_command(run) == [
        "dvc",
        "--wait-for-lock",
        "exp",
        "run",
        "--temp",
        "--name",
        "s-a-s0",
        "-S",
        "train.seed=0",
        "-S",
        "model.hidden_sizes=[10,5]",
        RESULTS_STAGE,
    ]


@needs_process_groups
def test_ctrl_c_stops_the_runs_under_way_and_says_what_is_left(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    processes: list[subprocess.Popen] = []
    real_start = workers.start

    def start(run: Run, environment: dict[str, str]) -> subprocess.Popen:
        processes.append(real_start(run, environment))
        return processes[-1]

    waits = [sys.executable, "-c", "import time; time.sleep(60)"]
    monkeypatch.setattr(workers, "experiment_command", lambda run: waits)
    monkeypatch.setattr(workers, "start", start)
    ctrl_c = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))  # as the terminal sends it, mid-wait
    ctrl_c.start()
    with pytest.raises(PipelineError) as raised:
        workers.run_all(planned("a", "b", "c"), jobs=2)
    assert str(raised.value) == (
        "interrupted: 2 runs under way stopped and 1 never started; the runs recorded stay, and the same command "
        "again runs the rest"
    )
    assert len(processes) == 2 and all(process.returncode not in (None, 0) for process in processes)
    assert "KeyboardInterrupt" in (tmp_path / workers.LOG_DIR / "s-a-s0.log").read_text()  # Ctrl-C, not a kill


def test_without_process_groups_a_study_says_it_needs_them_before_any_run(monkeypatch, tmp_path):
    """Windows has no process groups to stop a run's dvc and its stage together: one line, no run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delattr(os, "killpg", raising=False)
    monkeypatch.setattr(workers, "start", lambda run, environment: pytest.fail("a run started"))
    with pytest.raises(PipelineError) as raised:
        workers.run_all(planned("a"), jobs=1)
    assert str(raised.value) == workers.NEEDS_PROCESS_GROUPS and "on Windows, run studies in WSL" in str(raised.value)
