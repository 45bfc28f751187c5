"""`python -m pipeline verify`: rerun the pipeline and judge it against the committed results.

First, before any minutes-long rerun, the committed dvc.lock must match the working tree's
commands, code and params (else: stale code or stale params). Then `dvc repro --force` reruns
every stage (with --from, that stage and those after it, on the outputs already in the
workspace, e.g. pulled from a DVC remote), and each output is `exact`, `within tolerance` or
`differs` (verdict.py beside this file has the rules). Exits 1 unless the verdict passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import yaml

from pipeline.commands.verify.verdict import Run, judge, stale_inputs
from pipeline.lib.cli import fail, user_command
from pipeline.lib.errors import PipelineError
from pipeline.lib.layout import LOCK_FILE, stage_path, stages
from pipeline.lib.params import read_params_file
from pipeline.lib.revisions import read_at, read_if_present
from pipeline.lib.seed_spread import FIX as SEED_FIX
from pipeline.lib.seed_spread import SEED_STUDY, seed_spread
from pipeline.lib.staleness import FIX, file_md5

# Other numerics move test accuracy as another seed does: the tolerance is 3 standard deviations of
# the difference between two runs of the committed params with other seeds (the seeds study).
DIFFERENCES_ALLOWED = 3


def accuracy_tolerance(revision: str) -> float:
    """From the seeds study committed with the results verify compares against, as the report reads it."""
    spread = seed_spread(read_if_present(revision, SEED_STUDY))
    if spread is None:
        raise PipelineError(
            f"{SEED_STUDY} is not committed at {revision}, which holds the spread verify allows: {SEED_FIX}"
        )
    return DIFFERENCES_ALLOWED * spread.of_difference("test_accuracy")


def run_record(text_of, timing: str, metrics: str) -> Run:
    """The numerics and test accuracy of a run, from its timing and metrics files."""
    return Run(json.loads(text_of(timing)).get("numerics", {}), json.loads(text_of(metrics))["test"]["accuracy"])


def verify(revision: str, first_stage: str | None) -> None:
    committed_lock = yaml.safe_load(read_at(revision, LOCK_FILE))
    pipeline = stages()
    timing, metrics = stage_path("train", "--timing").as_posix(), stage_path("evaluate", "--metrics").as_posix()
    stale = stale_inputs(committed_lock, pipeline, read_params_file(), file_md5)
    if stale is not None:
        fail(f"{stale.message}: {FIX}")

    tolerance = accuracy_tolerance(revision)
    first_stage = first_stage or next(iter(pipeline))
    if first_stage not in pipeline:
        raise PipelineError(f"--from {first_stage} is not a stage: choose one of {', '.join(pipeline)}")
    click.echo(f"verify: dvc repro --force --downstream {first_stage} (the stages from {first_stage} on)", err=True)
    if subprocess.run(["dvc", "repro", "--force", "--downstream", first_stage], stdout=sys.stderr).returncode != 0:
        raise PipelineError("dvc repro failed: see its output above")
    report = judge(
        committed_lock,
        yaml.safe_load(Path(LOCK_FILE).read_text()),
        pipeline,
        committed=run_record(lambda path: read_at(revision, path), timing, metrics),
        reproduced=run_record(lambda path: Path(path).read_text(), timing, metrics),
        tolerance=tolerance,
        measurements=frozenset({timing}),
    )
    for path, label in report.outputs.items():
        click.echo(f"  {label:<16}  {path}")
    if not report.verdict.passed:
        fail(report.message)
    click.echo(f"verify: {report.message}")


@user_command()
@click.option("--against", "revision", default="HEAD", show_default=True, help="Git revision of the committed results.")
@click.option(
    "--from",
    "first_stage",
    default=None,
    help="Rerun only this stage and those after it (e.g. evaluate after dvc pull)  [default: the first]",
)
def main(revision: str, first_stage: str | None) -> None:
    """Reproduce the pipeline and check it against the committed dvc.lock and reports/."""
    verify(revision, first_stage)
