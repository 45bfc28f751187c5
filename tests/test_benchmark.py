"""The benchmark's timers run what they name over the data's own epoch size, its repeats are
interleaved, and its table finds each row by name."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from pipeline.commands.bench import timers
from pipeline.commands.bench.command import main as bench
from pipeline.commands.bench.speed import CANONICAL, FLOOR, PROJECT, other_backward, print_speed
from pipeline.commands.bench.stages import train_elsewhere
from pipeline.commands.bench.timers import Timing, best_of_interleaved, canonical_epoch, floor_epoch, project_epoch
from pipeline.lib.layout import stage_path, stages
from pipeline.lib.params import Params
from pipeline.lib.storage import Dataset

from conftest import PROJECT_ROOT, small_params


def test_repeats_run_in_rounds_keep_each_fastest_and_say_what_runs(capsys):
    calls, times = [], {"a": iter([3.0, 1.0, 2.0]), "b": iter([5.0, 6.0, 4.0])}

    def measure(name: str):
        def run() -> float:
            calls.append(name)
            return next(times[name])

        return run

    assert best_of_interleaved(3, {"a": measure("a"), "b": measure("b")}) == [1.0, 4.0]
    assert calls == ["a", "b"] * 3
    progress = capsys.readouterr().err.splitlines()
    assert progress[:2] == ["bench: round 1/3, 1/2: a", "bench: round 1/3, 2/2: b"] and len(progress) == 6


def random_dataset(count: int) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    return Dataset(torch.randn(count, 784, generator=generator), torch.randint(0, 10, (count,), generator=generator))


def test_project_and_floor_epochs_run_on_any_dataset():
    params = Params.model_validate(small_params())
    seconds = project_epoch(random_dataset(2048), random_dataset(256), params, torch.full((784,), -0.4))
    assert 0 < seconds < 60
    assert 0 < floor_epoch(random_dataset(2048), params, 512) < 60


@pytest.mark.slow
def test_canonical_epoch_trains_on_as_many_real_images_as_it_is_given(shared_mnist, monkeypatch):
    stepped = []
    step = timers.autograd_step

    def counting_step(model, optimizer):
        run = step(model, optimizer)
        return lambda images, labels: (stepped.append(len(labels)), run(images, labels))

    monkeypatch.setattr(timers, "autograd_step", counting_step)
    params = Params.model_validate(small_params())
    assert canonical_epoch(shared_mnist, 5000, params, 100, torch.device("cpu")) > 0
    warmup = (timers.WARMUP_STEPS + 1) * 100
    assert sum(stepped) == warmup + 5000 and max(stepped) == 100


def test_the_table_finds_its_reference_rows_by_name(capsys):
    rows = [Timing(FLOOR, 4096, 0.5), Timing(PROJECT, 64, 2.0), Timing(CANONICAL, 64, 20.0), Timing(FLOOR, 512, 1.0)]
    print_speed(rows, 1234, "autograd", torch.device("cpu"))
    table = capsys.readouterr().out
    assert "seconds per epoch of 1,234 images" in table and "vs floor (4096)" in table
    assert any(line.startswith(PROJECT) and "10.0x" in line and "4.00x" in line for line in table.splitlines())


def test_bench_times_the_other_backward_pass_only_where_it_applies():
    assert other_backward(Params.model_validate(small_params())).train.backward == "manual"
    assert (
        other_backward(Params.model_validate(small_params(train={"backward": "manual"}))).train.backward == "autograd"
    )
    assert other_backward(Params.model_validate(small_params(model={"batch_norm": True}))) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_cuda_table_without_a_gpu_stops_with_one_line():
    result = CliRunner().invoke(bench, ["--device", "cuda", "--skip-dvc"])
    assert result.exit_code != 0
    assert "--device is cuda but no CUDA GPU is visible: set --device to auto or cpu" in result.output


def test_two_trainings_at_once_read_the_same_inputs_and_write_apart(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    command = train_elsewhere("apart")
    inputs = stages()["train"]["deps"]
    given = [word for option, word in zip(command, command[1:]) if option.startswith("--")]
    moved = [stage_path("train", option).as_posix() for option in ("--model", "--live", "--timing")]
    assert [word for word in given if word not in inputs] == [f"apart/{path}" for path in moved]
