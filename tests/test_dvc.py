"""dvc.yaml tracks exactly what each stage uses, and `dvc repro` rebuilds exactly what a change touches."""

from __future__ import annotations

import ast
import json

import pytest
import yaml

from conftest import PROJECT_ROOT, dvc, git

STAGES = ["download", "preprocess", "split", "train", "evaluate", "analyze"]
DVC_YAML = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


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
    """Every pipeline module `module` imports, directly or not, as file paths; with the package's
    __init__, which every import of it runs first (it pins the numerics)."""
    seen, todo = {module, "pipeline"}, [module, "pipeline"]
    while todo:
        for imported in pipeline_imports(todo.pop()) - seen:
            seen.add(imported)
            todo.append(imported)
    return {module_path(name) for name in seen}


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_depends_on_exactly_its_code(stage):
    declared = {dep for dep in DVC_YAML[stage]["deps"] if dep.startswith("pipeline/")}
    assert declared == code_closure(f"pipeline.{stage}")


def test_stages_never_import_each_other():
    for stage in STAGES:
        assert not {f"pipeline.{other}" for other in STAGES} & pipeline_imports(f"pipeline.{stage}")


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_depends_on_its_own_params_sections(stage):
    expected = {"download": None, "train": ["model", "train"]}.get(stage, [stage])
    assert DVC_YAML[stage].get("params") == expected


def ran(output: str) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in output]


@pytest.mark.slow
def test_repro_then_noop_then_experiment_reruns_only_training(project):
    assert ran(dvc(project, "repro")) == STAGES
    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    assert metrics["accuracy"] > 0.8  # 2,000 real images, 2 epochs, 32 hidden units
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline")

    assert ran(dvc(project, "repro")) == []

    output = dvc(project, "exp", "run", "-S", "train.optimizer.lr=0.01")
    assert ran(output) == ["train", "evaluate", "analyze"]
    assert "didn't change, skipping" in output
    diff = dvc(project, "metrics", "diff", "--json")
    assert "reports/evaluate/metrics.json" in json.loads(diff)
    shown = json.loads(dvc(project, "exp", "show", "--json"))
    assert len(shown) >= 1 and "train.optimizer.lr" in dvc(project, "params", "diff")
