"""`python -m pipeline verify`'s messages before any rerun: each names the problem and the fix."""

from __future__ import annotations

import pytest
import yaml

from pipeline.commands.verify import command
from pipeline.lib.layout import stages

from conftest import commit, set_param


@pytest.fixture
def verify(invoke_in):
    return lambda where, *args: invoke_in(command.main, where, *args)


def test_changed_code_is_stale_code_naming_stage_and_file(results_repo, verify):
    with (results_repo / "pipeline/lib/metrics.py").open("a") as code:
        code.write("# edited\n")
    status, errors = verify(results_repo)
    assert status == 1
    assert errors.startswith(
        "error: stale code: the committed results come from other code (evaluate: pipeline/lib/metrics.py"
    )
    assert errors.rstrip().endswith(": run dvc repro and commit dvc.lock and reports/")


def test_a_changed_param_is_stale_params_with_both_values(results_repo, verify):
    set_param(results_repo, "train", "epochs", 3)
    status, errors = verify(results_repo)
    assert (status, errors) == (
        1,
        "error: stale params: the committed results come from other params (train: train.epochs 10 -> 3): "
        "run dvc repro and commit dvc.lock and reports/\n",
    )


def test_an_unknown_stage_for_from_lists_the_stages(results_repo, verify):
    status, errors = verify(results_repo, "--from", "nosuchstage")
    assert (status, errors) == (1, f"error: --from nosuchstage is not a stage: choose one of {', '.join(stages())}\n")


def test_an_unknown_revision_is_one_line(results_repo, verify):
    status, errors = verify(results_repo, "--against", "nosuchrev")
    assert status == 1
    assert errors == "error: revision nosuchrev does not exist: name a commit, branch or tag that git log shows\n"


def test_results_never_committed_are_one_line(results_repo, verify):
    (results_repo / "dvc.lock").unlink()
    commit(results_repo, "no results")
    status, errors = verify(results_repo)
    assert (status, errors) == (1, "error: dvc.lock is not committed at HEAD: commit the results of dvc repro there\n")


def test_a_key_no_stage_reads_is_stale_params_of_the_stage_that_checks_the_whole_file(results_repo, verify):
    params = yaml.safe_load((results_repo / "params.yaml").read_text())
    (results_repo / "params.yaml").write_text(yaml.safe_dump(params | {"notes": "lr tuned"}, sort_keys=False))
    status, errors = verify(results_repo)
    assert (status, errors) == (
        1,
        'error: stale params: the committed results come from other params (download: notes null -> "lr tuned"): '
        "run dvc repro and commit dvc.lock and reports/\n",
    )
