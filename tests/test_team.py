"""A team's setup on real servers on 127.0.0.1: git and an SSH DVC remote on an SSH server, an S3
remote on moto's S3 server. Folders that share nothing but those servers play the team's machines."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_reproducibility import workspace_state

from pipeline.lib.layout import stage_path

from conftest import PROJECT_ROOT, clone_as_actions_checkout, dvc, git, set_param
from servers import Credentials, Machine, machine_environment, needs_ssh_client, s3_server, ssh_server

BUCKET = "team-bucket"


@pytest.mark.slow
@needs_ssh_client
def test_three_machines_share_data_models_and_runs_through_ssh_and_s3(project, tmp_path, team_servers):
    """Each machine has a home of its own (its SSH key, known hosts, git config, S3 credentials) and
    nothing else in common but the servers: A and B are people (their key in ~/.ssh/config), the CI
    runner has a deploy key in GIT_SSH_COMMAND only, and C, which only reads, a read-only S3 key."""
    ssh, s3, servers, repo_url = team_servers.ssh, team_servers.s3, team_servers.folder, team_servers.repo_url
    s3.create_bucket(BUCKET)
    a, b = team_servers.machine("a"), team_servers.machine("b")
    runner, c = team_servers.machine("runner", ssh_settings="GIT_SSH_COMMAND"), team_servers.machine("c", reader=True)

    # A: the team's remotes, committed; data, model and run records pushed; a model version tagged.
    machine_a = project
    dvc(machine_a, "remote", "add", "--default", "team", ssh.url(servers / "dvc-store"))
    dvc(machine_a, "remote", "add", "s3", f"s3://{BUCKET}/mnist-mlp")
    dvc(machine_a, "remote", "modify", "s3", "endpointurl", s3.endpoint)
    (machine_a / ".ci").mkdir()
    shutil.copy(PROJECT_ROOT / ".ci/check-results", machine_a / ".ci")  # what the CI runner runs
    git(machine_a, "add", ".dvc/config", ".ci", env=a.environment)
    git(machine_a, "commit", "-qm", "the team's remotes", env=a.environment)
    dvc(machine_a, "push", env=a.environment)
    git(machine_a, "remote", "add", "origin", repo_url)
    git(machine_a, "tag", "-a", "mnist-mlp@v1.0.0", "-m", "a model version", env=a.environment)
    git(machine_a, "push", "-q", "origin", "HEAD:main", "mnist-mlp@v1.0.0", env=a.environment)
    model = stage_path("train", "--model")
    trained = (machine_a / model).read_bytes()
    # ... and an experiment at other params, whose run it shares through S3.
    dvc(machine_a, "exp", "run", "-S", "train.epochs=1", env=a.environment)
    one_epoch = (machine_a / model).read_bytes()
    shared = pipeline(machine_a, "share", "--remote", "s3", machine=a)
    assert shared.returncode == 0 and "share: 6 recorded runs;" in shared.stdout, shared.stderr  # 2 x 3 stages

    # B: a clone over ssh://, the data from the SSH remote, the committed results reproduced.
    machine_b = tmp_path / "b"
    git(tmp_path, "clone", "-q", repo_url, str(machine_b), env=b.environment)
    dvc(machine_b, "pull", env=b.environment)
    verified = pipeline(machine_b, "verify", "--from", "preprocess", machine=b)
    assert verified.returncode == 0 and "verify: reproduced exactly" in verified.stdout, verified.stderr

    # CI: a checkout as the runner makes it checks the results with the data from S3; then,
    # back at A's experiment's params, dvc repro restores A's run instead of training.
    checkout = tmp_path / "runner"
    clone_as_actions_checkout(repo_url, checkout, env=runner.environment)
    checked = subprocess.run(
        [".ci/check-results", "HEAD~1"],
        cwd=checkout,
        capture_output=True,
        text=True,
        env=runner.environment | {"DVC_REMOTE": "s3"},
    )
    assert checked.returncode == 0 and "verify: reproduced exactly" in checked.stdout, checked.stdout + checked.stderr
    assert "Running stage 'train'" in checked.stdout + checked.stderr  # from preprocess on, as configured
    dvc(checkout, "remote", "default", "--local", "s3")
    dvc(checkout, "pull", "--run-cache", env=runner.environment)
    set_param(checkout, "train", "epochs", 1)
    restored = dvc(checkout, "repro", "--pull", env=runner.environment)
    assert "Stage 'train' is cached - skipping run" in restored and "Running stage 'train'" not in restored
    assert (checkout / model).read_bytes() == one_epoch

    # C: no clone, a model version by name, with a key that may only read.
    machine_c = tmp_path / "c"
    machine_c.mkdir()
    dvc(machine_c, "artifacts", "get", repo_url, "mnist-mlp", "--rev", "v1.0.0",
        "-o", "model.pt", env=c.environment)  # fmt: skip
    assert (machine_c / "model.pt").read_bytes() == trained


def one_line_error(where: Path, *args: str, home: Path) -> str:
    """What a command that must fail said on the machine whose home is `home`: exactly one line."""
    failed = pipeline(where, *args, machine=Machine(home.name, home, machine_environment(home)))
    assert failed.returncode == 1 and len(failed.stderr.splitlines()) == 1, failed.stderr
    return failed.stderr.strip()


def machine_home(home: Path, credentials: Credentials) -> Path:
    """A machine's home with its own S3 credentials and nothing else of any other machine's."""
    home.mkdir(parents=True)
    credentials.write_to(home)
    return home


@pytest.mark.slow
@needs_ssh_client
def test_a_remote_without_its_bucket_refusing_the_key_or_down_gets_one_line_and_nothing_changes(project, tmp_path):
    good = workspace_state(project)
    stranger_key = tmp_path / "stranger_key"  # a key the SSH server was never told of
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger_key)], check=True)
    with ssh_server() as ssh, s3_server() as s3:
        s3.create_bucket(BUCKET)
        writer = machine_home(tmp_path / "writer", s3.writer)
        reader = machine_home(tmp_path / "reader", s3.reader)  # may read the bucket, not write
        stranger = machine_home(tmp_path / "stranger", Credentials("AKIASTRANGER00000000", "not-a-key"))
        for name, url in (("nobucket", "s3://no-such-bucket/mnist-mlp"), ("s3", f"s3://{BUCKET}/mnist-mlp")):
            dvc(project, "remote", "add", name, url)
            dvc(project, "remote", "modify", name, "endpointurl", s3.endpoint)
        dvc(project, "remote", "add", "team", ssh.url(tmp_path / "dvc-store"))
        dvc(project, "remote", "modify", "--local", "team", "keyfile", str(stranger_key))
        assert one_line_error(project, "share", "--remote", "nobucket", home=writer) == (
            "error: dvc push --run-cache: the DVC remote nobucket has no such bucket: create it, or point the "
            "remote at one (dvc remote modify nobucket url s3://BUCKET/PATH)"
        )
        assert one_line_error(project, "share", "--remote", "s3", home=reader) == (
            "error: dvc push --run-cache: the DVC remote s3 denied this machine access: its credentials are valid "
            "but lack the permission (read-only?); ask for write access, or use credentials that have it"
        )
        refused = (
            "error: dvc push --run-cache: the DVC remote {remote} refused this machine's credentials: set them (S3: "
            "~/.aws/credentials, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; SSH: dvc remote modify --local "
            "{remote} keyfile KEY)"
        )
        assert one_line_error(project, "share", "--remote", "s3", home=stranger) == refused.format(remote="s3")
        assert one_line_error(project, "share", "--remote", "team", home=stranger) == refused.format(remote="team")
        assert s3.keys(BUCKET) == []  # nothing reached the bucket
    dvc(project, "remote", "add", "down", "s3://bucket/mnist-mlp")
    dvc(project, "remote", "modify", "down", "endpointurl", s3.endpoint)  # stopped: nothing listens there now
    assert one_line_error(project, "share", "--remote", "down", home=writer) == (
        "error: dvc push --run-cache: the DVC remote down cannot be reached: check its URL (dvc remote list) and "
        "that its server is up"
    )
    assert workspace_state(project) == good


def pipeline(where: Path, *args: str, machine: Machine | None = None) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` in `where`, as `machine` (its environment) or as this process."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=where,
        capture_output=True,
        text=True,
        env=machine.environment if machine else None,
    )
