"""`python -m pipeline bench`: training speed side by side, then each stage's peak memory, `dvc repro`
times and what a study's experiment costs beyond its training.

Run it from the project root after `dvc repro`. It only reads this project (the download's and the
split's outputs, params.yaml): the `dvc` part runs in a throwaway copy, so no output, dvc.lock or
report here changes.
"""

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
import torch
import yaml
from pydantic import ValidationError

from pipeline.commands.bench.timers import Timing, best_of_interleaved, canonical_epoch, floor_epoch, project_epoch
from pipeline.lib.cli import user_command
from pipeline.lib.device import make_deterministic, numerics_fingerprint, resolve_device
from pipeline.lib.errors import PipelineError
from pipeline.lib.fetch import MIRROR_VARIABLE
from pipeline.lib.layout import PIPELINE_FILE, stage_names, stage_path
from pipeline.lib.normalization import Normalization
from pipeline.lib.params import Params, load_params
from pipeline.lib.pinning import MODES, PINNED, VARIABLE
from pipeline.lib.training import Dataset

# Run in a child process: ru_maxrss of its children is the peak RSS of dvc and the stage it runs.
MEASURE_STAGE = (
    "import resource, subprocess, sys, time; start = time.perf_counter(); "
    "code = subprocess.run(['dvc', 'repro', '--force', '--single-item', sys.argv[1]], capture_output=True).returncode; "
    "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)"
)


CANONICAL, PROJECT, FLOOR = "canonical DataLoader idiom", "project loop", "compute floor"


def with_train(params: Params, **changes) -> Params:
    return params.model_copy(update={"train": params.train.model_copy(update=changes)})


def without_augmentation(params: Params) -> Params:
    no_augment = params.train.augment.model_copy(
        update={"rotation_degrees": 0.0, "shift_pixels": 0.0, "scale": 0.0, "elastic_alpha": 0.0}
    )
    return with_train(params, augment=no_augment)


def other_backward(params: Params) -> Params | None:
    """The same params with the other backward pass, or None where the manual pass does not cover them."""
    other = {"autograd": "manual", "manual": "autograd"}[params.train.backward]
    try:
        return Params.model_validate(with_train(params, backward=other).model_dump())
    except ValidationError:
        return None


def load_training_sets(device: torch.device) -> tuple[Dataset, Dataset, torch.Tensor]:
    """The split stage's train and val sets on `device`, and the standardized black pixel."""
    normalization = Normalization.from_json(json.loads(stage_path("preprocess", "--stats").read_text()))
    make_deterministic(0)  # before any CUDA work: it sets cuBLAS's workspace for deterministic kernels
    split = stage_path("split", "--out")
    train_set, val_set = Dataset.load(split, "train", device), Dataset.load(split, "val", device)
    return train_set, val_set, torch.from_numpy(normalization.black_pixel())


def plain_loop_seconds(epochs: int) -> float:
    """The fastest of `epochs` project-loop epochs without augmentation, on the CPU, in this process's numerics."""
    train_set, val_set, background = load_training_sets(torch.device("cpu"))
    plain = without_augmentation(load_params())
    return min(project_epoch(train_set, val_set, plain, background) for _ in range(epochs))


# The one MKL branch that AMD processors honour too (they run AVX2 and the others as AUTO): with it
# the default model's bytes were the same on an Intel Xeon and an AMD EPYC (docs/notes/2026-11-22-across-vendors.md).
# Not a mode of its own, since it costs far more than the 10% pinning may cost: a recipe, timed here.
PORTABLE = PINNED | {"MKL_CBWR": "COMPATIBLE", VARIABLE: "native"}


def numerics_cost(repeats: int, batch_size: int) -> None:
    """Pinned against native and portable numerics: each is a process of its own (MKL and ATen read
    their settings once), run in alternation so that a slow spell on a shared machine slows all."""
    child = (
        "import sys; from pipeline.commands.bench.command import plain_loop_seconds; "
        "print(plain_loop_seconds(int(sys.argv[1])))"
    )
    # This process's environment holds the pinned values: the native child runs without them.
    machine_defaults = {name: value for name, value in os.environ.items() if name not in PINNED}
    environments = {mode: machine_defaults | {VARIABLE: mode} for mode in MODES} | {
        "portable": machine_defaults | PORTABLE
    }
    fastest = dict.fromkeys(environments, float("inf"))
    for round_number in range(1, repeats + 1):
        for name, environment in environments.items():
            click.echo(f"bench: numerics, round {round_number}/{repeats}: {name}", err=True)
            measured = subprocess.run(
                [sys.executable, "-c", child, "3"], env=environment, capture_output=True, text=True, check=True
            )
            fastest[name] = min(fastest[name], float(measured.stdout))
    pinned, native, portable = fastest["pinned"], fastest["native"], fastest["portable"]
    click.echo(
        f"\nnumerics (project loop, batch {batch_size}, no augmentation, best of {repeats} x 3 epochs): "
        f"pinned {pinned:.3f} s/epoch, native {native:.3f} s/epoch, pinned/native {pinned / native:.2f}x; "
        f"portable (pinned with MKL_CBWR=COMPATIBLE) {portable:.3f} s/epoch, portable/pinned {portable / pinned:.2f}x"
    )


def speed_table(params: Params, repeats: int, device: torch.device) -> tuple[list[Timing], int]:
    """The fastest of `repeats` epochs of each method, and the number of images in an epoch."""
    plain = without_augmentation(params)
    other = other_backward(plain)
    train_set, val_set, background = load_training_sets(device)
    raw, images, batch = stage_path("download", "--out"), len(train_set.labels), params.train.batch_size
    methods = [
        (CANONICAL, batch, lambda: canonical_epoch(raw, images, plain, batch, device)),
        (PROJECT, batch, lambda: project_epoch(train_set, val_set, plain, background)),
        (f"{PROJECT} + augmentation", batch, lambda: project_epoch(train_set, val_set, params, background)),
        (PROJECT, 512, lambda: project_epoch(train_set, val_set, with_train(plain, batch_size=512), background)),
        (FLOOR, 512, lambda: floor_epoch(train_set, plain, 512)),
        (FLOOR, 4096, lambda: floor_epoch(train_set, plain, 4096)),
    ]
    if other is not None:
        methods.insert(
            2,
            (
                f"{PROJECT}, {other.train.backward} backward",
                batch,
                lambda: project_epoch(train_set, val_set, other, background),
            ),
        )
    fastest = best_of_interleaved(repeats, {f"{method}, batch {size}": measure for method, size, measure in methods})
    return [Timing(method, batch_size, seconds) for (method, batch_size, _), seconds in zip(methods, fastest)], images


def print_speed(timings: list[Timing], images: int, backward: str, device: torch.device) -> None:
    canonical = next(t.seconds_per_epoch for t in timings if t.method == CANONICAL)
    floor = min((t for t in timings if t.method == FLOOR), key=lambda t: t.seconds_per_epoch)
    numerics = ", ".join(f"{key} {value}" for key, value in numerics_fingerprint(device).items())
    click.echo(
        f"\ntraining speed ({numerics}); seconds per epoch of {images:,} images, {backward} backward unless named"
    )
    click.echo(
        f"{'method':<34} {'batch':>6} {'s/epoch':>8} {'speed-up vs canonical':>22} "
        f"{f'vs floor ({floor.batch_size})':>16}"
    )
    for timing in timings:
        seconds = timing.seconds_per_epoch
        click.echo(
            f"{timing.method:<34} {timing.batch_size:>6} {seconds:>8.3f} {canonical / seconds:>21.1f}x "
            f"{seconds / floor.seconds_per_epoch:>15.2f}x"
        )


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
    run(sys.executable, "-m", "pipeline", "study", "--studies", "studies.yaml").check_returncode()
    wall = time.perf_counter() - start
    arms = json.loads((project / "reports/studies/bench.json").read_text())["arms"]
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
            measured = run(sys.executable, "-c", MEASURE_STAGE, stage)
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
        click.echo("bench: a study of 6 one-epoch runs (python -m pipeline study)", err=True)
        wall, runs, training = study_overhead(run, project)
        click.echo(f"  {f'a study of {runs} one-epoch runs':<34} {wall:>6.1f} s")
        click.echo(
            f"  {'per run, beyond its training':<34} {wall / runs - training:>6.1f} s  (goal: 8 s; "
            f"{training:.1f} s of training each)"
        )


@user_command()
@click.option("--repeats", default=2, show_default=True, help="Runs of each timing; the fastest is kept.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where the training-speed table runs.",
)
@click.option("--skip-dvc", is_flag=True, help="Only the training-speed table.")
def main(repeats: int, device: str, skip_dvc: bool) -> None:
    """Measure training speed against the canonical idiom and the compute floor, and stage memory and time."""
    where = resolve_device(device, setting="--device")
    params = load_params()
    timings, images = speed_table(params, repeats, where)
    print_speed(timings, images, params.train.backward, where)
    if where.type == "cpu":
        numerics_cost(repeats, params.train.batch_size)
    if not skip_dvc:
        dvc_table()
