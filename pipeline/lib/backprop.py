"""The textbook backward pass, written out: what `train.backward: manual` runs instead of autograd.

This is the backward pass of the NumPy assignments (the CNN and framework assignments of
docs/sources.md), for cross-entropy over a stack of Linear, elementwise activation and Dropout layers:

    upstream = (softmax(logits) - one_hot(labels)) / batch size
    for each layer from the top:
        Linear:      weight.grad = upstream^T @ input,  bias.grad = sum of upstream over the batch,
                     upstream = upstream @ weight
        activation:  upstream = upstream * slope of the activation at its output
        Dropout:     upstream = upstream * the same scaled mask as the forward pass

tests/test_backprop.py checks it against autograd, and params validation refuses a setup it does
not cover (params.MANUAL_BACKWARD_ACTIVATIONS). `python -m pipeline bench` times both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def loss_and_gradients(
    model: nn.Sequential, inputs: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of one batch and its gradients, left in each parameter's .grad; returns (loss, logits)."""
    # Forward, keeping what each layer's backward needs: a Linear layer's input, an
    # activation's output, a Dropout layer's scaled mask.
    kept: list[torch.Tensor] = []
    x = inputs
    for layer in model:
        if isinstance(layer, nn.Linear):
            kept.append(x)
            x = layer(x)
        elif isinstance(layer, nn.Dropout):
            # Drawn as torch's CPU dropout draws it, so both passes see the same mask.
            mask = torch.empty_like(x).bernoulli_(1 - layer.p).div_(1 - layer.p)
            kept.append(mask)
            x = x * mask
        else:
            x = layer(x)
            kept.append(x)
    logits = x
    log_probabilities = logits.log_softmax(1)
    loss = F.nll_loss(log_probabilities, labels)

    upstream = (log_probabilities.exp() - F.one_hot(labels, logits.shape[1])) / len(labels)
    for index in reversed(range(len(model))):
        layer, saved = model[index], kept[index]
        if isinstance(layer, nn.Linear):
            layer.weight.grad = upstream.t() @ saved
            layer.bias.grad = upstream.sum(0)
            if index > 0:  # the input images need no gradient
                upstream = upstream @ layer.weight
        elif isinstance(layer, nn.Dropout):
            upstream = upstream * saved
        else:
            upstream = upstream * activation_slope(layer, saved)
    return loss, logits


def activation_slope(layer: nn.Module, output: torch.Tensor) -> torch.Tensor:
    """The activation's derivative at each unit, from its output (what the forward pass kept)."""
    if isinstance(layer, nn.ReLU):
        return output > 0
    if isinstance(layer, nn.LeakyReLU):  # output > 0 exactly where input > 0 for a positive slope
        return torch.where(output > 0, 1.0, layer.negative_slope)
    if isinstance(layer, nn.Tanh):
        return 1 - output.square()
    if isinstance(layer, nn.Sigmoid):
        return output * (1 - output)
    raise TypeError(f"no hand-written slope for {type(layer).__name__}: params validation should have refused it")
