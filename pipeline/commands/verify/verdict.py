"""The verdict of `python -m pipeline verify`: do the committed results come from the committed pipeline?

Before the rerun, `stale_inputs` compares the committed dvc.lock with the working tree's code and
params (the rules are pipeline/lib/staleness.py's, which `report` shares). After it, `judge`
compares every output: bit-identical (`exact`); or, when the numerics fingerprint differs (another
instruction set, BLAS branch, thread count, torch or device), the test accuracy must agree within
a tolerance measured from the spread between seeds.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pipeline.lib.staleness import find_stale, locked_hashes, source_stages


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


def stale_inputs(
    committed: dict, stages: Mapping[str, dict], params: Mapping[str, object], file_md5: Callable[[str], str | None]
) -> Report | None:
    """A stale verdict when the working tree's commands, code or params differ from the committed
    dvc.lock's (lib/staleness.py has the rules); None when every stage's inputs match."""
    stale = find_stale(committed, stages, params, file_md5)
    if not stale:
        return None
    return Report(Verdict.STALE_CODE if stale.code else Verdict.STALE_PARAMS, ", ".join(stale.causes))


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
    old_stages, new_stages = committed_lock.get("stages", {}), reproduced_lock.get("stages", {})
    old, new, sources = {}, {}, set()
    bringing_data = source_stages(stages)
    for name in stages:
        outs = locked_hashes(old_stages.get(name, {}).get("outs", []))
        old |= outs
        new |= locked_hashes(new_stages.get(name, {}).get("outs", []))
        if name in bringing_data:
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
