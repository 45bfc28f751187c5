"""How stages hand data to each other: pairs of .npy files, `<name>_images` and `<name>_labels`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.lib.atomic import write_array
from pipeline.lib.errors import PipelineError

if TYPE_CHECKING:
    import torch


def write_pair(folder: Path, name: str, images: np.ndarray, labels: np.ndarray) -> None:
    write_array(folder / f"{name}_images.npy", images)
    write_array(folder / f"{name}_labels.npy", labels)


def read_pair(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    return read_array(folder / f"{name}_images.npy"), read_array(folder / f"{name}_labels.npy")


def read_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run the stages before this one (dvc repro)") from None
    except ValueError:
        raise PipelineError(
            f"{path} is not a valid .npy array: rerun the stage that writes it (dvc repro --force)"
        ) from None


@dataclass(frozen=True)
class Dataset:
    """Standardized rows (N, 784) float32 and labels (N,) int64, on one device."""

    inputs: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def load(cls, folder: Path, name: str, device: torch.device) -> Dataset:
        """The `name` pair of arrays that the split stage wrote, as tensors on `device`."""
        import torch  # here, not above: the data stages read and write pairs without torch

        images, labels = read_pair(folder, name)
        # torch.tensor copies into torch's own 64-byte-aligned memory: NumPy's buffers are only
        # 16-byte aligned, and a BLAS may take another code path for another alignment.
        return cls(torch.tensor(images, device=device), torch.tensor(labels, dtype=torch.long, device=device))
