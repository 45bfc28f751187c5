"""Input standardization, fitted on the training images only.

Statistics are in units of pixel / 255, so the classic MNIST values appear:
mean 0.1307, std 0.3081.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.lib.params import Preprocess

PIXELS = 28 * 28


@dataclass(frozen=True)
class Normalization:
    """Per-pixel mean and std of shape (784,), float32; `standard` repeats one value."""

    mode: str
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, train_images: np.ndarray, params: Preprocess) -> Normalization:
        """Statistics of the training images (uint8, any shape with N first), nothing else."""
        pixels = train_images.reshape(len(train_images), PIXELS).astype(np.float64) / 255
        if params.normalization == "unit":
            mean, std = np.zeros(PIXELS), np.ones(PIXELS)
        elif params.normalization == "centered":
            mean, std = np.full(PIXELS, 0.5), np.full(PIXELS, 0.5)
        elif params.normalization == "raw":
            mean, std = np.zeros(PIXELS), np.full(PIXELS, 1 / 255)
        elif params.normalization == "standard":
            mean, std = np.full(PIXELS, pixels.mean()), np.full(PIXELS, pixels.std())
        else:
            mean, std = pixels.mean(axis=0), np.maximum(pixels.std(axis=0), params.std_floor)
        return cls(params.normalization, mean.astype(np.float32), std.astype(np.float32))

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, 28, 28) to standardized float32 rows (N, 784)."""
        pixels = images.reshape(len(images), PIXELS).astype(np.float32) / 255
        return (pixels - self.mean) / self.std

    def black_pixel(self) -> np.ndarray:
        """The standardized value of a pixel of 0, per pixel: what augmentation shifts in at the borders."""
        return (0 - self.mean) / self.std

    def to_json(self) -> dict:
        """Scalars when every pixel shares the value (all modes but per_pixel), else 784-long lists."""

        def compact(values: np.ndarray) -> float | list[float]:
            return float(values[0]) if np.all(values == values[0]) else [float(v) for v in values]

        return {"mode": self.mode, "mean": compact(self.mean), "std": compact(self.std)}

    @classmethod
    def from_json(cls, payload: dict) -> Normalization:
        def expand(values: float | list[float]) -> np.ndarray:
            return np.broadcast_to(np.asarray(values, dtype=np.float32), (PIXELS,)).copy()

        return cls(payload["mode"], expand(payload["mean"]), expand(payload["std"]))
