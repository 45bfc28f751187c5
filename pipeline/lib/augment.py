"""Random geometric augmentation of whole training batches, on the training device.

Every image gets its own rotation, shift, scale and (optionally) elastic
distortion, combined into one sampling grid and applied by one grid_sample
call per batch. Validation and test images are never augmented.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.lib.params import Augment

SIDE = 28


class Augmenter:
    """Callable on standardized rows (N, 784); `background` is the standardized value of a black pixel.

    Transforms are drawn for DRAW_BLOCK images at a time, and each batch's sampling grid is one
    matrix product of the batch's affine matrices, flattened to (N, 6), with a fixed (6, 784 * 2)
    spread of the pixel centres: per batch, that leaves one GEMM and one grid_sample.
    """

    DRAW_BLOCK = 8192

    def __init__(self, params: Augment, background: torch.Tensor, generator: torch.Generator):
        self.params = params
        self.background = background.reshape(1, SIDE * SIDE)
        self.generator = generator
        self.smoothing = _gaussian_kernel(params.elastic_sigma, background.device) if params.elastic_alpha else None
        identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], device=background.device)
        centres = F.affine_grid(identity, [1, 1, SIDE, SIDE], align_corners=False).reshape(SIDE * SIDE, 2)
        homogeneous = torch.cat([centres, torch.ones(SIDE * SIDE, 1, device=background.device)], 1)
        # spread[k, axis, pixel, axis] = homogeneous[pixel, k]: the product comes out in
        # grid_sample's (N, 28, 28, 2) layout, since a transposed (strided) grid slows grid_sample
        # on CPU and copying it contiguous costs as much again.
        spread = torch.zeros(3, 2, SIDE * SIDE, 2, device=background.device)
        for axis in range(2):
            spread[:, axis, :, axis] = homogeneous.t()
        self.spread_centres = spread.reshape(6, SIDE * SIDE * 2)
        self._pending = torch.empty(0, 2, 3, device=background.device)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.warp(rows, self._next_transforms(len(rows), rows.device))

    def draw_affine(self, n: int, device: torch.device) -> torch.Tensor:
        """(N, 2, 3) random maps from output to input coordinates in grid units (2 / 28 per pixel),
        in F.affine_grid's convention."""
        angle = self._uniform(n, device, math.radians(self.params.rotation_degrees))
        zoom = 1 + self._uniform(n, device, self.params.scale)
        shift = self._uniform(2 * n, device, self.params.shift_pixels * 2 / SIDE).reshape(n, 2)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)

    def warp(self, rows: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
        """Rows (N, 784) resampled through (N, 2, 3) affine maps, plus elastic distortion if enabled."""
        n = len(rows)
        # One plain GEMM, (N, 6) @ (6, 1568), rather than a much slower broadcast batched matmul.
        transforms = affine.transpose(1, 2).reshape(n, 6)
        grid = (transforms @ self.spread_centres).reshape(n, SIDE, SIDE, 2)
        if self.smoothing is not None:
            grid = grid + self._elastic_displacement(n, rows.device)
        images = (rows - self.background).reshape(n, 1, SIDE, SIDE)
        warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return warped.reshape(n, SIDE * SIDE) + self.background

    def _next_transforms(self, n: int, device: torch.device) -> torch.Tensor:
        while len(self._pending) < n:
            self._pending = torch.cat([self._pending, self.draw_affine(self.DRAW_BLOCK, device)])
        transforms, self._pending = self._pending[:n], self._pending[n:]
        return transforms

    def _uniform(self, n: int, device: torch.device, half_width: float) -> torch.Tensor:
        return (torch.rand(n, device=device, generator=self.generator) * 2 - 1) * half_width

    def _elastic_displacement(self, n: int, device: torch.device) -> torch.Tensor:
        """Simard et al. (2003): a random field smoothed by a Gaussian, scaled to alpha pixels."""
        noise = torch.rand(n * 2, 1, SIDE, SIDE, device=device, generator=self.generator) * 2 - 1
        kernel = self.smoothing
        smooth = F.conv2d(F.conv2d(noise, kernel, padding="same"), kernel.transpose(2, 3), padding="same")
        smooth = smooth / smooth.flatten(1).abs().amax(1).clamp_min(1e-8).reshape(-1, 1, 1, 1)
        displacement = smooth.reshape(n, 2, SIDE, SIDE).permute(0, 2, 3, 1)
        return displacement * (self.params.elastic_alpha * 2 / SIDE)


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    """A (1, 1, 1, K) separable Gaussian kernel, K odd and covering 3 sigma."""
    radius = max(1, min(SIDE // 2, math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return (weights / weights.sum()).reshape(1, 1, 1, -1)
