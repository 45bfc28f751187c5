"""The MNIST files: their official names and checksums, and the IDX format they use.

IDX (http://yann.lecun.com/exdb/mnist/): a big-endian header of a magic number
(0x0000 08 ND: unsigned bytes, ND dimensions), ND 32-bit sizes, then the data.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.lib.errors import PipelineError

IMAGE_SIDE = 28
NUM_CLASSES = 10
CLASS_NAMES = [str(digit) for digit in range(NUM_CLASSES)]

# The names and MD5 sums that torchvision's MNIST.resources lists.
OFFICIAL_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_UNSIGNED_BYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


class IdxError(PipelineError):
    """A file is not the IDX data it claims to be."""


@dataclass(frozen=True)
class Digits:
    """Images as uint8 (N, 28, 28) and labels as uint8 (N,)."""

    images: np.ndarray
    labels: np.ndarray


def read_idx(path: Path, dimensions: int) -> np.ndarray:
    """Decode one IDX file of unsigned bytes (gzipped, as published, or not) with the given dimensions."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise IdxError(f"{path} not found: run the download stage first (dvc repro download)") from None
    except (OSError, EOFError, zlib.error):
        raise IdxError(f"{path} is not a complete gzip file: delete it and download again") from None
    return parse_idx(raw, dimensions, name=str(path))


def parse_idx(raw: bytes, dimensions: int, name: str = "IDX data") -> np.ndarray:
    header_size = 4 + 4 * dimensions
    if len(raw) < 4:
        raise IdxError(f"{name} is too short for an IDX header ({len(raw)} bytes): download it again")
    zero, data_type, found_dimensions = struct.unpack(">HBB", raw[:4])
    expected_magic = (_UNSIGNED_BYTE << 8) | dimensions
    if zero != 0 or data_type != _UNSIGNED_BYTE or found_dimensions != dimensions:
        raise IdxError(
            f"{name} has IDX magic 0x{struct.unpack('>I', raw[:4])[0]:08x}, expected 0x{expected_magic:08x}: "
            "it is not an MNIST file of this kind; download it again"
        )
    if len(raw) < header_size:
        raise IdxError(f"{name} is too short for an IDX header ({len(raw)} bytes): download it again")
    shape = struct.unpack(f">{dimensions}I", raw[4:header_size])
    if len(raw) - header_size != int(np.prod(shape)):
        raise IdxError(
            f"{name} declares shape {shape} ({int(np.prod(shape))} bytes) but holds "
            f"{len(raw) - header_size} bytes: download it again"
        )
    # A writable copy: frombuffer's view of `raw` is read-only, which torch.from_numpy warns about.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def load_digits(images_path: Path, labels_path: Path) -> Digits:
    """Read and cross-check one split's image and label files."""
    images = read_idx(images_path, dimensions=3)
    labels = read_idx(labels_path, dimensions=1)
    check_digits(images, labels, name=str(images_path))
    return Digits(images=images, labels=labels)


def check_digits(images: np.ndarray, labels: np.ndarray, name: str) -> None:
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise IdxError(f"{name} holds {images.shape[1]}x{images.shape[2]} images, expected 28x28: download it again")
    if len(images) != len(labels):
        raise IdxError(
            f"{name} holds {len(images)} images but its labels file {len(labels)} labels: "
            "the two files come from different downloads; download both again"
        )
    if len(images) == 0:
        raise IdxError(f"{name} holds no images: download it again")
    if labels.max() >= NUM_CLASSES:
        raise IdxError(f"{name} has label {labels.max()}, outside 0-9: the labels file is corrupt; download it again")


def load_official(raw_dir: Path, split: str) -> Digits:
    images_name, labels_name = SPLIT_FILES[split]
    return load_digits(Path(raw_dir) / images_name, Path(raw_dir) / labels_name)
