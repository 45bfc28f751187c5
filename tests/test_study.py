"""Studies: the declarations validate before any run, results come from DVC's record of the
experiments with mean, spread and noise, and reports/studies/index.md lists the generated tables."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import asdict

import pytest
import yaml
from click.testing import CliRunner
from matplotlib.colors import to_hex
from pydantic import ValidationError
from scipy import stats

from pipeline.commands.study.command import main
from pipeline.commands.study.plan import Studies, load_studies, runs
from pipeline.commands.study.results import (
    ArmResult,
    MetricFiles,
    baseline_commit,
    compare_to_first,
    figure,
    index_page,
    markdown_table,
    recorded_experiments,
    summarize,
)
from pipeline.commands.study.workers import experiment_command
from pipeline.lib.params import ParamsError, read_params_file

from conftest import PROJECT_ROOT, STUDIED_GROUP, dvc, git, head
from scratch_params import SCRATCH_TABLES

PARAMS = read_params_file(PROJECT_ROOT / "params.yaml")
FILES = MetricFiles(
    "reports/evaluate/metrics.json",
    "reports/train/metrics.json",
    "reports/timing/train.json",
    "reports/train/val.tsv",
    "reports/analyze/confused_pairs.json",
    "reports/evaluate/per_class.json",
    "reports/evaluate/per_class_train.json",
)


def studies(**study) -> Studies:
    declared = {
        "question": "q?",
        "source": "s",
        "arms": {"a": {}, "b": {"params": {"train.optimizer.lr": 0.01}}},
    } | study
    return Studies.model_validate({"seeds": [0, 1, 2], "studies": {"s": declared}})


def test_every_declared_run_validates_and_has_its_own_name():
    planned = runs(load_studies(), [], PARAMS)
    assert len({run.name for run in planned}) == len(planned) > 0
    assert all(run.overrides["train.seed"] == run.seed for run in planned)


def test_a_run_gets_the_settings_then_its_arm_then_its_seed():
    planned = runs(studies(settings={"train.epochs": 3, "train.optimizer.lr": 0.1}), [], PARAMS)
    b = next(run for run in planned if run.arm == "b" and run.seed == 2)
    assert b.name == "s-b-s2"
    assert b.overrides == {"train.epochs": 3, "train.optimizer.lr": 0.01, "train.seed": 2}
    assert b.overrides_as_text() == ["train.epochs=3", "train.optimizer.lr=0.01", "train.seed=2"]


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ({"settings": {"train.optimiser.lr": 0.1}}, "study s, arm a: train.optimiser.lr is not a key of params.yaml"),
        ({"settings": {"train.optimizer.lr": 0}}, "study s, arm a: train.optimizer.lr: Input should be greater than 0"),
    ],
)
def test_a_bad_declaration_fails_before_any_run(study, message):
    with pytest.raises(ParamsError, match=message):
        runs(studies(**study), [], PARAMS)


def test_fewer_than_two_seeds_or_an_unknown_study_is_refused():
    with pytest.raises(Exception, match="seeds"):
        Studies.model_validate({"seeds": [0], "studies": {}})  # no spread from one seed
    with pytest.raises(ParamsError, match="no study named nope: choose from s"):
        runs(studies(), ["nope"], PARAMS)


def recorded(
    name: str,
    accuracy: float,
    epoch: int = 3,
    diverged: dict | None = None,
    validated: bool = True,
    pool: float | None = None,
) -> dict:
    summary = {"train": {"accuracy": 0.99, "loss": 0.03}, "kept_epoch": epoch}
    if validated:  # split.val_fraction: 0 writes "val": null, which dvc exp show leaves out
        summary["val"] = {"accuracy": accuracy}
    evaluation = {"test": {"accuracy": accuracy, "loss": 1 - accuracy}}
    if pool is not None:  # runs from before evaluate scored the training pool have none
        evaluation["training_pool"] = {"accuracy": pool}
    metrics = {
        FILES.evaluation: {"data": evaluation},
        FILES.training_summary: {"data": summary | ({"diverged": diverged} if diverged else {})},
    }
    return {"rev": f"rev-of-{name}", "name": name, "data": {"metrics": metrics}, "error": None, "experiments": None}


def committed(revision: str, path: str) -> str:
    """What the experiment's commit holds outside the metrics: its seconds and its validation curve."""
    seed = int(revision[-1])
    if path == FILES.timing:
        return json.dumps({"train_seconds": 10.0 + seed})
    if path == FILES.confused_pairs:
        return json.dumps([{"pair": f"{n} as {9 - n}", "count": 20 - n} for n in range(8)])
    if path in (FILES.per_class, FILES.per_class_train):  # on the training images, each recall 0.05 higher
        higher = 0.05 if path == FILES.per_class_train else 0.0
        return json.dumps({str(d): {"recall": round(0.9 - abs(d - 4) / 100 + higher, 2)} for d in range(10)})
    assert path == FILES.val_curve
    return f"step\taccuracy\n0\t0.1\n1\t{0.8 + seed / 100}\n"


def exp_show(*revisions: dict) -> list[dict]:
    """The shape of `dvc exp show --json` (DVC 3): a workspace row, then the baseline with its experiments."""
    failed = {"rev": "def", "name": "s-b-s2", "data": {}, "error": {"type": "ReproductionError"}, "experiments": None}
    queued = {"rev": "abc", "name": "s-c-s0", "data": {"params": {}, "metrics": {}}, "error": None, "experiments": None}
    experiments = [{"name": rev["name"], "revs": [rev]} for rev in (*revisions, failed, queued)]
    return [
        {"rev": "workspace", "name": None, "data": {}, "experiments": None},
        {"rev": "123", "name": "main", "experiments": experiments},
    ]


def test_results_per_arm_with_spread_failures_and_noise():
    shown = exp_show(
        recorded("s-a-s0", 0.90),
        recorded("s-a-s1", 0.92),
        recorded("s-a-s2", 0.94),
        recorded("s-b-s0", 0.93),
        recorded("s-b-s1", 0.95),
    )
    records = recorded_experiments(shown)
    assert sorted(records) == [
        "s-a-s0",
        "s-a-s1",
        "s-a-s2",
        "s-b-s0",
        "s-b-s1",
    ]  # not the failed run, nor the queued one
    declared = studies()
    a, b = summarize(declared.studies["s"], runs(declared, [], PARAMS), records, FILES, committed)
    assert (a.runs, b.runs, b.failed) == (3, 2, ["s-b-s2"])
    assert a.mean["test_accuracy"] == pytest.approx(0.92) and a.std["test_accuracy"] == pytest.approx(0.02)
    assert a.mean["train_seconds"] == pytest.approx(11.0) and a.std["train_seconds"] == pytest.approx(1.0)
    assert a.curve == pytest.approx([0.1, 0.81]) and b.curve == pytest.approx([0.1, 0.805])
    assert b.difference == pytest.approx(0.02) and b.differs is False  # 2 points apart, standard error 1.5 points
    assert b.per_seed["s-b-s1"]["test_accuracy"] == 0.95 and b.params == {"train.optimizer.lr": 0.01}
    assert baseline_commit(shown) == "123"
    table = markdown_table("s", declared.studies["s"], [a, b], "1234567890")
    assert "Measured on top of commit `1234567`." in table
    assert "| a | 3 | 92.00% ± 2.00 |" in table and "| b | 2 (1 failed) | 94.00% ± 1.41 |" in table
    assert "| vs a (Welch's t-test, 5%) | source reports |" in table
    assert f"+2.00 pt, within noise (p = {b.p_value:.2g})" in table
    assert "Assumed where" not in table
    assumed = studies(assumptions=["20 epochs", "the batch's mean"]).studies["s"]
    assert "\n\nAssumed where the source is silent: 20 epochs; the batch's mean.\n\n| arm |" in markdown_table(
        "s", assumed, [a, b], "1234567890"
    )


def test_a_diverged_run_is_a_result_with_its_epoch_step_and_loss():
    blew_up = {"epoch": 1, "step": 7, "loss": "inf"}
    shown = exp_show(
        *(recorded(f"s-a-s{i}", 0.9) for i in range(3)),
        recorded("s-b-s0", 0.1, epoch=0, diverged=blew_up),
        recorded("s-b-s1", 0.8),
    )
    declared = studies()
    planned, recorded_runs = runs(declared, [], PARAMS), recorded_experiments(shown)
    results = summarize(declared.studies["s"], planned, recorded_runs, FILES, committed)
    assert results[1].diverged == {"s-b-s0": blew_up} and results[1].failed == ["s-b-s2"]
    table = markdown_table("s", declared.studies["s"], results, "1234567890")
    assert "| b | 2 (1 diverged, 1 failed) |" in table
    assert "b diverged on 1 of 2 seeds (s-b-s0: epoch 1, step 7, loss inf): its numbers are those of the epoch" in table
    assert "diverged 1/2" in [text.get_text() for text in figure("s", results).axes[0].texts]


def test_an_arm_without_a_validation_set_shows_no_validation_numbers():
    shown = exp_show(
        *(recorded(f"s-a-s{i}", 0.90) for i in range(3)),
        *(recorded(f"s-b-s{i}", 0.95, validated=False) for i in range(3)),
    )
    declared = studies()
    a, b = summarize(declared.studies["s"], runs(declared, [], PARAMS), recorded_experiments(shown), FILES, committed)
    assert "val_accuracy" in a.mean and "val_accuracy" not in b.mean and b.curve == []
    assert b.mean["test_accuracy"] == pytest.approx(0.95) and b.mean["train_seconds"] == pytest.approx(11.0)
    table = markdown_table("s", declared.studies["s"], [a, b], "1234567890")
    assert "| b | 3 | 95.00% ± 0.00 | 0.0500 ± 0.0000 | 99.00% ± 0.00 | 0.0300 ± 0.0000 | - | 3.0 ± 0.0 |" in table
    assert [line.get_label() for line in figure("s", [a, b]).axes[1].get_lines()] == ["a"]
    panel, curves = figure("s", [a, b], "training_seconds").axes  # by time, b's ring keeps its colour named
    rings = [ring for ring in panel.collections if getattr(ring, "get_sizes", list)() == [90]]
    handles, labels = curves.get_legend_handles_labels()
    assert labels == ["a", "b (no validation set)"] and len(handles[1].get_xydata()) == 0
    assert [to_hex(ring.get_edgecolor()[0]) for ring in rings] == [to_hex(line.get_color()) for line in handles]


def test_the_accuracy_on_all_training_images_has_a_column_once_an_arm_has_it():
    declared = studies()
    planned = runs(declared, [], PARAMS)
    older = exp_show(*(recorded(f"s-{arm}-s{i}", 0.9) for arm in "ab" for i in range(3)))
    results = summarize(declared.studies["s"], planned, recorded_experiments(older), FILES, committed)
    assert "acc. on all training images" not in markdown_table("s", declared.studies["s"], results, "1234567890")
    newer = exp_show(
        *(recorded(f"s-a-s{i}", 0.9) for i in range(3)),
        *(recorded(f"s-b-s{i}", 0.9, pool=0.91 + i / 100) for i in range(3)),
    )
    a, b = summarize(declared.studies["s"], planned, recorded_experiments(newer), FILES, committed)
    assert b.mean["pool_accuracy"] == pytest.approx(0.92) and b.per_seed["s-b-s2"]["pool_accuracy"] == 0.93
    table = markdown_table("s", declared.studies["s"], [a, b], "1234567890")
    assert "| train loss (kept epoch) | acc. on all training images | val. acc. (kept epoch) |" in table
    assert "| 0.0300 ± 0.0000 | - | 90.00% ± 0.00 |" in table and "| 0.0300 ± 0.0000 | 92.00% ± 1.00 |" in table


def test_a_study_may_plot_accuracy_against_training_time():
    shown = exp_show(*(recorded(f"s-{arm}-s{i}", 0.9 + (arm == "b") / 20) for arm in "ab" for i in range(3)))
    declared = studies()
    planned = runs(declared, [], PARAMS)
    results = summarize(declared.studies["s"], planned, recorded_experiments(shown), FILES, committed)
    panel, curves = figure("s", results, "training_seconds").axes
    assert panel.get_xscale() == "log"
    points = panel.lines[0].get_xydata()  # each arm at its mean training seconds, 11.0 in both
    assert points.tolist() == [[11.0, 90.0], [11.0, 95.0]]
    rings = [ring for ring in panel.collections if getattr(ring, "get_sizes", list)() == [90]]  # the arms' rings
    assert [ring.get_offsets().tolist() for ring in rings] == [[[11.0, 90.0]], [[11.0, 95.0]]]
    colours = [to_hex(ring.get_edgecolor()[0]) for ring in rings]  # each ring in its arm's curve's colour
    assert colours == [to_hex(line.get_color()) for line in curves.get_lines()] and len(set(colours)) == 2
    assert figure("s", results).axes[0].lines[0].get_xydata()[:, 0].tolist() == [0, 1]


def test_a_difference_beyond_the_seed_noise_differs():
    shown = exp_show(
        *(recorded(f"s-a-s{i}", 0.90 + 0.001 * i) for i in range(3)),
        *(recorded(f"s-b-s{i}", 0.95 + 0.001 * i) for i in range(2)),
    )
    declared = studies()
    a, b = summarize(declared.studies["s"], runs(declared, [], PARAMS), recorded_experiments(shown), FILES, committed)
    assert b.difference == pytest.approx(0.05 - 0.0005) and b.differs and b.p_value < 0.001
    assert "differs from a (Welch's t-test, 5%)" in figure("s", [a, b]).axes[0].get_legend_handles_labels()[1]


def arm(name: str, accuracies: list[float]) -> ArmResult:
    mean, std = statistics.fmean(accuracies), statistics.stdev(accuracies)
    return ArmResult(name, None, len(accuracies), [], {"test_accuracy": mean}, {"test_accuracy": std}, [])


def test_welchs_test_is_the_t_test_of_the_seeds_values_and_asks_more_than_two_standard_errors():
    first, second = [0.980, 0.982, 0.984], [0.984, 0.986, 0.988]  # 2.45 standard errors apart
    _, compared = compare_to_first([arm("a", first), arm("b", second)])
    assert compared.p_value == pytest.approx(stats.ttest_ind(first, second, equal_var=False).pvalue)
    assert compared.differs is False and 0.05 < compared.p_value < 0.1
    _, alike = compare_to_first([arm("a", [0.9, 0.9]), arm("b", [0.9, 0.9])])
    _, apart = compare_to_first([arm("a", [0.9, 0.9]), arm("b", [0.8, 0.8])])
    _, single = compare_to_first(
        [arm("a", first), ArmResult("b", None, 1, [], {"test_accuracy": 0.99}, {"test_accuracy": 0.0}, [])]
    )
    assert (alike.differs, apart.differs, single.differs) == (False, True, None)
    assert "+0.80 pt, untested (one seed)" in markdown_table(
        "s", studies().studies["s"], [arm("a", first), single], "1"
    )


def test_a_number_reported_by_another_document_names_it():
    declared = studies(arms={"a": {}, "b": {"reported": 0.984, "reported_by": "Keras' mnist_mlp example"}})
    results = [
        arm("a", [0.9, 0.91]),
        ArmResult(**{**asdict(arm("b", [0.98, 0.99])), "reported": 0.984, "reported_by": "Keras' mnist_mlp example"}),
    ]
    assert "| 98.40% (Keras' mnist_mlp example) |" in markdown_table("s", declared.studies["s"], results, "1")


def test_a_reported_training_loss_is_shown_beside_the_reported_accuracy():
    losses = {"a": {"reported_train_loss": 0.4487}, "b": {"reported": 0.86, "reported_train_loss": 0.45}}
    declared = studies(arms=losses)
    results = [
        ArmResult(**{**asdict(arm(name, [0.9, 0.91])), **declared.studies["s"].arms[name].source_numbers()})
        for name in ("a", "b")
    ]
    lines = markdown_table("s", declared.studies["s"], results, "1").splitlines()
    assert lines[-2].endswith("| train loss 0.4487 |") and lines[-1].endswith("| 86.00%, train loss 0.4500 |")


def test_tables_only_rewrites_from_the_json_and_refuses_arms_run_otherwise(tmp_path, monkeypatch):
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path)  # every run's starting point, which the plan validates against
    monkeypatch.chdir(tmp_path)
    declared = studies()
    declarations = tmp_path / "studies.yaml"
    declarations.write_text(yaml.safe_dump(declared.model_dump(exclude_defaults=True)))
    a, b = arm("a", [0.90, 0.91, 0.92]), arm("b", [0.95, 0.96, 0.97])
    older = {**asdict(b), "within_noise": False, "params": None, "per_seed": {}}  # written before Welch's test
    del older["p_value"], older["differs"]
    out = tmp_path / "out"
    out.mkdir()
    record = {"question": "q?", "source": "s", "commit": "abcdef1"}
    (out / "s.json").write_text(json.dumps(record | {"arms": [asdict(a), older]}))
    result = CliRunner().invoke(main, ["--studies", str(declarations), "--out", str(out), "--tables-only"])
    assert result.exit_code == 0, result.output
    table = (out / "s.md").read_text()
    assert "Measured on top of commit `abcdef1`." in table and "+5.00 pt, differs (p = " in table
    assert json.loads((out / "s.json").read_text())["arms"][1]["differs"] is True
    assert (out / "index.md").read_text() == index_page(os.path.relpath(declarations), [table])

    ran_otherwise = {**asdict(b), "params": {"train.optimizer.lr": 0.1}}
    (out / "s.json").write_text(json.dumps(record | {"arms": [asdict(a), ran_otherwise]}))
    refused = CliRunner().invoke(main, ["--studies", str(declarations), "--out", str(out), "--tables-only"])
    assert refused.exit_code != 0 and "study s: arms b changed params in " in refused.output
    assert "run python -m pipeline study s" in refused.output and (out / "s.md").read_text() == table


def test_the_index_lists_the_generated_tables():
    folder = PROJECT_ROOT / "reports/studies"
    tables = [
        (folder / f"{name}.md").read_text() for name in load_studies().studies if (folder / f"{name}.md").exists()
    ]
    assert (folder / "index.md").read_text() == index_page("pipeline/commands/study/studies.yaml", tables)


def reading_bullets() -> list[str]:
    docs = (PROJECT_ROOT / "docs/studies.md").read_text()
    reading = docs[docs.index("## Reading them") :].split("\n## ")[0]
    return [" ".join(bullet.split()) for bullet in reading.split("\n- ")[1:]]


def test_every_number_and_verdict_in_the_reading_of_the_studies_is_their_jsons():
    """docs/studies.md reads the tables: each number it quotes is an arm's mean, spread, loss, seconds or
    lowest recall in its studies' JSON, or a number the study's source text reports; each "differs" and "within
    noise" is Welch's verdict for the arms it names. A rerun that moves a number fails here."""
    folder = PROJECT_ROOT / "reports/studies"
    declared = load_studies().studies
    results = {name: json.loads((folder / f"{name}.json").read_text()) for name in declared}
    for bullet in reading_bullets():
        named = re.findall(r"\*\*([a-z][a-z0-9_]*)\*\*", bullet)  # study names; **Inference** is not one
        assert named and set(named) <= set(declared), bullet
        referred = {tuple(ref.split(".")) for ref in re.findall(r"`(\w+\.\w+)`", bullet)}
        arms = {
            (study, arm["arm"]): arm for study in named + [s for s, _ in referred] for arm in results[study]["arms"]
        }
        sources = " ".join(" ".join([declared[study].source, *declared[study].assumptions]) for study in named)
        shown = set(re.findall(r"\b\d\.\d{4}\b", sources))  # losses the source reports
        for arm in arms.values():
            shown |= {f"{100 * arm['mean'][key]:.2f}%" for key in arm["mean"] if key.endswith("accuracy")}
            shown |= {f"{arm['mean'][key]:.4f}" for key in ("test_loss", "train_loss") if key in arm["mean"]}
            shown |= {f"± {100 * arm['std']['test_accuracy']:.2f}", f"{arm['mean']['train_seconds']:.0f} s"}
            shown |= {f"{100 * arm['reported']:.2f}%"} if arm["reported"] else set()
            shown |= {f"{arm['reported_train_loss']:.4f}"} if arm.get("reported_train_loss") else set()
        quoted = re.findall(r"\d+\.\d\d%|\b\d\.\d{4}\b|± \d+\.\d\d|\b\d+ s\b", bullet)
        reported = set(re.findall(r"\b0\.\d\d\b", sources)) | {
            f"{a['reported']:.2f}" for a in arms.values() if a["reported"]
        }
        analyses = [a["analysis"]["lowest_recalls"] for a in arms.values() if a.get("analysis")]
        reported |= {f"{recall:.2f}" for lowest in analyses for pairs in lowest.values() for _, recall in pairs}
        stated = set(re.findall(r"(?<!± )\b0\.\d\d\b", bullet)) - reported
        assert not stated, f"{named}: numbers its source text does not report: {stated}"
        assert {number for number in quoted if number not in shown} == set(), named
        for clause in re.split(r"[;.] ", bullet):
            verdicts = {"within noise": False, "differ": True}
            said = [value for phrase, value in verdicts.items() if re.search(rf"\b{phrase}s?\b", clause)]
            if not said:
                continue
            assert len(said) == 1, clause
            if "every arm within noise" in clause:
                in_clause = re.findall(r"\*\*([a-z][a-z0-9_]*)\*\*", clause)
                checked = [arm for study in in_clause for arm in results[study]["arms"][1:]]
            else:
                checked = [
                    arms[(study, name)]
                    for study in named
                    for name in re.findall(r"`(\w+)`", clause)
                    if (study, name) in arms
                ]
            checked = [arm for arm in checked if arm["differs"] is not None]  # the first arm
            assert checked and all(arm["differs"] is said[0] for arm in checked), clause


@pytest.mark.slow
@pytest.mark.xdist_group(STUDIED_GROUP)
def test_a_study_runs_as_experiments_and_no_run_inherits_anothers_params(studied):
    project, first = studied

    def study(*args: str) -> subprocess.CompletedProcess:
        command = (sys.executable, "-m", "pipeline", "study", "--studies", "studies.yaml", *args)
        return subprocess.run(command, cwd=project, capture_output=True, text=True, env=os.environ)

    assert "0 of 4 runs recorded already; running 4" in first.log
    result = json.loads((project / SCRATCH_TABLES / "lr.json").read_text())
    assert sum(arm["runs"] for arm in result["arms"]) == 4
    assert all(0 < arm["mean"]["train_seconds"] < first.wall / 4 for arm in result["arms"])
    assert result["commit"] == head(project)
    assert [(arm["arm"], arm["runs"], arm["failed"]) for arm in result["arms"]] == [
        ("default", 2, []),
        ("higher_lr", 2, []),
    ]
    assert all(len(arm["curve"]) == 2 for arm in result["arms"])  # validation accuracy at epochs 0 and 1
    analyzed = result["arms"][1]["analysis"]
    assert analyzed["run"] == "lr-higher_lr-s0" and len(analyzed["confused_pairs"]) == 5
    for figure_path in analyzed["figures"]:
        assert (project / SCRATCH_TABLES / figure_path).read_bytes()[:4] == b"\x89PNG"
    assert "lr/higher_lr/confusion.png" in analyzed["figures"] and result["arms"][0]["analysis"] is None
    shown = json.loads(dvc(project, "exp", "show", "--json"))
    params = {
        name: row["data"]["params"]["params.yaml"]["data"]["train"] for name, row in recorded_experiments(shown).items()
    }
    assert {name: (p["optimizer"]["lr"], p["seed"], p["epochs"]) for name, p in params.items()} == {
        f"lr-{arm}-s{seed}": (lr, seed, 1) for arm, lr in (("default", 0.001), ("higher_lr", 0.01)) for seed in (0, 1)
    }

    again = study()
    assert again.returncode == 0 and "4 of 4 runs recorded already; running 0" in again.stderr
    out = project / "build/studies/studies"  # a studies file of one's own never writes reports/studies
    assert [path.name for path in (project / "reports/studies").iterdir()] == ["seeds.json"]  # the project's own
    assert (out / "lr.md").read_text() == (project / SCRATCH_TABLES / "lr.md").read_text()
    assert (out / "index.md").read_text() == index_page("studies.yaml", [(out / "lr.md").read_text()])
    assert (out / "lr.png").read_bytes()[:4] == b"\x89PNG"

    git(project, "add", "-A")
    git(project, "commit", "-qm", "results")  # experiments belong to the commit they ran on
    written = (out / "lr.md").read_text()
    moved_on = study("--collect-only")
    assert moved_on.returncode == 0 and "study lr: no run recorded on top of commit" in moved_on.stderr
    assert (out / "lr.md").read_text() == written
    baseline = result["commit"]
    collected = study("--collect-only", "--baseline", baseline)  # only reports changed since
    assert collected.returncode == 0, collected.stderr
    assert (out / "lr.md").read_text() == written

    with (project / "pipeline/lib/training.py").open("a") as code:
        code.write("# a change to what the runs ran\n")
    git(project, "commit", "-qam", "code")
    stale = study("--collect-only", "--baseline", baseline)
    assert stale.returncode == 1
    assert (
        stale.stderr.strip()
        == f"error: pipeline/lib/training.py changed since {baseline}: its experiments no longer stand "
        "for HEAD; rerun the studies"
    )


def test_errors_in_a_studies_file_name_that_file_and_line(tmp_path, invoke_in):

    broken = tmp_path / "mine.yaml"
    broken.write_text("seeds: [0, 1, 2]\nstudies:\n  s: {question: q?\n")
    code, stderr = invoke_in(main, tmp_path, "--studies", broken)
    assert code == 1 and stderr.strip().splitlines() == [
        f"error: {broken} is not valid YAML at line 3, column 18: fix the syntax there"
    ]

    declared = {"seeds": [0, 1, 2], "studies": {"s": {"question": "q?", "source": "s", "arms": {"a": {}, "b": {}}}}}
    declared["studies"]["s"]["arms"]["b"] = {"params": {"train.optimiser.lr": 0.1}}
    wrong_key = tmp_path / "wrong_key.yaml"
    wrong_key.write_text(yaml.safe_dump(declared, sort_keys=False))
    with pytest.raises(ParamsError) as raised:
        runs(load_studies(wrong_key), [], PARAMS, wrong_key)
    line = wrong_key.read_text().splitlines().index("      b:") + 1
    assert str(raised.value) == f"{wrong_key}:{line}: study s, arm b: train.optimiser.lr is not a key of params.yaml"

    declared["studies"]["s"]["arms"]["b"] = {"reported": 2}
    wrong_value = tmp_path / "wrong_value.yaml"
    wrong_value.write_text(yaml.safe_dump(declared, sort_keys=False))
    with pytest.raises(ParamsError) as raised:
        load_studies(wrong_value)
    line = wrong_value.read_text().splitlines().index("        reported: 2") + 1
    assert str(raised.value).startswith(f"{wrong_value}:{line}: studies.s.arms.b.reported: Input should be less than")


def test_the_plan_lists_every_run_once_a_line_in_a_stable_order(tmp_path, monkeypatch):

    monkeypatch.chdir(tmp_path)
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    declared = studies(settings={"model.hidden_sizes": [64, 32]})
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(declared.model_dump(exclude_none=True), sort_keys=False))
    result = CliRunner().invoke(main, ["--studies", str(tmp_path / "mine.yaml"), "--plan"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"s-{arm}-s{seed} model.hidden_sizes=[64,32] {lr}train.seed={seed}"
        for arm, lr in (("a", ""), ("b", "train.optimizer.lr=0.01 "))
        for seed in (0, 1, 2)
    ]


def test_a_study_or_an_arm_may_declare_its_own_seeds():
    planned = runs(studies(seeds=[3, 4, 5, 6]), [], PARAMS)
    assert [run.name for run in planned] == [f"s-{arm}-s{seed}" for arm in "ab" for seed in (3, 4, 5, 6)]
    arms = {"a": {}, "b": {"seeds": [0, 1, 2, 3]}}
    planned = runs(studies(seeds=[5, 6], arms=arms), [], PARAMS)
    assert [run.name for run in planned] == ["s-a-s5", "s-a-s6", "s-b-s0", "s-b-s1", "s-b-s2", "s-b-s3"]
    with pytest.raises(ValidationError, match="at least 2 items"):
        studies(seeds=[0])
    assert [run.name for run in runs(studies(arms={"a": {}, "b": {"seeds": [7]}}), ["s"], PARAMS)][-1] == "s-b-s7"


def test_an_arm_that_asks_for_its_analysis_runs_its_first_seed_through_analyze_and_keeps_its_figures():
    declared = studies(arms={"a": {}, "b": {"analyze": True, "seeds": [4, 5]}})
    planned = runs(declared, [], PARAMS)
    assert [(run.name, run.last_stage) for run in planned if run.arm == "b"] == [
        ("s-b-s4", "analyze"),
        ("s-b-s5", "evaluate"),
    ]
    assert experiment_command(planned[3])[-1] == "analyze" and experiment_command(planned[0])[-1] == "evaluate"
    shown = exp_show(*(recorded(run.name, 0.9) for run in planned))
    copied = []
    a, b = summarize(
        declared.studies["s"],
        planned,
        recorded_experiments(shown),
        FILES,
        committed,
        lambda run, revision: copied.append((run.name, revision)) or [f"s/{run.arm}/confusion.png"],
    )
    assert a.analysis is None and copied == [("s-b-s4", "rev-of-s-b-s4")]
    assert b.analysis["confused_pairs"] == [
        ["0 as 9", 20],
        ["1 as 8", 19],
        ["2 as 7", 18],
        ["3 as 6", 17],
        ["4 as 5", 16],
    ]
    assert b.analysis["lowest_recalls"] == {
        "test": [["9", 0.85], ["0", 0.86], ["8", 0.86], ["1", 0.87]],
        "train": [["9", 0.9], ["0", 0.91], ["8", 0.91], ["1", 0.92]],
    }
    table = markdown_table("s", declared.studies["s"], [a, b], "1")
    assert (
        "Analysis of b (s-b-s4): most confused 0 as 9 (20), 1 as 8 (19), 2 as 7 (18), 3 as 6 (17), 4 as 5 (16);"
        " lowest recalls: test 9 (0.85), 0 (0.86), 8 (0.86), 1 (0.87); train 9 (0.90), 0 (0.91), 8 (0.91), 1 (0.92);"
        in table
    )
    assert "[confusion](s/b/confusion.png)." in table


def test_a_reader_that_stops_early_gets_no_error_line():
    """`study --plan | head -n 3`: the command's one-line errors are for problems, not for a closed pipe."""
    writer = (
        "from pipeline.lib.cli import run_reporting_errors; run_reporting_errors(lambda: print('x' * 10**6), False)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", writer], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout.read(1) == b"x"
    process.stdout.close()  # as head does once it has its lines
    assert (process.wait(), process.stderr.read()) == (1, b"")


def test_every_committed_study_keeps_each_seeds_values_as_its_docs_say():
    docs = " ".join((PROJECT_ROOT / "docs/studies.md").read_text().split())
    assert "Every committed study keeps each seed's values" in docs
    for path in (PROJECT_ROOT / "reports/studies").glob("*.json"):
        for arm in json.loads(path.read_text())["arms"]:
            assert len(arm["per_seed"]) == arm["runs"], f"{path.stem}.{arm['arm']} keeps no per-seed values"
