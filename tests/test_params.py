"""params.yaml is validated before any work, with one line naming the key and what is allowed."""

import pytest

from pipeline.lib.params import ParamsError, load_params, read_yaml

from conftest import PROJECT_ROOT, small_params, write_params


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
    assert "allowed here: name, lr, momentum, nesterov, weight_decay, alpha" in message


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
        ({"train": {"optimizer": {"alpha": 1.0}}}, "train.optimizer.alpha: Input should be less than 1"),
        ({"model": {"init_gain": 4.0}}, "model: init_gain other than 1 needs init: glorot"),
        ({"model": {"init": "glorot", "init_gain": 0}}, "model.init_gain: Input should be greater than 0"),
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


def test_unknown_top_level_key(tmp_path):
    path = write_params(tmp_path / "params.yaml", small_params())
    path.write_text(path.read_text() + "foo: 1\n")
    with pytest.raises(
        ParamsError,
        match=r"^\S+: foo: unknown key \(allowed here: preprocess, split, model, train, evaluate, analyze\)$",
    ):
        load_params(path)


def test_a_merge_key_takes_an_anchors_keys_and_the_keys_beside_it_override_them(tmp_path):
    path = tmp_path / "shared.yaml"
    path.write_text("a: &shared {lr: 0.01, epochs: 20}\nb: {<<: *shared, lr: 0.001}\nc:\n  <<: *shared\n  seed: 1\n")
    assert read_yaml(path, fix="") == {
        "a": {"lr": 0.01, "epochs": 20},
        "b": {"lr": 0.001, "epochs": 20},
        "c": {"lr": 0.01, "epochs": 20, "seed": 1},
    }
    path.write_text("a: &shared {lr: 0.01}\nb: {<<: *shared, lr: 0.001, lr: 0.1}\n")
    with pytest.raises(ParamsError, match=r"key 'lr' appears twice \(line 2\)"):
        read_yaml(path, fix="")


@pytest.mark.parametrize(("where", "line"), [("train:\n", "  epochs: 7\n"), ("", "evaluate:\n  batch_size: 10\n")])
def test_a_key_given_twice_is_refused(tmp_path, where, line):
    """DVC refuses duplicate keys; a stage run by hand must too, not keep the last value."""
    path = write_params(tmp_path / "params.yaml", small_params())
    text = path.read_text()
    path.write_text(text.replace(where, where + line, 1) if where else text + line)
    with pytest.raises(ParamsError, match=r"key '(epochs|evaluate)' appears twice \(line \d+\): keep one of them"):
        load_params(path)


def test_cycling_momentum_needs_onecycle(tmp_path):
    message = error_for(tmp_path, train={"lr_schedule": {"name": "cosine", "cycle_momentum": True}})
    assert "train.lr_schedule: cycle_momentum: true needs name: onecycle" in message


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"model": {"batch_norm": True}}, "model.batch_norm"),
        ({"model": {"architecture": "cnn"}}, "model.architecture"),
        ({"model": {"activation": "gelu"}}, "model.activation"),
        ({"train": {"loss": "mse"}}, "train.loss"),
        ({"train": {"l1": 1e-5, "l2": 1e-4}}, "train.l1, train.l2"),
    ],
)
def test_manual_backward_refuses_what_it_does_not_cover(tmp_path, overrides, named):
    overrides.setdefault("train", {})["backward"] = "manual"
    message = error_for(tmp_path, **overrides)
    assert f"params.yaml: train.backward: manual does not cover {named} (it covers" in message
    assert message.endswith("set train.backward: autograd")
    load_params(write_params(tmp_path / "ok.yaml", small_params(train={"backward": "manual"}, model={"dropout": 0.2})))


@pytest.mark.parametrize(
    ("train", "named"),
    [
        ({"keep": "best"}, "train.keep: best"),
        ({"keep": "last", "early_stopping_patience": 2}, "train.early_stopping_patience"),
    ],
)
def test_no_validation_set_refuses_what_needs_one(tmp_path, train, named):
    message = error_for(tmp_path, split={"val_fraction": 0.0}, train=train)
    assert f"split.val_fraction: 0 leaves no validation set, which {named} needs: set train.keep: last" in message
    load_params(write_params(tmp_path / "ok.yaml", small_params(split={"val_fraction": 0.0}, train={"keep": "last"})))
