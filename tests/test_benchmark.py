"""The benchmark's timers run what they name, and its repeats are interleaved."""

from __future__ import annotations

import pytest
import torch

from click.testing import CliRunner

from conftest import small_params
from pipeline.bench import main as bench
from pipeline.lib.benchmark import TRAIN_IMAGES, best_of_interleaved, canonical_epoch, floor_epoch, project_epoch
from pipeline.lib.params import Params
from pipeline.lib.training import Dataset


def test_repeats_run_in_rounds_and_keep_each_fastest():
    calls, times = [], {"a": iter([3.0, 1.0, 2.0]), "b": iter([5.0, 6.0, 4.0])}

    def measure(name: str):
        def run() -> float:
            calls.append(name)
            return next(times[name])

        return run

    assert best_of_interleaved(3, [measure("a"), measure("b")]) == [1.0, 4.0]
    assert calls == ["a", "b"] * 3


def random_dataset(count: int) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    return Dataset(torch.randn(count, 784, generator=generator), torch.randint(0, 10, (count,), generator=generator))


def test_project_and_floor_epochs_run_on_any_dataset():
    params = Params.model_validate(small_params())
    seconds = project_epoch(random_dataset(2048), random_dataset(256), params, torch.full((784,), -0.4))
    assert 0 < seconds < 60
    assert 0 < floor_epoch(random_dataset(2048), params, 512) < 60


@pytest.mark.slow
def test_canonical_epoch_reads_real_mnist_through_torchvision(shared_mnist):
    params = Params.model_validate(small_params(train={"batch_size": 512}))
    assert TRAIN_IMAGES == 54_000
    assert 0 < canonical_epoch(shared_mnist, params, 512, torch.device("cpu")) < 300


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_cuda_table_without_a_gpu_stops_with_one_line():
    result = CliRunner().invoke(bench, ["--device", "cuda", "--skip-dvc"])
    assert result.exit_code != 0
    assert "--device is cuda but no CUDA GPU is visible: set --device to auto or cpu" in result.output
