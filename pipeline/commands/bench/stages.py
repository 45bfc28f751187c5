"""Each stage's time and peak memory, two trainings at once against one alone, whole `dvc repro`
times, dvc.lock's parse and a study's cost beyond its training, measured in a throwaway copy of the
project: nothing here is rerun or rewritten."""

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

from pipeline.commands.bench.stage_clock import CLOCK_FILE
from pipeline.lib.errors import PipelineError
from pipeline.lib.fetch import MIRROR_VARIABLE
from pipeline.lib.layout import PIPELINE_FILE, stage_names, stage_path, stages


def commit(run: Callable[..., subprocess.CompletedProcess]) -> None:
    run("git", "add", "-A").check_returncode()
    run("git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench").check_returncode()


# A study as `python -m pipeline study` runs one, two runs at a time: the smallest a study can be,
# 2 arms x 2 seeds of one epoch each.
OVERHEAD_STUDY = {
    "seeds": [0, 1],
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


@dataclass(frozen=True)
class StageRun:
    seconds: float
    peak_kib: int | None  # the stage process's peak RSS, where the OS counts it

    def memory(self) -> str:
        return "    n/a" if self.peak_kib is None else f"{self.peak_kib / 1024:>7.0f}"


def clocked(records: Path) -> dict[str, dict]:
    """stage_clock's records so far, by the name of the stage whose command each is."""
    names = {tuple(shlex.split(stage["cmd"])[1:]): name for name, stage in stages().items()}
    ran = [json.loads(line) for line in records.read_text().splitlines()] if records.exists() else []
    return {names[tuple(record["command"])]: record for record in ran if tuple(record["command"]) in names}


def timed_repro(project: Path, environment: dict[str, str], clock: Path) -> tuple[dict[str, StageRun], float]:
    """`dvc repro` of the first stage, then of the rest, in `project` with stage_clock standing in for
    `python`: each stage's seconds and peak RSS, and the seconds of the whole pipeline after the first."""
    clock.mkdir()
    if os.name == "nt":  # cmd.exe, through which DVC runs a stage's command there, finds python.bat
        (clock / "python.bat").write_text(f'@"{sys.executable}" -m pipeline.commands.bench.stage_clock %*\n')
    else:
        (clock / "python").write_text(
            f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m pipeline.commands.bench.stage_clock "$@"\n'
        )
        (clock / "python").chmod(0o755)
    records = clock / "records.jsonl"
    timed = environment | {"PATH": f"{clock}{os.pathsep}{environment['PATH']}", CLOCK_FILE: str(records)}
    for command in (["dvc", "repro", stage_names()[0]], ["dvc", "repro"]):
        start = time.perf_counter()
        code = subprocess.run(command, cwd=project, env=timed, capture_output=True).returncode
        seconds = time.perf_counter() - start
        if code:
            failed = [f"dvc repro {name}" for name, record in clocked(records).items() if record["code"]]
            what = failed[0] if failed else " ".join(command)
            raise PipelineError(f"{what} failed in the benchmark's copy: run {what} here to see why")
    return {name: StageRun(r["seconds"], r["peak_kib"]) for name, r in clocked(records).items()}, seconds


def back_to_params_run(run: Callable[..., subprocess.CompletedProcess], params: Path) -> float:
    """Seconds of `dvc repro` back at `params` after a run with one epoch fewer: DVC's run-cache
    restores the earlier run's outputs instead of training."""
    committed = params.read_text()
    settings = yaml.safe_load(committed)
    settings["train"]["epochs"] = max(1, settings["train"]["epochs"] - 1)
    params.write_text(yaml.safe_dump(settings, sort_keys=False))
    run("dvc", "repro").check_returncode()
    params.write_text(committed)
    start = time.perf_counter()
    restored = run("dvc", "repro")
    seconds = time.perf_counter() - start
    restored.check_returncode()
    if "Stage 'train' is cached" not in restored.stdout:
        raise PipelineError("dvc repro trained again at params already run: DVC's run-cache is off for train")
    return seconds


def dvc_table() -> None:
    """Each stage's time and peak memory, then whole `dvc repro` times, measured in a throwaway copy
    of the project whose download reads this project's data/raw: nothing here is rerun or
    rewritten, and no network is needed."""
    raw = stage_path("download", "--out").resolve()
    if not raw.is_dir():
        raise PipelineError(f"{raw} not found: run dvc repro before python -m pipeline bench")
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        project = Path(folder) / "project"
        project.mkdir()
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
        click.echo("bench: dvc repro, each stage timed", err=True)
        timed, after_download = timed_repro(project, environment, Path(folder) / "clock")
        click.echo("\nstages (one dvc repro in a copy, the download first): seconds and peak RSS of each stage")
        for stage in stage_names():
            click.echo(f"  {stage:<11} {timed[stage].seconds:>6.1f} s  {timed[stage].memory()} MiB")
        click.echo("bench: two train stages at once", err=True)
        alone, two = timed["train"].seconds, trainings_at_once(project, environment, 2)
        click.echo(
            f"  {'two trainings at once / one alone':<34} {two / alone:>6.2f}x  ({two:.1f} s against {alone:.1f} s)"
        )
        click.echo(f"  {'whole pipeline after the download':<34} {after_download:>6.1f} s")
        click.echo("bench: no-op repro", err=True)
        start = time.perf_counter()
        run("dvc", "repro").check_returncode()
        click.echo(f"  {'no-op repro':<34} {time.perf_counter() - start:>6.1f} s")
        click.echo("bench: back to params already run", err=True)
        back = back_to_params_run(run, project / "params.yaml")
        click.echo(
            f"  {'back to params already run':<34} {back:>6.1f} s  (restored from DVC's run-cache; "
            f"their training took {alone:.1f} s)"
        )
        declared = len(OVERHEAD_STUDY["seeds"]) * len(OVERHEAD_STUDY["studies"]["bench"]["arms"])
        click.echo(f"bench: a study of {declared} one-epoch runs (python -m pipeline study)", err=True)
        cost = study_overhead(run, project)
        click.echo(f"  {f'a study of {cost.runs} one-epoch runs':<34} {cost.wall:>6.1f} s")
        click.echo(
            f"  {'per run, beyond its training':<34} {cost.wall / cost.runs - cost.training:>6.1f} s  "
            f"({cost.training:.1f} s of training each)"
        )
