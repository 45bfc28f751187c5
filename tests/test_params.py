"""params.yaml is validated before any work, with one line naming the key and what is allowed."""

import pytest

from conftest import PROJECT_ROOT, small_params, write_params
from pipeline.lib.params import ParamsError, load_params


def error_for(tmp_path, **overrides) -> str:
    path = write_params(tmp_path / "params.yaml", small_params(**overrides))
    with pytest.raises(ParamsError) as failure:
        load_params(path)
    message = str(failure.value)
    assert "\n" not in message
    return message


def test_committed_params_are_valid():
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params.model.hidden_sizes == [250, 100]
    assert params.train.optimizer.name == "adam" and params.train.optimizer.lr == 0.001


def test_unknown_key_lists_the_allowed_ones(tmp_path):
    message = error_for(tmp_path, train={"optimizer": {"learning_rate": 0.1}})
    assert "train.optimizer.learning_rate: unknown key" in message
    assert "allowed here: name, lr, momentum, nesterov, weight_decay" in message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"train": {"optimizer": {"lr": 0}}}, "train.optimizer.lr: Input should be greater than 0"),
        ({"train": {"optimizer": {"lr": "fast"}}}, "train.optimizer.lr: Input should be a valid number"),
        ({"split": {"val_fraction": 1.0}}, "split.val_fraction: Input should be less than 1"),
        ({"model": {"hidden_sizes": [64, 0]}}, "model.hidden_sizes.1: Input should be greater than or equal to 1"),
        ({"model": {"activation": "swish"}}, "model.activation: Input should be 'relu', 'tanh', 'sigmoid'"),
        ({"train": {"epochs": 2.5}}, "train.epochs: Input should be a valid integer"),
        ({"model": {"batch_norm": "yes"}}, "model.batch_norm: Input should be a valid boolean"),
        ({"train": {"optimizer": {"nesterov": True}}}, "nesterov: true needs name: sgd and momentum > 0"),
    ],
)
def test_bad_values_name_the_key(tmp_path, overrides, expected):
    assert expected in error_for(tmp_path, **overrides)


def test_missing_key(tmp_path):
    params = small_params()
    del params["train"]["batch_size"]
    with pytest.raises(ParamsError, match="train.batch_size: missing"):
        load_params(write_params(tmp_path / "params.yaml", params))


def test_yaml_syntax_error_names_the_line(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML at line 3"):
        load_params(tmp_path / "params.yaml")


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text", ["1e-6", "1e-06", "1E-6", "2.5e-3"])
def test_scientific_notation_is_a_number(tmp_path, text):
    """`dvc exp run -S train.optimizer.lr=0.000001` writes 1e-06, which YAML 1.1 would read as a string."""
    path = write_params(tmp_path / "params.yaml", small_params())
    path.write_text(path.read_text().replace("lr: 0.001", f"lr: {text}"))
    assert load_params(path).train.optimizer.lr == float(text)
