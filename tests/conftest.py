"""Shared fixtures: tiny synthetic MNIST-format data written by the tests, and small params."""

from __future__ import annotations

import configparser
import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from filelock import FileLock

from pipeline.lib.fetch import MIRROR_VARIABLE, mirrors_from_environment
from pipeline.lib.mnist import OFFICIAL_FILES, SPLIT_FILES
from pipeline.lib.params import Params
from pipeline.lib.seed_spread import SEED_STUDY
from pipeline.lib.staleness import produced_paths, tracked_keys

from idx_writer import write_idx_gz
from scratch_params import PROJECT_ROOT, SCRATCH_STUDY_FILE, SCRATCH_TABLES, small_params, write_params

PROJECT_DVC_CONFIG = configparser.ConfigParser()
PROJECT_DVC_CONFIG.read(PROJECT_ROOT / ".dvc/config")

# A shell starts a background job (`cmd &`, nohup) with Ctrl-C ignored, and Python and every process
# it starts keep it ignored; the Ctrl-C tests need it delivered as a terminal would, however the
# suite was started. A handler (not ignored) is reset to the default in the processes tests start.
signal.signal(signal.SIGINT, signal.default_int_handler)


def local_mnist() -> Path | None:
    """The first local folder among the MNIST_MIRROR mirrors (CI sets ../shared/mnist) holding the
    four official files, or None."""
    for mirror in mirrors_from_environment(os.environ.get(MIRROR_VARIABLE)):
        folder = Path(mirror)
        if "://" not in mirror and all((folder / name).is_file() for name in OFFICIAL_FILES):
            return folder.resolve()
    return None


def synthetic_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 28x28 images whose class is a bright bar at a class-dependent row, plus noise.

    Easy enough that a small MLP learns it in a few epochs, so tests can check learning.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(count, dtype=np.uint8) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(count, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels):
        row = 4 + 2 * int(label)
        image[row : row + 2, 6:22] = 255
    return images, labels


def write_raw(folder: Path, train_count: int = 400, test_count: int = 100, seed: int = 0) -> dict[str, str]:
    """The four .gz files in `folder`; returns their MD5s by name."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, count, part_seed in (("train", train_count, seed), ("test", test_count, seed + 1)):
        images, labels = synthetic_digits(count, part_seed)
        images_name, labels_name = SPLIT_FILES[part]
        write_idx_gz(folder / images_name, images)
        write_idx_gz(folder / labels_name, labels)
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in sorted(folder.glob("*.gz"))}


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    write_raw(tmp_path / "raw")
    return tmp_path / "raw"


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    return write_params(tmp_path / "params.yaml", small_params())


@pytest.fixture
def params(params_file: Path) -> Params:
    return Params.model_validate(yaml.safe_load(params_file.read_text()))


@pytest.fixture
def run_stage():
    """Invoke a stage's Click command in-process; returns the click Result."""

    def invoke(command, *args: str):
        return CliRunner().invoke(command, [str(arg) for arg in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def invoke_in(monkeypatch):
    """Run a user command's Click command from a folder, in this process: (exit code, stderr)."""

    def invoke(command, where: Path, *args: str) -> tuple[int, str]:
        monkeypatch.chdir(where)
        result = CliRunner().invoke(command, [str(arg) for arg in args])
        return result.exit_code, result.stderr

    return invoke


@pytest.fixture(scope="session", autouse=True)
def torch_threads_shared_by_workers() -> None:
    """pytest-xdist runs one worker per core (-n auto), and each runs torch in process: with a thread
    per core each, the workers' OpenMP threads would spin against each other (pipeline/lib/cores.py),
    so each takes its share. (A fixture, not an import: pytest-xdist's controller loads this file
    too, and runs no test.)"""
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    """Real MNIST from a local mirror in MNIST_MIRROR; tests that need it skip without one."""
    folder = local_mnist()
    if folder is None:
        pytest.skip(f"real MNIST needs {MIRROR_VARIABLE} set to a local folder of the four official files")
    return folder


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def serve_folder(folder: Path, handler: type = QuietHandler) -> Iterator[str]:
    """A loopback HTTP server over `folder` for the duration; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def copy_project(destination: Path) -> Path:
    """The files a pipeline run needs, and the seed spread verify and report read, without data/,
    the stages' reports or git history."""
    for name in ("dvc.yaml", "params.yaml", SEED_STUDY):
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, destination / name)
    shutil.copytree(PROJECT_ROOT / "pipeline", destination / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def stop_group(process: subprocess.Popen) -> None:
    """Kill what is left of a process group a test started (start_new_session=True)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@pytest.fixture
def process_groups() -> Iterator[list[subprocess.Popen]]:
    """The process groups a test starts, appended here: killed when it ends, however it ends."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        stop_group(process)


@pytest.fixture
def team_servers(tmp_path: Path):
    """This test's team: a bare git repository served over SSH and over HTTP with a token, and an S3
    server that checks credentials; `Team.machine` makes each machine a home of its own. The servers
    stop when the test ends."""
    from servers import Team, git_http_server, s3_server, ssh_server  # here: xdist's controller loads this file

    folder = tmp_path / "servers"
    folder.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(folder / "repo.git")], check=True)
    with ssh_server() as ssh, s3_server() as s3, git_http_server(folder) as http:
        yield Team(ssh, s3, http, folder)


def git(project: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """git in `project`, in this process's environment or in a machine's (`env`)."""
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, env=env)


def clone_as_actions_checkout(
    url: str, where: Path, env: dict[str, str] | None = None, extraheader: tuple[str, str] | None = None
) -> None:
    """A clone as actions/checkout makes it with fetch-depth: 0: init, the token in the checkout's
    own config (`extraheader`: the server's URL and the header), fetch every branch and tag, check
    the branch out."""
    where.mkdir()
    token = [["config", "--local", f"http.{extraheader[0]}/.extraheader", extraheader[1]]] if extraheader else []
    for args in (
        ["init", "-q"],
        *token,
        ["remote", "add", "origin", url],
        [
            "fetch",
            "-q",
            "--prune",
            "--no-recurse-submodules",
            "origin",
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",
        ],
        ["checkout", "-q", "--force", "-B", "main", "refs/remotes/origin/main"],
    ):
        git(where, *args, env=env)


def dvc(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """dvc in `project`, in this process's environment or in a machine's (`env`); what it said."""
    result = subprocess.run(
        ["dvc", *args], cwd=project, capture_output=True, text=True, env=(env or os.environ) | {"DVC_NO_ANALYTICS": "1"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def new_project(folder: Path) -> Path:
    """A git + DVC copy of the project with tiny training params, one commit, nothing run."""
    folder.mkdir(parents=True)
    project = copy_project(folder)
    write_params(project / "params.yaml", small_params(split={"train_subset": 2000}, train={"epochs": 2}))
    git(project, "init", "-q")
    git(project, "config", "user.email", "test@example.com")
    git(project, "config", "user.name", "test")
    dvc(project, "init", "-q")
    dvc(project, "config", "core.analytics", "false")
    dvc(project, "config", "cache.type", PROJECT_DVC_CONFIG["cache"]["type"])  # as the project links its data
    git(project, "add", "-A")
    git(project, "commit", "-qm", "init")
    return project


def reproduce(project_parent: Path, mnist: Path) -> Path:
    """A new project in `project_parent` after `dvc repro` on real MNIST, results committed; the
    repro's output beside it in repro.log."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_MIRROR", str(mnist))
        project = new_project(project_parent / "project")
        (project_parent / "repro.log").write_text(dvc(project, "repro"))  # what tests/test_dvc.py checks
        git(project, "add", "-A")
        git(project, "commit", "-qm", "results")
    return project


def built_once(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """`build(folder)` run once per test session in a folder of its own, returned: with pytest-xdist,
    the first worker to ask builds it in the session's folder and the others wait for it."""
    if worker_id == "master":
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    session = tmp_path_factory.getbasetemp().parent  # shared by this session's workers
    with FileLock(session / f"{name}.lock"):
        folder = session / name
        if not (folder / "built").exists():
            if folder.exists():
                shutil.rmtree(folder)  # a worker that failed midway
            folder.mkdir()
            build(folder)
            (folder / "built").touch()
    return folder


@pytest.fixture(scope="session")
def reproduced_project(tmp_path_factory, shared_mnist, worker_id) -> Path:
    """One project after `dvc repro` on real MNIST, built once per test session."""
    built = built_once(tmp_path_factory, worker_id, "reproduced", lambda folder: reproduce(folder, shared_mnist))
    return built / "project"


@dataclass(frozen=True)
class StudyRun:
    wall: float  # seconds of the whole `python -m pipeline study`
    log: str  # what it said


@pytest.fixture(scope="session")
def studied_project(tmp_path_factory, reproduced_project, shared_mnist, worker_id) -> Path:
    """A copy of the reproduced project after SCRATCH_STUDY ran in it as DVC experiments (on a
    commit of its studies.yaml), built once per test session; what the study said is in study.json."""

    def study(folder: Path) -> None:
        project = copy_project_tree(reproduced_project, folder / "project")
        shutil.copy(SCRATCH_STUDY_FILE, project / "studies.yaml")
        git(project, "add", "-A")
        git(project, "commit", "-qm", "a study")
        command = [sys.executable, "-m", "pipeline", "study", "--studies", "studies.yaml", "--out", SCRATCH_TABLES]
        start = time.perf_counter()
        said = subprocess.run(
            command, cwd=project, capture_output=True, text=True, env=os.environ | {MIRROR_VARIABLE: str(shared_mnist)}
        )
        assert said.returncode == 0, said.stderr
        run = StudyRun(time.perf_counter() - start, said.stderr)
        (folder / "study.json").write_text(json.dumps(asdict(run)))

    return built_once(tmp_path_factory, worker_id, "studied", study) / "project"


def link_or_copy(source: str, destination: str) -> str:
    """copytree's copy function for a built project: a file of DVC's cache (in .dvc/cache, or a
    workspace file hardlinked to one, as `cache.type: hardlink` makes them) is linked, since DVC
    never writes one in place (a stage replaces its outputs by a rename); any other file is copied,
    so that a test may edit it. A copy then costs no second copy of the data."""
    if f"{os.sep}.dvc{os.sep}cache{os.sep}" in source or os.stat(source).st_nlink > 1:
        os.link(source, destination)
        return destination
    return shutil.copy2(source, destination)


def copy_project_tree(built: Path, destination: Path) -> Path:
    return Path(shutil.copytree(built, destination, symlinks=True, copy_function=link_or_copy))


def copy_of(built: Path, tmp_path: Path, monkeypatch, mnist: Path) -> Path:
    """This test's own copy of a project built once per session (git history, DVC cache, data,
    results and experiments)."""
    monkeypatch.setenv("MNIST_MIRROR", str(mnist))
    return copy_project_tree(built, tmp_path / "project")


@pytest.fixture
def project(tmp_path, reproduced_project, shared_mnist, monkeypatch) -> Path:
    """This test's own copy of the reproduced project."""
    return copy_of(reproduced_project, tmp_path, monkeypatch, shared_mnist)


STUDIED_GROUP = "studied_project"  # the xdist_group of the tests that use `studied`


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first, those that need no session project before those that do, then the unit
    tier. pytest-xdist hands tests out in this order (after the studied group, its largest unit): one
    worker builds the session projects while the other runs slow tests that need neither, instead of
    waiting for them, and the many short unit tests even out the end."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow") is None:
            return 2
        return 1 if {"reproduced_project", "studied_project"} & set(item.fixturenames) else 0

    items.sort(key=rank)


@pytest.fixture
def studied(request, worker_id, tmp_path, studied_project, shared_mnist, monkeypatch) -> tuple[Path, StudyRun]:
    """This test's own copy of the studied project, and how long its study took and what it said."""
    if worker_id != "master":  # with pytest-xdist, one worker runs these tests: another would wait for the study
        assert request.node.nodeid.endswith(f"@{STUDIED_GROUP}"), (
            f"pytest-xdist did not group this test: mark it @pytest.mark.xdist_group({STUDIED_GROUP!r}) "
            "and run a pytest that xdist's --dist loadgroup works with (pyproject.toml pins one)"
        )
    study = StudyRun(**json.loads((studied_project.parent / "study.json").read_text()))
    return copy_of(studied_project, tmp_path, monkeypatch, shared_mnist), study


def pipeline_steps(params_file: Path, raw: Path, root: Path) -> tuple[dict[str, Path], list[tuple]]:
    """preprocess -> split -> train -> evaluate -> analyze, as dvc.yaml chains them: (paths, commands)."""
    from pipeline.stages import analyze, evaluate, preprocess, split, train  # here: the controller loads no stage

    paths = {
        "pre": root / "pre",
        "stats": root / "reports/normalization.json",
        "split": root / "split",
        "counts": root / "reports/counts.json",
        "model": root / "model/model.pt",
        "live": root / "reports/train",
        "timing": root / "reports/timing.json",
        "metrics": root / "reports/metrics.json",
        "per_class": root / "reports/per_class.json",
        "per_class_train": root / "reports/per_class_train.json",
        "csv": root / "reports/confusion.csv",
        "probs": root / "probs.npy",
        "analysis": root / "reports/analyze",
    }
    p = ["--params", params_file]
    steps = [
        (preprocess.main, "--raw", raw, "--out", paths["pre"], "--stats", paths["stats"]),
        (split.main, "--data", paths["pre"], "--out", paths["split"], "--counts", paths["counts"]),
        (
            train.main,
            "--data",
            paths["split"],
            "--stats",
            paths["stats"],
            "--model",
            paths["model"],
            "--live",
            paths["live"],
            "--timing",
            paths["timing"],
        ),
        (
            evaluate.main,
            "--model",
            paths["model"],
            "--data",
            paths["pre"],
            "--metrics",
            paths["metrics"],
            "--per-class",
            paths["per_class"],
            "--split",
            paths["split"],
            "--per-class-train",
            paths["per_class_train"],
            "--confusion-csv",
            paths["csv"],
            "--predictions",
            paths["probs"],
        ),
        (
            analyze.main,
            "--model",
            paths["model"],
            "--data",
            paths["pre"],
            "--predictions",
            paths["probs"],
            "--out",
            paths["analysis"],
        ),
    ]
    return paths, [(command, *p, *args) for command, *args in steps]


def run_pipeline(run_stage, params_file: Path, raw: Path, root: Path) -> dict[str, Path]:
    paths, steps = pipeline_steps(params_file, raw, root)
    for step in steps:
        result = run_stage(*step)
        assert result.exit_code == 0, result.output
    return paths


# A git repository of committed results, for the commands that read git: report and verify.


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def matching_lock(repo: Path) -> dict:
    """The committed dvc.lock with every stage's command, code hashes and params taken from `repo`,
    as a `dvc repro` there would record them."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    lock = yaml.safe_load((PROJECT_ROOT / "dvc.lock").read_text())
    produced = produced_paths(stages)
    for name, stage in stages.items():
        locked = lock["stages"][name]
        locked["cmd"] = " ".join(stage["cmd"].split())
        recorded = {dep["path"]: dep for dep in locked.get("deps", [])}
        locked["deps"] = [
            recorded.get(path, {"path": path}) if path in produced else {"path": path, "md5": md5(repo / path)}
            for path in stage.get("deps", [])
        ]
        if stage.get("params"):
            locked["params"] = {"params.yaml": {key: params[key] for key in tracked_keys(stage, params)}}
    return lock


def head(repo: Path) -> str:
    """The commit `repo` has checked out."""
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return head(repo)


KNOWN_SEED_SPREAD = {"test_accuracy": 0.0018, "test_loss": 0.004}  # results_repo's seeds study


@pytest.fixture
def results_repo(tmp_path: Path) -> Path:
    """A git repository whose one commit holds results that match its code and params."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(PROJECT_ROOT / name, repo / name)
    for folder in ("pipeline", "reports"):
        shutil.copytree(PROJECT_ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "studies"))
    set_param(repo, "train", "epochs", 10)  # known values, whatever the project's are
    edit_json(repo / "reports/evaluate/metrics.json", lambda m: m["test"].update(accuracy=0.9812, errors=188))
    edit_json(repo / "reports/train/metrics.json", lambda m: m.update(kept_epoch=10))
    (repo / SEED_STUDY).parent.mkdir()
    (repo / SEED_STUDY).write_text(json.dumps({"arms": [{"runs": 10, "std": KNOWN_SEED_SPREAD}]}))
    (repo / "dvc.lock").write_text(yaml.safe_dump(matching_lock(repo), sort_keys=False))
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    commit(repo, "base")
    return repo


def set_param(repo: Path, section: str, key: str, value: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def edit_json(path: Path, change) -> None:
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload, indent=2))
