"""docs/params.md is `python -m pipeline params`'s output: every key of params.yaml, described."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.commands.params import command
from pipeline.lib.params import Params, read_params_file

from conftest import PROJECT_ROOT


def test_the_committed_reference_is_the_generated_one(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    assert (PROJECT_ROOT / "docs/params.md").read_text() == command.reference(), (
        "regenerate: python -m pipeline params --out docs/params.md"
    )


def leaves(values: dict, prefix: str = "") -> list[str]:
    return [
        key
        for name, value in values.items()
        for key in (leaves(value, f"{prefix}{name}.") if isinstance(value, dict) else [f"{prefix}{name}"])
    ]


def test_every_key_of_params_yaml_has_a_row_with_a_description():
    values = read_params_file(PROJECT_ROOT / "params.yaml")
    described = {key: field.description for key, _, field in command.rows(Params, values)}
    assert sorted(described) == sorted(leaves(values))
    assert all(described.values())


@pytest.mark.parametrize(
    "key, allowed",
    [
        ("split.val_fraction", "number >= 0 and < 1"),
        ("split.train_subset", "null or integer >= 10"),
        ("model.hidden_sizes", "list, each integer >= 1"),
        ("model.activation", "`relu`, `tanh`, `sigmoid`, `gelu`, `leaky_relu`"),
        ("model.batch_norm", "true or false"),
        ("train.augment.rotation_degrees", "number >= 0 and <= 180"),
    ],
)
def test_allowed_values_come_from_the_model(key, allowed, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    row = next(line for line in command.reference().splitlines() if line.startswith(f"| `{key}` |"))
    assert row.split(" | ")[2] == allowed


def test_the_command_prints_the_page(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    result = CliRunner().invoke(command.main, [])
    assert result.exit_code == 0 and result.stdout == command.reference()
