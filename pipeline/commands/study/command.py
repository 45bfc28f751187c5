"""`python -m pipeline study [NAME...]`: run studies as DVC experiments and write their results
(`--plan` only lists the runs).

Every arm x seed of the named studies (all, without names) that has no finished experiment on
top of the current commit is run, each from the committed params.yaml plus only its own
settings, so no run inherits another's params. Each runs the pipeline up to RESULTS_STAGE:
analyze's figures of a run are one `dvc exp apply <name> && dvc repro` away, and would add seconds
to every run. The runs are `dvc exp run --temp`, --jobs at a time (workers.py), or, with --worker,
taken by workers on many machines and collected with --collect-from (cluster.py); then DVC's
record of the experiments (`dvc exp show --json`, and each experiment's commit) becomes
<out>/<study>.json, .md and .png, and <out>/index.md lists the tables. The committed studies
write reports/studies/; a studies file of your own writes build/studies/<its name>/ unless --out
says otherwise, so it never touches the committed studies' reports. `--tables-only` rewrites the
tables and figures from those JSON files alone, for a change of their form or wording.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import click
import yaml

from pipeline.commands.study.cluster import check_commit, pull, status, work
from pipeline.commands.study.plan import STUDIES_FILE, Run, Studies, Study, load_studies, runs
from pipeline.commands.study.results import (
    ArmResult,
    MetricFiles,
    arm_from_record,
    arm_params,
    baseline_commit,
    compare_to_first,
    figure,
    index_page,
    markdown_table,
    recorded_experiments,
    summarize,
)
from pipeline.commands.study.workers import log_path, run_all
from pipeline.lib.atomic import write_bytes, write_json, write_text
from pipeline.lib.cli import PATH, user_command
from pipeline.lib.errors import PipelineError
from pipeline.lib.figures import save_figure
from pipeline.lib.layout import ANALYSIS_STAGE, PIPELINE_FILE, RESULTS_STAGE, definition, stage_path
from pipeline.lib.params import DEFAULT_PARAMS, read_params_file
from pipeline.lib.revisions import read_at, read_bytes_at
from pipeline.lib.seed_spread import STUDY_REPORTS


def default_out(studies_file: Path) -> Path:
    return (
        STUDY_REPORTS
        if Path(studies_file).resolve() == STUDIES_FILE.resolve()
        else Path("build/studies") / Path(studies_file).stem
    )


def dvc(*args: str) -> str:
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(
            f"dvc {' '.join(args[:3])} failed: {(result.stderr or result.stdout).strip().splitlines()[-1]}"
        )
    return result.stdout


def metric_files() -> MetricFiles:
    return MetricFiles(
        evaluation=stage_path(RESULTS_STAGE, "--metrics").as_posix(),
        training_summary=(stage_path("train", "--live") / "metrics.json").as_posix(),
        timing=stage_path("train", "--timing").as_posix(),
        val_curve=(stage_path("train", "--live") / "plots/metrics/val/accuracy.tsv").as_posix(),
        confused_pairs=(stage_path(ANALYSIS_STAGE, "--out") / "confused_pairs.json").as_posix(),
        per_class=stage_path(RESULTS_STAGE, "--per-class").as_posix(),
        per_class_train=stage_path(RESULTS_STAGE, "--per-class-train").as_posix(),
    )


def analysis_figures(out: Path, study_name: str) -> Callable[[Run, str], list[str]]:
    """Copies the analyze figures dvc.yaml declares from a run's commit to <out>/<study>/<arm>/;
    their paths relative to `out`, as the table links them."""
    folder = stage_path(ANALYSIS_STAGE, "--out")
    declared = [path for path in definition()["plots"] if isinstance(path, str) and Path(path).parent == folder]

    def copy(run: Run, revision: str) -> list[str]:
        copied = []
        for path in declared:
            target = Path(study_name) / run.arm / Path(path).name
            write_bytes(out / target, read_bytes_at(revision, path))
            copied.append(target.as_posix())
        return copied

    return copy


def results_stages(pipeline_text: str) -> dict[str, dict]:
    """What decides the results of the stages a study run runs (those up to RESULTS_STAGE): each
    one's command (which names its outputs), dependencies and params; not how outputs are shown."""
    chosen = {}
    for name, stage in yaml.safe_load(pipeline_text)["stages"].items():
        chosen[name] = {key: stage.get(key) for key in ("cmd", "deps", "params")}
        if name == RESULTS_STAGE:
            return chosen
    raise PipelineError(f"{PIPELINE_FILE} has no stage {RESULTS_STAGE}: restore it from git")


def check_unchanged_since(baseline: str) -> None:
    """Experiments on an older commit still stand for HEAD only if nothing they ran has changed:
    the definitions of the stages up to RESULTS_STAGE, their code, and params.yaml."""
    ran = results_stages(read_at("HEAD", PIPELINE_FILE))
    if results_stages(read_at(baseline, PIPELINE_FILE)) != ran:
        raise PipelineError(
            f"the stages up to {RESULTS_STAGE} in {PIPELINE_FILE} changed since {baseline}: its "
            "experiments no longer stand for HEAD; rerun the studies"
        )
    code = sorted({dep for stage in ran.values() for dep in stage["deps"] or [] if dep.startswith("pipeline/")})
    changed = subprocess.run(
        ["git", "diff", "--name-only", baseline, "HEAD", "--", str(DEFAULT_PARAMS), *code],
        capture_output=True,
        text=True,
    ).stdout.split()
    if changed:
        raise PipelineError(
            f"{', '.join(changed)} changed since {baseline}: its experiments no longer stand for "
            "HEAD; rerun the studies"
        )


def require_committed_params() -> None:
    if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", str(DEFAULT_PARAMS)]).returncode != 0:
        raise PipelineError(
            f"{DEFAULT_PARAMS} differs from the last commit: commit or restore it, since every run starts from it"
        )


def study(
    names: tuple[str, ...], studies_file: Path, out: Path | None, collect_only: bool, baseline: str, jobs: int
) -> None:
    out = out or default_out(studies_file)
    studies = load_studies(studies_file)
    planned = runs(studies, list(names), read_params_file(), studies_file)
    if baseline != "HEAD":
        if not collect_only:
            raise PipelineError("--baseline names the commit whose experiments to collect: use it with --collect-only")
        check_unchanged_since(baseline)
    shown = json.loads(dvc("exp", "show", "--json", "--rev", baseline))
    if not collect_only:
        require_committed_params()
        recorded = recorded_experiments(shown)
        missing = [run for run in planned if run.name not in recorded]
        click.echo(
            f"study: {len(planned) - len(missing)} of {len(planned)} runs recorded already; running {len(missing)}",
            err=True,
        )
        if missing:
            run_all(missing, jobs)
            shown = json.loads(dvc("exp", "show", "--json", "--rev", baseline))
    recorded, commit = recorded_experiments(shown), baseline_commit(shown)
    files = metric_files()
    for name in dict.fromkeys(run.study for run in planned):
        declared = studies.studies[name]
        ran = [run for run in planned if run.study == name]
        results = summarize(declared, ran, recorded, files, read_at, analysis_figures(out, name))
        if not any(result.runs for result in results):
            click.echo(
                f"study {name}: no run recorded on top of commit {commit[:7]}; its reports stay as they are", err=True
            )
            continue
        write_results(out, name, declared, results, commit)
        for result in results:
            if result.failed:
                click.echo(
                    f"study {name}: arm {result.arm}: {len(result.failed)} runs did not finish "
                    f"(their output: {log_path(result.failed[0])})",
                    err=True,
                )
    write_index(out, studies, studies_file)


def write_results(out: Path, name: str, declared: Study, results: list[ArmResult], commit: str) -> None:
    summary = {"question": declared.question, "source": declared.source, "commit": commit}
    write_json(out / f"{name}.json", summary | {"arms": [asdict(r) for r in results]})
    write_text(out / f"{name}.md", markdown_table(name, declared, results, commit))
    save_figure(figure(name, results, declared.accuracy_against), out / f"{name}.png")


def write_index(out: Path, studies: Studies, studies_file: Path) -> None:
    tables = [path.read_text() for name in studies.studies if (path := out / f"{name}.md").exists()]
    write_text(out / "index.md", index_page(os.path.relpath(studies_file), tables))
    click.echo(f"study: results in {out}/ (index.md lists them)")


def rewrite_tables(names: tuple[str, ...], studies_file: Path, out: Path | None) -> None:
    """Each named study's table, figure and JSON rewritten from its JSON by today's code and
    declarations, nothing run: refused, before any is written, for an arm without results or whose
    params changed since."""
    out = out or default_out(studies_file)
    studies = load_studies(studies_file)
    rewritten = []
    for name in names or list(studies.studies):
        record_file = out / f"{name}.json"
        if not record_file.exists():
            click.echo(f"study {name}: no results in {out}/; run it: python -m pipeline study {name}", err=True)
            continue
        record = json.loads(record_file.read_text())
        declared = studies.studies[name]
        recorded = {arm["arm"]: arm_from_record(arm) for arm in record["arms"]}
        unrun = [arm for arm in declared.arms if arm not in recorded]
        changed = [
            arm
            for arm in declared.arms
            if arm in recorded and recorded[arm].params not in (None, arm_params(declared, arm))
        ]
        if unrun or changed:
            why = f"arms {', '.join(unrun)} have no results" if unrun else f"arms {', '.join(changed)} changed params"
            raise PipelineError(f"study {name}: {why} in {record_file}: run python -m pipeline study {name}")
        results = [replace(recorded[arm], **declared.arms[arm].source_numbers()) for arm in declared.arms]
        rewritten.append((name, declared, compare_to_first(results), record["commit"]))
    for name, declared, results, commit in rewritten:
        write_results(out, name, declared, results, commit)
    write_index(out, studies, studies_file)


@user_command()
@click.argument("names", nargs=-1)
@click.option("--studies", "studies_file", type=PATH, default=STUDIES_FILE, show_default=True, help="The declarations.")
@click.option(
    "--out",
    type=PATH,
    default=None,
    help="Folder for the results  [default: reports/studies for the committed studies, else build/studies/<file name>]",
)
@click.option(
    "--collect-only", is_flag=True, help="Write the results of the experiments recorded already; run nothing."
)
@click.option(
    "--baseline",
    default="HEAD",
    show_default=True,
    help="With --collect-only: the commit the experiments ran on, if the stages' code is unchanged since.",
)
@click.option(
    "--tables-only",
    is_flag=True,
    help="Rewrite the tables, figures and index from the results' JSON files alone; run and collect nothing.",
)
@click.option(
    "--plan",
    is_flag=True,
    help="List the planned runs, one a line (name, then its overrides as dvc exp run -S takes them), and stop.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Runs at a time, each with its share of the cores.",
)
@click.option(
    "--worker",
    metavar="REMOTE",
    help="Take runs no other worker has taken, claiming each on this git remote; push each: outputs, then its ref.",
)
@click.option(
    "--retry-failed", is_flag=True, help="With --worker: take runs that failed on a worker again (once each)."
)
@click.option(
    "--status",
    "status_of",
    metavar="REMOTE",
    help="List each run of the plan as done, running (where, since when), failed or waiting on this git remote.",
)
@click.option(
    "--collect-from",
    metavar="REMOTE",
    help="Fetch the runs the workers pushed to this git remote (and their outputs), then write the results.",
)
@click.option(
    "--commit", help="With --worker or --collect-from: the study's commit, which this clone must have checked out."
)
@click.option(
    "--claim-timeout",
    type=click.FloatRange(min=1),
    default=3600,
    show_default=True,
    help="Seconds after which a run whose worker stopped renewing its claim is taken again.",
)
def main(
    names: tuple[str, ...],
    studies_file: Path,
    out: Path | None,
    collect_only: bool,
    baseline: str,
    tables_only: bool,
    plan: bool,
    jobs: int,
    worker: str | None,
    collect_from: str | None,
    retry_failed: bool,
    status_of: str | None,
    commit: str | None,
    claim_timeout: float,
) -> None:
    """Run the named studies (all without names) over their seeds and write their tables and figures."""
    planned = runs(load_studies(studies_file), list(names), read_params_file(), studies_file)
    if plan:
        for run in planned:
            click.echo(" ".join([run.name, *run.overrides_as_text()]))
        return
    if tables_only:
        rewrite_tables(names, studies_file, out)
        return
    if worker and (collect_only or collect_from):
        raise PipelineError("--worker runs and pushes; collect the results elsewhere with --collect-from")
    if commit and not (worker or collect_from or status_of):
        raise PipelineError(
            "--commit names the study's commit for --worker, --collect-from or --status: use it with one"
        )
    if retry_failed and not worker:
        raise PipelineError("--retry-failed is for a worker: use it with --worker")
    if status_of:
        for line in status(planned, status_of, check_commit(commit), claim_timeout):
            click.echo(line)
        return
    if worker:
        require_committed_params()
        work(planned, worker, check_commit(commit), claim_timeout, retry_failed)
        return
    if collect_from:
        pull(planned, collect_from, check_commit(commit))
    study(names, studies_file, out, collect_only or bool(collect_from), baseline, jobs)
