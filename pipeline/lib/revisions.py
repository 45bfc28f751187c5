"""Files as a git revision holds them: the one way the commands read the committed results.

reports/ and dvc.lock are git's, so any revision's results can be read without DVC, the data or
torch. Every problem is one PipelineError that says what to do: not a git repository, an unknown
revision (in a shallow clone: fetch the full history), a file the revision does not hold.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.lib.errors import PipelineError


class NotAtRevision(PipelineError):
    """The revision exists but does not hold the file."""


def _git(*args: str, root: Path = Path(".")) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True)
    except FileNotFoundError:
        raise PipelineError("git is not installed: install git, which the committed results live in") from None


def commit_of(revision: str, root: Path = Path(".")) -> str:
    """The full hash of `revision`, or a one-line error saying why there is none."""
    if _git("rev-parse", "--git-dir", root=root).returncode != 0:
        raise PipelineError(f"{Path(root).resolve()} is not a git repository: run from a clone of the project")
    found = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}", root=root)
    if found.returncode == 0:
        return found.stdout.decode().strip()
    shallow = _git("rev-parse", "--is-shallow-repository", root=root).stdout.decode().strip() == "true"
    if shallow:
        raise PipelineError(
            f"revision {revision} is not in this shallow clone: fetch the full history "
            "(git fetch --unshallow; in GitHub Actions, actions/checkout with fetch-depth: 0)"
        )
    raise PipelineError(f"revision {revision} does not exist: name a commit, branch or tag that git log shows")


def read_at(revision: str, path: str | Path, root: Path = Path(".")) -> str:
    """The text of `path` at `revision` (a commit, branch or tag)."""
    return read_bytes_at(revision, path, root).decode()


def read_bytes_at(revision: str, path: str | Path, root: Path = Path(".")) -> bytes:
    """The bytes of `path` at `revision`: one `git show`; only when it fails is the revision itself
    examined, for the message."""
    shown = _git("show", f"{revision}:{Path(path).as_posix()}", root=root)
    if shown.returncode != 0:
        commit_of(revision, root)  # raises when the repository or the revision is the problem
        raise NotAtRevision(
            f"{Path(path).as_posix()} is not committed at {revision}: commit the results of dvc repro there"
        )
    return shown.stdout


def read_if_present(revision: str, path: str | Path, root: Path = Path(".")) -> str | None:
    """Like read_at, but None when the revision does not hold the file."""
    try:
        return read_at(revision, path, root)
    except NotAtRevision:
        return None
