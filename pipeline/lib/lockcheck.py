"""Compare a reproduced dvc.lock with the committed one, stage by stage.

Inputs (code, params, upstream data) must be identical, or the committed
results are stale. Outputs of the data stages must be identical. Outputs of
the model stages must be identical on the same hardware; elsewhere the test
accuracy must agree within ACCURACY_TOLERANCE.
"""

from __future__ import annotations

from dataclasses import dataclass

DATA_STAGES = ("download", "preprocess", "split")
# Seconds and hardware are measurements, not results: never compared.
UNCOMPARED = {"reports/timing/train.json"}
ACCURACY_TOLERANCE = 0.001  # 0.1 percentage point


@dataclass(frozen=True)
class Difference:
    stage: str
    path: str
    kind: str  # "input" or "output"


def entries(stage: dict, kind: str) -> dict[str, str]:
    """path -> content hash of a stage's deps or outs in a dvc.lock document."""
    return {entry["path"]: entry.get("md5", "missing") for entry in stage.get(kind, [])}


def compare(committed: dict, reproduced: dict) -> tuple[list[Difference], list[str]]:
    """(differences, every compared output path) between two parsed dvc.lock files."""
    differences, compared = [], []
    committed_stages, reproduced_stages = committed.get("stages", {}), reproduced.get("stages", {})
    for name in reproduced_stages.keys() | committed_stages.keys():
        old, new = committed_stages.get(name, {}), reproduced_stages.get(name, {})
        old_deps, new_deps = entries(old, "deps"), entries(new, "deps")
        for path in sorted(old_deps.keys() | new_deps.keys()):
            if old_deps.get(path) != new_deps.get(path):
                differences.append(Difference(name, path, "input"))
        if old.get("params") != new.get("params"):
            differences.append(Difference(name, "params.yaml", "input"))
        old_outs, new_outs = entries(old, "outs"), entries(new, "outs")
        for path in sorted((old_outs.keys() | new_outs.keys()) - UNCOMPARED):
            compared.append(path)
            if old_outs.get(path) != new_outs.get(path):
                differences.append(Difference(name, path, "output"))
    return sorted(differences, key=lambda d: (d.kind, d.stage, d.path)), sorted(compared)


def within_tolerance(committed_accuracy: float, reproduced_accuracy: float) -> bool:
    return abs(committed_accuracy - reproduced_accuracy) <= ACCURACY_TOLERANCE + 1e-12
