"""The numbers and lists the README and the docs quote are those of the files that hold them: the
committed metrics, studies (the seeds study among them) and bench result, and the code's own modules."""

from __future__ import annotations

import json
import re

import pytest

from pipeline.lib.revisions import read_at

from conftest import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()


def read_json(path: str) -> dict:
    return json.loads((PROJECT_ROOT / path).read_text())


def percent(value: float, places: int = 2) -> str:
    return f"{100 * value:.{places}f}%"


def bench_line(label: str) -> str:
    """The line of the committed bench result that starts with `label`."""
    lines = (PROJECT_ROOT / "docs/bench.txt").read_text().splitlines()
    (line,) = [line for line in lines if label in line]
    return line


def test_the_readme_results_are_the_committed_run():
    """Read from the last commit: README command 1 on another processor rewrites reports/ with that
    machine's numbers (docs/reproducibility.md), and command 2 may follow it in the same clone."""
    test = json.loads(read_at("HEAD", "reports/evaluate/metrics.json", PROJECT_ROOT))["test"]
    training = json.loads(read_at("HEAD", "reports/train/metrics.json", PROJECT_ROOT))
    row = next(line for line in README.splitlines() if line.startswith("| test accuracy |"))
    assert f"**{percent(test['accuracy'])}** ({test['errors']} errors in 10,000" in row
    assert f"| test loss, macro F1 | {test['loss']:.4f}, {test['macro_f1']:.4f} |" in README
    assert f"| kept epoch | {training['kept_epoch']} of {training['epochs_run']}," in README
    assert f"(validation accuracy {percent(training['val']['accuracy'])})" in README
    assert f"{training['parameters']:,} parameters" in README


def test_the_seed_spread_quoted_is_the_seeds_study():
    from pipeline.lib.seed_spread import SEED_STUDY, seed_spread

    (arm,) = read_json(SEED_STUDY.as_posix())["arms"]
    mean, std = arm["mean"]["test_accuracy"], arm["std"]["test_accuracy"]
    spread = f"{arm['runs']} seeds: mean {percent(mean)}, standard deviation {100 * std:.2f} points"
    assert spread in README.replace("ten seeds", "10 seeds")
    reproducibility = (PROJECT_ROOT / "docs/reproducibility.md").read_text()
    assert f"test accuracy {percent(mean)} ± {100 * std:.2f}" in reproducibility
    tolerance = 3 * seed_spread((PROJECT_ROOT / SEED_STUDY).read_text()).of_difference("test_accuracy")
    assert f"within **{100 * tolerance:.2f} points** passes" in reproducibility


def test_the_accurate_mlp_numbers_are_its_study():
    arms = {arm["arm"]: arm for arm in read_json("reports/studies/accurate_mlp.json")["arms"]}
    experiments = " ".join((PROJECT_ROOT / "docs/experiments.md").read_text().split())

    def spread(arm: dict) -> str:
        return f"{percent(arm['mean']['test_accuracy'])} ± {100 * arm['std']['test_accuracy']:.2f}"

    best = arms["h_1500_1000_500_60k_no_dropout"]  # the recipe the page gives
    assert f"**{spread(best)}** test accuracy" in experiments and best["runs"] == 3
    assert f"a mean of {best['mean']['train_seconds']:.0f} s of training a run" in experiments
    slowest = max(seed["train_seconds"] for seed in best["per_seed"].values())
    assert f"the slowest {slowest:.0f} s" in experiments
    fast = arms["h_1024_1024"]  # the best within 15 minutes
    assert f"{spread(fast)} in a mean of {fast['mean']['train_seconds']:.0f} s" in experiments
    longest = arms["h_1024_1024_epochs_152"]
    seconds, accuracy = longest["mean"]["train_seconds"], longest["mean"]["test_accuracy"]
    assert f"152 epochs ({seconds:.0f} s) reach {percent(accuracy)}" in experiments
    larger = arms["h_1500_1000_500_60k"]
    assert (
        f"{spread(larger)} over three seeds in {larger['mean']['train_seconds']:.0f} s of training a run" in experiments
    )
    headline = f"an MLP at {100 * best['mean']['test_accuracy']:.1f}%"
    assert headline in README and headline.replace("an MLP", "## An MLP") in experiments


@pytest.mark.parametrize(
    ("page", "label"),
    [
        ("README.md", "two trainings at once / one alone"),
        ("docs/performance.md", "two trainings at once / one alone"),
        ("docs/performance.md", "back to params already run"),
        ("docs/performance.md", "whole pipeline after the download"),
        ("docs/performance.md", "per run, beyond its training"),
        ("docs/reproducibility.md", "portable/pinned"),
        ("docs/cluster.md", "per run, beyond its training"),
    ],
)
def test_bench_numbers_quoted_are_the_committed_bench_result(page, label):
    measured = re.search(rf"{re.escape(label)}[^0-9]*(\d+\.\d+)(x| s)", bench_line(label))
    quoted = re.findall(rf"{re.escape(label)}[^0-9]*(\d+\.\d+)(x| s)", (PROJECT_ROOT / page).read_text())
    assert quoted and all(value == measured.groups() for value in quoted), (page, label, quoted)


def test_the_readme_file_tree_names_every_stage_command_and_library_module():
    from pipeline.__main__ import COMMANDS

    tree = README.split("## The files", 1)[1].split("```")[1]
    named = set(re.findall(r"[\w]+\.py|\w+/", tree))
    for folder in ("stages", "lib"):
        modules = {path.name for path in (PROJECT_ROOT / "pipeline" / folder).glob("*.py") if path.stem != "__init__"}
        assert modules <= named, f"the README's file tree misses {sorted(modules - named)}"
    folders = {path.name for path in (PROJECT_ROOT / "pipeline/commands").iterdir() if path.is_dir()} - {"__pycache__"}
    assert set(COMMANDS) == folders and {f"{name}/" for name in COMMANDS} <= named
    listed = {name for name in named if name.endswith(".py")}
    existing = {path.name for path in (PROJECT_ROOT / "pipeline").rglob("*.py")}
    assert listed <= existing, f"the README's file tree names modules that do not exist: {sorted(listed - existing)}"


def test_the_study_workflows_size_is_the_committed_studies_training_time():
    import yaml

    arms = [arm for path in (PROJECT_ROOT / "reports/studies").glob("*.json") for arm in read_json(path)["arms"]]
    runs = sum(arm["runs"] for arm in arms)
    seconds = sum(arm["mean"]["train_seconds"] * arm["runs"] for arm in arms)
    longest = max(arm["mean"]["train_seconds"] for arm in arms)
    job = yaml.safe_load((PROJECT_ROOT / ".github/workflows/study.yaml").read_text())["jobs"]["work"]
    workers, minutes = len(job["strategy"]["matrix"]["worker"]), job["timeout-minutes"]
    beyond = float(re.search(r"per run, beyond its training +(\d+\.\d) s", bench_line("per run, beyond")).group(1))
    hours = (seconds + runs * beyond) / workers / 3600
    cluster = " ".join((PROJECT_ROOT / "docs/cluster.md").read_text().split())
    assert f"their {runs} runs trained for {seconds:,.0f} s in all" in cluster
    assert f"so {workers} workers take about {hours:.1f} hours each" in cluster
    assert f"`timeout-minutes: {minutes}` leaves {minutes / 60 / hours:.1f} times that" in cluster
    assert f"trained for {longest:.0f} s." in cluster
