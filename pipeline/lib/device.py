"""Where training runs, how it is made deterministic, and the numerics a result depends on."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch

from pipeline.lib.errors import PipelineError
from pipeline.lib.pinning import numerics_mode

# MKL's code-branch constants (mkl_cbwr.h); 1 means CNR mode is off.
_MKL_BRANCHES = {
    1: "off",
    2: "AUTO",
    3: "COMPATIBLE",
    4: "SSE2",
    6: "SSSE3",
    7: "SSE4_1",
    8: "SSE4_2",
    9: "AVX",
    10: "AVX2",
    12: "AVX512",
    14: "AVX512_E1",
}
_MKL_STRICT = 0x10000


def resolve_device(name: str, setting: str = "train.device") -> torch.device:
    """auto, cpu or cuda as a device; `setting` names where the choice came from, for the error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"{setting} is cuda but no CUDA GPU is visible: set {setting} to auto or cpu")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def make_deterministic(seed: int) -> None:
    """Same seed, same numerics, same bytes: seeded RNGs and deterministic kernels (on CUDA too)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    # It imports torch._inductor, which a stage's first optimizer or model load imports anyway.
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    # oneDNN's CPU convolutions (the CNN, the elastic distortion) split their reductions by the
    # thread count; ATen's own run through MKL's GEMM, pinned (docs/reproducibility.md).
    torch.backends.mkldnn.enabled = False


def numerics_fingerprint(device: torch.device) -> dict[str, str | int]:
    """What decides the bits of a result besides the code, params and data: two runs with equal
    fingerprints must give equal bytes; across fingerprints only a tolerance can hold."""
    fingerprint: dict[str, str | int] = {"device": device.type, "numerics": numerics_mode(), "torch": torch.__version__}
    if device.type == "cuda":
        fingerprint |= {"gpu": torch.cuda.get_device_name(device), "cuda": str(torch.version.cuda)}
    else:
        fingerprint |= {
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "blas": mkl_branch(),
            "threads": torch.get_num_threads(),
        }
    return fingerprint


def mkl_branch() -> str:
    """The code branch MKL actually runs (an unsupported MKL_CBWR falls back to AUTO silently)."""
    if not torch.backends.mkl.is_available():
        return "not MKL"
    try:
        library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = library.mkl_serv_cbwr_get  # what mkl_cbwr_get calls; torch links MKL statically
    except (OSError, AttributeError):
        return "MKL, branch unknown"
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    value = get(-1)  # MKL_CBWR_ALL: the branch and the STRICT flag
    branch = _MKL_BRANCHES.get(value & 0xFFFF, str(value & 0xFFFF))
    return f"MKL CNR {branch}{' strict' if value & _MKL_STRICT else ''}" if branch != "off" else "MKL CNR off"
