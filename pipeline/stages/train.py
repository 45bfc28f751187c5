"""Stage 4: train the MLP, validate every epoch, keep the weights of the lowest validation loss."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch
from dvclive import Live

from pipeline.lib.atomic import atomic_paths, write_json
from pipeline.lib.cli import PATH, stage_command
from pipeline.lib.device import make_deterministic, numerics_fingerprint, resolve_device
from pipeline.lib.model import build_model, save_model
from pipeline.lib.normalization import Normalization
from pipeline.lib.params import Params
from pipeline.lib.training import Dataset, EpochResult, train


def log_epoch(live: Live, outcome: EpochResult) -> None:
    live.step = outcome.epoch  # plots and summaries count epochs from 1, like best_epoch
    for split in ("train", "val"):
        live.log_metric(f"{split}/loss", round(getattr(outcome, f"{split}_loss"), 6))
        live.log_metric(f"{split}/accuracy", round(getattr(outcome, f"{split}_accuracy"), 6))
    live.log_metric("lr", outcome.lr)
    live.next_step()
    click.echo(
        f"epoch {outcome.epoch}: train loss {outcome.train_loss:.4f} acc {outcome.train_accuracy:.4f} | "
        f"val loss {outcome.val_loss:.4f} acc {outcome.val_accuracy:.4f} | {outcome.seconds:.1f} s"
    )


@click.option("--data", type=PATH, required=True, help="Folder of the train and val arrays.")
@click.option("--stats", type=PATH, required=True, help="Normalization JSON written by preprocess.")
@click.option("--model", "model_path", type=PATH, required=True, help="Model file to write.")
@click.option("--live", "live_dir", type=PATH, required=True, help="Folder for dvclive metrics and plots.")
@click.option("--timing", type=PATH, required=True, help="JSON file for seconds and numerics (kept apart: not reproducible).")
@stage_command
def main(params: Params, data: Path, stats: Path, model_path: Path, live_dir: Path, timing: Path) -> None:
    device = resolve_device(params.train.device)
    make_deterministic(params.train.seed)
    normalization = Normalization.from_json(json.loads(stats.read_text()))
    train_set, val_set = Dataset.load(data, "train", device), Dataset.load(data, "val", device)
    model = build_model(params.model).to(device)

    started = time.perf_counter()
    # Curves, model and timing appear together, and only once training has succeeded.
    with atomic_paths(live_dir, model_path, timing) as (live_folder, model_file, timing_file):
        with Live(str(live_folder), dvcyaml=False, save_dvc_exp=False) as live:
            result = train(
                model, train_set, val_set, params.train, torch.from_numpy(normalization.black_pixel()), lambda e: log_epoch(live, e)
            )
            seconds = time.perf_counter() - started
            best = result.history[result.best_epoch - 1]
            live.summary.update({
                "best_epoch": result.best_epoch,
                "best_val_accuracy": round(best.val_accuracy, 6),
                "best_val_loss": round(best.val_loss, 6),
                "epochs_run": len(result.history),
                "stopped_early": result.stopped_early,
                "parameters": sum(p.numel() for p in model.parameters()),
            })
        model.load_state_dict(result.best_state)
        save_model(model_file, model, params.model, normalization)
        write_json(timing_file, {
            "numerics": numerics_fingerprint(device),
            "train_seconds": round(seconds, 2),
            "seconds_per_epoch": round(sum(e.seconds for e in result.history) / len(result.history), 3),
        })
    click.echo(
        f"train: best epoch {result.best_epoch} (val loss {best.val_loss:.4f}, accuracy {best.val_accuracy:.4f}), "
        f"{seconds:.1f} s on {device}"
    )


if __name__ == "__main__":
    main()
