"""Writing MNIST's IDX format: what the tests need to make small MNIST-format files. The pipeline only reads IDX."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

UNSIGNED_BYTE = 0x08


def encode_idx(array: np.ndarray) -> bytes:
    """The inverse of pipeline.lib.mnist.parse_idx."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, UNSIGNED_BYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    # mtime=0 keeps the gzip bytes independent of when they were written.
    Path(path).write_bytes(gzip.compress(encode_idx(array), mtime=0))
