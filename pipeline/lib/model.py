"""The network: an MLP, or the same head behind LeNet-style convolutions, its initializations, and
what the stages read out of it (probabilities, hidden activations, first-layer weights).
The model file that stores it is model_file.py's."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pipeline.lib.mnist import CLASS_NAMES, IMAGE_SIDE
from pipeline.lib.params import Model as ModelParams

INPUT_SIZE = IMAGE_SIDE * IMAGE_SIDE
# Two blocks of 5x5 convolution (no padding) and 2x2 max-pooling take 28x28 to 16 maps of 4x4.
CONV_CHANNELS, CONV_KERNEL, CONV_FEATURES = (6, 16), 5, 16 * 4 * 4
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
    U(+-init_gain * sqrt(6 / (fan_in + fan_out))), kaiming is He's U(+-sqrt(6 / fan_in)), uniform is
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
            nn.init.xavier_uniform_(layer.weight, gain=params.init_gain)
        elif params.init == "kaiming":
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)


@torch.inference_mode()
def in_batches(function: Callable[[torch.Tensor], torch.Tensor], rows: np.ndarray, batch_size: int) -> np.ndarray:
    """Apply `function` to standardized rows (N, 784) batch by batch; float32 NumPy out, (0, ...) for no rows."""
    # torch.tensor copies each batch into torch's 64-byte-aligned memory (see storage.Dataset.load).
    # No rows make one empty batch, so the output still has the function's shape.
    starts = range(0, len(rows), batch_size) or range(1)
    outputs = [function(torch.tensor(rows[start : start + batch_size])) for start in starts]
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
