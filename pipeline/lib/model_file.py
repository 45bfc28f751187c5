"""The model file: weights, architecture, the training set's normalization, class names and the
input convention, with a SHA-256 of all of it.

It holds only tensors, numbers, strings and lists, so it loads with `torch.load(...,
weights_only=True)`: opening a file never runs its code. Each way a file can fail to load has its
own one-line message.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from pipeline.lib.atomic import write_bytes
from pipeline.lib.errors import PipelineError
from pipeline.lib.mnist import CLASS_NAMES, IMAGE_SIDE
from pipeline.lib.model import build_model
from pipeline.lib.normalization import Normalization
from pipeline.lib.params import Model as ModelParams

FORMAT_VERSION = 4  # 4: the architecture records model.init_gain
# What the network's input means, stated in every model file for whoever loads or exports it:
# the normalization in the same file turns these raw pixels into what the first layer saw.
INPUT_CONVENTION = {"shape": [IMAGE_SIDE, IMAGE_SIDE], "ink": "white digit on black", "pixel_range": [0, 255]}
RETRAIN = "retrain with dvc repro train"
PARTS = ("format_version", "architecture", "state_dict", "normalization", "class_names", "input", "sha256")


def save_model(path: Path, model: nn.Module, params: ModelParams, normalization: Normalization) -> None:
    """Weights, architecture, normalization statistics and class names in one file."""
    payload = {
        "format_version": FORMAT_VERSION,
        "architecture": params.model_dump(),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "normalization": {
            "mode": normalization.mode,
            "mean": torch.from_numpy(normalization.mean),
            "std": torch.from_numpy(normalization.std),
        },
        "class_names": list(CLASS_NAMES),
        "input": INPUT_CONVENTION,
    }
    payload["sha256"] = fingerprint(payload)
    # Saving through a buffer keeps the archive's internal name fixed ("archive"), so equal
    # models give equal bytes whatever the file is called.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def fingerprint(payload: dict) -> str:
    """SHA-256 of everything in a model file but the fingerprint itself: detects changed bytes."""
    digest = hashlib.sha256()

    def feed(value: object) -> None:
        if isinstance(value, torch.Tensor):
            digest.update(str((value.dtype, tuple(value.shape))).encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value):
                digest.update(str(key).encode())
                feed(value[key])
        else:
            digest.update(json.dumps(value, sort_keys=True).encode())

    feed({key: value for key, value in payload.items() if key != "sha256"})
    return digest.hexdigest()


@dataclass(frozen=True)
class LoadedModel:
    """A model file opened safely: the network in eval mode and the standardization it expects."""

    network: nn.Sequential
    architecture: ModelParams
    normalization: Normalization
    class_names: list[str]


def load_model(path: Path) -> LoadedModel:
    """Open a model file safely and check it part by part; each failure is its own PipelineError."""
    path = Path(path)
    payload = _read(path)
    missing = [part for part in PARTS if not isinstance(payload, dict) or part not in payload]
    if missing:
        raise PipelineError(f"{path} is not a model file of this pipeline (no {', '.join(missing)}): {RETRAIN}")
    if payload["format_version"] != FORMAT_VERSION:
        raise PipelineError(
            f"{path} is model file format {payload['format_version']}, this pipeline reads {FORMAT_VERSION}: {RETRAIN}"
        )
    if payload["input"] != INPUT_CONVENTION:
        raise PipelineError(f"{path} states another input convention than {INPUT_CONVENTION}: {RETRAIN}")
    if payload["sha256"] != fingerprint(payload):
        raise PipelineError(f"{path} fails its integrity check (its bytes changed after training): {RETRAIN}")
    try:
        architecture = ModelParams.model_validate(payload["architecture"])
    except ValidationError as error:
        raise PipelineError(
            f"{path}: its architecture does not validate ({error.errors()[0]['msg']}): {RETRAIN}"
        ) from None
    network = build_model(architecture)
    try:
        network.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise PipelineError(f"{path}: its weights do not fit its architecture: {RETRAIN}") from None
    stats = payload["normalization"]
    normalization = Normalization(stats["mode"], stats["mean"].numpy(), stats["std"].numpy())
    network.eval()
    return LoadedModel(network, architecture, normalization, list(payload["class_names"]))


def _read(path: Path) -> object:
    """torch.load with weights_only; it raises many types on foreign bytes (KeyError, EOFError,
    UnpicklingError, RuntimeError, ...), so every failure of this one call is caught here."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles; the errors below say enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: run the train stage first (dvc repro train)") from None
    except Exception as error:  # noqa: BLE001 - see the docstring
        if "unsupported global" in str(error).lower():  # a class or function: code it would run
            reason = "it holds code or objects that safe loading refuses"
        else:
            reason = "it is not a torch model file"
        raise PipelineError(f"{path} cannot be loaded safely ({reason}): {RETRAIN}") from None
