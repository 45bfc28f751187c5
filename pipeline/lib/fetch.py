"""Fetch files from an ordered list of mirrors, verifying each file's MD5.

A mirror can be an http(s) URL or a local folder. A mirror that fails or
serves a bad checksum is skipped with a warning; nothing unverified is kept.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from pipeline.lib.atomic import atomic_path
from pipeline.lib.errors import PipelineError

MIRROR_VARIABLE = "MNIST_MIRROR"
# The mirrors torchvision's MNIST dataset uses, in its order.
PUBLIC_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_CHUNK = 1 << 20
_TIMEOUT_SECONDS = 30


class MirrorError(Exception):
    """One mirror could not provide one file; the next mirror is tried."""


def mirrors_from_environment(value: str | None) -> list[str]:
    """The variable's mirrors (comma-separated) first, then the public ones."""
    local = [part.strip() for part in (value or "").split(",") if part.strip()]
    return [*local, *PUBLIC_MIRRORS]


def fetch_all(
    files: Mapping[str, str],
    mirrors: Sequence[str],
    destination: Path,
    warn: Callable[[str], None],
) -> None:
    """Put every file of `files` (name -> MD5) into `destination`, or raise PipelineError."""
    for name, md5 in files.items():
        for mirror in mirrors:
            try:
                _fetch_one(mirror, name, md5, destination / name)
                break
            except MirrorError as error:
                warn(f"warning: mirror {mirror} skipped for {name}: {error}")
        else:
            raise PipelineError(
                f"no mirror provided a valid {name}: set {MIRROR_VARIABLE} to a folder or "
                "http(s) URL holding the four official MNIST .gz files"
            )


def _fetch_one(mirror: str, name: str, md5: str, target: Path) -> None:
    with atomic_path(target) as partial:  # a failed or mismatched copy never reaches `target`
        digest = _copy(mirror, name, partial)
        if digest != md5:
            raise MirrorError(f"MD5 {digest} does not match the official {md5}")


def _copy(mirror: str, name: str, partial: Path) -> str:
    """Copy one file from the mirror to `partial`, returning its MD5."""
    digest = hashlib.md5()
    try:
        with _open(mirror, name) as (source, size), open(partial, "wb") as sink:
            with tqdm(total=size, desc=name, unit="B", unit_scale=True, disable=not sys.stderr.isatty()) as bar:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
                    bar.update(len(chunk))
    except (OSError, urllib.error.URLError, ValueError) as error:
        raise MirrorError(str(getattr(error, "reason", None) or error)) from None
    return digest.hexdigest()


@contextmanager
def _open(mirror: str, name: str) -> Iterator[tuple[BinaryIO, int | None]]:
    """Open `name` under a URL or folder mirror, yielding (readable, size in bytes if known)."""
    if mirror.startswith(("http://", "https://", "file://")):
        with urllib.request.urlopen(mirror.rstrip("/") + "/" + name, timeout=_TIMEOUT_SECONDS) as response:
            length = response.headers.get("Content-Length")
            yield response, int(length) if length else None
        return
    if not Path(mirror).is_dir():
        raise FileNotFoundError(f"{mirror} is neither a folder nor an http(s) URL")
    with open(Path(mirror) / name, "rb") as file:
        yield file, os.fstat(file.fileno()).st_size
