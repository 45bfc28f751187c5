"""Seconds per training epoch of the canonical idiom, the project's loop and the compute floor,
side by side on the same network, optimizer and data, in this process."""

from __future__ import annotations

import json

import click
import torch
from pydantic import ValidationError

from pipeline.commands.bench.timers import Timing, best_of_interleaved, canonical_epoch, floor_epoch, project_epoch
from pipeline.lib.device import make_deterministic, numerics_fingerprint
from pipeline.lib.layout import stage_path
from pipeline.lib.normalization import Normalization
from pipeline.lib.params import Params
from pipeline.lib.storage import Dataset

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
