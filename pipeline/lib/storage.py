"""How stages hand data to each other: pairs of .npy files, `<name>_images` and `<name>_labels`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.lib.atomic import write_array
from pipeline.lib.errors import PipelineError


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
