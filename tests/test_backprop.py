"""The hand-written backward pass gives autograd's loss and gradients, and is used exactly where it applies."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import small_params
from pipeline.lib.backprop import HandWrittenStep, autograd_step, gradient_step
from pipeline.lib.model import build_mlp
from pipeline.lib.params import Params


def params(model: dict | None = None, **train) -> Params:
    return Params.model_validate(small_params(model=model or {}, train=train))


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(32, 784, generator=generator), torch.randint(0, 10, (32,), generator=generator)


def both_steps(config: Params, seed: int) -> list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]:
    """Loss, logits and gradients from each pass, on identical copies of one model and two batches."""
    torch.manual_seed(0)
    model = build_mlp(config.model).train()
    outcomes = []
    for make_step in (HandWrittenStep, lambda network: autograd_step(network, config.train)):
        network = copy.deepcopy(model)
        step = make_step(network)
        for index in range(2):  # the second call must overwrite the first call's gradients
            torch.manual_seed(seed + index)  # the same dropout masks for both passes
            loss, logits = step(*batch(seed + index))
        outcomes.append((loss, logits, [parameter.grad.clone() for parameter in network.parameters()]))
    return outcomes


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("hidden_sizes", [[], [40], [50, 30]])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_hand_written_gradients_equal_autograd(activation, hidden_sizes, dropout):
    config = params({"activation": activation, "hidden_sizes": hidden_sizes, "dropout": dropout})
    (loss, logits, gradients), (expected_loss, expected_logits, expected_gradients) = both_steps(config, seed=7)
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)
    torch.testing.assert_close(logits, expected_logits)
    assert len(gradients) == len(expected_gradients) == 2 * (len(hidden_sizes) + 1)
    for gradient, expected in zip(gradients, expected_gradients):
        torch.testing.assert_close(gradient, expected, rtol=1e-4, atol=1e-6)
    assert not loss.requires_grad and not logits.requires_grad


@pytest.mark.parametrize(
    ("model", "train", "hand_written"),
    [
        ({}, {}, True),
        ({"dropout": 0.2, "activation": "tanh"}, {}, True),
        ({"batch_norm": True}, {}, False),
        ({"activation": "gelu"}, {}, False),
        ({}, {"loss": "mse"}, False),
        ({}, {"l1": 1e-5}, False),
        ({}, {"l2": 1e-4}, False),
    ],
)
def test_gradient_step_uses_the_hand_written_pass_only_where_it_applies(model, train, hand_written):
    config = params(model, **train)
    step = gradient_step(build_mlp(config.model), config.train)
    assert isinstance(step, HandWrittenStep) == hand_written
