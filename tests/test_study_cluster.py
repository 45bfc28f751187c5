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
import threading
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
from servers import needs_slurm, needs_ssh_client, s3_server, slurm_cluster

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


def refuse_pushes(bare: Path, while_exists: Path) -> None:
    """The git server rejects every push while `while_exists` exists, as a server that is down or
    denies this machine's key does; fetches still work."""
    hook = bare / "hooks/pre-receive"
    hook.write_text(f"#!/bin/sh\nif [ -e {while_exists} ]; then echo 'push refused' >&2; exit 1; fi\n")
    hook.chmod(0o755)


def test_a_worker_that_cannot_push_stops_at_start_with_one_line(clone, invoke_in, tmp_path):
    refuse_pushes(tmp_path / "shared.git", while_exists=tmp_path / "shared.git")
    studies = tmp_path / "mine.yaml"
    studies.write_text("seeds: [0, 1]\nstudies:\n  s:\n    question: q?\n    source: s\n    arms: {a: {}}\n")
    code, stderr = invoke_in(main, clone, "--studies", studies, "--worker", "origin")
    assert code == 1 and stderr.count("\n") == 1
    assert stderr.startswith("error: git push origin failed (")
    assert stderr.endswith(
        "this machine can fetch the repository but not push to it; give it write access (a deploy key allowed to "
        "write, a token with contents: write)\n"
    )


def test_a_failed_renewal_is_tried_again_and_is_a_takeover_only_when_the_claim_moved(
    clone, tmp_path, monkeypatch, process_groups
):
    commit = cluster.head()
    sha = cluster.push_claim("origin", commit, "s-a-s0", "claim", replacing=None)
    down = tmp_path / "down"
    down.touch()
    refuse_pushes(tmp_path / "shared.git", while_exists=down)
    assert cluster.push_claim("origin", commit, "s-a-s0", "running", replacing=sha) is None
    assert not cluster.claim_moved("origin", commit, "s-a-s0", sha)  # still ours: not taken over

    lasts = [sys.executable, "-c", "import time; time.sleep(3)"]

    def start(run: Run, environment: dict[str, str]) -> subprocess.Popen:  # a run in a group of its own, as workers'
        process_groups.append(subprocess.Popen(lasts, start_new_session=True))
        return process_groups[-1]

    monkeypatch.setattr(cluster, "start", start)
    threading.Timer(1.5, down.unlink).start()  # the server is back after a few failed renewals
    last, status = cluster.run_claimed(Run("s", "a", 0, {}), "origin", commit, sha, timeout=0.6)
    assert status == 0 and last != sha  # the run went on to its end, and a later renewal got through
    assert cluster.claims("origin", commit)["s-a-s0"].sha == last

    taker = cluster.push_claim("origin", commit, "s-a-s0", "claim", replacing=last)  # another worker's
    assert cluster.claim_moved("origin", commit, "s-a-s0", last)
    lasts[-1] = "import time; time.sleep(60)"
    assert cluster.run_claimed(Run("s", "a", 0, {}), "origin", commit, last, timeout=0.6) == (last, None)
    assert cluster.claims("origin", commit)["s-a-s0"].sha == taker


@pytest.fixture
def experiments(clone, tmp_path, monkeypatch):
    """The clone as a DVC project whose one stage copies params.yaml, two experiments run on it
    (s-a-s0, s-a-s1), and an S3 DVC remote (moto's server, bucket `study`) as its default."""
    (clone / "dvc.yaml").write_text(
        "stages:\n  copy:\n    cmd: cp params.yaml out.txt\n    params: [train.seed]\n    outs: [out.txt]\n"
    )
    dvc(clone, "init", "-q")
    dvc(clone, "config", "core.analytics", "false")
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "a pipeline")
    git(clone, "push", "-q", "origin", "HEAD")
    for seed in (0, 1):
        dvc(clone, "exp", "run", "-q", "--name", f"s-a-s{seed}", "-S", f"train.seed={seed}")
    with s3_server() as s3:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        dvc(clone, "remote", "add", "--local", "--default", "team", "s3://study/dvc")  # a machine's own, as
        dvc(clone, "remote", "modify", "--local", "team", "endpointurl", s3.endpoint)  # the study's commit lacks it
        yield s3


def test_a_run_is_done_only_once_its_outputs_are_on_the_dvc_remote(experiments, clone):
    """No bucket: the outputs cannot be sent, so the run's ref is not pushed and its claim is given
    back; with the bucket, outputs then ref, and the claim is removed."""
    commit = cluster.head()
    sha = cluster.push_claim("origin", commit, "s-a-s0", "claim", replacing=None)
    with pytest.raises(PipelineError) as raised:
        cluster.publish("s-a-s0", "origin", commit, sha)
    assert "the DVC remote team has no such bucket" in str(raised.value)
    assert str(raised.value).endswith("; s-a-s0 was not published, and another worker may run it")
    assert cluster.pushed_experiments("origin", commit) == set() and cluster.claims("origin", commit) == {}

    experiments.create_bucket("study")
    sha = cluster.push_claim("origin", commit, "s-a-s0", "claim", replacing=None)
    cluster.publish("s-a-s0", "origin", commit, sha)
    assert cluster.pushed_experiments("origin", commit) == {"s-a-s0"} and cluster.claims("origin", commit) == {}
    locked = yaml.safe_load(git_show(clone, f"{cluster.experiment_ref(commit, 's-a-s0')}:dvc.lock"))
    out_md5 = locked["stages"]["copy"]["outs"][0]["md5"]
    assert experiments.keys("study") == [f"dvc/files/md5/{out_md5[:2]}/{out_md5[2:]}"]


def test_one_lost_run_never_fails_a_collection(experiments, clone, tmp_path, capsys, monkeypatch):
    """s-a-s1's ref reached the git remote without its outputs (pushed by hand): the collector
    names it, leaves it out and pulls the other."""
    commit = cluster.head()
    experiments.create_bucket("study")
    cluster.publish("s-a-s0", "origin", commit, cluster.push_claim("origin", commit, "s-a-s0", "claim", None))
    lost = cluster.experiment_ref(commit, "s-a-s1")
    git(clone, "push", "-q", "origin", f"{lost}:{lost}")

    collector = tmp_path / "collector"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "shared.git"), str(collector)], check=True)
    dvc(collector, "remote", "add", "--local", "--default", "team", "s3://study/dvc")
    dvc(collector, "remote", "modify", "--local", "team", "endpointurl", experiments.endpoint)
    monkeypatch.chdir(collector)
    capsys.readouterr()
    cluster.pull([Run("s", "a", 0, {}), Run("s", "a", 1, {})], "origin", commit)
    said = capsys.readouterr().err.splitlines()
    assert said[0] == "study: s-a-s1 left out, its outputs are not on the DVC remote: out.txt"
    assert said[-1] == "study: pulled 1 of 2 runs from origin"
    local = git_refs(collector, "refs/exps")
    assert local == [cluster.experiment_ref(commit, "s-a-s0")]


def git_show(where: Path, what: str) -> str:
    return subprocess.run(["git", "show", what], cwd=where, capture_output=True, text=True, check=True).stdout


def git_refs(where: Path, prefix: str) -> list[str]:
    listed = subprocess.run(["git", "for-each-ref", "--format=%(refname)", prefix], cwd=where, capture_output=True)
    return listed.stdout.decode().split()


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


def test_the_slurm_recipe_survives_requeue_and_takes_the_tasks_cpus():
    recipe = (PROJECT_ROOT / "docs/cluster/slurm-study.sh").read_text()
    options = [line.removeprefix("#SBATCH ") for line in recipe.splitlines() if line.startswith("#SBATCH ")]
    assert {"--requeue", "--open-mode=append", "--signal=B:TERM@120"} <= set(options)
    assert 'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"' in recipe
    assert 'clone="$(mktemp -d ' in recipe  # a requeued task's second start finds no clone of the first in its way


def test_the_kubernetes_job_retries_each_index_alone_and_ignores_evictions():
    job = yaml.safe_load((PROJECT_ROOT / "docs/cluster/study-job.yaml").read_text())["spec"]
    assert "backoffLimit" not in job and job["backoffLimitPerIndex"] >= 1
    assert job["podFailurePolicy"]["rules"] == [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # which podFailurePolicy requires


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


class TeamStudy:
    """The studied project's study spread over a team's machines (`team_servers`): the lead, a
    person, pushes the study's commit, the data and the runs of the first seed; machines of each
    kind clone it, as the study workflow's runners do, run its commands, and collect."""

    workflow = {words[0]: words for words in study_commands(".github/workflows/study.yaml")}

    def __init__(self, project: Path, team, tmp_path: Path, reaches: dict[str, str | None]):
        self.project, self.team, self.tmp_path = project, team, tmp_path
        self.reaches = {"lead": "config", **reaches}
        self.machines = {name: team.machine(name, ssh_settings) for name, ssh_settings in self.reaches.items()}
        team.s3.create_bucket("study")
        lead = self.machines["lead"].environment
        git(project, "remote", "add", "origin", team.repo_url)
        git(project, "push", "-q", "origin", "HEAD:main", env=lead)
        self.use_team_remote(project, "--local")
        dvc(project, "push", env=lead)  # the workers pull the data the stages before training made
        earlier = sorted(name for name in RUNS if name.endswith(f"-s{SEEDS[0]}"))
        dvc(project, "exp", "push", "origin", *earlier, env=lead)  # runs made before the workers start
        self.commit = head(project)

    def use_team_remote(self, where: Path, scope: str, env: dict[str, str] | None = None) -> None:
        dvc(where, "remote", "add", scope, "--default", "team", "s3://study/dvc", env=env)
        dvc(where, "remote", "modify", scope, "team", "endpointurl", self.team.s3.endpoint, env=env)

    def clone(self, name: str) -> Path:
        environment = self.machines[name].environment
        if self.reaches[name] is None:  # a GitHub runner: HTTP, the token in the checkout
            token = (self.team.http.url, self.team.http.extraheader())
            clone_as_actions_checkout(self.team.http_repo_url, self.tmp_path / name, environment, extraheader=token)
        else:
            clone_as_actions_checkout(self.team.repo_url, self.tmp_path / name, env=environment)
        self.use_team_remote(self.tmp_path / name, "--local")
        return self.tmp_path / name

    def study(self, where: Path, role: str, *args: str, worker: str = "") -> subprocess.Popen:
        """The workflow's command for `role` (--worker, --collect-from) in `where`, as its machine."""
        log = (self.tmp_path / f"{where.name}.log").open("w")
        command = [word.replace("$GITHUB_SHA", self.commit) for word in self.workflow[role]]
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "study", "--studies", "studies.yaml", *command, *args],
            cwd=where,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.machines[where.name].environment | {"STUDY_WORKER": worker},
            start_new_session=True,
        )

    def claims_left(self, name: str) -> str:
        """The study's claims the git remote holds, as `git ls-remote` lists them on machine `name`,
        over its own way to the repository."""
        url = self.team.http_repo_url if self.reaches[name] is None else self.team.repo_url
        return subprocess.run(
            ["git", "ls-remote", url, f"{cluster.CLAIMS}/{self.commit}/*"],
            cwd=self.tmp_path / name if self.reaches[name] is None else None,  # the token is in its checkout
            capture_output=True,
            text=True,
            check=True,
            env=self.machines[name].environment,
        ).stdout

    def collect_and_compare(self, process_groups: list) -> None:
        """The collector pulls every run; its tables and models are those of the same runs made on
        one machine, the studied project's."""
        collector = self.clone("collector")
        process_groups.append(self.study(collector, "--collect-from"))
        assert process_groups[-1].wait() == 0, (self.tmp_path / "collector.log").read_text()
        assert "study: pulled 4 of 4 runs from origin" in (self.tmp_path / "collector.log").read_text()
        here, there = self.project / SCRATCH_TABLES, collector / "build/studies/studies"
        assert without_seconds((there / "lr.md").read_text()) == without_seconds((here / "lr.md").read_text())
        assert results_without_seconds(there / "lr.json") == results_without_seconds(here / "lr.json")
        pulled_runs, local_runs = exp_show(collector), exp_show(self.project)
        assert set(pulled_runs) == RUNS == set(local_runs)
        for name, row in pulled_runs.items():
            params = row["data"]["params"]["params.yaml"]["data"]["train"]
            assert (params["optimizer"]["lr"], params["seed"]) == (
                (0.01 if "higher_lr" in name else 0.001),
                int(name[-1]),
            )
            assert model_md5(collector, row["rev"]) == model_md5(self.project, local_runs[name]["rev"])


@pytest.mark.slow
@needs_ssh_client
@pytest.mark.xdist_group(STUDIED_GROUP)
def test_two_workers_and_a_collector_sharing_only_git_and_the_dvc_remote(
    studied, tmp_path, team_servers, process_groups
):
    """docs/cluster.md on real servers: git over SSH and HTTP and an S3 DVC remote, two worker
    checkouts and a collector checkout made as the study workflow's runners make them, each running
    that workflow's own commands; one worker is killed midway through its run. Each machine reaches
    the repository as its kind does: worker-1 over SSH with a deploy key only in GIT_SSH_COMMAND, as
    a pod has it; worker-2 and the collector, GitHub runners, over HTTP with the token only where
    actions/checkout puts it, the checkout's http.<url>.extraheader. DVC's git client reads neither."""
    reaches = {"worker-1": "GIT_SSH_COMMAND", "worker-2": None, "collector": None}
    team = TeamStudy(studied[0], team_servers, tmp_path, reaches)
    workers = [team.clone("worker-1"), team.clone("worker-2")]
    for worker in workers:
        dvc(worker, "pull", "-q", env=team.machines[worker.name].environment)
    first, second = (team.study(w, "--worker", "--claim-timeout", "6", worker=w.name) for w in workers)
    process_groups.extend([first, second])
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
    assert not team.claims_left("worker-2")  # pushed runs leave no claim behind
    team.collect_and_compare(process_groups)


@pytest.mark.slow
@needs_ssh_client
@needs_slurm
@pytest.mark.xdist_group(STUDIED_GROUP)
def test_slurm_runs_the_recipe_as_written_and_a_requeued_task_hands_its_run_back(
    studied, tmp_path, team_servers, process_groups
):
    """docs/cluster/slurm-study.sh submitted with sbatch --array=1-2 to a real one-node SLURM, only
    the repository and the DVC remote (the cluster user's global DVC config) being this test's; its
    nodes use the user's key in ~/.ssh/config and the environment active at sbatch. One task is
    requeued mid-run: it hands its claim back, starts again in a fresh clone with its first log
    kept, and every run is pushed once; the collector's tables and models are one machine's."""
    team = TeamStudy(studied[0], team_servers, tmp_path, {"cluster": "config", "collector": None})
    user = team.machines["cluster"].environment
    team.use_team_remote(tmp_path, "--global", env=user)
    submit = tmp_path / "submit"
    (tmp_path / "scratch").mkdir()
    submit.mkdir()
    venv = str(Path(sys.executable).parent)
    environment = user | {
        "VIRTUAL_ENV": str(Path(venv).parent),
        "PATH": f"{venv}{os.pathsep}{user['PATH']}",
        "TMPDIR": str(tmp_path / "scratch"),
    }
    with slurm_cluster(tmp_path / "slurm") as slurm:
        submitted = slurm.run(
            "sbatch", "--parsable", "--array=1-2", f"--chdir={submit}", f"--export=ALL,REPOSITORY={team.team.repo_url}",
            str(PROJECT_ROOT / "docs/cluster/slurm-study.sh"), team.commit, "--studies", "studies.yaml",
            env=environment,
        )  # fmt: skip
        job = submitted.strip().split(";")[0]
        log = submit / f"study-{job}-1.out"
        deadline = time.monotonic() + 300
        while not log.exists() or " claimed" not in log.read_text():
            assert time.monotonic() < deadline and slurm.run("squeue", "-h", "-j", job), read(log)
            time.sleep(0.5)
        requeued = log.read_text().splitlines()[-1].split()[3]  # "study worker slurm-...: <run> claimed"
        slurm.run("scontrol", "requeue", f"{job}_1")
        while "start 2" not in read(log):  # requeued tasks wait for a begin time: start it now
            assert time.monotonic() < deadline, read(log)
            subprocess.run(
                ["scontrol", "update", f"JobId={job}_1", "StartTime=now"],
                env=os.environ | slurm.environment,
                capture_output=True,
            )
            time.sleep(1)
        while slurm.run("squeue", "-h", "-j", job).strip():
            assert time.monotonic() < deadline + 300, read(log) + read(submit / f"study-{job}-2.out")
            time.sleep(1)
    first_start, second_start = read(log).split(f"study task {job}_1, start 2")
    assert f"error: stopped by SIGTERM: {requeued} stopped and its claim removed" in first_start
    assert "every run of the plan is pushed" in second_start  # started cleanly, and saw the study through
    both = read(log) + read(submit / f"study-{job}-2.out")
    assert sum(both.count(f": {name} done") for name in RUNS) == 2  # the two runs left, each pushed once
    assert not team.claims_left("cluster")
    team.collect_and_compare(process_groups)


def read(path: Path) -> str:
    return path.read_text() if path.exists() else f"({path.name}: not written)"
