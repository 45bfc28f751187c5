"""Architecture and initialization knobs change the network as claimed; the model file loads safely."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.lib.errors import PipelineError
from pipeline.lib.model import build_model, first_layer_weights, probabilities, weighted_layers
from pipeline.lib.model_file import fingerprint, load_model, save_model
from pipeline.lib.normalization import Normalization
from pipeline.lib.params import Model

from conftest import small_params


def model_params(**changes) -> Model:
    return Model.model_validate({**small_params()["model"], **changes})


def count(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def test_empty_hidden_sizes_is_logistic_regression():
    network = build_model(model_params(hidden_sizes=[]))
    assert count(network) == 7850 and len(network) == 1


def test_cnn_is_seed_002s_lenet_with_the_head_of_hidden_sizes():
    network = build_model(model_params(architecture="cnn", hidden_sizes=[120, 84]))
    convolutions = [m for m in network if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convolutions] == [(1, 6, (5, 5)), (6, 16, (5, 5))]
    assert [m.in_features for m in network if isinstance(m, nn.Linear)] == [256, 120, 84]
    assert count(network) == (6 * 25 + 6) + (16 * 6 * 25 + 16) + (256 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert network(torch.randn(3, 784)).shape == (3, 10)
    assert first_layer_weights(network).shape == (6, 25)  # kernels, shown as 5x5 images by analyze


@pytest.mark.parametrize("init", ["gaussian", "uniform", "glorot", "kaiming"])
def test_init_draws_the_convolutions_too(init):
    torch.manual_seed(0)
    network = build_model(model_params(architecture="cnn", init=init))
    assert all(torch.count_nonzero(m.bias) == 0 for m in network if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_tutorial_architecture():
    network = build_model(model_params(hidden_sizes=[250, 100]))
    assert [m.out_features for m in network if isinstance(m, nn.Linear)] == [250, 100, 10]
    assert count(network) == 784 * 250 + 250 + 250 * 100 + 100 + 100 * 10 + 10


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "leaky_relu"])
def test_activation_is_used(activation):
    network = build_model(model_params(activation=activation))
    assert type(network[1]).__name__.lower().replace("_", "") == activation.replace("_", "")


def test_batch_norm_and_dropout_layers():
    network = build_model(model_params(hidden_sizes=[64, 32], batch_norm=True, dropout=0.2))
    kinds = [type(m).__name__ for m in network]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]


def test_dropout_is_active_in_training_and_off_in_evaluation():
    torch.manual_seed(0)
    network = build_model(model_params(hidden_sizes=[512], dropout=0.5))
    inputs = torch.randn(4, 784)
    network.train()
    assert not torch.equal(network(inputs), network(inputs))
    network.eval()
    assert torch.equal(network(inputs), network(inputs))


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "leaky_relu"])
def test_glorot_is_the_textbook_one_for_every_activation(activation):
    """U(+-sqrt(6 / (fan_in + fan_out))): variance 2 / (fan_in + fan_out), as Keras and the NumPy "
    "assignments draw it."""
    torch.manual_seed(0)
    network = build_model(model_params(hidden_sizes=[500], init="glorot", activation=activation))
    weight = network[0].weight
    assert weight.var().item() == pytest.approx(2 / (784 + 500), rel=0.02)
    assert weight.abs().max().item() <= (6 / (784 + 500)) ** 0.5
    assert torch.count_nonzero(network[0].bias) == 0


def test_glorot_gain_scales_the_bound_of_every_layer():
    """Glorot and Bengio's sigmoid variant: the same draw, its bound times init_gain."""
    torch.manual_seed(0)
    plain = build_model(model_params(hidden_sizes=[500], init="glorot", activation="sigmoid"))
    torch.manual_seed(0)
    scaled = build_model(model_params(hidden_sizes=[500], init="glorot", activation="sigmoid", init_gain=4.0))
    for layer, scaled_layer in zip(weighted_layers(plain), weighted_layers(scaled), strict=True):
        assert torch.allclose(scaled_layer.weight, 4 * layer.weight)
        assert torch.count_nonzero(scaled_layer.bias) == 0
    fan_in, fan_out = 784, 500
    assert scaled[0].weight.abs().max().item() > 0.99 * 4 * (6 / (fan_in + fan_out)) ** 0.5


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "leaky_relu"])
@pytest.mark.parametrize("init", ["default", "gaussian", "uniform", "glorot", "kaiming"])
def test_every_init_works_with_every_activation(init, activation):
    network = build_model(model_params(init=init, activation=activation))
    assert torch.isfinite(network(torch.randn(4, 784))).all()


def test_gaussian_init_uses_the_given_std_and_zero_biases():
    torch.manual_seed(0)
    network = build_model(model_params(hidden_sizes=[64], init="gaussian", init_std=0.1))
    assert network[0].weight.std().item() == pytest.approx(0.1, rel=0.02)
    assert torch.count_nonzero(network[2].bias) == 0


def test_kaiming_variance():
    torch.manual_seed(0)
    network = build_model(model_params(hidden_sizes=[500], init="kaiming"))
    assert network[0].weight.var().item() == pytest.approx(2 / 784, rel=0.03)


def test_model_file_round_trip_with_weights_only(tmp_path):
    params = model_params(hidden_sizes=[16, 8], batch_norm=True)
    network = build_model(params)
    normalization = Normalization("standard", np.full(784, 0.13, np.float32), np.full(784, 0.31, np.float32))
    save_model(tmp_path / "m.pt", network, params, normalization)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["class_names"] == [str(d) for d in range(10)]
    loaded = load_model(tmp_path / "m.pt")
    inputs = torch.randn(3, 784)
    network.eval()
    assert torch.equal(loaded.network(inputs), network(inputs))
    assert np.array_equal(loaded.normalization.std, normalization.std) and not loaded.network.training


def test_same_model_same_bytes_whatever_the_file_name(tmp_path):
    params = model_params()
    network = build_model(params)
    normalization = Normalization("unit", np.zeros(784, np.float32), np.ones(784, np.float32))
    save_model(tmp_path / "a.pt", network, params, normalization)
    save_model(tmp_path / "b.pt", network, params, normalization)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    torch.save({"payload": RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(PipelineError, match=r"cannot be loaded safely \(it holds code or objects that safe loading"):
        load_model(tmp_path / "evil.pt")


@pytest.mark.parametrize("content", [b"", b"not a model at all", pickle.dumps({"x": 1})])
def test_a_file_that_is_not_a_model_is_refused(tmp_path, content):
    (tmp_path / "m.pt").write_bytes(content)
    with pytest.raises(PipelineError, match="retrain with dvc repro train"):
        load_model(tmp_path / "m.pt")


def test_a_torch_file_of_another_kind_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "m.pt")
    with pytest.raises(PipelineError, match="not a model file of this pipeline"):
        load_model(tmp_path / "m.pt")


def test_changed_weights_fail_the_integrity_check(tmp_path):
    params = model_params()
    save_model(
        tmp_path / "m.pt",
        build_model(params),
        params,
        Normalization("unit", np.zeros(784, np.float32), np.ones(784, np.float32)),
    )
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["state_dict"]["0.weight"][0, 0] += 1.0
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(PipelineError, match="fails its integrity check"):
        load_model(tmp_path / "m.pt")


def test_uniform_init_bound_is_one_over_sqrt_fan_in():
    torch.manual_seed(0)
    network = build_model(model_params(hidden_sizes=[300], init="uniform"))
    bound = 1 / 784**0.5
    weight = network[0].weight
    assert weight.abs().max().item() <= bound and weight.abs().max().item() > 0.99 * bound
    assert weight.var().item() == pytest.approx(bound**2 / 3, rel=0.02)


def saved_payload(tmp_path) -> dict:
    params = model_params()
    normalization = Normalization("unit", np.zeros(784, np.float32), np.ones(784, np.float32))
    save_model(tmp_path / "m.pt", build_model(params), params, normalization)
    return torch.load(tmp_path / "m.pt", weights_only=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.pop("class_names"), "is not a model file of this pipeline (no class_names)"),
        (lambda p: p.update(format_version=3), "is model file format 3, this pipeline reads 4"),
        (lambda p: p.update(input={"ink": "black on white"}), "states another input convention"),
        (lambda p: p["architecture"].update(activation="swish"), "its architecture does not validate"),
        (lambda p: p["state_dict"].pop("0.bias"), "its weights do not fit its architecture"),
    ],
)
def test_each_way_a_model_file_fails_has_its_own_message(tmp_path, change, message):
    """Refingerprinted after the change, so only the named problem remains."""
    payload = saved_payload(tmp_path)
    change(payload)
    payload["sha256"] = fingerprint(payload)
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(PipelineError, match="retrain with dvc repro train") as raised:
        load_model(tmp_path / "m.pt")
    assert message in str(raised.value)


@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_probabilities_of_no_rows_are_an_empty_table_of_classes(architecture):
    """A split without a subset has no left-out images; evaluate still scores them, as nothing."""
    network = build_model(Model(**small_params()["model"] | {"architecture": architecture}))
    rows = np.random.default_rng(0).normal(size=(5, 784)).astype(np.float32)
    assert probabilities(network, rows[:0], 2).shape == (0, 10)
    assert probabilities(network, rows, 2).shape == (5, 10)
