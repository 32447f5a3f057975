"""The report's details on the answer: per model pair and task, what the comparisons say.

Only the ``comparisons`` of ``results.json`` decide (:mod:`prsl.evaluate.uncertainty`): a cell
(ε x metric) counts as "less" or "more" only when its interval excludes 0, everything else,
equal scores and float noise included, is "no detectable difference". With several training
seeds a cell counts only when every seed's comparison agrees (:mod:`prsl.report.seeds`).
Counting cells where one number is lower, with no uncertainty, is not done: it cannot tell an
effect from noise. The one-sentence answer these lines detail is :mod:`prsl.report.answer`'s.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import fmean, stdev
from typing import Any

from pydantic import BaseModel, ConfigDict

from prsl.report.plots import headline_metric
from prsl.report.seeds import SeedComparison, gathered
from prsl.results import OUTCOMES, Comparison, RunRecord, eps_text, floor_reason, records

NO_BASELINE = (
    "No comparison in these results: only one model was evaluated with each set of items, or no "
    "model was trained with CE and no `baseline` was set (set `baseline: MODEL` in the "
    "evaluation config; in a sweep, the sweep's `baseline:` cell)."
)
NO_INTERVALS = (
    "These results carry no intervals (written by an older prsl, or with "
    "`bootstrap.resamples: 0`): rerun `prsl evaluate` on the same output_dir with "
    "`bootstrap.resamples` above 0 (default 1000); the predictions are reused."
)


@dataclass(frozen=True)
class Cost:
    """What a model's training took in one task: measured seconds (wall-clock × processes)
    and optimizer steps in all, means over its ``seeds`` (``sd``: the seconds' standard
    deviation across them), and the model it started from, if any."""

    seconds: float
    steps: float
    seeds: int
    started_from: str | None
    sd: float | None = None

    def text(self) -> str:
        if self.seeds > 1:
            said = f"{self.seconds:.1f} s (mean of {self.seeds} seeds' measurements"
            said += f", sd {self.sd:.1f} s)" if self.sd is not None else ")"
        else:
            said = f"{self.seconds:.1f} s (one measurement)"
        start = f", with {self.started_from} it started from" if self.started_from else ""
        return f"{said} and {self.steps:g} steps{start}"


class _Trained(BaseModel):
    """What :func:`_training_cost` reads of a run (a :class:`RunRecord`, or any part of one)."""

    model_config = ConfigDict(from_attributes=True)

    model: str
    task: str
    seed: int | None = None
    train_device_seconds: float | None = None
    train_steps: int | None = None
    train_started_from: str | None = None


def _training_cost(
    model: str, task: str, runs: Iterable[RunRecord | Mapping[str, Any]]
) -> Cost | None:
    """A model's training cost in ``task``; None when any of its seeds lacks one (a mean of
    some seeds would pass for all of them)."""
    per_seed: dict[Any, tuple[float, int, str | None] | None] = {}
    for run in map(_Trained.model_validate, runs):
        if run.model != model or run.task != task:
            continue
        known = run.train_device_seconds is not None and run.train_steps is not None
        cost = (
            (run.train_device_seconds, run.train_steps, run.train_started_from) if known else None
        )
        per_seed.setdefault(run.seed, cost)
    costs = list(per_seed.values())
    if not costs or any(c is None for c in costs):
        return None
    starts = {c[2] for c in costs}
    seconds = [c[0] for c in costs]
    return Cost(
        fmean(seconds),
        sum(c[1] for c in costs) / len(costs),
        len(costs),
        starts.pop() if len(starts) == 1 else "the models they started from",
        stdev(seconds) if len(seconds) > 1 else None,
    )


def _cost_line(pair: str, comparison: Comparison, runs: list[RunRecord]) -> list[str]:
    """What each side's training took, measured, so "degrades less" is read at its price."""
    task = comparison.task
    mine = _training_cost(comparison.model, task, runs)
    theirs = _training_cost(comparison.baseline, task, runs)
    if mine is None or theirs is None:
        return []
    return [
        f"{pair}, {task}, training cost: {mine.text()} vs {theirs.text()}; seconds are "
        "measured wall-clock, a timing rather than a fixed cost (see the table of models)."
    ]


def _counts(found: list[SeedComparison]) -> str:
    tally = Counter(c.outcome for c in found)
    less, more, none = (tally[o] for o in OUTCOMES)
    cells = "cell" if len(found) == 1 else "cells"
    return (
        f"degrades less in {less} of {len(found)} {cells}, more in {more}, "
        f"no detectable difference in {none}"
    )


def verdict_lines(
    comparisons: Iterable[Comparison | Mapping[str, Any]],
    runs: Iterable[RunRecord | Mapping[str, Any]],
    level: float | None,
) -> list[str]:
    """The verdict, per model pair and task: on the headline metric over every attack, ε and
    reference, then over every metric, then on the headline metric per attack and reference.
    Records may be given in their JSON form (dicts), which is validated."""
    runs = records(RunRecord, runs, "runs")
    compared = gathered(records(Comparison, comparisons, "comparisons"))
    if not compared:
        has_intervals = any(r.intervals is not None for r in runs)
        return [NO_BASELINE if has_intervals or not runs else NO_INTERVALS]
    method = f"{level:.0%} paired bootstrap" if level is not None else "paired bootstrap"
    seeds = max(c.seeds for c in compared)
    if seeds > 1:
        method += (
            f" within each of {seeds} training seeds; a cell counts only when every seed agrees"
        )
    pairs: dict[tuple[str, str], list[SeedComparison]] = defaultdict(list)
    for comparison in compared:
        pairs[(comparison.pair, comparison.task)].append(comparison)
    collapsed = {(r.task, r.label) for r in runs if r.degenerate or floor_reason(r)}
    lines = []
    for (pair, task), found in pairs.items():
        lines += _pair_lines(pair, task, found, runs, method, collapsed)
    return [*lines, _caveat(len(compared), level)]


def _pair_lines(
    pair: str,
    task: str,
    found: list[SeedComparison],
    runs: list[RunRecord],
    method: str,
    collapsed: set[tuple[str, str]],
) -> list[str]:
    """One model pair in one task: the headline metric, every metric, each attack, the cost."""
    lines = []
    metric = headline_metric(task, runs)
    headline = [c for c in found if c.metric == metric]
    if headline:
        lines.append(
            f"{pair}, {task}, {metric}: {_counts(headline)} ({method}; a cell is one "
            f"attack, ε and reference).{_degenerate_caveat(found[0], collapsed)}"
        )
    lines.append(f"{pair}, {task}, every metric: {_counts(found)}.")
    differing = sorted(
        (c for c in headline if c.outcome != "none"),
        key=lambda c: (c.attack, c.eps, c.reference),
    )
    if differing:
        lines.append(
            f"{pair}, {task}, {metric}, the cells that differ: "
            + "; ".join(_differing(c) for c in differing)
            + "."
        )
    return lines + _cost_line(pair, found[0], runs)


def _differing(c: SeedComparison) -> str:
    low, high = c.interval
    return (
        f"{c.attack} at ε={eps_text(c.eps, c.norm or 'linf')}, reference {c.reference}: "
        f"{OUTCOME_WORDS[c.outcome]} by {abs(c.difference):.3g} [{low:+.3g}, {high:+.3g}], "
        f"p={c.p_value:.3g}"
    )


OUTCOME_WORDS = {"less": "degrades less", "more": "degrades more"}


def _degenerate_caveat(comparison: Comparison, collapsed: set[tuple[str, str]]) -> str:
    """A warning on the pair's line when either side is degenerate (said first in the report):
    its counts then say nothing about robustness. ``collapsed``: (task, model label) pairs."""
    named = [
        label
        for label in (
            f"{comparison.model} ({comparison.loss})",
            f"{comparison.baseline} ({comparison.baseline_loss})",
        )
        if (comparison.task, label) in collapsed
    ]
    if not named:
        return ""
    return f" But {' and '.join(named)} is degenerate (see above): these counts say nothing."


def _caveat(cells: int, level: float | None) -> str:
    """How many of the cells chance alone would show as different."""
    if level is None:
        return f"{cells} cells compared; no level recorded for their intervals."
    chance = (1 - level) * cells
    expected = f" (about {chance:.0f} of them)" if chance >= 1 else ""
    return (
        f"Read the counts above knowing that {cells} cells were compared: when nothing differs, "
        f"about {1 - level:.0%} of cells{expected} still show a difference at the {level:.0%} "
        "level by chance alone, so a count near that is no evidence."
    )
