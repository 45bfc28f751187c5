"""`python -m pipeline report --base REV`: a markdown report of this revision's results against REV's.

For a reviewer, in seconds and from git alone (reports/ and dvc.lock are committed): is the
committed dvc.lock up to date with the code and params (the judgement `verify` makes before its
rerun), what changed since REV, the params that differ, every metric of both revisions, and two
PNG figures beside the report. Exit status: 0 up to date, 1 stale, 2 bad input.
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from pipeline.commands.report.compare import changes_since, compared, flatten, metric_paths, metrics_of
from pipeline.commands.report.figures import confusion_counts, confusion_figure, curve_plots, curves_figure
from pipeline.commands.report.markdown import render
from pipeline.lib.atomic import write_text
from pipeline.lib.cli import PATH, user_command
from pipeline.lib.errors import PipelineError
from pipeline.lib.figures import save_figure
from pipeline.lib.layout import LOCK_FILE, definition, stage_path
from pipeline.lib.params import DEFAULT_PARAMS, read_params_file
from pipeline.lib.revisions import NotAtRevision, commit_of, read_at, read_if_present
from pipeline.lib.seed_spread import SEED_STUDY, seed_spread
from pipeline.lib.staleness import file_md5, find_stale

HEAD = "HEAD"


def confusion_plot(pipeline: dict) -> tuple[str, str, str] | None:
    """The path, actual field and predicted field of the stage plot that is a confusion matrix."""
    for stage in pipeline.values():
        for plot in stage.get("plots", []):
            if isinstance(plot, dict):
                ((path, flags),) = plot.items()
                if {"x", "y"} <= flags.keys() and "confusion" in str(flags.get("template", "")):
                    return path, flags["y"], flags["x"]
    return None


def committed_lock(revision: str) -> dict:
    try:
        return yaml.safe_load(read_at(revision, LOCK_FILE))
    except NotAtRevision:
        raise PipelineError(
            f"{revision} has no committed {LOCK_FILE}: compare with a revision after the pipeline's first committed run"
        ) from None


def report(base: str, out: Path) -> bool:
    """Write the report and its figures; True when the committed results are up to date."""
    declared = definition()
    pipeline = declared["stages"]
    base_commit, head_commit = commit_of(base), commit_of(HEAD)
    head_lock, base_lock = committed_lock(HEAD), committed_lock(base)
    labels = {"base": f"base {base_commit[:7]}", "head": f"head {head_commit[:7]}"}
    readers = {
        labels["base"]: lambda path: read_if_present(base_commit, path),
        labels["head"]: lambda path: read_if_present(head_commit, path),
    }

    # The results: not the seconds a training took, nor the per-digit scores (dvc metrics diff lists both).
    per_digit = (stage_path("evaluate", option).as_posix() for option in ("--per-class", "--per-class-train"))
    apart = {stage_path("train", "--timing").as_posix(), *per_digit}
    paths = [path for path in metric_paths(pipeline) if path not in apart]
    base_metrics, head_metrics = (metrics_of(paths, read) for read in readers.values())
    for revision, found in ((base, base_metrics), (HEAD, head_metrics)):
        if not found:
            raise PipelineError(
                f"{revision} has no committed results ({', '.join(paths)}): commit the results of dvc "
                "repro there, or compare with another revision"
            )
    stale = find_stale(head_lock, pipeline, read_params_file(), file_md5)
    params = compared(*(flatten(yaml.safe_load(read(str(DEFAULT_PARAMS)) or "{}")) for read in readers.values()))

    figures = {}
    plots = curve_plots(declared.get("plots", []))
    if plots:
        figures["Learning curves (base dashed, head solid)"] = _save(curves_figure(plots, readers), out, "curves")
    if (confusion := confusion_plot(pipeline)) is not None:
        path, actual, predicted = confusion
        texts = {label: read(path) for label, read in readers.items()}
        if all(text is not None for text in texts.values()):
            matrices = {label: confusion_counts(text, actual, predicted) for label, text in texts.items()}
            figures["Test-set mistakes"] = _save(confusion_figure(matrices), out, "confusion")

    named = "" if base_commit.startswith(base) else f" ({base})"
    title = f"Results of {labels['head']} against {labels['base']}{named}"
    write_text(
        out,
        render(
            title,
            stale,
            changes_since(base_lock, head_lock, pipeline),
            params,
            compared(base_metrics, head_metrics),
            figures,
            seed_spread(read_if_present(head_commit, SEED_STUDY.as_posix())),
        ),
    )
    click.echo(f"report: {out} ({'stale' if stale else 'up to date'})", err=True)
    return not stale


def _save(figure, out: Path, name: str) -> str:
    path = out.with_name(f"{out.stem}-{name}.png")
    save_figure(figure, path)
    return path.name


@user_command(error_status=2)
@click.option("--base", required=True, help="Git revision to compare with (a commit, branch or tag, e.g. main).")
@click.option(
    "--out",
    type=PATH,
    default=Path("build/report/report.md"),
    show_default=True,
    help="The markdown file; its PNG figures are written beside it.",
)
def main(base: str, out: Path) -> int:
    """Compare this revision's committed results with REV's: exit 0 up to date, 1 stale, 2 bad input."""
    return 0 if report(base, out) else 1
