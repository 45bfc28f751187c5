"""The committed params.yaml shrunk for tests, and the tests' own study: a module of its own, light
to import, so that the child processes tests start (tests/test_numerics.py) load no more than they use."""

from __future__ import annotations

from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]

SCRATCH_STUDY_FILE = Path(__file__).with_name("scratch_study.yaml")
SCRATCH_STUDY = yaml.safe_load(SCRATCH_STUDY_FILE.read_text())
SCRATCH_TABLES = "scratch-study"


def small_params(**overrides: dict) -> dict:
    """The committed params.yaml, shrunk for tests, with per-section overrides merged in."""
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["model"]["hidden_sizes"] = [32]
    params["train"].update(epochs=3, batch_size=32)
    params["analyze"].update(pca_points=50, gallery_size=4)
    for section, values in overrides.items():
        merge(params[section], values)
    return params


def merge(target: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
