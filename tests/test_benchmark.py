"""bench's bad input: one line naming the problem and the fix (its measurements are run for real by
tests/test_reproducibility.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import PROJECT_ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible here")
def test_cuda_table_without_a_gpu_stops_with_one_line():
    command = [sys.executable, "-m", "pipeline", "bench", "--device", "cuda", "--skip-dvc"]
    result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip() == "error: --device is cuda but no CUDA GPU is visible: set --device to auto or cpu"
