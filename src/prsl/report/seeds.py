"""Results of several training seeds: the spread across seeds beside the within-seed intervals.

A bootstrap interval says how much a number would move with other items from the same source;
it says nothing about another training run. When the same models were trained with several
seeds (``prsl quickstart --seeds``, a sweep's ``seeds``), every run and comparison carries its
``seed``, and here they are gathered across seeds:

- :func:`collapse_seeds` turns the comparisons of one cell (model, baseline, task, attack, ε,
  reference, metric) in every seed into one: the mean difference, its standard deviation across
  seeds, and an outcome that is ``less`` (or ``more``) only when the comparison says so in every
  seed, by its own paired-bootstrap interval. One seed that disagrees, or shows no detectable
  difference, makes the cell ``none``: an effect that a reseed can undo is not an effect of the
  loss.
- :func:`seed_spread` gives, per model, task, attack, ε and reference, the mean ± sd across
  seeds of the headline metric's degradation.

With a single seed both are the identity (and the standard deviation is absent).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from statistics import fmean, stdev

from prsl.report.plots import headline_metric

_CELL = ("model", "baseline", "task", "attack", "eps", "reference", "metric")


def collapse_seeds(comparisons: list[dict]) -> list[dict]:
    """One comparison per cell, gathered over the seeds (see the module docstring)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for comparison in comparisons:
        groups[tuple(comparison[k] for k in _CELL)].append(comparison)
    collapsed = []
    for found in groups.values():
        if len(found) == 1:
            collapsed.append(found[0] | {"seeds": 1})
            continue
        outcomes = {c["outcome"] for c in found}
        differences = [c["difference"] for c in found]
        collapsed.append(
            found[0]
            | {
                "seeds": len(found),
                "difference": fmean(differences),
                "difference_sd": stdev(differences),
                "outcome": outcomes.pop() if len(outcomes) == 1 else "none",
                "seed_outcomes": {str(c.get("seed")): c["outcome"] for c in found},
            }
        )
    return collapsed


@dataclass(frozen=True)
class Spread:
    """The headline metric's degradation across seeds: mean, standard deviation, seed count."""

    metric: str
    mean: float
    sd: float
    seeds: int


def seed_spread(runs: list[dict]) -> dict[tuple, Spread]:
    """``{(model, task, attack, eps, reference): Spread}`` for cells run with several seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        if "seed" in run:
            key = (run["model"], run["task"], run["attack"], run["eps"], run["reference"])
            groups[key].append(run)
    spread = {}
    for key, found in groups.items():
        metric = headline_metric(key[1], found)
        if metric is None or len({r["seed"] for r in found}) < 2:
            continue
        values = [r["degradation"][metric] for r in found]
        spread[key] = Spread(metric, fmean(values), stdev(values), len(values))
    return spread


def seed_count(runs: list[dict]) -> int:
    """How many training seeds the runs come from (1 when none is recorded)."""
    return max(1, len({r["seed"] for r in runs if "seed" in r}))
