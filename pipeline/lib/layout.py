"""Stage names and data paths, read from dvc.yaml: the one place they are written.

Each stage's command in dvc.yaml names its inputs and outputs as options
(`python -m pipeline.stages.train --model data/model/model.pt ...`), so a path is
looked up by stage and option: `stage_path("train", "--model")`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from pipeline.lib.errors import PipelineError

PIPELINE_FILE = "dvc.yaml"
LOCK_FILE = "dvc.lock"  # what DVC recorded of the last run of each stage
RESULTS_STAGE = "evaluate"  # the stage whose metrics are a run's results: where a study's runs stop
ANALYSIS_STAGE = "analyze"  # where the run of a study arm that asks for its analysis stops


def definition(root: Path = Path(".")) -> dict:
    """The whole of dvc.yaml: stages, top-level plots, artifacts."""
    try:
        return yaml.safe_load((Path(root) / PIPELINE_FILE).read_text())
    except FileNotFoundError:
        raise PipelineError(f"{PIPELINE_FILE} not found in {Path(root).resolve()}: run from the project root") from None


def stages(root: Path = Path(".")) -> dict[str, dict]:
    """dvc.yaml's stages, in pipeline order."""
    return definition(root)["stages"]


def stage_names(root: Path = Path(".")) -> list[str]:
    return list(stages(root))


def stage_path(stage: str, option: str, root: Path = Path(".")) -> Path:
    """The path that dvc.yaml passes to `stage` as `option`."""
    words = shlex.split(stages(root).get(stage, {}).get("cmd", ""))
    if option not in words[:-1]:
        raise PipelineError(f"{PIPELINE_FILE}: stage {stage} has no {option} option: restore its cmd from git")
    return Path(words[words.index(option) + 1])
