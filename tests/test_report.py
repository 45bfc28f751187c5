"""`python -m pipeline report`: a pull request's results against its base, from git alone.

Each test builds a small git repository holding the project's dvc.yaml, code, params, committed
results and a dvc.lock that matches them, then commits what a pull request would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.commands.report import command
from pipeline.commands.report.compare import changes_since
from pipeline.commands.report.figures import curve_plots, curves_figure
from pipeline.lib.seed_spread import SEED_STUDY

from conftest import commit, edit_json, git, head, matching_lock, set_param

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def repo(results_repo: Path) -> Path:
    return results_repo


@pytest.fixture
def report(invoke_in):
    return lambda where, *args: invoke_in(command.main, where, *args)


def test_a_rerun_pull_request_is_up_to_date_and_shows_what_moved(repo, report):
    base = head(repo)
    set_param(repo, "train", "epochs", 12)
    (repo / "dvc.lock").write_text(yaml.safe_dump(matching_lock(repo), sort_keys=False))
    edit_json(repo / "reports/evaluate/metrics.json", lambda m: m["test"].update(accuracy=0.9830, errors=170))
    curve = repo / "reports/train/plots/metrics/val/loss.tsv"
    header, *rows = curve.read_text().splitlines()
    curve.write_text(
        "\n".join([header, *(f"{step}\t{float(loss) * 0.5:.6f}" for step, loss in (r.split("\t") for r in rows))])
        + "\n"
    )
    pull_request = commit(repo, "train longer")

    status, errors = report(repo, "--base", base, "--out", "out/report.md")
    assert status == 0, errors
    text = (repo / "out/report.md").read_text()
    assert text.startswith(f"## Results of head {pull_request[:7]} against base {base[:7]}\n\n**Up to date**")
    assert "- train: train.epochs 10 -> 12" in text  # what changed since the base
    assert "| `train.epochs` | 10 | 12 |" in text
    # SD of a difference: sqrt(2) x 0.18 points, the spread results_repo's seeds study records
    assert (
        "| **`test.accuracy`** | 0.9812 | 0.983 | +0.0018 | +0.18 pt: within the spread of a single run (SD of a "
        in text
    )
    assert "difference 0.25 pt) |" in text and "over 10 seeds (reports/studies/seeds.json)." in text
    assert "| **`test.errors`** | 188 | 170 | -18 |" in text
    assert "| `kept_epoch` | 10 | 10 |  |" in text  # unchanged: listed, not marked
    for figure in ("report-curves.png", "report-confusion.png"):
        assert f"]({figure})" in text
        assert (repo / "out" / figure).read_bytes().startswith(PNG_MAGIC)


def test_a_change_beyond_twice_the_seeds_spread_is_outside_it_and_without_a_seed_study_none_is_judged(repo, report):
    base = head(repo)
    edit_json(repo / "reports/evaluate/metrics.json", lambda m: m["test"].update(accuracy=0.9752, loss=0.07))
    commit(repo, "worse")
    assert report(repo, "--base", base, "--out", "out/report.md")[0] == 0
    text = (repo / "out/report.md").read_text()
    assert "| -0.60 pt: outside the spread of a single run (SD of a difference 0.25 pt) |" in text
    assert ": outside the spread of a single run (SD of a difference 0.0057) |" in text  # the test loss
    git(repo, "rm", "-q", str(SEED_STUDY))
    commit(repo, "no seed study")
    assert report(repo, "--base", base, "--out", "out/report.md")[0] == 0
    text = (repo / "out/report.md").read_text()
    assert "outside the spread" not in text
    assert "No seed study at head (reports/studies/seeds.json) to judge the changes by: run python -m pipeline" in text


def test_curves_figure_draws_both_revisions_of_every_curve(repo):
    plots = curve_plots(yaml.safe_load((repo / "dvc.yaml").read_text())["plots"])
    assert [plot.title for plot in plots] == ["Loss per epoch", "Accuracy per epoch"]
    halved = {"reports/train/plots/metrics/val/loss.tsv": "step\tloss\n0\t1.0\n1\t0.5\n"}
    revisions = {
        "base": lambda path: (repo / path).read_text(),
        "head": lambda path: halved.get(path, (repo / path).read_text()),
    }
    figure = curves_figure(plots, revisions)
    loss_panel = figure.axes[0]
    labels = [line.get_label() for line in loss_panel.get_lines()]
    assert labels == [f"{curve} ({side})" for curve in ("train", "val", "batches") for side in ("base", "head")]
    val_head = loss_panel.get_lines()[labels.index("val (head)")]
    assert list(val_head.get_ydata()) == [1.0, 0.5]


def test_a_changed_param_without_a_rerun_is_stale_and_names_both_values(repo, report):
    set_param(repo, "train", "epochs", 3)
    commit(repo, "fewer epochs, forgot dvc repro")
    status, _ = report(repo, "--base", "HEAD~1", "--out", "r.md")
    assert status == 1
    text = (repo / "r.md").read_text()
    assert "**Stale**" in text and "- train: train.epochs 10 -> 3" in text
    assert "Fix: run dvc repro and commit dvc.lock and reports/." in text
    assert "| `train.epochs` | 10 | 3 |" in text


def test_a_changed_stage_file_without_a_rerun_is_stale_and_names_the_stage(repo, report):
    with (repo / "pipeline/stages/evaluate.py").open("a") as stage:
        stage.write("# edited\n")
    commit(repo, "edit evaluate")
    status, _ = report(repo, "--base", "HEAD~1", "--out", "r.md")
    assert status == 1
    assert "- evaluate: pipeline/stages/evaluate.py" in (repo / "r.md").read_text()


def test_against_itself_nothing_differs(repo, report):
    status, errors = report(repo, "--base", "HEAD", "--out", "r.md")
    assert status == 0, errors
    text = (repo / "r.md").read_text()
    assert "**Up to date**" in text and "No stage input differs" in text and "No param differs." in text
    assert "**`" not in text  # no metric marked as changed


def test_changed_raw_data_is_named():
    stages = {
        "download": {"cmd": "dl", "deps": ["dl.py"], "outs": ["data/raw"]},
        "train": {"cmd": "tr", "deps": ["tr.py", "data/raw"], "params": ["train"], "outs": ["model.pt"]},
    }

    def lock(raw: str, model: str) -> dict:
        return {
            "stages": {
                "download": {
                    "cmd": "dl",
                    "deps": [{"path": "dl.py", "md5": "a"}],
                    "outs": [{"path": "data/raw", "md5": raw}],
                },
                "train": {
                    "cmd": "tr",
                    "deps": [{"path": "tr.py", "md5": "b"}, {"path": "data/raw", "md5": raw}],
                    "params": {"params.yaml": {"train": {"lr": 0.1}}},
                    "outs": [{"path": "model.pt", "md5": model}],
                },
            }
        }

    assert not changes_since(lock("r1", "m1"), lock("r1", "m2"), stages)  # a new model alone is a consequence
    assert changes_since(lock("r1", "m1"), lock("r2", "m2"), stages).causes == ("download: raw data data/raw",)


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown", "error: revision nosuchrev does not exist: name a commit, branch or tag that git log shows"),
        ("no results", "error: empty has no committed dvc.lock"),
        ("not git", "is not a git repository: run from a clone of the project"),
        ("shallow", "is not in this shallow clone: fetch the full history (git fetch --unshallow"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(repo, tmp_path, report, case, message):
    where = repo
    if case == "no results":
        git(
            repo,
            "tag",
            "empty",
            subprocess.run(
                ["git", "commit-tree", "4b825dc642cb6eb9a060e54bf8d69288fbee4904", "-m", "empty"],
                cwd=repo,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip(),
        )
    if case == "not git":
        shutil.rmtree(repo / ".git")
    if case == "shallow":
        set_param(repo, "train", "seed", 1)
        commit(repo, "second")
        where = tmp_path / "shallow"
        git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(where))
    base = {"unknown": "nosuchrev", "no results": "empty"}.get(case, "HEAD~1")
    status, errors = report(where, "--base", base, "--out", "r.md")
    assert status == 2
    assert len(errors.strip().splitlines()) == 1 and message in errors
    assert not (where / "r.md").exists()


def test_report_needs_neither_torch_nor_the_data(repo):
    probe = (
        "import sys\n"
        "from pipeline.__main__ import cli\n"
        "try:\n    cli(['report', '--base', 'HEAD', '--out', 'r.md'])\n"
        "except SystemExit as end:\n    print(end.code, 'torch' in sys.modules, 'dvc' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True)
    assert result.stdout.split() == ["0", "False", "False"], result.stderr
    assert not (repo / "data").exists()
