"""Pin the CPU's numeric code paths before torch loads, so the same params give the same bytes
on a machine whatever its thread count, run after run. Not across vendors: MKL honours its
reproducibility branch only on Intel processors (docs/notes/2026-11-22-across-vendors.md).

Importing `pipeline` calls `pin_numerics()`, before any module imports torch. What each variable
fixes (docs/reproducibility.md):
- MKL_CBWR=AVX2,STRICT: MKL's GEMM in its conditional-numerical-reproducibility mode (fixed cache
  sizes, deterministic reductions, static scheduling). Without it MKL chooses its blocking by the
  machine and the thread count, and so would the model's bytes. On non-Intel processors MKL takes
  the branch as AUTO.
- ATEN_CPU_CAPABILITY=avx2: ATen's vectorized kernels at AVX2 width, which Intel Xeons (AVX-512
  by default) and AMD EPYCs share.
- ONEDNN_MAX_CPU_ISA=AVX2: the same for oneDNN, should any kernel still reach it: convolutions
  do not, since device.make_deterministic switches oneDNN off (its reductions split by thread).

MNIST_NUMERICS=native leaves all three to the machine (and to your own environment): possibly
faster on AVX-512 machines, but then results depend on the processor.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from pipeline.lib.errors import PipelineError

VARIABLE = "MNIST_NUMERICS"
MODES = ("pinned", "native")
PINNED = {
    "MKL_CBWR": "AVX2,STRICT",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
# The one MKL branch that AMD processors honour too (they run the others as AUTO), for bytes that
# match across vendors (docs/notes/2026-11-22-across-vendors.md). A recipe, not a mode: it is slow.
PORTABLE = PINNED | {"MKL_CBWR": "COMPATIBLE", VARIABLE: "native"}


def numerics_mode(environ: MutableMapping[str, str] = os.environ) -> str:
    mode = environ.get(VARIABLE, "pinned")
    if mode not in MODES:
        raise PipelineError(f"{VARIABLE} is {mode!r}: set it to pinned (the default) or native, or unset it")
    return mode


def pin_numerics(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set PINNED in `environ` unless MNIST_NUMERICS says native; a bad value is reported by the commands."""
    if environ.get(VARIABLE, "pinned") == "pinned":
        environ.update(PINNED)
