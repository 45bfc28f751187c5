"""`python -m pipeline verify`: rerun the whole pipeline and compare it with the committed results.

Says which guarantee held: bit-identical, or (on other hardware) test
accuracy within 0.1 point. Exits 1 when neither holds or when the committed
dvc.lock is stale (code or params changed without rerunning the pipeline).
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import yaml

from pipeline.lib.cli import fail, run_reporting_errors
from pipeline.lib.errors import PipelineError
from pipeline.lib.lockcheck import ACCURACY_TOLERANCE, DATA_STAGES, compare, within_tolerance

LOCK, METRICS, TIMING = "dvc.lock", "reports/evaluate/metrics.json", "reports/timing/train.json"


def committed_file(revision: str, path: str) -> str:
    result = subprocess.run(["git", "show", f"{revision}:{path}"], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"{path} is not committed at {revision}: commit the results of dvc repro first")
    return result.stdout


def verify(revision: str) -> None:
    committed_lock = yaml.safe_load(committed_file(revision, LOCK))
    click.echo("verify: dvc repro --force (every stage, from the download on)", err=True)
    if subprocess.run(["dvc", "repro", "--force"], stdout=sys.stderr).returncode != 0:
        raise PipelineError("dvc repro failed: see its output above")
    with open(LOCK) as file:
        differences, compared = compare(committed_lock, yaml.safe_load(file))

    stale = [d for d in differences if d.kind == "input"]
    if stale:
        listed = ", ".join(f"{d.stage}: {d.path}" for d in stale)
        fail(f"the committed {LOCK} is stale ({listed} changed): run dvc repro and commit dvc.lock and reports/")
    changed = {d.path for d in differences}
    for path in compared:
        click.echo(f"  {'differs' if path in changed else 'exact  '}  {path}")
    if not changed:
        click.echo(f"verify: reproduced exactly ({len(compared)} outputs bit-identical to {revision})")
        return

    data_changes = sorted(d.path for d in differences if d.stage in DATA_STAGES)
    if data_changes:
        fail(f"data-stage outputs differ ({', '.join(data_changes)}): these must be bit-identical on any machine")
    committed_hardware = json.loads(committed_file(revision, TIMING))["hardware"]
    with open(TIMING) as file:
        hardware = json.load(file)["hardware"]
    if hardware == committed_hardware:
        fail(f"model outputs differ on the same hardware ({', '.join(sorted(changed))}): training is not deterministic")
    old = json.loads(committed_file(revision, METRICS))["accuracy"]
    with open(METRICS) as file:
        new = json.load(file)["accuracy"]
    verdict = f"test accuracy {new:.4f} vs committed {old:.4f} (tolerance {ACCURACY_TOLERANCE * 100:.1f} point)"
    if not within_tolerance(old, new):
        fail(f"{verdict} on other hardware ({hardware} vs {committed_hardware}): out of tolerance")
    click.echo(f"verify: data bit-identical; model differs on other hardware, {verdict}: within tolerance")


@click.command()
@click.option("--against", "revision", default="HEAD", show_default=True, help="Git revision of the committed results.")
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
def main(revision: str, debug: bool) -> None:
    """Reproduce the pipeline and check it against the committed dvc.lock and reports/."""
    run_reporting_errors(lambda: verify(revision), debug)
