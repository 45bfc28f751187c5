"""The model registry: versions are git tags in DVC's artifact convention (`NAME@vX.Y.Z`, stages
`NAME#STAGE#N`), and `dvc artifacts get` fetches a version from a clone with a DVC remote."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT_ROOT, dvc, git

pytestmark = pytest.mark.slow  # runs dvc


def test_artifacts_get_fetches_each_tagged_version_from_the_remote(tmp_path: Path):
    declared = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["artifacts"]
    ((name, artifact),) = declared.items()
    repo, storage = tmp_path / "repo", tmp_path / "storage"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    dvc(repo, "init", "-q")
    dvc(repo, "remote", "add", "-d", "team", str(storage))
    write = (
        f"import pathlib, shutil; p = pathlib.Path('{artifact['path']}'); "
        "p.parent.mkdir(parents=True, exist_ok=True); shutil.copy('weights', p)"
    )
    stage = {"cmd": f'python -c "{write}"', "deps": ["weights"], "outs": [artifact["path"]]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}, "artifacts": declared}, sort_keys=False))

    for version, weights in (("v1.0.0", b"first model"), ("v1.1.0", b"second model")):
        (repo / "weights").write_bytes(weights)
        dvc(repo, "repro", "-q")
        dvc(repo, "push", "-q")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"model {version}")
        git(repo, "tag", "-a", f"{name}@{version}", "-m", f"register {version}")
    git(repo, "tag", "-a", f"{name}#prod#1", "-m", "promote v1.0.0", f"{name}@v1.0.0^{{}}")
    (repo / artifact["path"]).unlink()  # only the remote holds the models now
    shutil.rmtree(repo / ".dvc/cache")

    def get(*choice: str) -> bytes:
        out = tmp_path / f"model{len(list(tmp_path.glob('model*')))}.pt"
        dvc(tmp_path, "artifacts", "get", str(repo), name, *choice, "-o", str(out))
        return out.read_bytes()

    assert get("--rev", "v1.0.0") == b"first model"
    assert get() == b"second model"  # no version: the latest
    assert get("--stage", "prod") == b"first model"
