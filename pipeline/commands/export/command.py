"""`python -m pipeline export`: the trained model as ONNX and TorchScript files that take raw images.

Each file holds the network with the training set's normalization folded in, so whoever has only
the file and onnxruntime (or plain torch) gets the pipeline's predictions: input float32
(N, 28, 28), a white digit on black, pixels 0-255, as the model file's INPUT_CONVENTION states;
output (N, 10) class probabilities, as evaluate computes them. Both files carry that convention.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import click
import onnx
import torch
from torch import nn

from pipeline.lib.atomic import atomic_paths
from pipeline.lib.cli import PATH, user_command
from pipeline.lib.layout import stage_path
from pipeline.lib.model_file import INPUT_CONVENTION, load_model
from pipeline.lib.normalization import Normalization

ONNX_NAME, TORCHSCRIPT_NAME = "model.onnx", "model.torchscript.pt"
CONVENTION_KEY = "input_convention"  # ONNX metadata key and TorchScript extra file (.json)


class RawImageClassifier(nn.Module):
    """Raw 0-255 images in, class probabilities out: the standardization, then the network, then softmax."""

    def __init__(self, network: nn.Module, normalization: Normalization):
        super().__init__()
        self.network = network.eval()
        self.register_buffer("mean", torch.from_numpy(normalization.mean))
        self.register_buffer("std", torch.from_numpy(normalization.std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows = images.reshape(images.shape[0], -1) / 255  # the same operations as Normalization.apply
        return self.network((rows - self.mean) / self.std).softmax(1)


def export(model_path: Path, out: Path) -> tuple[Path, Path]:
    loaded = load_model(model_path)
    module = RawImageClassifier(loaded.network, loaded.normalization).eval().requires_grad_(False)  # inference only
    example = torch.zeros(2, *INPUT_CONVENTION["shape"])
    convention = json.dumps(
        {**INPUT_CONVENTION, "output": "probabilities of the classes", "classes": loaded.class_names}
    )
    onnx_path, torchscript_path = out / ONNX_NAME, out / TORCHSCRIPT_NAME
    with atomic_paths(onnx_path, torchscript_path) as (onnx_file, torchscript_file), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' notes on their own internals, not on this model
        program = torch.onnx.export(
            module,
            (example,),
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
            dynamo=True,
            verbose=False,
        )
        proto = program.model_proto
        onnx.helper.set_model_props(proto, {CONVENTION_KEY: convention})
        onnx.save(proto, onnx_file)
        traced = torch.jit.trace(module, example)
        torch.jit.save(traced, torchscript_file, _extra_files={f"{CONVENTION_KEY}.json": convention})
    return onnx_path, torchscript_path


@user_command()
@click.option(
    "--model", "model_path", type=PATH, default=None, help="Model file (default: the train stage's, from dvc.yaml)."
)
@click.option(
    "--out",
    type=PATH,
    default=Path("data/export"),
    show_default=True,
    help="Folder for model.onnx and model.torchscript.pt.",
)
def main(model_path: Path | None, out: Path) -> None:
    """Export the trained model, normalization folded in, for onnxruntime or plain torch."""
    for path in export(model_path or stage_path("train", "--model"), out):
        click.echo(f"export: {path}")
