"""Pinned numerics: set before torch loads, recorded in the fingerprint, and the same bytes for any thread count.

What the flaky same-params test taught (docs/notes/2026-11-22-flaky-same-params.md): outside MKL's reproducibility
mode, GEMMs split their work by the thread count and the machine's caches, so the same params gave
other weights with 1 and 2 threads; oneDNN's convolutions did the same to the CNN. These tests
train the same small networks with both.

Run as a script (`python test_numerics.py NETWORK...`), this file trains each of the NETWORKS named and
prints the digests of their weights as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.lib.device import make_deterministic, numerics_fingerprint
from pipeline.lib.model import build_model, probabilities
from pipeline.lib.params import Params
from pipeline.lib.pinning import PINNED, pin_numerics
from pipeline.lib.storage import Dataset
from pipeline.lib.training import train

from scratch_params import small_params, write_params


def synthetic(count: int, seed: int) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (count,), generator=generator)
    rows = torch.randn(count, 784, generator=generator) * 0.3
    rows[torch.arange(count), labels * 70] += 3.0  # one bright pixel per class
    return Dataset(rows, labels)


# Enough work for MKL's GEMMs to split across two threads in its default mode, and every kind of
# convolution a run can do: the CNN's, forward and backward, and the elastic distortion's smoothing.
NETWORKS = {
    "mlp": {"model": {"hidden_sizes": [250, 100]}},
    "cnn_elastic": {
        "model": {"architecture": "cnn", "hidden_sizes": [120, 84]},
        "train": {"augment": {"elastic_alpha": 8.0}},
    },
}


def weights_digest(network: str) -> str:
    """One epoch of 2,000 images at batch 64."""
    settings = NETWORKS[network]
    params = Params.model_validate(
        small_params(model=settings["model"], train={"epochs": 1, "batch_size": 64, **settings.get("train", {})})
    )
    make_deterministic(0)
    model = build_model(params.model)
    train(model, synthetic(2000, 0), synthetic(500, 1), params.train, torch.full((784,), -0.2), lambda _: None)
    return hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest()


def digests_with_threads(threads: int) -> dict[str, str]:
    """Every network's digest, trained in one child process that runs torch on `threads` threads."""
    environment = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    result = subprocess.run(
        [sys.executable, __file__, *NETWORKS],
        cwd=Path(__file__).parent,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


@pytest.mark.slow  # trains in child processes
def test_thread_count_does_not_change_the_weights():
    one = digests_with_threads(1)
    assert set(one) == set(NETWORKS) and one == digests_with_threads(2)


def test_pinning_sets_every_variable_unless_native():
    pinned = {"ATEN_CPU_CAPABILITY": "avx512"}
    pin_numerics(pinned)
    assert pinned == PINNED  # pinned wins over the machine's own settings
    native = {"MNIST_NUMERICS": "native", "ATEN_CPU_CAPABILITY": "avx512"}
    pin_numerics(native)
    assert native == {"MNIST_NUMERICS": "native", "ATEN_CPU_CAPABILITY": "avx512"}


def test_this_process_runs_the_pinned_numerics():
    fingerprint = numerics_fingerprint(torch.device("cpu"))
    assert fingerprint["numerics"] == "pinned" and fingerprint["cpu_capability"] == "AVX2"
    assert fingerprint["blas"].startswith("MKL CNR") and fingerprint["blas"].endswith("strict")
    assert fingerprint["threads"] == torch.get_num_threads() and fingerprint["torch"] == torch.__version__


@pytest.mark.slow  # starts torch in a child process
def test_the_portable_recipe_runs_mkls_compatible_branch():
    """bench's portable numerics (docs/notes/2026-11-22-across-vendors.md): MKL must take COMPATIBLE, which it honours
    on Intel and AMD alike, and the pinning must leave it alone."""
    from pipeline.lib.pinning import PORTABLE

    child = (
        "import json, torch; from pipeline.lib.device import numerics_fingerprint; "
        "print(json.dumps(numerics_fingerprint(torch.device('cpu'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", child], env=os.environ | PORTABLE, capture_output=True, text=True, check=True
    )
    fingerprint = json.loads(result.stdout)
    assert (fingerprint["blas"], fingerprint["cpu_capability"], fingerprint["numerics"]) == (
        "MKL CNR COMPATIBLE",
        "AVX2",
        "native",
    )


def test_results_do_not_depend_on_where_the_input_sits_in_memory():
    network = build_model(Params.model_validate(small_params(model={"hidden_sizes": [250, 100]})).model)
    rows = np.random.default_rng(0).standard_normal((300, 784)).astype(np.float32)
    expected = probabilities(network, rows, 128)
    for offset in range(1, 16):  # 4 to 60 bytes past NumPy's own alignment
        buffer = np.empty(rows.size + offset, np.float32)
        shifted = buffer[offset:].reshape(rows.shape)
        shifted[:] = rows
        assert np.array_equal(probabilities(network, shifted, 128), expected)


def test_an_unknown_numerics_mode_is_one_line_before_any_work(tmp_path, monkeypatch):
    from pipeline.stages import split  # imported here: the script below loads only what it trains with

    monkeypatch.setenv("MNIST_NUMERICS", "fast")
    params_file = write_params(tmp_path / "params.yaml", small_params())
    result = CliRunner().invoke(
        split.main,
        [
            "--params",
            str(params_file),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--counts",
            str(tmp_path / "c.json"),
        ],
    )
    assert result.exit_code == 1
    assert result.output == "error: MNIST_NUMERICS is 'fast': set it to pinned (the default) or native, or unset it\n"


def test_make_deterministic_turns_on_torchs_deterministic_algorithms():
    torch.use_deterministic_algorithms(False)
    make_deterministic(0)
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()


if __name__ == "__main__":
    print(json.dumps({network: weights_digest(network) for network in sys.argv[1:]}))
