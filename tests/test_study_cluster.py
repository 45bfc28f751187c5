"""Studies on many machines: claims that two workers cannot both win, taken over once unrenewed,
and one line for each way a worker cannot start."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.commands.study import cluster
from pipeline.commands.study.command import main
from pipeline.commands.study.plan import Run
from pipeline.commands.study.results import recorded_experiments
from pipeline.lib.errors import PipelineError
from pipeline.lib.layout import stage_path

from conftest import PROJECT_ROOT, STUDIED_GROUP, clone_as_actions_checkout, dvc, git, head
from scratch_params import SCRATCH_STUDY, SCRATCH_TABLES
from servers import needs_ssh_client

ARMS, SEEDS = SCRATCH_STUDY["studies"]["lr"]["arms"], SCRATCH_STUDY["seeds"]
RUNS = {f"lr-{arm}-s{seed}" for arm in ARMS for seed in SEEDS}

# A worker stops its run through the run's process group: Windows has none (studies run in WSL there).
pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="no process groups (Windows): studies need WSL")


@pytest.fixture
def clone(tmp_path, monkeypatch) -> Path:
    """A clone of a bare repository holding one commit, as a worker's machine has it; cwd is the clone."""
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "shared.git")], check=True)
    work = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "shared.git"), str(work)], check=True, capture_output=True)
    git(work, "config", "user.email", "test@example.com")
    git(work, "config", "user.name", "test")
    (work / "README").write_text("a study's commit\n")
    shutil.copy(PROJECT_ROOT / "params.yaml", work / "params.yaml")  # what the plan's runs start from
    git(work, "add", "-A")
    git(work, "commit", "-qm", "study")
    git(work, "push", "-q", "origin", "HEAD")
    monkeypatch.chdir(work)
    return work


def test_of_two_claims_on_one_run_only_the_first_wins(clone):
    commit = cluster.head()
    first = cluster.push_claim("origin", commit, "s-a-s0", "claim", replacing=None)
    assert first is not None
    assert cluster.push_claim("origin", commit, "s-a-s0", "claim", replacing=None) is None
    assert cluster.push_claim("origin", commit, "s-a-s1", "claim", replacing=None) is not None
    taken = cluster.claims("origin", commit)
    assert set(taken) == {"s-a-s0", "s-a-s1"} and taken["s-a-s0"].sha == first and not taken["s-a-s0"].failed


def test_an_unrenewed_claim_is_taken_over_once_and_its_worker_loses_it(clone):
    commit = cluster.head()
    runs = [Run("s", "a", 0, {}), Run("s", "a", 1, {})]
    dead = cluster.push_claim("origin", commit, "s-a-s0", "claim", replacing=None)
    taken = cluster.claims("origin", commit)
    assert cluster.next_run(runs, taken, timeout=3600) == (runs[1], None)  # a live claim is left alone
    cluster.push_claim("origin", commit, "s-a-s1", "claim", replacing=None)
    taken = cluster.claims("origin", commit)
    assert cluster.next_run(runs, taken, timeout=3600) is None
    assert cluster.next_run(runs, taken, timeout=-1) == (runs[0], dead)  # unrenewed for longer than the timeout
    assert cluster.push_claim("origin", commit, "s-a-s0", "claim", replacing=dead) is not None
    assert cluster.push_claim("origin", commit, "s-a-s0", "claim", replacing=dead) is None  # a second taker loses
    assert cluster.push_claim("origin", commit, "s-a-s0", "running", replacing=dead) is None  # so does the old owner


def test_a_failed_claim_says_so(clone):
    commit = cluster.head()
    sha = cluster.push_claim("origin", commit, "s-a-s0", "claim", replacing=None)
    cluster.push_claim("origin", commit, "s-a-s0", "failed (error: training diverged)", replacing=sha)
    (failed,) = cluster.claims("origin", commit).values()
    assert failed.failed and failed.subject.startswith("failed (error: training diverged) s-a-s0 by ")


def test_a_worker_cannot_start_without_the_remote_the_commit_or_the_plans_commit(clone, invoke_in, tmp_path):
    studies = tmp_path / "mine.yaml"
    studies.write_text(
        "seeds: [0, 1]\nstudies:\n  s:\n    question: q?\n    source: s\n"
        "    arms: {a: {}, b: {params: {train.optimizer.lr: 0.01}}}\n"
    )
    code, stderr = invoke_in(main, clone, "--studies", studies, "--worker", "team")
    no_remote = "error: no git remote named team: add the shared repository with git remote add team URL\n"
    assert (code, stderr) == (1, no_remote)

    (clone / "README").write_text("a commit the remote has not seen\n")
    git(clone, "commit", "-qam", "local only")
    here = cluster.head()
    code, stderr = invoke_in(main, clone, "--studies", studies, "--worker", "origin")
    lacks = f"error: the git remote origin lacks commit {here[:7]}: push it first (git push origin HEAD)\n"
    assert (code, stderr) == (1, lacks)

    code, stderr = invoke_in(main, clone, "--studies", studies, "--worker", "origin", "--commit", "HEAD~1")
    other = f"error: this clone is at {here[:7]}, the study's plan at HEAD~1: git checkout HEAD~1 first\n"
    assert (code, stderr) == (1, other)


def test_a_dvc_remote_that_refuses_the_run_gives_its_claim_back_and_one_line(clone, tmp_path, monkeypatch):
    commit = cluster.head()
    sha = cluster.push_claim("origin", commit, "s-a-s0", "claim", replacing=None)
    refusing = tmp_path / "bin"
    refusing.mkdir()
    said = "ERROR: failed to push data to the cloud - 3 files failed to upload"
    (refusing / "dvc").write_text(f"#!/bin/sh\necho '{said}' >&2\nexit 1\n")  # as dvc says it
    (refusing / "dvc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{refusing}:{os.environ['PATH']}")
    with pytest.raises(PipelineError) as raised:
        cluster.publish("s-a-s0", "origin", commit, sha)
    assert str(raised.value) == (
        "dvc exp push origin s-a-s0 failed (ERROR: failed to push data to the cloud - 3 files failed to upload): "
        "give this machine write access to the DVC remote (dvc remote list), then start the worker again"
    )
    assert cluster.claims("origin", commit) == {}  # another worker may take the run


def test_status_lists_each_run_as_done_running_failed_or_waiting(clone):
    commit = cluster.head()
    runs = [Run("s", "a", seed, {}) for seed in range(4)]
    git(clone, "push", "-q", "origin", f"HEAD:refs/exps/{commit[:2]}/{commit[2:]}/s-a-s0")  # as dvc exp push does
    cluster.push_claim("origin", commit, "s-a-s1", "running", replacing=None, since=0.0)
    failed = cluster.push_claim("origin", commit, "s-a-s2", "claim", replacing=None)
    cluster.push_claim("origin", commit, "s-a-s2", "failed (error: training diverged)", replacing=failed)
    lines = cluster.status(runs, "origin", commit, timeout=3600)
    worker = cluster.worker_name()
    assert lines == [
        "s-a-s0  done",
        f"s-a-s1  running on {worker} since 1970-01-01 00:00:00 UTC",
        "s-a-s2  failed (error: training diverged)",
        "s-a-s3  waiting",
    ]
    assert cluster.status(runs, "origin", commit, timeout=-1)[1].startswith("s-a-s1  stalled on ")
    taken = cluster.claims("origin", commit)
    assert cluster.next_run(runs[2:3], taken, timeout=3600) == (runs[2], taken["s-a-s2"].sha)  # --retry-failed


def test_sigterm_stops_the_run_and_hands_its_claim_back_at_once(clone, tmp_path, process_groups):
    """A scheduler's preemption: the worker stops its run (Ctrl-C to the run's process group, as
    for a study on one machine) and removes its claim instead of holding it for the timeout."""
    studies = tmp_path / "mine.yaml"
    studies.write_text(
        "seeds: [0, 1]\nstudies:\n  s:\n    question: q?\n    source: s\n"
        "    arms: {a: {}, b: {params: {train.optimizer.lr: 0.01}}}\n"
    )
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dvc").write_text(f"#!/bin/sh\ntouch {tmp_path}/running\nexec sleep 600\n")  # a run that lasts
    (fake / "dvc").chmod(0o755)
    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "study", "--studies", str(studies), "--worker", "origin"],
        cwd=clone,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=os.environ | {"PATH": f"{fake}:{os.environ['PATH']}", "STUDY_WORKER": "preempted"},
        start_new_session=True,
    )
    process_groups.append(worker)
    deadline = time.monotonic() + 60
    while not (tmp_path / "running").exists():
        assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 1
    assert log.read_text().splitlines()[-1] == (
        "error: stopped by SIGTERM: s-a-s0 stopped and its claim removed, so another worker takes it now"
    )
    assert cluster.claims("origin", cluster.head()) == {}


RECIPES = ["docs/cluster/slurm-study.sh", "docs/cluster/study-job.yaml", ".github/workflows/study.yaml"]
COMMAND = "python -m pipeline study"


def study_commands(recipe: str) -> list[list[str]]:
    """Each `python -m pipeline study ...` line of a recipe as the words after the command; a
    variable stands for one word ("$commit") or for the study names ("$@", $STUDIES)."""
    commands = []
    for line in (PROJECT_ROOT / recipe).read_text().splitlines():
        if COMMAND in line and not line.lstrip().startswith("#"):
            words = shlex.split(line[line.index(COMMAND) + len(COMMAND) :])
            commands.append([word for word in words if word not in ("$@", "$STUDIES")])
    return commands


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_starts_the_same_worker_that_the_cli_accepts(recipe):
    commands = study_commands(recipe)
    workers = [words for words in commands if "--worker" in words]
    if recipe.startswith("docs/cluster/"):  # a shell's last command there: the scheduler's SIGTERM must reach it
        assert "exec env STUDY_WORKER=" in (PROJECT_ROOT / recipe).read_text()
    assert len(workers) == 1 and workers[0][:3] == ["--worker", "origin", "--commit"] and len(workers[0]) == 4
    for words in commands:
        main.make_context("study", [word if not word.startswith("$") else "0123abc" for word in words])


def test_the_recipes_parse():
    assert subprocess.run(["bash", "-n", PROJECT_ROOT / RECIPES[0]]).returncode == 0
    job = yaml.safe_load((PROJECT_ROOT / RECIPES[1]).read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    assert job["metadata"]["name"] == "mnist-study-STUDY_COMMIT"  # one Job per commit
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["cpu"]  # the worker's threads follow it
    assert job["spec"]["completions"] == job["spec"]["parallelism"]


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (Linux's /proc), as a machine that dies takes them all."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [int(child) for child in children.read_text().split()] if children.exists() else []
    return [pid, *(grandchild for child in found for grandchild in descendants(child))]


def without_seconds(table: str) -> list[list[str]]:
    """The table's rows without the training-seconds column, which no two machines share."""
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")]
    column = rows[0].index("training s")
    return [row[:column] + row[column + 1 :] for row in rows]


def results_without_seconds(path: Path) -> dict:
    """The results without training seconds."""
    summary = json.loads(path.read_text())
    for arm in summary["arms"]:
        for measures in (arm["mean"], arm["std"], *arm["per_seed"].values()):
            measures.pop("train_seconds")
    return summary


def model_md5(repo: Path, revision: str) -> str:
    lock = yaml.safe_load(
        subprocess.run(
            ["git", "show", f"{revision}:dvc.lock"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
    )
    model = stage_path("train", "--model").as_posix()
    return next(out["md5"] for out in lock["stages"]["train"]["outs"] if out["path"] == model)


def exp_show(repo: Path) -> dict[str, dict]:
    return recorded_experiments(json.loads(dvc(repo, "exp", "show", "--json")))


@pytest.mark.slow
@needs_ssh_client
@pytest.mark.xdist_group(STUDIED_GROUP)
def test_two_workers_and_a_collector_sharing_only_git_and_the_dvc_remote(
    studied, tmp_path, team_servers, process_groups
):
    """docs/cluster.md on real servers: git over SSH and an S3 DVC remote, two worker checkouts and
    a collector checkout made as the study workflow's runners make them, each running that
    workflow's own commands. The studied project pushed half of the study's runs before the workers
    start; one worker is killed midway through its run. Their results are those of the same runs
    made on one machine, the studied project's."""
    project, _ = studied
    workflow = {words[0]: words for words in study_commands(".github/workflows/study.yaml")}
    s3 = team_servers.s3
    s3.create_bucket("study")
    origin = team_servers.repo_url

    def use_team_remote(where: Path) -> None:
        dvc(where, "remote", "add", "--local", "--default", "team", "s3://study/dvc")
        dvc(where, "remote", "modify", "--local", "team", "endpointurl", s3.endpoint)

    git(project, "remote", "add", "origin", origin)
    git(project, "push", "-q", "origin", "HEAD:main")
    use_team_remote(project)
    dvc(project, "push")  # the workers pull the data the stages before training made
    earlier = sorted(name for name in RUNS if name.endswith(f"-s{SEEDS[0]}"))
    dvc(project, "exp", "push", "origin", *earlier)  # runs made before the workers start
    commit = head(project)

    def clone(name: str) -> Path:
        clone_as_actions_checkout(origin, tmp_path / name)
        git(tmp_path / name, "config", "user.email", f"{name}@example.com")
        git(tmp_path / name, "config", "user.name", name)
        use_team_remote(tmp_path / name)
        return tmp_path / name

    def study(where: Path, role: str, *args: str, worker: str = "") -> subprocess.Popen:
        log = (tmp_path / f"{where.name}.log").open("w")
        command = [word.replace("$GITHUB_SHA", commit) for word in workflow[role]]
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "study", "--studies", "studies.yaml", *command, *args],
            cwd=where,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ | {"STUDY_WORKER": worker},
            start_new_session=True,
        )
        process_groups.append(process)
        return process

    workers = [clone("worker-1"), clone("worker-2")]
    for worker in workers:
        dvc(worker, "pull", "-q")
    first, second = (study(w, "--worker", "--claim-timeout", "6", worker=w.name) for w in workers)
    log = tmp_path / "worker-1.log"
    deadline = time.monotonic() + 300
    while " claimed" not in log.read_text():
        assert first.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    for pid in descendants(first.pid):  # the machine dies: the worker and the run under way
        os.kill(pid, signal.SIGKILL)
    killed = log.read_text().splitlines()[-1].split()[3]  # "study worker worker-1: <run> claimed"
    assert second.wait(timeout=600) == 0, (tmp_path / "worker-2.log").read_text()
    said = (tmp_path / "worker-2.log").read_text()
    assert f"study worker worker-2: {killed} taken over" in said and said.count(" done") == 2
    assert not cluster_claims(workers[1], commit)  # pushed runs leave no claim behind

    collector = clone("collector")
    assert study(collector, "--collect-from").wait() == 0, (tmp_path / "collector.log").read_text()
    assert "study: pulled 4 of 4 runs from origin" in (tmp_path / "collector.log").read_text()
    # The same runs on one machine: the tables the studied project's own study wrote.
    here, there = project / SCRATCH_TABLES, collector / "build/studies/studies"
    assert without_seconds((there / "lr.md").read_text()) == without_seconds((here / "lr.md").read_text())
    assert results_without_seconds(there / "lr.json") == results_without_seconds(here / "lr.json")

    pulled_runs, local_runs = exp_show(collector), exp_show(project)
    assert set(pulled_runs) == RUNS == set(local_runs)
    for name, row in pulled_runs.items():
        params = row["data"]["params"]["params.yaml"]["data"]["train"]
        assert (params["optimizer"]["lr"], params["seed"]) == (
            (0.01 if "higher_lr" in name else 0.001),
            int(name[-1]),
        )
        assert model_md5(collector, row["rev"]) == model_md5(project, local_runs[name]["rev"])


def cluster_claims(where: Path, commit: str) -> str:
    """The study's claims the git remote holds, as `git ls-remote` lists them."""
    return subprocess.run(
        ["git", "ls-remote", "origin", f"{cluster.CLAIMS}/{commit}/*"],
        cwd=where,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
