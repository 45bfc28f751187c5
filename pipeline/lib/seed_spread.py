"""The spread of a single run: each measure's standard deviation over the seeds of the committed
params, from the seeds study (`python -m pipeline study seeds` writes it). The pull-request report
and `verify` judge a change against it rather than against a number typed into them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

STUDY_REPORTS = Path("reports/studies")
SEED_STUDY = STUDY_REPORTS / "seeds.json"
FIX = "run python -m pipeline study seeds and commit reports/studies"


@dataclass(frozen=True)
class SeedSpread:
    seeds: int
    std: dict[str, float]  # measure (test_accuracy, test_loss, ...) -> standard deviation of one run

    def of_difference(self, measure: str) -> float | None:
        """The standard deviation of the difference between two runs with independent seeds."""
        return math.sqrt(2) * self.std[measure] if measure in self.std else None


def seed_spread(text: str | None) -> SeedSpread | None:
    """The spread the seeds study's JSON records (its one arm), or None without one."""
    if text is None:
        return None
    (arm,) = json.loads(text)["arms"]
    return SeedSpread(arm["runs"], arm["std"])
