"""One line for a DVC remote that refuses or cannot be reached, from what DVC said about it."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.lib.errors import PipelineError

# What DVC (boto, asyncssh) says for each way a remote fails, and the fix; the first match wins, so a key
# the remote does not know is named before the access a known key lacks.
PROBLEMS = (
    (
        ("NoSuchBucket", "bucket does not exist"),
        "has no such bucket: create it, or point the remote at one (dvc remote modify {remote} url s3://BUCKET/PATH)",
    ),
    (
        ("Permission denied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Unable to locate credentials"),
        "refused this machine's credentials: set them (S3: ~/.aws/credentials, or AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY; SSH: dvc remote modify --local {remote} keyfile KEY)",
    ),
    (
        ("AccessDenied",),
        "denied this machine access: its credentials are valid but lack the permission (read-only?); ask for write "
        "access, or use credentials that have it",
    ),
    (
        ("Could not connect", "Connection refused", "Connect call failed", "Name or service not known", "timed out"),
        "cannot be reached: check its URL (dvc remote list) and that its server is up",
    ),
)


def default_remote() -> str:
    """The name of the project's default DVC remote, or a phrase saying there is none."""
    named = subprocess.run(["dvc", "remote", "default"], capture_output=True, text=True).stdout.strip()
    return named or "(none set: dvc remote add --default NAME URL)"


def remote_failure(remote: str | None, doing: str, said: str) -> PipelineError:
    """The error for `doing` (e.g. "dvc push") that failed against `remote` (None: the default one),
    from DVC's output or exception text `said`."""
    name = remote or default_remote()
    for needles, problem in PROBLEMS:
        if any(needle in said for needle in needles):
            return PipelineError(f"{doing}: the DVC remote {name} {problem.format(remote=name)}")
    errors = [line for line in said.splitlines() if line.startswith("ERROR")] or said.strip().splitlines() or ["?"]
    return PipelineError(f"{doing} failed ({errors[0]}): check the DVC remote {name} (dvc remote list)")


@contextmanager
def dvc_errors() -> Iterator[list[str]]:
    """What DVC's Python API logs as errors during the block (a transfer's cause, e.g. NoSuchBucket),
    which its exceptions leave out: the text for `remote_failure`, as the dvc command prints it."""
    said: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            cause = f" - {record.exc_info[1]}" if record.exc_info and record.exc_info[1] else ""
            said.append(f"ERROR: {record.getMessage()}{cause}")

    handler = Collect(logging.ERROR)
    loggers = [logging.getLogger(name) for name in ("dvc", "dvc_data", "dvc_objects")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield said
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
