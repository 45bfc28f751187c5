"""Each stage's time and peak memory, two trainings at once against one alone, whole `dvc repro`
times and a study's cost beyond its training, measured in a throwaway copy of the project: nothing
here is rerun or rewritten."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

from pipeline.lib.errors import PipelineError
from pipeline.lib.fetch import MIRROR_VARIABLE
from pipeline.lib.layout import PIPELINE_FILE, stage_names, stage_path, stages


def commit(run: Callable[..., subprocess.CompletedProcess]) -> None:
    run("git", "add", "-A").check_returncode()
    run("git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench").check_returncode()


# A study as `python -m pipeline study` runs one: 2 arms x 3 seeds of one epoch each, two runs at a time.
OVERHEAD_STUDY = {
    "seeds": [0, 1, 2],
    "studies": {
        "bench": {
            "question": "What does a study cost beyond its training?",
            "source": "bench",
            "settings": {"train.epochs": 1},
            "arms": {"default": {}, "higher_lr": {"params": {"train.optimizer.lr": 0.01}}},
        }
    },
}
OVERHEAD_FOLDER = "bench-study"


@dataclass(frozen=True)
class StudyCost:
    wall: float  # seconds for the whole study: planning, the runs, collecting the tables
    runs: int
    training: float  # mean training seconds the runs record
    log: str  # what the study command said


def study_overhead(run: Callable[..., subprocess.CompletedProcess], project: Path) -> StudyCost:
    """OVERHEAD_STUDY run in `project` (committed first: experiments run on a commit), its tables
    written to OVERHEAD_FOLDER."""
    (project / "studies.yaml").write_text(yaml.safe_dump(OVERHEAD_STUDY))
    commit(run)
    start = time.perf_counter()
    study = run(sys.executable, "-m", "pipeline", "study", "--studies", "studies.yaml", "--out", OVERHEAD_FOLDER)
    wall = time.perf_counter() - start
    if study.returncode:
        said = study.stderr.strip().splitlines() or ["no output"]
        raise PipelineError(f"the benchmark's study failed: {said[-1]}")
    arms = json.loads((project / OVERHEAD_FOLDER / "bench.json").read_text())["arms"]
    runs = sum(arm["runs"] for arm in arms)
    return StudyCost(wall, runs, sum(arm["mean"]["train_seconds"] * arm["runs"] for arm in arms) / runs, study.stderr)


def train_elsewhere(folder: str) -> list[str]:
    """dvc.yaml's train command with every path it is given that is not an input moved under
    `folder`, so that two can run at once."""
    stage = stages()["train"]
    words = shlex.split(stage["cmd"])
    return [
        f"{folder}/{word}" if words[i - 1].startswith("--") and word not in stage["deps"] else word
        for i, word in enumerate(words)
    ]


def trainings_at_once(project: Path, environment: dict[str, str], count: int) -> float:
    """Wall seconds for `count` train stages started together, each writing its own outputs."""
    start = time.perf_counter()
    runs = [
        subprocess.Popen(
            train_elsewhere(f"at-once-{count}-{number}"),
            cwd=project,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for number in range(count)
    ]
    failed = [run.wait() for run in runs]
    seconds = time.perf_counter() - start
    for number in range(count):
        shutil.rmtree(project / f"at-once-{count}-{number}", ignore_errors=True)
    if any(failed):
        raise PipelineError("the train stage failed in the benchmark's copy: run dvc repro train here to see why")
    return seconds


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
        click.echo("bench: the train stage alone, then two at once", err=True)
        alone, two = trainings_at_once(project, environment, 1), trainings_at_once(project, environment, 2)
        click.echo(
            f"  {'two trainings at once / one alone':<34} {two / alone:>6.2f}x  ({two:.1f} s against {alone:.1f} s; "
            "goal: at most 1.3x)"
        )
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
        cost = study_overhead(run, project)
        click.echo(f"  {f'a study of {cost.runs} one-epoch runs':<34} {cost.wall:>6.1f} s")
        click.echo(
            f"  {'per run, beyond its training':<34} {cost.wall / cost.runs - cost.training:>6.1f} s  (goal: 8 s; "
            f"{cost.training:.1f} s of training each)"
        )
