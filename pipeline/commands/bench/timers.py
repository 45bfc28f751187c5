"""Seconds per training epoch of three ways to train the same MLP, measured in one process.

- canonical: torchvision's MNIST dataset with ToTensor + Normalize per sample, and a DataLoader;
- project: this project's training loop (tensors in memory, batched augmentation);
- floor: forward, loss, autograd's backward and the optimizer step over pre-sliced tensors, nothing else.

Each is timed over one whole epoch of as many images as the split stage's training set holds,
after a warm-up.
"""

from __future__ import annotations

import gzip
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from pipeline.lib.mnist import OFFICIAL_FILES
from pipeline.lib.model import build_model
from pipeline.lib.params import Params
from pipeline.lib.storage import Dataset
from pipeline.lib.training import make_optimizer, train

WARMUP_STEPS = 20


@dataclass(frozen=True)
class Timing:
    method: str
    batch_size: int
    seconds_per_epoch: float


def best_of_interleaved(repeats: int, measures: dict[str, Callable[[], float]]) -> list[float]:
    """The fastest of `repeats` runs of each named measure: the least disturbed by other work.

    Runs go in rounds of one run of every measure, so a slow spell on a shared machine slows one
    round of every method rather than every run of one method. Each run is announced on stderr.
    """
    best = [math.inf] * len(measures)
    for round_number in range(1, repeats + 1):
        for index, (name, measure) in enumerate(measures.items()):
            click.echo(f"bench: round {round_number}/{repeats}, {index + 1}/{len(measures)}: {name}", err=True)
            best[index] = min(best[index], measure())
    return best


def finish(device: torch.device) -> float:
    """The clock once the device has done all queued work: CUDA kernels run asynchronously."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def canonical_epoch(raw_dir: Path, images: int, params: Params, batch_size: int, device: torch.device) -> float:
    """The idiom of most tutorials: per-sample transforms through a DataLoader, batches moved to the device,
    over the first `images` of the official training set."""
    from torchvision import datasets, transforms

    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "MNIST" / "raw"
        folder.mkdir(parents=True)
        for name in OFFICIAL_FILES:  # torchvision insists on all four, uncompressed
            with gzip.open(Path(raw_dir) / name) as source, open(folder / name.removesuffix(".gz"), "wb") as sink:
                shutil.copyfileobj(source, sink)
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
        dataset = datasets.MNIST(root, train=True, download=False, transform=transform)
        subset = torch.utils.data.Subset(dataset, range(images))
        loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=True)
        model = build_model(params.model).to(device)
        # As tutorials write it: torch.optim.Adam with PyTorch's default (unfused) implementation.
        optimizer = torch.optim.Adam(model.parameters(), lr=params.train.optimizer.lr)
        step = autograd_step(model, optimizer)
        for index, (images, labels) in enumerate(loader):  # warm-up
            step(images.flatten(1).to(device), labels.to(device))
            if index == WARMUP_STEPS:
                break
        started = finish(device)
        for images, labels in loader:
            step(images.flatten(1).to(device), labels.to(device))
        return finish(device) - started


def project_epoch(train_set: Dataset, val_set: Dataset, params: Params, background: torch.Tensor) -> float:
    """One epoch of pipeline.lib.training.train, validation included, as the train stage runs it
    (its per-step loss value synchronizes with the device)."""
    train_params = params.train.model_copy(update={"epochs": 1})
    model = build_model(params.model).to(train_set.inputs.device)
    warmup = Dataset(
        train_set.inputs[: WARMUP_STEPS * train_params.batch_size],
        train_set.labels[: WARMUP_STEPS * train_params.batch_size],
    )
    train(model, warmup, val_set, train_params, background, lambda _: None)
    result = train(model, train_set, val_set, train_params, background, lambda _: None)
    return result.history[0].seconds


def floor_epoch(train_set: Dataset, params: Params, batch_size: int) -> float:
    """Only the arithmetic: forward, loss, backward, step over batches sliced in advance, with the
    project's (fused) optimizer."""
    device = train_set.inputs.device
    model = build_model(params.model).to(device)
    step = autograd_step(model, make_optimizer(model, params.train))
    batches = [
        (train_set.inputs[start : start + batch_size], train_set.labels[start : start + batch_size])
        for start in range(0, len(train_set.labels), batch_size)
    ]
    for inputs, labels in batches[:3]:
        step(inputs, labels)
    started = finish(device)
    for inputs, labels in batches:
        step(inputs, labels)
    return finish(device) - started


def autograd_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """The training step as pytorch/examples writes it: forward, loss, zero_grad, backward, step."""
    model.train()

    def step(inputs: torch.Tensor, labels: torch.Tensor) -> None:
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step
