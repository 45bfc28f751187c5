"""Same params, same bytes; a stage killed midway leaves nothing half-written, and a rerun completes identically."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import QuietHandler, dvc, git, serve_folder
from test_dvc import STAGES

# While this path exists, the stage is midway: its outputs are being written under temporary names.
MIDWAY = {
    "download": "data/.raw.tmp",
    "preprocess": "data/.preprocessed.tmp",
    "split": "data/.split.tmp",
    "train": "reports/.train.tmp",
    "evaluate": "reports/evaluate/.confusion.csv.tmp",  # its outputs are being written, none renamed yet
    "analyze": "reports/.analyze.tmp",
}


def lock_outputs(project: Path) -> dict[str, str]:
    stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", []) if "timing" not in out["path"]}


class SlowHandler(QuietHandler):
    """Serves files in small chunks with pauses, so a download can be interrupted mid-transfer."""

    def copyfile(self, source, destination):
        try:
            while chunk := source.read(256 * 1024):
                destination.write(chunk)
                time.sleep(0.03)
        except ConnectionError:
            pass  # the client was killed mid-transfer, as intended


@pytest.fixture
def slow_mirror(shared_mnist):
    with serve_folder(shared_mnist, SlowHandler) as url:
        yield url


def kill_midway(project: Path, stage: str, env: dict) -> None:
    """Run `dvc repro --force -s stage` and SIGKILL dvc and the stage together once the stage is midway."""
    process = subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", stage], cwd=project, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    marker = project / MIDWAY[stage]
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, f"{stage} finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def assert_cache_holds_only_whole_files(project: Path) -> None:
    """Every cached object is named by the MD5 of its content: a half-written one would not match."""
    objects = [p for p in (project / ".dvc/cache/files/md5").rglob("*") if p.is_file()]
    assert objects
    for path in objects:
        name = path.parent.name + path.name.removesuffix(".dir")
        assert hashlib.md5(path.read_bytes()).hexdigest() == name, path


@pytest.mark.slow
def test_same_params_same_bytes(project):
    dvc(project, "repro")
    first = lock_outputs(project)
    dvc(project, "repro", "--force")
    assert lock_outputs(project) == first
    assert any(path.endswith("model.pt") for path in first) and "data/evaluate/probabilities.npy" in first


@pytest.mark.slow
def test_killed_stages_rerun_to_the_same_results(project, slow_mirror):
    dvc(project, "repro")
    expected = lock_outputs(project)
    for stage in STAGES:
        env = os.environ | ({"MNIST_MIRROR": slow_mirror} if stage == "download" else {})
        kill_midway(project, stage, env)
        # Recompute over the leftovers (forced: DVC's run cache would otherwise restore the outputs).
        assert f"Running stage '{stage}'" in dvc(project, "repro", "--force", "--single-item", stage)
        dvc(project, "repro")
        assert lock_outputs(project) == expected, f"after killing {stage}"
        assert not list(project.glob("data/.*.tmp")) and not list(project.glob("reports/**/.*.tmp"))
    assert_cache_holds_only_whole_files(project)


def verify(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "verify"], cwd=project, capture_output=True, text=True)


@pytest.mark.slow
def test_verify_passes_on_a_rerun_and_fails_on_uncommitted_code_changes(project):
    dvc(project, "repro")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "results")
    passed = verify(project)
    assert passed.returncode == 0, passed.stderr
    assert "verify: reproduced exactly" in passed.stdout and "differs" not in passed.stdout

    with open(project / "pipeline/lib/metrics.py", "a") as file:
        file.write("\n# a change to the code, committed without rerunning the pipeline\n")
    git(project, "commit", "-qam", "code only")
    failed = verify(project)
    assert failed.returncode == 1
    message = failed.stderr.splitlines()[-1]
    assert message.startswith("error: the committed dvc.lock is stale")
    assert "analyze: pipeline/lib/metrics.py" in message and "evaluate: pipeline/lib/metrics.py" in message
