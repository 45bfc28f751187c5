"""Same params, same bytes; a failed, interrupted or killed stage keeps the last good results;
verify's verdicts end to end."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_dvc import STAGES

from pipeline.lib.atomic import temporary_path
from pipeline.lib.cli import INTERRUPTED
from pipeline.lib.layout import stage_path

from conftest import QuietHandler, dvc, git, serve_folder, stop_group

# Each stage is killed while this output exists under its temporary name: all of the stage's
# results are written, or being written, and none of them renamed into place yet.
WRITTEN_MIDWAY = {
    "download": "--out",
    "preprocess": "--out",
    "split": "--out",
    "train": "--model",
    "evaluate": "--confusion-csv",
    "analyze": "--out",
}

# Loaded by every Python process of the killed run (PYTHONPATH): the stage stops just before it
# renames the watched temporary path into place, so a fast stage cannot finish before the kill, and
# says so by creating PAUSED (outside the project), so that the signal finds it paused there.
PAUSE_BEFORE_RENAMING = """
import os, sys, time

def pause_before_renaming(event, args, watched=os.environ["PAUSE_BEFORE_RENAMING"]):
    if event == "os.rename" and os.path.abspath(os.fsdecode(args[0])) == watched:
        open(os.environ["PAUSED"], "w").close()
        for _ in range(36000):  # short sleeps: a signal taken by another thread still wakes it
            time.sleep(0.1)

sys.addaudithook(pause_before_renaming)
"""


def midway_marker(project: Path, stage: str) -> Path:
    return project / temporary_path(stage_path(stage, WRITTEN_MIDWAY[stage], project))


def lock_outputs(project: Path) -> dict[str, str]:
    stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {
        out["path"]: out["md5"]
        for stage in stages.values()
        for out in stage.get("outs", [])
        if "timing" not in out["path"]
    }


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


@pytest.fixture
def pause_hooks(tmp_path) -> Path:
    """A folder whose sitecustomize.py (PAUSE_BEFORE_RENAMING) the held stages load."""
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks/sitecustomize.py").write_text(PAUSE_BEFORE_RENAMING)
    return tmp_path / "hooks"


def held_midway(
    project: Path, stage: str, hooks: Path, env: dict | None = None, log: Path = Path(os.devnull)
) -> subprocess.Popen:
    """`dvc repro --force --single-item stage`, in a process group of its own, once the stage is held
    midway: its results written under temporary names, none renamed into place; its output in `log`."""
    env = os.environ if env is None else env
    marker = midway_marker(project, stage)
    hooks_first = os.pathsep.join(
        filter(None, [str(hooks), env.get("PYTHONPATH")])
    )  # a PYTHONPATH of the user's still holds
    paused = hooks / f"{stage}.paused"
    paused.unlink(missing_ok=True)
    env = env | {"PYTHONPATH": hooks_first, "PAUSE_BEFORE_RENAMING": str(marker.absolute()), "PAUSED": str(paused)}
    process = subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", stage],
        cwd=project,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    try:
        while not paused.exists():
            assert process.poll() is None, f"{stage} finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.005)
    except BaseException:
        stop_group(process)
        raise
    return process


def assert_cache_holds_only_whole_files(project: Path) -> None:
    """Every cached object is named by the MD5 of its content: a half-written one would not match."""
    objects = [p for p in (project / ".dvc/cache/files/md5").rglob("*") if p.is_file()]
    assert objects
    for path in objects:
        name = path.parent.name + path.name.removesuffix(".dir")
        assert hashlib.md5(path.read_bytes()).hexdigest() == name, path


@pytest.mark.slow
def test_killed_stages_rerun_to_the_same_bytes_that_verify_finds_exact(project, slow_mirror, pause_hooks):
    expected = lock_outputs(project)
    assert {
        stage_path("train", "--model", project).as_posix(),
        stage_path("evaluate", "--predictions", project).as_posix(),
    } <= set(expected)
    for stage in STAGES:
        env = os.environ
        if stage == "download":  # its own files would be copied before the mirror is asked
            shutil.rmtree(project / stage_path("download", "--out"))
            env = env | {"MNIST_MIRROR": slow_mirror}
        process = held_midway(project, stage, pause_hooks, env)
        stop_group(process)  # dvc and the stage together, as a machine that dies
        assert process.returncode == -signal.SIGKILL
        if stage == STAGES[-1]:  # verify reruns it, then compares every output with the committed one
            checked = verify(project, "--from", stage)
            assert checked.returncode == 0 and f"Running stage '{stage}'" in checked.stderr, checked.stderr
            assert "verify: reproduced exactly" in checked.stdout and "differs" not in checked.stdout
        else:  # recomputed over the leftovers (forced: DVC's run cache would otherwise restore the outputs)
            assert f"Running stage '{stage}'" in dvc(project, "repro", "--force", "--single-item", stage)
        assert lock_outputs(project) == expected, f"after killing {stage}"
        assert not list(project.glob("data/.*.tmp")) and not list(project.glob("reports/**/.*.tmp"))
        assert not list(project.glob("reports/**/.*.previous"))
    assert_cache_holds_only_whole_files(project)


def workspace_state(project: Path) -> dict[str, str]:
    """MD5 of dvc.lock and of every file under data/ and reports/, temporary files included."""
    files = [path for folder in ("data", "reports") for path in (project / folder).rglob("*") if path.is_file()]
    return {
        str(path.relative_to(project)): hashlib.md5(path.read_bytes()).hexdigest()
        for path in [*files, project / "dvc.lock"]
    }


def dvc_fails(project: Path, *args: str, env: dict | None = None) -> str:
    result = subprocess.run(["dvc", *args], cwd=project, capture_output=True, text=True, env=env)
    assert result.returncode != 0, result.stdout
    return result.stdout + result.stderr


# Requests to the public mirrors go to a closed loopback port: the test never needs, or uses, the internet.
NO_INTERNET = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


@pytest.mark.slow
def test_bad_params_a_failed_download_and_ctrl_c_keep_the_last_good_results(project, tmp_path, pause_hooks):
    good = workspace_state(project)

    params = project / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.001", "lr: -0.001"))
    assert "train.optimizer.lr: Input should be greater than 0" in dvc_fails(project, "repro")
    assert workspace_state(project) == good
    git(project, "checkout", "params.yaml")

    params.write_text(params.read_text() + "optimizer:\n  lr: 0.01\n")  # a section at the wrong level
    said = dvc_fails(project, "repro")
    assert (
        "params.yaml: optimizer: unknown key (allowed here: preprocess, split," in said
        and "Running stage 'preprocess'" not in said
    )
    assert workspace_state(project) == good
    git(project, "checkout", "params.yaml")

    raw = project / stage_path("download", "--out")
    next(raw.glob("*.gz")).unlink()  # what the download must fetch again: its other files stay
    good = workspace_state(project)
    (tmp_path / "empty").mkdir()
    offline = os.environ | NO_INTERNET | {"MNIST_MIRROR": str(tmp_path / "empty")}
    assert "no mirror provided a valid" in dvc_fails(
        project, "repro", "--force", "--single-item", "download", env=offline
    )
    assert workspace_state(project) == good

    dvc(project, "checkout")  # the download's file back, as the last commit has it
    good = workspace_state(project)
    log = tmp_path / "interrupted.log"
    process = held_midway(project, "train", pause_hooks, log=log)
    try:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
        assert process.wait(timeout=120) != 0
    finally:
        stop_group(process)
    # DVC removed train's outputs before running it (its run-cache needs that); the stage says how
    # to bring back those of the last commit, and that command does.
    assert f"error: {INTERRUPTED}" in log.read_text()
    restore = INTERRUPTED.split("; if DVC had removed the previous ones, ")[1].split(" brings back")[0]
    subprocess.run(restore, shell=True, cwd=project, check=True, capture_output=True)
    assert workspace_state(project) == good


@pytest.mark.slow
def test_bench_measures_in_a_copy_without_the_network_and_changes_nothing_here(project):
    good = workspace_state(project)
    offline = {name: value for name, value in os.environ.items() if name != "MNIST_MIRROR"} | NO_INTERNET
    command = [sys.executable, "-m", "pipeline", "bench", "--repeats", "1"]
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, env=offline)
    assert result.returncode == 0, result.stderr
    table = result.stdout
    for method in ("canonical DataLoader idiom", "project loop", "compute floor"):
        assert re.search(rf"^{method} +\d+ +\d+\.\d{{3}} ", table, re.MULTILINE), method
    assert re.search(r"pinned/native \d\.\d\dx; portable .* portable/pinned \d\.\d\dx", table)
    for stage in STAGES:
        assert re.search(rf"^  {stage} +\d+\.\d s +\d+ MiB$", table, re.MULTILINE), stage
    assert re.search(r"two trainings at once / one alone +\d\.\d\dx", table) and "no-op repro" in table
    assert re.search(r"back to params already run +\d+\.\d s  \(restored from DVC's run-cache", table)
    assert re.search(r"a study of 4 one-epoch runs +\d+\.\d s", table)
    assert re.search(r"per run, beyond its training +-?\d+\.\d s  \(\d+\.\d s of training each\)", table)
    assert "goal" not in table
    assert workspace_state(project) == good


def verify(project: Path, *options: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "verify", *options],
        cwd=project,
        capture_output=True,
        text=True,
        env=os.environ | environment,
    )


@pytest.mark.slow
def test_a_pushed_model_is_pulled_into_a_fresh_clone_and_verified_without_retraining(project, tmp_path):
    """docs/experiments.md, "Sharing results": push from one clone, pull into another, verify there from evaluate on."""
    dvc(project, "remote", "add", "--default", "team", str(tmp_path / "remote"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "the team's remote")
    dvc(project, "push")
    subprocess.run(["git", "clone", "-q", str(project), str(tmp_path / "clone")], check=True)
    clone = tmp_path / "clone"
    dvc(clone, "pull")
    model = stage_path("train", "--model", clone)
    assert (clone / model).read_bytes() == (project / model).read_bytes()
    checked = verify(clone, "--from", "evaluate", MNIST_MIRROR="/nonexistent")  # nothing is downloaded or retrained
    assert checked.returncode == 0, checked.stderr
    assert "Running stage 'evaluate'" in checked.stderr and "Running stage 'train'" not in checked.stderr
    assert "verify: reproduced exactly" in checked.stdout


@pytest.mark.slow
def test_verify_finds_stale_code_before_rerunning(project):
    with open(project / "pipeline/lib/metrics.py", "a") as file:
        file.write("\n# a change to the code, committed without rerunning the pipeline\n")
    git(project, "commit", "-qam", "code only")
    failed = verify(project)
    assert failed.returncode == 1 and "dvc repro --force" not in failed.stderr  # judged before any rerun
    assert failed.stderr.splitlines() == [
        "error: stale code: the committed results come from other code (evaluate: pipeline/lib/metrics.py, "
        "analyze: pipeline/lib/metrics.py): run dvc repro and commit dvc.lock and reports/"
    ]


@pytest.mark.slow
def test_verify_judges_a_rerun_on_other_numerics_by_the_tolerance(project):
    other = verify(project, MNIST_NUMERICS="native", ATEN_CPU_CAPABILITY="default")
    verdict = (other.stdout if other.returncode == 0 else other.stderr).strip().splitlines()[-1]
    assert "other numerics, test accuracy" in verdict and "cpu_capability AVX2 -> DEFAULT" in verdict
    assert "numerics pinned -> native" in verdict
    assert other.returncode == (0 if "within tolerance" in verdict else 1)
    raw = stage_path("download", "--out", project).as_posix()
    assert re.search(rf"^ +exact +{raw}$", other.stdout, re.MULTILINE)  # the data stages do not use torch
