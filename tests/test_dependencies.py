"""Every package the code imports is declared in pyproject.toml, so a fresh install has it; every
command and stage answers -h and --version."""

from __future__ import annotations

import ast
import importlib
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from conftest import PROJECT_ROOT

OWN_MODULES = {"pipeline", "conftest", "idx_writer", "scratch_params", "servers"}


def imported_modules() -> dict[str, str]:
    """Top-level module -> the first file importing it, over pipeline/ and tests/ (imports inside
    functions included)."""
    found: dict[str, str] = {}
    for path in sorted([*PROJECT_ROOT.glob("pipeline/**/*.py"), *PROJECT_ROOT.glob("tests/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(PROJECT_ROOT)))
    return found


def normalized(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=;~! ]", requirement, maxsplit=1)[0]).lower()


def test_every_imported_package_is_a_declared_dependency():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    declared = {normalized(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    distributions = packages_distributions()
    undeclared = {}
    for module, where in imported_modules().items():
        if module in sys.stdlib_module_names or module in OWN_MODULES or module.startswith("test_"):
            continue
        if not {normalized(d) for d in distributions.get(module, [module])} & declared:
            undeclared[module] = where
    assert undeclared == {}, "imported but not declared in pyproject.toml"


def test_every_command_and_stage_answers_h_and_version():
    from click.testing import CliRunner

    from pipeline.__main__ import COMMANDS, cli
    from pipeline.lib.layout import stage_names

    runner = CliRunner()
    assert runner.invoke(cli, ["-h"]).exit_code == 0
    for name in COMMANDS:
        for option in ("-h", "--version"):
            result = runner.invoke(cli, [name, option])
            assert result.exit_code == 0 and result.output, (name, option, result.output)
    for stage in stage_names():
        command = importlib.import_module(f"pipeline.stages.{stage}").main
        assert runner.invoke(command, ["-h"]).output.startswith("Usage: ")
        assert "version" in runner.invoke(command, ["--version"]).output
