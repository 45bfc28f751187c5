"""The report as markdown: the verdict first, then what changed, params, metrics and figures."""

from __future__ import annotations

import json

from pipeline.commands.report.compare import Row
from pipeline.lib.seed_spread import FIX as SEED_FIX
from pipeline.lib.seed_spread import SEED_STUDY, SeedSpread
from pipeline.lib.staleness import FIX, Staleness

MISSING = "–"


def value(item: object) -> str:
    if item is None:
        return MISSING
    if isinstance(item, float):
        return f"{item:.6g}"
    return item if isinstance(item, str) else json.dumps(item)


def change(row: Row) -> str:
    numbers = (int, float)
    if not row.changed:
        return ""
    if (
        isinstance(row.base, numbers)
        and isinstance(row.head, numbers)
        and not isinstance(row.base, bool)
        and not isinstance(row.head, bool)
    ):
        return f"{row.head - row.base:+.6g}"
    return "changed"


def against_seeds(row: Row, spread: SeedSpread | None) -> str:
    """A changed metric the seeds study has a spread for, judged against it: outside when the change
    is more than twice the standard deviation of the difference between two runs with other seeds."""
    measure = row.name.replace(".", "_")
    if spread is None or not row.changed or not isinstance(row.base, float) or not isinstance(row.head, float):
        return MISSING
    deviation = spread.of_difference(measure)
    if deviation is None:
        return MISSING
    difference = row.head - row.base
    where = "within" if abs(difference) <= 2 * deviation else "outside"
    if measure.endswith("accuracy"):
        shown, unit = f"{100 * difference:+.2f} pt", f"{100 * deviation:.2f} pt"
    else:
        shown, unit = f"{difference:+.4f}", f"{deviation:.4f}"
    return f"{shown}: {where} the spread of a single run (SD of a difference {unit})"


def by_stage(causes: tuple[str, ...]) -> list[str]:
    """'train: a', 'train: b' -> '- train: a, b', one bullet per stage in the order met."""
    grouped: dict[str, list[str]] = {}
    for cause in causes:
        stage, _, what = cause.partition(": ")
        grouped.setdefault(stage, []).append(what)
    return [f"- {stage}: {', '.join(what)}" for stage, what in grouped.items()]


def verdict(stale: Staleness) -> list[str]:
    if not stale:
        return [
            "**Up to date**: the committed dvc.lock records this revision's commands, code and params for every stage."
        ]
    return [
        "**Stale**: the committed results do not come from this revision's code and params:",
        "",
        *by_stage(stale.causes),
        "",
        f"Fix: {FIX}.",
    ]


def changes(since: Staleness) -> list[str]:
    if not since:
        return ["No stage input differs: the same commands, code, params and raw data."]
    return ["Stage inputs whose record in dvc.lock differs between the two revisions:", "", *by_stage(since.causes)]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render(
    title: str,
    stale: Staleness,
    since: Staleness,
    params: list[Row],
    metrics: list[Row],
    figures: dict[str, str],
    spread: SeedSpread | None,
) -> str:
    """`params` are the changed params only; `metrics` every metric, changed ones marked; `figures`
    maps a caption to a PNG path relative to the report; `spread` the seeds study's, if committed."""
    changed_params = [row for row in params if row.changed]
    lines = [
        f"## {title}",
        "",
        *verdict(stale),
        "",
        "### What changed since the base",
        "",
        *changes(since),
        "",
        "### Params",
        "",
    ]
    if changed_params:
        lines += table(
            ["param", "base", "head"], [[f"`{row.name}`", value(row.base), value(row.head)] for row in changed_params]
        )
    else:
        lines.append("No param differs.")
    lines += ["", "### Metrics", ""]
    lines += table(
        ["metric", "base", "head", "change", "against the seeds"],
        [
            [
                f"**`{row.name}`**" if row.changed else f"`{row.name}`",
                value(row.base),
                value(row.head),
                change(row),
                against_seeds(row, spread),
            ]
            for row in metrics
        ],
    )
    if spread is None:
        lines += ["", f"No seed study at head ({SEED_STUDY}) to judge the changes by: {SEED_FIX}."]
    else:
        lines += [
            "",
            f"Against the seeds: the spread of the committed params over {spread.seeds} seeds ({SEED_STUDY}).",
        ]
    for caption, path in figures.items():
        lines += ["", f"### {caption}", "", f"![{caption}]({path})"]
    return "\n".join(lines) + "\n"
