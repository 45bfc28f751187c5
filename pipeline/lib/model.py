"""The network (an MLP, or the same head behind LeNet-style convolutions), its initializations,
and the self-describing model file.

The model file holds only tensors, numbers, strings and lists, so it loads
with `torch.load(..., weights_only=True)`: opening a file never runs its code.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.lib.atomic import write_bytes
from pipeline.lib.errors import PipelineError
from pipeline.lib.mnist import CLASS_NAMES, IMAGE_SIDE
from pipeline.lib.normalization import Normalization
from pipeline.lib.params import Model as ModelParams

INPUT_SIZE = IMAGE_SIDE * IMAGE_SIDE
# Two blocks of 5x5 convolution (no padding) and 2x2 max-pooling take 28x28 to 16 maps of 4x4.
CONV_CHANNELS, CONV_KERNEL, CONV_FEATURES = (6, 16), 5, 16 * 4 * 4
FORMAT_VERSION = 3
# What the network's input means, stated in every model file for whoever loads or exports it:
# the normalization in the same file turns these raw pixels into what the first layer saw.
INPUT_CONVENTION = {"shape": [IMAGE_SIDE, IMAGE_SIDE], "ink": "white digit on black", "pixel_range": [0, 255]}
ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


def build_model(params: ModelParams) -> nn.Sequential:
    """Standardized rows (N, 784) -> 10 logits.

    `mlp`: 784 -> hidden sizes -> 10; `hidden_sizes: []` is multinomial logistic regression.
    Each hidden block is Linear, [BatchNorm1d], activation, [Dropout].
    `cnn`: the convolutions of the CNN assignment's LeNet-style network (docs/sources.md: conv 1-6
    5x5, activation, max-pool, conv 6-16 5x5, activation, max-pool) in front of the same head on
    their 256 features; with
    `hidden_sizes: [120, 84]` and relu it is that network.
    """
    layers: list[nn.Module] = []
    width = INPUT_SIZE
    if params.architecture == "cnn":
        layers.append(nn.Unflatten(1, (1, IMAGE_SIDE, IMAGE_SIDE)))
        for channels_in, channels_out in zip((1, CONV_CHANNELS[0]), CONV_CHANNELS):
            layers += [
                nn.Conv2d(channels_in, channels_out, CONV_KERNEL),
                ACTIVATIONS[params.activation](),
                nn.MaxPool2d(2),
            ]
        layers.append(nn.Flatten())
        width = CONV_FEATURES
    for hidden in params.hidden_sizes:
        layers.append(nn.Linear(width, hidden))
        if params.batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(ACTIVATIONS[params.activation]())
        if params.dropout > 0:
            layers.append(nn.Dropout(params.dropout))
        width = hidden
    layers.append(nn.Linear(width, len(CLASS_NAMES)))
    model = nn.Sequential(*layers)
    initialize(model, params)
    return model


def weighted_layers(model: nn.Module) -> list[nn.Linear | nn.Conv2d]:
    """The layers whose weights init draws and L1/L2 penalize (not biases, not batch norm)."""
    return [layer for layer in model.modules() if isinstance(layer, (nn.Linear, nn.Conv2d))]


def initialize(model: nn.Module, params: ModelParams) -> None:
    """Re-draw every Linear and Conv2d layer's weights as `params.init` says (default keeps PyTorch's).

    As the NumPy assignments and Keras define them, whatever the activation: glorot is
    U(+-sqrt(6 / (fan_in + fan_out))), kaiming is He's U(+-sqrt(6 / fan_in)), uniform is
    U(+-1 / sqrt(fan_in)), gaussian is N(0, init_std). Biases start at zero.
    """
    if params.init == "default":
        return
    for layer in weighted_layers(model):
        if params.init == "gaussian":
            nn.init.normal_(layer.weight, std=params.init_std)
        elif params.init == "uniform":
            bound = 1 / math.sqrt(layer.weight[0].numel())  # fan-in: the inputs of one unit
            nn.init.uniform_(layer.weight, -bound, bound)
        elif params.init == "glorot":
            nn.init.xavier_uniform_(layer.weight)
        elif params.init == "kaiming":
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)


@torch.inference_mode()
def in_batches(function: Callable[[torch.Tensor], torch.Tensor], rows: np.ndarray, batch_size: int) -> np.ndarray:
    """Apply `function` to standardized rows (N, 784) batch by batch; float32 NumPy out."""
    # torch.tensor copies each batch into torch's 64-byte-aligned memory (see training.Dataset.load).
    outputs = [function(torch.tensor(rows[start : start + batch_size])) for start in range(0, len(rows), batch_size)]
    return torch.cat(outputs).float().numpy()


def probabilities(network: nn.Sequential, rows: np.ndarray, batch_size: int) -> np.ndarray:
    network.eval()
    return in_batches(lambda batch: network(batch).softmax(1), rows, batch_size)


def last_hidden(network: nn.Sequential, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """The input of the final Linear layer: the last hidden layer's activations (the pixels for `[]`)."""
    network.eval()
    return in_batches(network[:-1], rows, batch_size)


def first_layer_weights(network: nn.Sequential) -> np.ndarray:
    """(units, side * side): each first weighted layer's unit (or convolution kernel), viewable as a square image."""
    first = weighted_layers(network)[0]
    return first.weight.detach().cpu().reshape(first.weight.shape[0], -1).numpy()


def save_model(path: Path, model: nn.Module, params: ModelParams, normalization: Normalization) -> None:
    """Weights, architecture, normalization statistics and class names in one file."""
    payload = {
        "format_version": FORMAT_VERSION,
        "architecture": params.model_dump(),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "normalization": {
            "mode": normalization.mode,
            "mean": torch.from_numpy(normalization.mean),
            "std": torch.from_numpy(normalization.std),
        },
        "class_names": list(CLASS_NAMES),
        "input": INPUT_CONVENTION,
    }
    payload["sha256"] = fingerprint(payload)
    # Saving through a buffer keeps the archive's internal name fixed ("archive"), so equal
    # models give equal bytes whatever the file is called.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def fingerprint(payload: dict) -> str:
    """SHA-256 of everything in a model file but the fingerprint itself: detects changed bytes."""
    digest = hashlib.sha256()

    def feed(value: object) -> None:
        if isinstance(value, torch.Tensor):
            digest.update(str((value.dtype, tuple(value.shape))).encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value):
                digest.update(str(key).encode())
                feed(value[key])
        else:
            digest.update(json.dumps(value, sort_keys=True).encode())

    feed({key: value for key, value in payload.items() if key != "sha256"})
    return digest.hexdigest()


@dataclass(frozen=True)
class LoadedModel:
    """A model file opened safely: the network in eval mode and the standardization it expects."""

    network: nn.Sequential
    architecture: ModelParams
    normalization: Normalization
    class_names: list[str]


def load_model(path: Path) -> LoadedModel:
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles; the error below says enough
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run the train stage first (dvc repro train)") from None
    except Exception as error:  # noqa: BLE001 - torch.load raises many types on foreign bytes
        reason = (
            "it holds code or objects that safe loading refuses"
            if "weights_only" in str(error)
            else "it is not a model file"
        )
        raise PipelineError(f"{path} cannot be loaded safely ({reason}): retrain with dvc repro train") from None
    try:
        if payload["format_version"] != FORMAT_VERSION or payload["input"] != INPUT_CONVENTION:
            raise ValueError("format version")
        if payload["sha256"] != fingerprint(payload):
            raise PipelineError(
                f"{path} fails its integrity check (its bytes changed after training): retrain with dvc repro train"
            )
        architecture = ModelParams.model_validate(payload["architecture"])
        network = build_model(architecture)
        network.load_state_dict(payload["state_dict"])
        stats = payload["normalization"]
        normalization = Normalization(stats["mode"], stats["mean"].numpy(), stats["std"].numpy())
        class_names = list(payload["class_names"])
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise PipelineError(
            f"{path} is not a model file of this pipeline (format {FORMAT_VERSION}): retrain with dvc repro train"
        ) from None
    network.eval()
    return LoadedModel(network, architecture, normalization, class_names)
