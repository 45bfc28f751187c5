"""Write outputs under a temporary name and rename them into place.

A stage killed midway leaves only hidden temporary files behind, never a
half-written output that DVC could cache or a later stage could read.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pipeline.lib.errors import PipelineError


def temporary_path(final: Path) -> Path:
    """Where `final` is written before it is renamed into place: a hidden sibling."""
    return final.with_name(f".{final.name}.tmp")


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final` (file or folder); rename it to `final` on success."""
    with atomic_paths(final) as (temporary,):
        yield temporary


@contextmanager
def atomic_paths(*finals: Path) -> Iterator[tuple[Path, ...]]:
    """Temporary siblings of several outputs, renamed into place together once the block succeeds:
    if one rename fails, the outputs already replaced are put back, so all change or none does."""
    finals = tuple(Path(final) for final in finals)
    temporaries = tuple(temporary_path(final) for final in finals)
    for final, temporary in zip(finals, temporaries):
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PipelineError(
                f"cannot create folder {final.parent}: {error.strerror}; check its permissions"
            ) from None
        _remove(temporary)
    try:
        yield temporaries
        _replace_all(finals, temporaries)
    except PermissionError as error:
        raise PipelineError(f"cannot write {error.filename}: permission denied; make its folder writable") from None
    finally:
        for temporary in temporaries:
            _remove(temporary)


def _replace_all(finals: tuple[Path, ...], temporaries: tuple[Path, ...]) -> None:
    """Move each final aside, rename its temporary over it; on any failure undo every step taken."""
    aside = [final.with_name(f".{final.name}.replaced") for final in finals]
    moved, placed = [], []
    try:
        for final, temporary, old in zip(finals, temporaries, aside):
            _remove(old)
            if final.exists() or final.is_symlink():
                os.replace(final, old)
                moved.append((final, old))
            os.replace(temporary, final)
            placed.append(final)
    except BaseException:
        for final in reversed(placed):
            _remove(final)
        for final, old in reversed(moved):
            os.replace(old, final)
        raise
    for _, old in moved:
        _remove(old)


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
