"""Stage 4: train the MLP, validate every epoch, keep the epoch train.keep names (by default the lowest
validation loss). With split.val_fraction 0 there is no validation set: nothing is validated and the last
epoch is kept."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import click
import torch
from dvclive import Live

from pipeline.lib.atomic import atomic_paths, replaced_in_place, write_json
from pipeline.lib.cli import PATH, run_stage, stage_command
from pipeline.lib.cores import CoreShare
from pipeline.lib.device import make_deterministic, numerics_fingerprint, resolve_device
from pipeline.lib.figures import learning_curves, save_figure
from pipeline.lib.model import build_model
from pipeline.lib.model_file import save_model
from pipeline.lib.normalization import Normalization
from pipeline.lib.params import Params
from pipeline.lib.storage import Dataset
from pipeline.lib.training import Divergence, EpochResult, TrainResult, train


class Progress:
    """Each epoch into dvclive's files (in place, so `dvc plots show` and VS Code follow along)
    and one line on the terminal with the time per epoch and the time left."""

    def __init__(self, live: Live, epochs: int):
        self.live, self.epochs, self.seconds = live, epochs, 0.0

    def __call__(self, outcome: EpochResult) -> None:
        self.live.step = outcome.epoch  # epoch 0 is the untouched model
        series = {
            "train": (outcome.train_loss, outcome.train_accuracy),
            "val": (outcome.val_loss, outcome.val_accuracy),
            "batches": (outcome.batch_loss, outcome.batch_accuracy),
        }
        for name, (loss, accuracy) in series.items():
            if loss is not None:
                self.live.log_metric(f"{name}/loss", round(loss, 6))
                self.live.log_metric(f"{name}/accuracy", round(accuracy, 6))
        self.live.log_metric("lr", outcome.lr)
        self.live.next_step()
        timing = "before any update"
        if outcome.epoch:
            self.seconds += outcome.seconds
            timing = (
                f"{outcome.seconds:.1f} s, {self.seconds / outcome.epoch * (self.epochs - outcome.epoch):.0f} s left"
            )
        click.echo(
            f"epoch {outcome.epoch}/{self.epochs}: train loss {outcome.train_loss:.4f} acc "
            f"{outcome.train_accuracy:.4f} | {validation(outcome)} | {timing}"
        )


def validation(outcome: EpochResult) -> str:
    if outcome.val_loss is None:
        return "no validation set"
    return f"val loss {outcome.val_loss:.4f} acc {outcome.val_accuracy:.4f}"


def rounded(loss: float | None, accuracy: float | None) -> dict | None:
    return None if loss is None else {"loss": round(loss, 6), "accuracy": round(accuracy, 6)}


def summary(result: TrainResult, parameters: int) -> dict:
    """The final metrics: the kept epoch's, and where training diverged if it did (train.on_divergence: record)."""
    kept = result.curves[result.kept_epoch]
    return {
        "kept_epoch": result.kept_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "parameters": parameters,
        "train": rounded(kept.train_loss, kept.train_accuracy),
        "val": rounded(kept.val_loss, kept.val_accuracy),
        **({"diverged": divergence(result.diverged)} if result.diverged else {}),
    }


def divergence(where: Divergence) -> dict:
    """Where training diverged, as JSON: a loss that is NaN or infinite is written as text ("nan", "inf")."""
    loss = round(where.loss, 6) if math.isfinite(where.loss) else str(where.loss)
    return {"epoch": where.epoch, "step": where.step, "loss": loss}


@click.option("--data", type=PATH, required=True, help="Folder of the train and val arrays.")
@click.option("--stats", type=PATH, required=True, help="Normalization JSON written by preprocess.")
@click.option("--model", "model_path", type=PATH, required=True, help="Model file to write.")
@click.option(
    "--live",
    "live_dir",
    type=PATH,
    required=True,
    help="Folder for dvclive's curves, the final metrics and curves.png.",
)
@click.option(
    "--timing", type=PATH, required=True, help="JSON file for seconds and numerics (kept apart: not reproducible)."
)
@stage_command
def main(params: Params, data: Path, stats: Path, model_path: Path, live_dir: Path, timing: Path) -> None:
    cores = CoreShare(report=click.echo)  # with the epoch lines; its first look covers loading the data
    device = resolve_device(params.train.device)
    make_deterministic(params.train.seed)
    normalization = Normalization.from_json(json.loads(stats.read_text()))
    train_set, val_set = Dataset.load(data, "train", device), Dataset.load(data, "val", device)
    val_set = val_set if len(val_set.labels) else None  # split.val_fraction: 0
    model = build_model(params.model).to(device)
    background = torch.from_numpy(normalization.black_pixel())

    cores.rebalance()  # before epoch 0's passes over the data
    started = time.perf_counter()
    # The curves grow in place, epoch by epoch; the model, the timing and the final metrics appear
    # only once training has succeeded, and a failed or interrupted run puts the last curves back.
    with replaced_in_place(live_dir) as live_folder, atomic_paths(model_path, timing) as (model_file, timing_file):
        with Live(str(live_folder), dvcyaml=False, save_dvc_exp=False) as live, cores:
            progress = Progress(live, params.train.epochs)

            def after_epoch(outcome: EpochResult) -> None:
                progress(outcome)
                cores.rebalance()

            result = train(model, train_set, val_set, params.train, background, after_epoch)
        seconds = time.perf_counter() - started
        model.load_state_dict(result.kept_state)
        save_model(model_file, model, params.model, normalization)
        write_json(
            timing_file,
            {
                "numerics": numerics_fingerprint(device),
                "train_seconds": round(seconds, 2),
                "seconds_per_epoch": round(sum(e.seconds for e in result.history) / max(1, len(result.history)), 3),
            },
        )
        write_json(live_folder / "metrics.json", summary(result, sum(p.numel() for p in model.parameters())))
        save_figure(learning_curves([asdict(e) for e in result.curves], result.kept_epoch), live_folder / "curves.png")
    if result.diverged:
        where = result.diverged
        click.echo(f"train: diverged at epoch {where.epoch}, step {where.step} (loss {where.loss:.3g}); recorded")
    kept = result.curves[result.kept_epoch]
    click.echo(f"train: kept epoch {result.kept_epoch} ({validation(kept)}), {seconds:.1f} s on {device}")


if __name__ == "__main__":
    run_stage(main)
