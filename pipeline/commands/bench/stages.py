"""Each stage's time and peak memory, whole `dvc repro` times and a study's cost beyond its
training, measured in a throwaway copy of the project: nothing here is rerun or rewritten."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import yaml

from pipeline.lib.errors import PipelineError
from pipeline.lib.fetch import MIRROR_VARIABLE
from pipeline.lib.layout import PIPELINE_FILE, stage_names, stage_path


def commit(run: Callable[..., subprocess.CompletedProcess]) -> None:
    run("git", "add", "-A").check_returncode()
    run("git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench").check_returncode()


# A study as `python -m pipeline study` runs one: 2 arms x 3 seeds of one epoch each, through the queue.
OVERHEAD_STUDY = {
    "seeds": [0, 1, 2],
    "studies": {
        "bench": {
            "question": "?",
            "source": "bench",
            "settings": {"train.epochs": 1},
            "arms": {"a": {}, "b": {"params": {"train.seed": 7}}},
        }
    },
}


def study_overhead(run: Callable[..., subprocess.CompletedProcess], project: Path) -> tuple[float, int, float]:
    """Wall seconds of a whole study of 1-epoch runs (queueing, the runs, collecting the tables),
    its number of runs, and the mean training seconds they record."""
    (project / "studies.yaml").write_text(yaml.safe_dump(OVERHEAD_STUDY))
    commit(run)
    start = time.perf_counter()
    run(
        sys.executable, "-m", "pipeline", "study", "--studies", "studies.yaml", "--out", "bench-study"
    ).check_returncode()
    wall = time.perf_counter() - start
    arms = json.loads((project / "bench-study/bench.json").read_text())["arms"]
    runs = sum(arm["runs"] for arm in arms)
    return wall, runs, sum(arm["mean"]["train_seconds"] * arm["runs"] for arm in arms) / runs


def dvc_table() -> None:
    """Each stage's time and peak memory, then whole `dvc repro` times, measured in a throwaway copy
    of the project whose download reads this project's data/raw: nothing here is rerun or
    rewritten, and no network is needed."""
    raw = stage_path("download", "--out").resolve()
    if not raw.is_dir():
        raise PipelineError(f"{raw} not found: run dvc repro before python -m pipeline bench")
    stages = stage_names()
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        project = Path(folder)
        for name in (PIPELINE_FILE, "params.yaml"):
            shutil.copy(name, project / name)
        shutil.copytree("pipeline", project / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
        environment = os.environ | {MIRROR_VARIABLE: str(raw)}

        def run(*command: str) -> subprocess.CompletedProcess:
            return subprocess.run(command, cwd=project, env=environment, capture_output=True, text=True)

        run("git", "init", "-q")
        run("dvc", "init", "-q")
        shutil.copy(Path(".dvc/config"), project / ".dvc/config")  # the same cache link type as here
        commit(run)  # dvclive cannot log in a git repository without commits
        click.echo(
            "\nstages (dvc repro --force --single-item each, in a copy): seconds and peak RSS of dvc with the stage"
        )
        for stage in stages:
            click.echo(f"bench: dvc repro {stage}", err=True)
            measured = run(sys.executable, "-m", "pipeline.commands.bench.measure_stage", stage)
            seconds, peak_kib, code = measured.stdout.split()
            if code != "0":
                raise PipelineError(
                    f"dvc repro {stage} failed in the benchmark's copy: run dvc repro {stage} here to see why"
                )
            click.echo(f"  {stage:<11} {float(seconds):>6.1f} s  {int(peak_kib) / 1024:>7.0f} MiB")
        for label, command in (
            ("whole pipeline after the download", ["dvc", "repro", "--force", "--downstream", stages[1]]),
            ("no-op repro", ["dvc", "repro"]),
        ):
            click.echo(f"bench: {label}", err=True)
            start = time.perf_counter()
            run(*command).check_returncode()
            click.echo(f"  {label:<34} {time.perf_counter() - start:>6.1f} s")
        declared = len(OVERHEAD_STUDY["seeds"]) * len(OVERHEAD_STUDY["studies"]["bench"]["arms"])
        click.echo(f"bench: a study of {declared} one-epoch runs (python -m pipeline study)", err=True)
        wall, runs, training = study_overhead(run, project)
        click.echo(f"  {f'a study of {runs} one-epoch runs':<34} {wall:>6.1f} s")
        click.echo(
            f"  {'per run, beyond its training':<34} {wall / runs - training:>6.1f} s  (goal: 8 s; "
            f"{training:.1f} s of training each)"
        )
