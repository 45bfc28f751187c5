"""The textbook backward pass gives autograd's loss and gradients, and runs only where it is chosen "
"and covers the setup."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pipeline.lib import training
from pipeline.lib.backprop import loss_and_gradients
from pipeline.lib.model import build_model
from pipeline.lib.params import MANUAL_BACKWARD_ACTIVATIONS, Params
from pipeline.lib.storage import Dataset
from pipeline.lib.training import train

from conftest import small_params


def params(model: dict | None = None, **train) -> Params:
    return Params.model_validate(small_params(model=model or {}, train=train))


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(32, 784, generator=generator), torch.randint(0, 10, (32,), generator=generator)


def autograd_loss_and_gradients(model, inputs, labels):
    logits = model(inputs)
    loss = F.cross_entropy(logits, labels)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss.detach(), logits.detach()


def both_passes(config: Params, seed: int) -> list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]:
    """Loss, logits and gradients from each pass, on identical copies of one model and two batches."""
    torch.manual_seed(0)
    model = build_model(config.model).train()
    outcomes = []
    for backward in (loss_and_gradients, autograd_loss_and_gradients):
        network = copy.deepcopy(model)
        for index in range(2):  # the second call must replace the first call's gradients
            torch.manual_seed(seed + index)  # the same dropout masks for both passes
            loss, logits = backward(network, *batch(seed + index))
        outcomes.append((loss, logits, [parameter.grad.clone() for parameter in network.parameters()]))
    return outcomes


@pytest.mark.parametrize("activation", MANUAL_BACKWARD_ACTIVATIONS)
@pytest.mark.parametrize("hidden_sizes", [[], [40], [50, 30]])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_hand_written_gradients_equal_autograd(activation, hidden_sizes, dropout):
    config = params({"activation": activation, "hidden_sizes": hidden_sizes, "dropout": dropout}, backward="manual")
    (loss, logits, gradients), (expected_loss, expected_logits, expected_gradients) = both_passes(config, seed=7)
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    torch.testing.assert_close(logits, expected_logits)
    assert len(gradients) == len(expected_gradients) == 2 * (len(hidden_sizes) + 1)
    for gradient, expected in zip(gradients, expected_gradients):
        torch.testing.assert_close(gradient, expected, rtol=1e-4, atol=1e-6)
    assert not loss.requires_grad and not logits.requires_grad


def trained_weights(config: Params) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    data = Dataset(torch.randn(256, 784, generator=generator), torch.randint(0, 10, (256,), generator=generator))
    torch.manual_seed(0)
    model = build_model(config.model)
    train(model, data, data, config.train, torch.full((784,), -0.4), lambda _: None)
    return [parameter.detach().clone() for parameter in model.parameters()]


@pytest.mark.parametrize("backward", ["autograd", "manual"])
def test_the_training_loop_runs_the_pass_it_is_told_to(backward, monkeypatch):
    calls = []

    def counted(*args):
        calls.append(1)
        return loss_and_gradients(*args)

    monkeypatch.setattr(training, "loss_and_gradients", counted)
    weights = trained_weights(params(backward=backward, epochs=1))
    assert len(calls) == (256 // 32 if backward == "manual" else 0)
    monkeypatch.undo()
    other = trained_weights(params(backward={"autograd": "manual", "manual": "autograd"}[backward], epochs=1))
    for mine, theirs in zip(weights, other):
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-4)  # the same training, step for step
