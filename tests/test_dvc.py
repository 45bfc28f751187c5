"""dvc.yaml tracks exactly what each stage uses, and `dvc repro` rebuilds exactly what a change touches."""

from __future__ import annotations

import ast
import json
import os
import subprocess

import pytest
import yaml

from pipeline.__main__ import cli
from pipeline.lib.layout import stage_path, stages
from pipeline.lib.staleness import declared_path

from conftest import PROJECT_ROOT, dvc

DVC_YAML = stages(PROJECT_ROOT)
STAGES = list(DVC_YAML)
COMMANDS = sorted(
    path.name for path in (PROJECT_ROOT / "pipeline/commands").iterdir() if (path / "command.py").exists()
)


def module_path(module: str) -> str:
    path = module.replace(".", "/")
    return f"{path}/__init__.py" if (PROJECT_ROOT / path).is_dir() else f"{path}.py"


def pipeline_imports(module: str) -> set[str]:
    tree = ast.parse((PROJECT_ROOT / module_path(module)).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline."):
            found.add(node.module)
    return found


def code_closure(module: str) -> set[str]:
    """Every pipeline module `module` imports, directly or not, as file paths, with the __init__ of
    every package on the way, which each import runs first (pipeline/__init__.py pins the numerics)."""
    seen, todo = {module}, [module]
    while todo:
        for imported in pipeline_imports(todo.pop()) - seen:
            seen.add(imported)
            todo.append(imported)
    packages = {name.rsplit(".", depth)[0] for name in seen for depth in range(1, name.count(".") + 1)}
    return {module_path(name) for name in seen | packages}


def modules_under(folder: str) -> list[str]:
    return [
        ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts) for path in (PROJECT_ROOT / folder).rglob("*.py")
    ]


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_depends_on_exactly_its_code(stage):
    assert DVC_YAML[stage]["cmd"].startswith(f"python -m pipeline.stages.{stage} ")
    declared = {dep for dep in DVC_YAML[stage]["deps"] if dep.startswith("pipeline/")}
    assert declared == code_closure(f"pipeline.stages.{stage}")


def test_stages_never_import_each_other_or_a_command():
    assert sorted(modules_under("pipeline/stages")) == sorted(
        ["pipeline.stages.__init__", *(f"pipeline.stages.{s}" for s in STAGES)]
    )
    for stage in STAGES:
        imported = pipeline_imports(f"pipeline.stages.{stage}")
        assert not {name for name in imported if name.startswith(("pipeline.stages", "pipeline.commands"))}


def test_the_library_serves_stages_and_commands_and_imports_neither():
    for module in modules_under("pipeline/lib"):
        assert all(name.startswith("pipeline.lib.") for name in pipeline_imports(module)), module


def test_a_command_module_is_used_by_its_command_alone():
    assert COMMANDS == sorted(cli.list_commands(None))  # each folder is a command of `python -m pipeline`
    for command in COMMANDS:
        for module in modules_under(f"pipeline/commands/{command}"):
            foreign = {n for n in pipeline_imports(module) if n.startswith("pipeline.commands.")}
            assert all(n.startswith(f"pipeline.commands.{command}.") for n in foreign), module


def test_the_model_artifact_is_the_file_train_writes():
    artifacts = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["artifacts"]
    assert {name: (a["path"], a["type"]) for name, a in artifacts.items()} == {
        "mnist-mlp": (stage_path("train", "--model", PROJECT_ROOT).as_posix(), "model")
    }


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_depends_on_its_own_params_sections(stage):
    expected = {"download": [{"params.yaml": None}], "train": ["model", "train"]}.get(stage, [stage])
    assert DVC_YAML[stage].get("params") == expected


def ran(output: str) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in output]


@pytest.mark.slow
def test_repro_then_noop_then_experiment_checks_params_and_reruns_training(project, reproduced_project):
    assert ran((reproduced_project.parent / "repro.log").read_text()) == STAGES  # the project's first dvc repro
    metrics_file = stage_path("evaluate", "--metrics", project)
    metrics = json.loads((project / metrics_file).read_text())["test"]
    assert metrics["accuracy"] > 0.8  # 2,000 real images, 2 epochs, 32 hidden units

    assert ran(dvc(project, "repro")) == []  # its results committed, and nothing changed since

    output = dvc(project, "exp", "run", "-S", "train.optimizer.lr=0.01")
    assert ran(output) == ["download", "train", "evaluate", "analyze"]  # download: every params change is checked
    assert "Stage 'preprocess' didn't change, skipping" in output  # the download kept its own files
    diff = dvc(project, "metrics", "diff", "--json")
    assert metrics_file.as_posix() in json.loads(diff)
    assert stage_path("train", "--timing").as_posix() in json.loads(diff)  # what each training took
    shown = json.loads(dvc(project, "exp", "show", "--json"))
    assert len(shown) >= 1 and "train.optimizer.lr" in dvc(project, "params", "diff")

    recipe = next(
        line
        for line in (PROJECT_ROOT / "docs/experiments.md").read_text().splitlines()
        if line.startswith("dvc exp show --only-changed")
    )
    table = subprocess.run(
        recipe, shell=True, cwd=project, capture_output=True, text=True, env=os.environ | {"COLUMNS": "400"}
    )
    assert table.returncode == 0, table.stderr
    assert (
        "train.optimizer.lr" in table.stdout and "test.accuracy" in table.stdout and "train_seconds" not in table.stdout
    )
    assert max(len(line.rstrip()) for line in table.stdout.splitlines()) <= 120, table.stdout


def test_metrics_are_the_results_and_the_training_seconds():
    """dvc exp show and dvc metrics diff show results and how long each training took, not
    statistics of the data; every git-tracked output of a run-cached stage is a metric or a plot."""
    metrics = {declared_path(m) for stage in DVC_YAML.values() for m in stage.get("metrics", [])}
    assert metrics == {
        stage_path("evaluate", "--metrics").as_posix(),
        stage_path("evaluate", "--per-class").as_posix(),
        stage_path("evaluate", "--per-class-train").as_posix(),
        (stage_path("train", "--live") / "metrics.json").as_posix(),
        stage_path("train", "--timing").as_posix(),
    }
    for name, stage in DVC_YAML.items():
        outs = [out if isinstance(out, str) else next(iter(out.values())) for out in stage.get("outs", [])]
        persisted = [out for out in outs if isinstance(out, dict) and out.get("persist")]
        uncached = [out for out in outs if isinstance(out, dict) and out.get("cache") is False]
        if name in ("train", "evaluate", "analyze"):
            assert not persisted and not uncached, name  # DVC's run-cache skips such a stage
        else:
            assert persisted and len(persisted) == len(outs), name  # bad params never remove data
