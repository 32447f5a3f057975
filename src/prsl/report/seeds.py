"""Results of several training seeds: the spread across seeds beside the within-seed intervals.

A bootstrap interval says how much a number would move with other items from the same source;
it says nothing about another training run. When the same models were trained with several
seeds (``prsl quickstart --seeds``, a sweep's ``seeds``), every run and comparison carries its
``seed``, and here they are gathered across seeds:

- :func:`collapse_seeds` turns the comparisons of one cell (model, baseline, task, attack, ε,
  reference, metric) in every seed into one: the mean difference, its standard deviation across
  seeds, the largest of the seeds' p-values, and an outcome that is ``less`` (or ``more``) only
  when the comparison says so in every seed, by its own paired-bootstrap interval. One seed that
  disagrees, or shows no detectable difference, makes the cell ``none``: an effect that a
  reseed can undo is not an effect of the loss.
- :func:`seed_spread` gives, per model, task, attack, ε and reference, the mean ± sd across
  seeds of the headline metric's degradation.

With a single seed both are the identity (and the standard deviation is absent).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import fmean, stdev
from typing import Any

from prsl.report.plots import headline_metric
from prsl.results import Comparison, RunRecord, records

_CELL = ("model", "baseline", "task", "attack", "eps", "reference", "metric")


class SeedComparison(Comparison):
    """One cell's comparison gathered over its seeds: the mean ``difference``, its standard
    deviation across seeds, and each seed's outcome (see the module docstring)."""

    seeds: int
    difference_sd: float | None = None
    seed_outcomes: dict[str, str] | None = None


def gathered(comparisons: list[Comparison]) -> list[SeedComparison]:
    """One comparison per cell, gathered over the seeds (see the module docstring)."""
    groups: dict[tuple, list[Comparison]] = defaultdict(list)
    for comparison in comparisons:
        groups[tuple(getattr(comparison, k) for k in _CELL)].append(comparison)
    collapsed = []
    for found in groups.values():
        first = found[0].model_dump()
        if len(found) == 1:
            collapsed.append(SeedComparison(**first, seeds=1))
            continue
        outcomes = {c.outcome for c in found}
        differences = [c.difference for c in found]
        first |= {
            "difference": fmean(differences),
            "outcome": outcomes.pop() if len(outcomes) == 1 else "none",
            # a cell counts only when every seed rejects: an intersection-union test, whose
            # p-value is the largest of the seeds'
            "p_value": max(c.p_value for c in found),
        }
        collapsed.append(
            SeedComparison(
                **first,
                seeds=len(found),
                difference_sd=stdev(differences),
                seed_outcomes={str(c.seed): c.outcome for c in found},
            )
        )
    return collapsed


def collapse_seeds(comparisons: Iterable[Comparison | Mapping[str, Any]]) -> list[dict]:
    """:func:`gathered`, in the JSON form of ``results.json``'s comparisons: a dict each, with
    ``seeds`` (and over several seeds ``difference_sd`` and ``seed_outcomes``) added."""
    return [c.as_json() for c in gathered(records(Comparison, comparisons, "comparisons"))]


@dataclass(frozen=True)
class Spread:
    """The headline metric's degradation across seeds: mean, standard deviation, seed count."""

    metric: str
    mean: float
    sd: float
    seeds: int


def seed_spread(runs: Iterable[RunRecord | Mapping[str, Any]]) -> dict[tuple, Spread]:
    """``{(model, task, attack, eps, reference): Spread}`` for cells run with several seeds."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in records(RunRecord, runs, "runs"):
        if run.seed is not None:
            groups[(run.model, run.task, run.attack, run.eps, run.reference)].append(run)
    spread = {}
    for key, found in groups.items():
        metric = headline_metric(key[1], found)
        if metric is None or len({r.seed for r in found}) < 2:
            continue
        values = [r.degradation[metric] for r in found]
        spread[key] = Spread(metric, fmean(values), stdev(values), len(values))
    return spread


def seed_count(runs: list[RunRecord]) -> int:
    """How many training seeds the runs come from (1 when none is recorded)."""
    return max(1, len({r.seed for r in runs if r.seed is not None}))
