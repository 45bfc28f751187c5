"""A study's results, from DVC's own record of its experiments: `dvc exp show --json` for the
metrics, and the experiment's commit for what is kept out of the metrics (seconds, curves).

Each arm gets the mean and standard deviation over its seeds, and each seed's own values. Its
difference in test accuracy from the study's first arm `differs` when Welch's t-test rejects equal
means at the 5% level: with 3 seeds a difference must be 2.8 to 4.3 standard errors to count, not 2.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from scipy import stats

from pipeline.commands.study.plan import Run, Study
from pipeline.lib.figures import plt
from pipeline.lib.layout import RESULTS_STAGE

NO_RESULTS = "No study has been run with today's code yet.\n"
SIGNIFICANCE = 0.05  # the level at which Welch's t-test decides that two arms differ


@dataclass(frozen=True)
class Measure:
    """One column of a study's table: where each run records it, and how the table shows it."""

    label: str
    source: str  # "evaluation" or "training_summary" (metrics dvc exp show lists), "timing" (the run's commit)
    key: str  # dotted path inside that file
    shown: str  # "percent", "loss" or "count"

    def format(self, mean: float, std: float) -> str:
        if self.shown == "percent":
            return f"{mean:.2%} ± {std * 100:.2f}"
        if self.shown == "loss":
            return f"{mean:.4f} ± {std:.4f}"
        return f"{mean:.1f} ± {std:.1f}"


# Every measure of a study, in table order; the first is the one the arms are compared by.
MEASURES = {
    "test_accuracy": Measure("test acc.", "evaluation", "test.accuracy", "percent"),
    "test_loss": Measure("test loss", "evaluation", "test.loss", "loss"),
    "train_accuracy": Measure("train acc. (kept epoch)", "training_summary", "train.accuracy", "percent"),
    "train_loss": Measure("train loss (kept epoch)", "training_summary", "train.loss", "loss"),
    "pool_accuracy": Measure("acc. on all training images", "evaluation", "training_pool.accuracy", "percent"),
    "val_accuracy": Measure("val. acc. (kept epoch)", "training_summary", "val.accuracy", "percent"),
    "kept_epoch": Measure("kept epoch", "training_summary", "kept_epoch", "count"),
    "train_seconds": Measure("training s", "timing", "train_seconds", "count"),
}


@dataclass(frozen=True)
class MetricFiles:
    """Where the stages write what a study reads: paths as dvc.yaml names them."""

    evaluation: str  # evaluate's --metrics
    training_summary: str  # metrics.json in train's --live folder
    timing: str  # train's --timing
    val_curve: str  # dvclive's validation accuracy per epoch, in train's --live folder
    confused_pairs: str  # analyze's most confused pairs, in its --out folder
    per_class: str  # evaluate's --per-class (test images)
    per_class_train: str  # evaluate's --per-class-train


ReadFile = Callable[[str, str], str]  # (experiment commit, path) -> the file's text in that commit


@dataclass(frozen=True)
class ArmResult:
    arm: str
    reported: float | None
    runs: int
    failed: list[str]  # names of the experiments that did not finish: a run that broke
    mean: dict[str, float]
    std: dict[str, float]
    curve: list[float]  # mean validation accuracy per epoch from epoch 0, over the seeds
    diverged: dict[str, dict] = field(default_factory=dict)  # run name -> epoch, step, loss (train.on_divergence)
    reported_by: str | None = None  # who reports `reported`, where it is not the study's source
    reported_train_loss: float | None = None  # the source's final training loss
    params: dict[str, Any] | None = None  # the study's settings and the arm's params its runs had (None: not recorded)
    per_seed: dict[str, dict[str, float]] = field(default_factory=dict)  # run name -> its MEASURES values
    analysis: dict[str, Any] | None = None  # the analyzed run: its name, most confused pairs, lowest recalls, figures
    difference: float | None = None  # test accuracy minus the first arm's
    p_value: float | None = None  # Welch's t-test of that difference (None: an arm of one seed cannot be tested)
    differs: bool | None = None  # p_value below SIGNIFICANCE


def arm_from_record(record: Mapping) -> ArmResult:
    """An ArmResult from a study's JSON, its comparison left to compare_to_first; older records lack
    the newer fields (per-seed values, params), and name the comparison they had otherwise."""
    known = {f.name for f in fields(ArmResult)} - {"difference", "p_value", "differs"}
    return ArmResult(**{key: value for key, value in record.items() if key in known})


def recorded_experiments(shown: list[dict]) -> dict[str, dict]:
    """Experiment name -> its row (commit `rev` and `data`), for every experiment that finished:
    queued and running ones are listed too, with their params but no metrics yet."""
    return {
        rev["name"]: rev for rev in _revisions(shown) if not rev.get("error") and (rev.get("data") or {}).get("metrics")
    }


def baseline_commit(shown: list[dict]) -> str:
    """The commit the experiments were run on top of (the first row after the workspace)."""
    return next(row["rev"] for row in shown if row.get("rev") != "workspace")


def _revisions(shown: list[dict]) -> Iterator[dict]:
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            yield from experiment.get("revs", [])


def measures(row: Mapping, files: MetricFiles, read: ReadFile) -> dict[str, float | None]:
    """Every MEASURES value of one experiment; None where the run has none (no validation set)."""
    metrics = row["data"]["metrics"]
    loaded = {
        "evaluation": metrics[files.evaluation]["data"],
        "training_summary": metrics[files.training_summary]["data"],
        "timing": json.loads(read(row["rev"], files.timing)),
    }
    values = {}
    for name, measure in MEASURES.items():
        value = loaded[measure.source]
        for part in measure.key.split("."):
            value = value.get(part) if value is not None else None  # dvc exp show drops null values
        values[name] = value
    return values


def curve(row: Mapping, files: MetricFiles, read: ReadFile) -> list[float]:
    """Validation accuracy per epoch from dvclive's TSV (a header row names the columns); none for a
    run without a validation set."""
    if row["data"]["metrics"][files.training_summary]["data"].get("val") is None:
        return []
    header, *lines = read(row["rev"], files.val_curve).splitlines()
    column = header.split("\t").index("accuracy")
    return [float(line.split("\t")[column]) for line in lines]


CONFUSED_PAIRS_SHOWN = 5
LOWEST_RECALLS_SHOWN = 4


def lowest_recalls(per_class_text: str) -> list[list]:
    """The digits recognized least often, [digit, recall] from the lowest, as the sources name theirs."""
    recalls = [[digit, scores["recall"]] for digit, scores in json.loads(per_class_text).items()]
    return sorted(recalls, key=lambda pair: (pair[1], pair[0]))[:LOWEST_RECALLS_SHOWN]


def analysis(run: Run, row: Mapping, files: MetricFiles, read: ReadFile, figures: list[str]) -> dict[str, Any]:
    """What an arm keeps of its analyzed run: the digits it took most often for others, those it
    recognized least often on the test and the training images, and where its figures are
    (relative to the study's table)."""
    pairs = json.loads(read(row["rev"], files.confused_pairs))[:CONFUSED_PAIRS_SHOWN]
    return {
        "run": run.name,
        "confused_pairs": [[p["pair"], p["count"]] for p in pairs],
        "lowest_recalls": {
            "test": lowest_recalls(read(row["rev"], files.per_class)),
            "train": lowest_recalls(read(row["rev"], files.per_class_train)),
        },
        "figures": figures,
    }


def arm_params(study: Study, arm_name: str) -> dict[str, Any]:
    """The overrides every run of the arm shares: the study's settings, then the arm's params."""
    return {**study.settings, **study.arms[arm_name].params}


def summarize(
    study: Study,
    planned: list[Run],
    recorded: Mapping[str, dict],
    files: MetricFiles,
    read: ReadFile,
    figures: Callable[[Run, str], list[str]] = lambda run, revision: [],
) -> list[ArmResult]:
    """Each arm's results; `figures` copies an analyzed run's figures (its name and commit) beside
    the table and returns their paths."""
    results = []
    for arm_name, arm in study.arms.items():
        names = [run.name for run in planned if run.arm == arm_name]
        rows = [recorded[name] for name in names if name in recorded]
        values = [measures(row, files, read) for row in rows]
        per_seed = {row["name"]: {k: v for k, v in seed.items() if v is not None} for row, seed in zip(rows, values)}
        curves = [curve(row, files, read) for row in rows]
        measured = [key for key in MEASURES if values and all(v[key] is not None for v in values)]
        mean = {key: statistics.fmean(v[key] for v in values) for key in measured}
        std = {key: statistics.stdev(v[key] for v in values) if len(values) > 1 else 0.0 for key in measured}
        mean_curve = [statistics.fmean(epoch) for epoch in zip(*curves)]
        diverged = {
            row["name"]: where
            for row in rows
            if (where := row["data"]["metrics"][files.training_summary]["data"].get("diverged"))
        }
        failed = [name for name in names if name not in recorded]
        analyzed = [run for run in planned if run.arm == arm_name and run.last_stage != RESULTS_STAGE]
        kept = None
        if analyzed and analyzed[0].name in recorded:
            row = recorded[analyzed[0].name]
            kept = analysis(analyzed[0], row, files, read, figures(analyzed[0], row["rev"]))
        results.append(
            ArmResult(
                arm=arm_name,
                runs=len(values),
                failed=failed,
                mean=mean,
                std=std,
                curve=mean_curve,
                diverged=diverged,
                params=arm_params(study, arm_name),
                per_seed=per_seed,
                analysis=kept,
                **arm.source_numbers(),
            )
        )
    return compare_to_first(results)


def welch_p_value(first: ArmResult, other: ArmResult, key: str = "test_accuracy") -> float | None:
    """Welch's two-sided t-test of equal means, from each arm's mean, standard deviation and seed
    count (the same test as on the seeds' values); None where an arm has a single seed."""
    if first.runs < 2 or other.runs < 2:
        return None
    if first.std[key] == other.std[key] == 0:  # every seed alike in both: the means differ or they do not
        return 0.0 if first.mean[key] != other.mean[key] else 1.0
    test = stats.ttest_ind_from_stats(
        first.mean[key], first.std[key], first.runs, other.mean[key], other.std[key], other.runs, equal_var=False
    )
    return float(test.pvalue)


def compare_to_first(results: list[ArmResult]) -> list[ArmResult]:
    first = results[0]
    compared = [first]
    for result in results[1:]:
        if not (first.runs and result.runs):
            compared.append(result)
            continue
        difference = result.mean["test_accuracy"] - first.mean["test_accuracy"]
        p_value = welch_p_value(first, result)
        differs = None if p_value is None else p_value < SIGNIFICANCE
        compared.append(
            ArmResult(**{**asdict(result), "difference": difference, "p_value": p_value, "differs": differs})
        )
    return compared


def markdown_table(name: str, study: Study, results: list[ArmResult], commit: str) -> str:
    # A measure no arm has (its runs predate it) gets no column.
    columns = {key: measure for key, measure in MEASURES.items() if any(key in result.mean for result in results)}
    header = [
        "arm",
        "seeds",
        *(measure.label for measure in columns.values()),
        f"vs {results[0].arm} (Welch's t-test, {SIGNIFICANCE:.0%})",
        "source reports",
    ]
    lines = [
        f"**{name}**: {study.question} Source: {study.source}. Measured on top of commit `{commit[:7]}`.",
        "",
        *([f"Assumed where the source is silent: {'; '.join(study.assumptions)}.", ""] if study.assumptions else []),
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for result in results:
        cells = [
            measure.format(result.mean[key], result.std[key]) if key in result.mean else "-"
            for key, measure in columns.items()
        ]
        counts = ((len(result.diverged), "diverged"), (len(result.failed), "failed"))
        notes = [f"{count} {what}" for count, what in counts if count]
        seeds = f"{result.runs}" + (f" ({', '.join(notes)})" if notes else "")
        reported = _reported(result)
        lines.append("| " + " | ".join([result.arm, seeds, *cells, _versus(result), reported]) + " |")
    for result in results:
        if result.analysis:
            pairs = ", ".join(f"{pair} ({count})" for pair, count in result.analysis["confused_pairs"])
            shown = ", ".join(f"[{Path(path).stem}]({path})" for path in result.analysis["figures"])
            recalls = "; ".join(
                f"{images} " + ", ".join(f"{digit} ({recall:.2f})" for digit, recall in lowest)
                for images, lowest in result.analysis["lowest_recalls"].items()
            )
            lines += [
                "",
                f"Analysis of {result.arm} ({result.analysis['run']}): most confused {pairs}; "
                f"lowest recalls: {recalls}; {shown}.",
            ]
        if result.diverged:
            where = "; ".join(
                f"{name}: epoch {w['epoch']}, step {w['step']}, loss {w['loss']}" for name, w in result.diverged.items()
            )
            lines += [
                "",
                f"{result.arm} diverged on {len(result.diverged)} of {result.runs} seeds ({where}): "
                "its numbers are those of the epoch kept before, epoch 0 being the untouched network.",
            ]
    return "\n".join(lines) + "\n"


def _versus(result: ArmResult) -> str:
    if result.difference is None:
        return "-"
    shown = f"{result.difference * 100:+.2f} pt"
    if result.p_value is None:
        return f"{shown}, untested (one seed)"
    return f"{shown}, {'differs' if result.differs else 'within noise'} (p = {result.p_value:.2g})"


def _reported(result: ArmResult) -> str:
    accuracy = None if result.reported is None else f"{result.reported:.2%}"
    loss = None if result.reported_train_loss is None else f"train loss {result.reported_train_loss:.4f}"
    shown = ", ".join(part for part in (accuracy, loss) if part)
    return (shown or "-") + (f" ({result.reported_by})" if result.reported_by else "")


def index_page(studies_file: str, tables: list[str]) -> str:
    """The page that lists every study's table, in declaration order: generated, never edited."""
    head = (
        "# Study results\n\n"
        f"Generated by `python -m pipeline study` from the experiments of the studies declared in `{studies_file}`;\n"
        "each study's numbers are also in its `.json` file and its figure in its `.png` file beside this page.\n\n"
    )
    return head + ("\n".join(tables) if tables else NO_RESULTS)


def figure(name: str, results: list[ArmResult], accuracy_against: str = "arm") -> plt.Figure:
    """Left, test accuracy per arm (mean and standard deviation over seeds, filled where it differs
    from the first arm's, and the source's number), one column per arm or, with `accuracy_against`
    "training_seconds", each arm at its mean training time; right, each arm's mean validation error
    per epoch from epoch 0."""
    figure, (arms, curves) = plt.subplots(
        1, 2, figsize=(1.2 * len(results) + 8, 4), gridspec_kw={"width_ratios": [1, 1.4]}
    )
    by_time = accuracy_against == "training_seconds"
    ran = [(index, result) for index, result in enumerate(results) if result.runs]
    # Each arm's place on the x axis; by time, an arm that never ran has none.
    x = {index: r.mean["train_seconds"] for index, r in ran} if by_time else {i: i for i in range(len(results))}
    arms.errorbar(
        [x[index] for index, _ in ran],
        [100 * r.mean["test_accuracy"] for _, r in ran],
        yerr=[100 * r.std["test_accuracy"] for _, r in ran],
        fmt="o",
        markerfacecolor="white",
        capsize=4,
        label="this project (mean ± std over seeds)",
    )
    differing = [(index, r) for index, r in ran if r.differs]
    if differing:
        arms.scatter(
            [x[index] for index, _ in differing],
            [100 * r.mean["test_accuracy"] for _, r in differing],
            zorder=3,
            label=f"differs from {results[0].arm} (Welch's t-test, {SIGNIFICANCE:.0%})",
        )
    reported = [(index, r.reported) for index, r in enumerate(results) if r.reported is not None and index in x]
    if reported:
        places, values = [x[i] for i, _ in reported], [100 * v for _, v in reported]
        arms.scatter(places, values, marker="x", color="black", label="source reports")
    for place, (index, result) in enumerate(ran):
        at = (x[index], 100 * result.mean["test_accuracy"])
        if by_time:  # a ring in the colour of the arm's curve on the right names it
            arms.scatter(*at, s=90, facecolors="none", edgecolors=f"C{place}", linewidths=2, zorder=4)
        if result.diverged:
            arms.annotate(
                f"diverged {len(result.diverged)}/{result.runs}",
                at,
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=8,
                color="firebrick",
            )
    if by_time:
        arms.set_xscale("log")
        arms.set(xlabel="training seconds (mean over seeds), log scale; each arm in its curve's colour")
    else:
        arms.set_xticks(range(len(results)), [r.arm for r in results], rotation=20)
    arms.set(ylabel="test accuracy (%)", title=f"study: {name}")
    arms.legend(fontsize=8, loc="best")
    for place, (_, result) in enumerate(ran):
        if not result.curve:  # trained without a validation set: by time, the legend still names its ring's colour
            if by_time:
                curves.plot([], [], marker="o", color=f"C{place}", label=f"{result.arm} (no validation set)")
            continue
        errors = [1 - accuracy for accuracy in result.curve]
        curves.plot(range(len(result.curve)), errors, marker=".", color=f"C{place}", label=result.arm)
    curves.set_yscale("log")
    curves.set(
        xlabel="epoch (0: before any update)",
        ylabel="validation error, log scale",
        title="validation error per epoch (mean over seeds)",
    )
    curves.grid(alpha=0.3)
    if curves.get_lines():
        curves.legend(fontsize=8)
    return figure
