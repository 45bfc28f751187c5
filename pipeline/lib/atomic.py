"""Write outputs under a temporary name and rename them into place.

A stage killed midway leaves only hidden temporary files behind, never a
half-written output that DVC could cache or a later stage could read; with
`persist: true` in dvc.yaml, the last good outputs stay in place until then.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from pipeline.lib.errors import PipelineError


def temporary_path(final: Path) -> Path:
    """Where `final` is written before it is renamed into place: a hidden sibling."""
    return final.with_name(f".{final.name}.tmp")


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final` (file or folder); rename it to `final` on success."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PipelineError(f"cannot create folder {final.parent}: {error.strerror}; check its permissions") from None
    temporary = temporary_path(final)
    _remove(temporary)
    try:
        yield temporary
        _remove(final)
        os.replace(temporary, final)
    except PermissionError:
        raise PipelineError(f"cannot write {final}: permission denied; make {final.parent} writable") from None
    finally:
        _remove(temporary)


@contextmanager
def atomic_paths(*finals: Path) -> Iterator[tuple[Path, ...]]:
    """atomic_path for several outputs: all are renamed into place together, once the block succeeds."""
    with ExitStack() as stack:
        yield tuple(stack.enter_context(atomic_path(final)) for final in finals)


@contextmanager
def replaced_in_place(final: Path) -> Iterator[Path]:
    """Yield `final` itself, moved aside, for output that must be visible while it grows (live
    curves); if the block fails or is interrupted, put back what was there before.

    A run killed outright leaves the old output aside; the next run puts it back first.
    """
    final = Path(final)
    previous = final.with_name(f".{final.name}.previous")
    if previous.exists():
        _remove(final)
        os.replace(previous, final)
    if final.exists():
        os.replace(final, previous)
    try:
        yield final
    except BaseException:
        _remove(final)
        if previous.exists():
            os.replace(previous, final)
        raise
    _remove(previous)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, payload: object) -> None:
    """Pretty, key-sorted JSON, so reruns and git diffs are stable."""
    write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def write_array(path: Path, array: np.ndarray) -> None:
    """A plain .npy file: unlike .npz it holds no timestamps, so equal arrays give equal bytes."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        np.save(file, np.ascontiguousarray(array))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
