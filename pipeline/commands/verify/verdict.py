"""The verdict of `python -m pipeline verify`: do the committed results come from the committed pipeline?

A stage's inputs are its command, its code, its params and, for a stage that reads no other
stage's output (the download), the data it brings in. Another stage's output is never an input
here: when the model changes, evaluate's new outputs are a consequence, not staleness.

Before the rerun, `stale_inputs` compares the committed dvc.lock with the working tree (code and
params). After it, `judge` compares every output: bit-identical (`exact`); or, when the numerics
fingerprint differs (another instruction set, BLAS branch, thread count, torch or device),
the test accuracy must agree within a tolerance measured from the spread between seeds.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

class Verdict(enum.Enum):
    EXACT = ("reproduced exactly", True)
    WITHIN_TOLERANCE = ("other numerics, test accuracy within tolerance", True)
    OUT_OF_TOLERANCE = ("other numerics, test accuracy out of tolerance", False)
    NONDETERMINISTIC = ("same numerics but different bytes: the pipeline is not deterministic", False)
    STALE_CODE = ("stale code: the committed results come from other code", False)
    STALE_PARAMS = ("stale params: the committed results come from other params", False)
    CHANGED_DATA = ("changed data: the downloaded files differ from the committed ones", False)

    def __init__(self, summary: str, passed: bool):
        self.summary, self.passed = summary, passed


@dataclass(frozen=True)
class Report:
    verdict: Verdict
    detail: str = ""
    outputs: dict[str, str] = field(default_factory=dict)  # path -> exact | within tolerance | differs

    @property
    def message(self) -> str:
        return f"{self.verdict.summary} ({self.detail})" if self.detail else self.verdict.summary


@dataclass(frozen=True)
class Run:
    """What a run is judged by besides its bytes: the numerics it ran on and its test accuracy."""

    numerics: Mapping[str, object]
    accuracy: float


def produced_paths(stages: Mapping[str, dict]) -> set[str]:
    """Every output path declared in dvc.yaml's stages (plain paths or {path: flags})."""
    return {next(iter(out)) if isinstance(out, dict) else out for stage in stages.values() for out in _outs(stage)}


def _outs(stage: dict) -> list:
    return [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]


def _hashes(entries: list[dict]) -> dict[str, str | None]:
    return {entry["path"]: entry.get("md5") for entry in entries}


def stale_inputs(
    committed: dict, stages: Mapping[str, dict], params: Mapping[str, object], file_md5: Callable[[str], str | None]
) -> Report | None:
    """A stale verdict when the working tree's commands, code or params differ from the committed
    dvc.lock's; None when every stage's inputs match. `stages` is dvc.yaml's, `params` the
    current params file; `file_md5` hashes a file of the working tree (None when missing)."""
    produced = produced_paths(stages)
    locked_stages = committed.get("stages", {})
    code, changed_params = [], []
    for name, stage in stages.items():
        locked = locked_stages.get(name)
        if locked is None:
            code.append(f"{name}: not in the committed dvc.lock")
            continue
        if " ".join(str(stage["cmd"]).split()) != " ".join(str(locked.get("cmd", "")).split()):
            code.append(f"{name}: cmd")
        declared = {dep for dep in stage.get("deps", []) if dep not in produced}
        recorded = {path: md5 for path, md5 in _hashes(locked.get("deps", [])).items() if path not in produced}
        code += [f"{name}: {path}" for path in sorted(declared | recorded.keys()) if file_md5(path) != recorded.get(path)]
        locked_params = locked.get("params", {}).get("params.yaml", {})
        for key in stage.get("params", []):
            if locked_params.get(key) != params.get(key):
                changed_params.append(f"{name}: {key}")
    if code:
        return Report(Verdict.STALE_CODE, ", ".join(code))
    if changed_params:
        return Report(Verdict.STALE_PARAMS, ", ".join(changed_params))
    return None


def judge(
    committed_lock: dict,
    reproduced_lock: dict,
    stages: Mapping[str, dict],
    committed: Run,
    reproduced: Run,
    tolerance: float,
    measurements: frozenset[str] = frozenset(),
) -> Report:
    """The verdict on a rerun of every stage, given both dvc.lock files and both runs' records.
    `measurements` are outputs that hold seconds and numerics, not results: never compared."""
    produced = produced_paths(stages)
    old_stages, new_stages = committed_lock.get("stages", {}), reproduced_lock.get("stages", {})
    old, new, sources = {}, {}, set()
    for name, stage in stages.items():
        outs = _hashes(old_stages.get(name, {}).get("outs", []))
        old |= outs
        new |= _hashes(new_stages.get(name, {}).get("outs", []))
        if not any(dep in produced for dep in stage.get("deps", [])):  # reads no other stage's output
            sources |= outs.keys()
    compared = sorted((old.keys() | new.keys()) - measurements)
    differing = [path for path in compared if old.get(path) != new.get(path)]

    def outputs(label: str) -> dict[str, str]:
        return {path: label if path in differing else "exact" for path in compared}

    if not differing:
        return Report(Verdict.EXACT, f"{len(compared)} outputs bit-identical", outputs("differs"))
    changed_sources = [path for path in differing if path in sources]
    if changed_sources:
        return Report(Verdict.CHANGED_DATA, ", ".join(changed_sources), outputs("differs"))
    if dict(committed.numerics) == dict(reproduced.numerics):
        return Report(Verdict.NONDETERMINISTIC, ", ".join(differing), outputs("differs"))
    gap = abs(reproduced.accuracy - committed.accuracy)
    detail = (
        f"test accuracy {reproduced.accuracy:.4f} vs committed {committed.accuracy:.4f}, "
        f"tolerance {tolerance * 100:.2f} points; numerics {_difference(committed.numerics, reproduced.numerics)}"
    )
    if gap <= tolerance + 1e-12:
        return Report(Verdict.WITHIN_TOLERANCE, detail, outputs("within tolerance"))
    return Report(Verdict.OUT_OF_TOLERANCE, detail, outputs("differs"))


def _difference(old: Mapping[str, object], new: Mapping[str, object]) -> str:
    keys = [key for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    return ", ".join(f"{key} {old.get(key)} -> {new.get(key)}" for key in keys)
