"""The field's table: each model's score, clean and under attack at each ε, with its interval.

This is how robustness is published (RobustVLM's tables: rows are models, columns the clean
score and the score at each ε): one table per task and reference, on the task's headline metric.
Where the task has a ``worst-case`` attack (per item, the worst output over the grid's attacks),
each model gets one row, its worst case; otherwise one row per attack, named. A cell is the
adversarial score with its interval; it is bold, with ▲ (degrades less than the baseline: more
robust) or ▼ (degrades more), only when the comparison with the baseline in that cell says so.
A targeted attack's success rate, when its run records one, is shown in its cells.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prsl.report.answer import WORST_CASE
from prsl.report.plots import headline_metric
from prsl.report.tables import MARKS
from prsl.results import Comparison, RunRecord, eps_text

REFERENCE_TEXT = {
    "ground_truth": "against the ground truth",
    "clean": "against its own clean output",
}
LEGEND = (
    "Each cell: the score under attack [its {level} interval]. Bold ▲: the model degrades "
    "less than the baseline in that cell (more robust), bold ▼: more, by the paired bootstrap; "
    "unmarked: no detectable difference."
)


@dataclass(frozen=True)
class FieldTable:
    title: str
    header: list[str]
    rows: list[list[str]]


def success_text(run: RunRecord) -> str | None:
    """A targeted run's success rate (its ``target_success``: the target in the output) with
    its interval, or None. The one place that reads it: untargeted runs, and results written
    before targeted attacks (a record without the field), carry none, and then nothing shows."""
    success = getattr(run, "target_success", None)
    rate = getattr(success, "rate", None)
    if not isinstance(rate, int | float):
        return None
    bounds = getattr(success, "interval", None)
    interval = f" [{bounds[0]:.0%}, {bounds[1]:.0%}]" if bounds else ""
    return f"target hit {rate:.0%}{interval}"


def _score(run: RunRecord, part: str, metric: str) -> str:
    value = getattr(run, part)[metric]
    bounds = run.interval(part, metric)
    return f"{value:.3f}" + (f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else "")


def _cell(run: RunRecord | None, metric: str, comparison: Comparison | None) -> str:
    if run is None:
        return "–"
    text = _score(run, "adversarial", metric)
    success = success_text(run)
    text += f"; {success}" if success else ""
    if comparison is not None and comparison.outcome in MARKS:
        return f"**{text} {MARKS[comparison.outcome]}**"
    return text


def field_tables(runs: list[RunRecord], comparisons: Iterable[Comparison]) -> list[FieldTable]:
    """One table per task and reference (ground truth first), rows models (× attack)."""
    compared = {
        (c.model, c.task, c.attack, c.eps, c.reference, c.metric, c.seed): c for c in comparisons
    }
    baselines = {(c.task, c.baseline) for c in compared.values()}
    tables = []
    for task in sorted({r.task for r in runs}):
        metric = headline_metric(task, runs)
        if metric is None:
            continue
        for reference in ("ground_truth", "clean"):
            mine = [r for r in runs if (r.task, r.reference) == (task, reference)]
            if mine:
                tables.append(_table(task, reference, metric, mine, compared, baselines))
    return tables


def _table(
    task: str,
    reference: str,
    metric: str,
    runs: list[RunRecord],
    compared: dict[tuple, Comparison],
    baselines: set[tuple[str, str]],
) -> FieldTable:
    attacked = [r for r in runs if r.eps > 0]
    worst = any(r.attack == WORST_CASE for r in attacked)
    attacks = [WORST_CASE] if worst else sorted({r.attack for r in attacked})
    budgets = sorted({(r.eps, r.norm or "linf") for r in attacked})
    by = {(r.seeded_label, r.attack, r.eps): r for r in runs}
    base = {r.seeded_label for r in runs if (task, r.model) in baselines}
    labels = sorted({r.seeded_label for r in runs}, key=lambda label: (label not in base, label))
    rows = []
    for label in labels:
        own = [r for r in runs if r.seeded_label == label]
        # the clean score over every item: not a cell a cascade cut short, which holds only
        # the items earlier attacks left standing (the worst case's row covers all of them)
        first = min(own, key=lambda r: (bool(r.cascade_skipped), r.attack != WORST_CASE))
        shown = label + (" — baseline" if label in base else "")
        for i, attack in enumerate(attacks):
            cells = []
            for eps, _ in budgets:
                run = by.get((label, attack, eps))
                key = (first.model, task, attack, eps, reference, metric, first.seed)
                cells.append(_cell(run, metric, compared.get(key)))
            clean = _score(first, "clean", metric) if i == 0 else ""
            items = str(max(r.n_images for r in own)) if i == 0 else ""
            rows.append([shown if i == 0 else "", attack, items, clean, *cells])
    kind = (
        "the worst case per item over the grid's attacks"
        if worst
        else "each attack on its own (no `worst-case` row in these results)"
    )
    title = f"{task}: {metric} {REFERENCE_TEXT[reference]}; under attack: {kind}"
    header = ["model", "attack", "items", "clean", *(f"ε={eps_text(e, n)}" for e, n in budgets)]
    return FieldTable(title, header, rows)
