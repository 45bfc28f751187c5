"""Which CPU operations give other bytes on another machine: run this on both and diff the outputs.

Each operation the default training runs is applied to the same fixed inputs (NumPy's seeded
generator, so the inputs are the same bytes everywhere) and its result hashed, in this process's
numerics (pinned unless MNIST_NUMERICS=native). docs/notes/2026-11-22-across-vendors.md shows what it found on
an Intel Xeon and an AMD EPYC. Not a test: `python tests/numerics_probe.py [threads]`.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import torch
import torch.nn.functional as F

import pipeline  # noqa: F401  (pins the numerics before torch loads)
from pipeline.lib.device import numerics_fingerprint

generator = np.random.RandomState(0)


def fixed(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(generator.standard_normal(shape).astype(np.float32)) * scale


def digest(tensor: torch.Tensor) -> str:
    return hashlib.md5(tensor.detach().contiguous().numpy().tobytes()).hexdigest()[:10]


def probe() -> dict[str, str]:
    images, w1, b1 = fixed(64, 784), fixed(250, 784, scale=0.03), fixed(250)
    w2, b2, w3, b3 = fixed(100, 250, scale=0.06), fixed(100), fixed(10, 100, scale=0.1), fixed(10)
    upstream, batch = fixed(64, 250), fixed(2000, 784)
    results = {
        "linear 64x784 -> 250 (forward)": F.linear(images, w1, b1),
        "matmul 250x64 @ 64x784 (weight gradient)": upstream.T @ images,
        "matmul 64x250 @ 250x784 (input gradient)": upstream @ w1,
        "linear 2000x784 -> 250 (evaluation)": F.linear(batch, w1, b1),
    }
    hidden = F.relu(F.linear(images, w1, b1))
    logits = F.linear(F.relu(F.linear(hidden, w2, b2)), w3, b3)
    labels = torch.from_numpy(generator.randint(0, 10, 64))
    affine = torch.from_numpy(generator.uniform(-0.2, 0.2, (64, 2, 3)).astype(np.float32)) + torch.eye(2, 3)
    grid = F.affine_grid(affine, [64, 1, 28, 28], align_corners=False)
    seeded = torch.Generator().manual_seed(1)
    results |= {
        "relu": hidden,
        "cross_entropy": F.cross_entropy(logits, labels).reshape(1),
        "log_softmax": F.log_softmax(logits, 1),
        "sum over a batch": images.sum(0),
        "exp": images.exp(),
        "tanh": images.tanh(),
        "sigmoid": images.sigmoid(),
        "sqrt, then a division": w1 / (w1.abs().sqrt() + 1e-8),
        "affine_grid (augmentation)": grid,
        "grid_sample (augmentation)": F.grid_sample(images.reshape(64, 1, 28, 28), grid, align_corners=False),
        "rand (torch's generator)": torch.rand(1000, generator=seeded),
        "randn (torch's generator)": torch.randn(1000, generator=seeded),
        "randperm (torch's generator)": torch.randperm(54000, generator=seeded).float(),
    }
    results["MLP, 20 steps of single-tensor Adam"] = adam_steps(images, labels)
    return {name: digest(result) for name, result in results.items()}


def adam_steps(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """torch.optim.Adam's default CPU step (not the fused one training uses): its own sqrt and division."""
    network = torch.nn.Sequential(
        torch.nn.Linear(784, 250), torch.nn.ReLU(), torch.nn.Linear(250, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10)
    )
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(fixed(*parameter.shape, scale=0.05))
    optimizer = torch.optim.Adam(network.parameters(), 1e-3)
    for _ in range(20):
        optimizer.zero_grad()
        F.cross_entropy(network(images), labels).backward()
        optimizer.step()
    return torch.cat([parameter.flatten() for parameter in network.parameters()])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        torch.set_num_threads(int(sys.argv[1]))
    for key, value in numerics_fingerprint(torch.device("cpu")).items():
        print(f"{key:42s} {value}")
    for name, value in probe().items():
        print(f"{name:42s} {value}")
