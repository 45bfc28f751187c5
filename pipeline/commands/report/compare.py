"""The content of a report: what two revisions' committed records say, compared.

Everything here works on plain values read from git (dvc.yaml, dvc.lock, params.yaml, the metrics
JSON files), so it is tested on small documents and needs neither DVC, the data nor torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.lib.staleness import Staleness, declared_path, find_stale, locked_hashes, produced_paths, source_stages


@dataclass(frozen=True)
class Row:
    """One compared value: a metric or a param, at the base revision and at this one."""

    name: str
    base: object
    head: object

    @property
    def changed(self) -> bool:
        return self.base != self.head


def flatten(value: object, prefix: str = "") -> dict[str, object]:
    """Nested mappings as dotted keys: {"test": {"accuracy": 0.98}} -> {"test.accuracy": 0.98}."""
    if not isinstance(value, Mapping):
        return {prefix: value}
    flat: dict[str, object] = {}
    for key, inner in value.items():
        flat |= flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    return flat


def compared(base: Mapping[str, object], head: Mapping[str, object]) -> list[Row]:
    """Rows for every key of either side, in the head's order, then keys only the base has."""
    return [Row(key, base.get(key), head.get(key)) for key in dict.fromkeys([*head, *base])]


def metric_paths(stages: Mapping[str, dict]) -> list[str]:
    """The files dvc.yaml declares as metrics, in pipeline order."""
    return [declared_path(out) for stage in stages.values() for out in stage.get("metrics", [])]


def metrics_of(paths: list[str], read: Callable[[str], str | None]) -> dict[str, object]:
    """Every metric in the files that `read` finds, flattened; a missing file adds none."""
    values: dict[str, object] = {}
    for path in paths:
        text = read(path)
        if text is not None:
            values |= flatten(json.loads(text))
    return values


def source_outputs(stages: Mapping[str, dict]) -> list[tuple[str, str]]:
    """(stage, output) of the stages that read no other stage's output: the raw data they bring in."""
    return [(name, path) for name in source_stages(stages) for path in sorted(produced_paths({name: stages[name]}))]


def changes_since(base_lock: dict, head_lock: dict, stages: Mapping[str, dict]) -> Staleness:
    """What differs between the inputs recorded in two dvc.lock files, named as staleness names it:
    the head's record stands in for the working tree, so the rules are the same ones."""
    head_stages = head_lock.get("stages", {})
    recorded = {
        path: md5 for stage in head_stages.values() for path, md5 in locked_hashes(stage.get("deps", [])).items()
    }
    params: dict[str, object] = {}
    for stage in head_stages.values():
        params |= stage.get("params", {}).get("params.yaml", {})
    found = find_stale(base_lock, stages, params, recorded.get)
    raw = [
        (stage, path)
        for stage, path in source_outputs(stages)
        if _output_hash(base_lock, path) != _output_hash(head_lock, path)
    ]
    data = tuple(f"{stage}: raw data {path}" for stage, path in raw)
    return Staleness(found.code + data, found.params)


def _output_hash(lock: dict, path: str) -> str | None:
    for stage in lock.get("stages", {}).values():
        if (md5 := locked_hashes(stage.get("outs", [])).get(path)) is not None:
            return md5
    return None
