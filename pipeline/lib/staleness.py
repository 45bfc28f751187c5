"""Do the results that a dvc.lock records come from the code and params beside it?

A stage's inputs are its command, its code, its params and, for a stage that reads no other
stage's output (the download), the data it brings in. Another stage's output is never an input
here: when the model changes, evaluate's new outputs are a consequence, not staleness. This is
the judgement `verify` makes before its rerun and `report` makes without one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

FIX = "run dvc repro and commit dvc.lock and reports/"


@dataclass(frozen=True)
class Staleness:
    """What differs between a dvc.lock and the inputs it should record, stage by stage."""

    code: tuple[str, ...] = ()  # "train: pipeline/stages/train.py", "train: cmd"
    params: tuple[str, ...] = ()  # "train: train.epochs 10 -> 3"

    def __bool__(self) -> bool:
        return bool(self.code or self.params)

    @property
    def causes(self) -> tuple[str, ...]:
        return self.code + self.params


def file_md5(path: str) -> str | None:
    """A working-tree file's md5 as dvc.lock records it; None when there is no such file."""
    try:
        return hashlib.md5(Path(path).read_bytes()).hexdigest()
    except (FileNotFoundError, IsADirectoryError):
        return None


def declared_path(entry: str | dict) -> str:
    """An output as dvc.yaml declares it: a plain path or {path: flags}."""
    return next(iter(entry)) if isinstance(entry, dict) else entry


def produced_paths(stages: Mapping[str, dict]) -> set[str]:
    """Every output path declared in dvc.yaml's stages (outs, metrics and plots)."""
    kinds = ("outs", "metrics", "plots")
    return {declared_path(out) for stage in stages.values() for kind in kinds for out in stage.get(kind, [])}


def source_stages(stages: Mapping[str, dict]) -> list[str]:
    """The stages that read no other stage's output: those that bring data in (the download)."""
    produced = produced_paths(stages)
    return [name for name, stage in stages.items() if not any(dep in produced for dep in stage.get("deps", []))]


def locked_hashes(entries: list[dict]) -> dict[str, str | None]:
    """dvc.lock's deps or outs as path -> md5."""
    return {entry["path"]: entry.get("md5") for entry in entries}


def find_stale(
    lock: dict, stages: Mapping[str, dict], params: Mapping[str, object], file_md5: Callable[[str], str | None]
) -> Staleness:
    """Compare `lock` with dvc.yaml's `stages`, the `params` file and the files `file_md5` hashes
    (None when missing): every stage whose command, code or params are not what the lock records."""
    produced = produced_paths(stages)
    locked_stages = lock.get("stages", {})
    code, changed_params = [], []
    named = {key for stage in stages.values() for key in stage.get("params", []) if isinstance(key, str)}
    for name, stage in stages.items():
        locked = locked_stages.get(name)
        if locked is None:
            code.append(f"{name}: not in the committed dvc.lock")
            continue
        if " ".join(str(stage["cmd"]).split()) != " ".join(str(locked.get("cmd", "")).split()):
            code.append(f"{name}: cmd")
        declared = {dep for dep in stage.get("deps", []) if dep not in produced}
        recorded = {path: md5 for path, md5 in locked_hashes(locked.get("deps", [])).items() if path not in produced}
        code += [
            f"{name}: {path}" for path in sorted(declared | recorded.keys()) if file_md5(path) != recorded.get(path)
        ]
        locked_params = locked.get("params", {}).get("params.yaml", {})
        for key in tracked_keys(stage, locked_params, params):
            if key in named and key not in stage.get("params", []):
                continue  # a whole-file stage's change that the stage reading the key reports
            changed_params += [
                f"{name}: {change}" for change in value_changes(key, locked_params.get(key), params.get(key))
            ]
    return Staleness(tuple(code), tuple(changed_params))


def tracked_keys(stage: Mapping, *params_files: Mapping[str, object]) -> list[str]:
    """The top-level params keys `stage` depends on: those it names, or, for an entry `params.yaml:`
    (the whole file), every key of the given versions of the file."""
    keys: list[str] = []
    for entry in stage.get("params", []):
        keys += sorted(set().union(*params_files)) if isinstance(entry, dict) else [entry]
    return keys


def value_changes(key: str, old: object, new: object) -> list[str]:
    """Each leaf that differs between two nested values, as 'a.b old -> new' (JSON spelling)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            change
            for sub in sorted(old.keys() | new.keys())
            for change in value_changes(f"{key}.{sub}", old.get(sub), new.get(sub))
        ]
    if old == new:
        return []
    return [f"{key} {json.dumps(old)} -> {json.dumps(new)}"]
