"""The studies, as declared in studies.yaml beside this file: typed, validated, and expanded into runs.

Each run is one DVC experiment: the committed params.yaml with the study's settings, the arm's
params and a seed on top, named `<study>-<arm>-s<seed>` so its record can be found again.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from pipeline.lib.layout import ANALYSIS_STAGE, RESULTS_STAGE
from pipeline.lib.params import Params, ParamsError, describe, read_yaml

STUDIES_FILE = Path(__file__).with_name("studies.yaml")
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_]*$")]


class Declared(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Arm(Declared):
    params: dict[str, Any] = {}  # dotted params.yaml keys -> values, on top of the study's settings
    reported: float | None = Field(None, ge=0, le=1)  # the source's test accuracy for this arm, if it reports one
    reported_by: str | None = None  # who reports it, where that is not the study's source (shown beside it)
    reported_train_loss: float | None = Field(None, gt=0)  # the source's final training loss, if it reports one
    seeds: list[int] | None = Field(None, min_length=1)  # instead of the study's, e.g. to set one run beside a spread
    analyze: bool = False  # run the first seed through the analyze stage too, and keep its figures

    def source_numbers(self) -> dict[str, Any]:
        """What the source reports of this arm, as the ArmResult fields of the same names."""
        fields = ("reported", "reported_by", "reported_train_loss")
        return {name: getattr(self, name) for name in fields}


class Study(Declared):
    question: str
    source: str  # the document (by its name in docs/sources.md) and the settings its numbers come from
    settings: dict[str, Any] = {}  # dotted params.yaml keys -> values, for every arm
    assumptions: list[str] = []  # what this project chose where the source is silent, shown with the table
    arms: dict[Name, Arm] = Field(min_length=1)  # one arm: a spread over seeds, compared with nothing
    seeds: list[int] | None = Field(None, min_length=2)  # instead of the file's, where a spread needs more runs
    # The figure's accuracy panel: one column per arm, or each arm at its training seconds (a curve
    # of accuracy against training time, for arms that differ in how long they train).
    accuracy_against: Literal["arm", "training_seconds"] = "arm"


class Studies(Declared):
    seeds: list[int] = Field(min_length=2)  # a spread needs two
    studies: dict[Name, Study]


@dataclass(frozen=True)
class Run:
    study: str
    arm: str
    seed: int
    overrides: dict[str, Any]  # dotted key -> value, as `dvc exp run -S key=value` sets them
    last_stage: str = RESULTS_STAGE  # ANALYSIS_STAGE for the run whose analysis its arm keeps

    @property
    def name(self) -> str:
        return f"{self.study}-{self.arm}-s{self.seed}"

    def overrides_as_text(self) -> list[str]:
        """What `dvc exp run -S` takes: `key=value`, the value in JSON without spaces (one word in a
        shell), which DVC reads as YAML."""
        return [f"{key}={json.dumps(value, separators=(',', ':'))}" for key, value in self.overrides.items()]


def load_studies(path: Path = STUDIES_FILE) -> Studies:
    """The declarations in `path`; any error is one line naming the file and the line of the fault."""
    try:
        return Studies.model_validate(read_yaml(path, fix="pass --studies a file of study declarations"))
    except ValidationError as error:
        first = error.errors()[0]
        raise ParamsError(f"{where_in(path, first['loc'])}: {describe(first)}") from None


def where_in(path: Path, keys: Sequence[str | int]) -> str:
    """`path:line` of the deepest of the nested `keys` that the file's YAML holds."""
    node, line = yaml.compose(Path(path).read_text()), 1
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        found = next(((k, v) for k, v in node.value if k.value == str(key)), None)
        if found is None:
            break
        line, node = found[0].start_mark.line + 1, found[1]
    return f"{path}:{line}"


def runs(studies: Studies, names: list[str], base_params: dict, path: Path | None = None) -> list[Run]:
    """Every arm x seed of the named studies (all when none), each checked against Params before any
    runs; an error names the arm's line in `path`, the file the studies were read from, if given."""
    unknown = sorted(set(names) - set(studies.studies))
    if unknown:
        raise ParamsError(f"no study named {', '.join(unknown)}: choose from {', '.join(studies.studies)}")
    planned = []
    for study_name in names or list(studies.studies):
        study = studies.studies[study_name]
        for arm_name, arm in study.arms.items():
            seeds = arm.seeds or study.seeds or studies.seeds
            arm_runs = [
                Run(
                    study_name,
                    arm_name,
                    seed,
                    {**study.settings, **arm.params, "train.seed": seed},
                    ANALYSIS_STAGE if arm.analyze and seed == seeds[0] else RESULTS_STAGE,
                )
                for seed in seeds
            ]
            try:
                for run in arm_runs:
                    check(run.overrides, base_params)
            except ParamsError as error:
                where = f"study {study_name}, arm {arm_name}"
                if path is not None:
                    where = f"{where_in(path, ['studies', study_name, 'arms', arm_name])}: {where}"
                raise ParamsError(f"{where}: {error}") from None
            planned += arm_runs
    return planned


def check(overrides: dict[str, Any], base_params: dict) -> None:
    """The params a run will have must validate, and every key must already exist in params.yaml."""
    params = copy.deepcopy(base_params)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        section = params
        for part in parents:
            section = section.get(part) if isinstance(section, dict) else None
        if not isinstance(section, dict) or leaf not in section:
            raise ParamsError(f"{key} is not a key of params.yaml")
        section[leaf] = value
    try:
        Params.model_validate(params)
    except ValidationError as error:
        raise ParamsError(describe(error.errors()[0])) from None
