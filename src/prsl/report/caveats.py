"""What limits how much the results can say: how many items, and attacks that change nothing.

- **Few items.** Below :data:`FEW_ITEMS` items the intervals are wide: a 95 % interval on a
  share (an accuracy, a success rate) spans up to ±z·0.5/√n, ±9.8 points at 100 items and ±28
  at 12, so only large differences can show. The line gives that bound and the median width of
  the comparisons' own intervals per task and metric, read from the results.
- **Attacks that barely change outputs.** A cell (task, attack, ε) where at least
  :data:`UNINFORMATIVE_SHARE` of every model's items keep their clean output under attack
  (``unchanged``, the baseline's included) says little: at most a tenth of the items can carry a
  difference. A cell where only some models keep their outputs is not one of these: that is the
  robustness being measured.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from statistics import NormalDist, median

from prsl.report.plots import headline_metric
from prsl.results import Comparison, RunRecord, eps_text

FEW_ITEMS = 100
"""Fewer items than this get the caveat: at 100 a 95 % interval on a share is already up to
±9.8 points wide (1.96·0.5/√100), wider than many differences worth detecting."""
UNINFORMATIVE_SHARE = 0.9
"""A cell where this share of every model's items keep their clean output under attack is
uninformative (as a model whose clean outputs are 90 % one text is degenerate)."""

Cell = tuple[str, str, float, int | None]
"""(task, attack, ε, training seed)."""


def items_by_task(runs: Iterable[RunRecord]) -> dict[str, int]:
    """The items each task was evaluated on (the most any of its runs has)."""
    found: dict[str, int] = {}
    for run in runs:
        found[run.task] = max(found.get(run.task, 0), run.n_images)
    return dict(sorted(found.items()))


def items_line(runs: list[RunRecord]) -> str | None:
    """``Items: 12 (caption), 48 (vqa).``; None without runs."""
    found = items_by_task(runs)
    if not found:
        return None
    return "Items: " + ", ".join(f"{n} ({task})" for task, n in found.items()) + "."


def half_width(n: int, level: float) -> float:
    """The widest a ``level`` interval on a share of ``n`` items gets (normal approximation, at
    a share of one half): z·0.5/√n."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return z * 0.5 / n**0.5


def few_items_line(
    runs: list[RunRecord], comparisons: list[Comparison], level: float | None
) -> str | None:
    """The caveat for results on fewer than :data:`FEW_ITEMS` items, with how wide their
    intervals are; None when there are enough."""
    found = items_by_task(runs)
    if not found or min(found.values()) >= FEW_ITEMS:
        return None
    fewest = min(found.values())
    level = level if level is not None else 0.95
    widths: dict[tuple[str, str], list[float]] = defaultdict(list)
    for c in comparisons:
        widths[(c.task, c.metric)].append(c.interval[1] - c.interval[0])
    shown = []
    for task in found:
        metric = headline_metric(task, runs)
        if metric and widths.get((task, metric)):
            shown.append(f"{median(widths[(task, metric)]):.3g} ({task} {metric})")
    measured = (
        f"; the comparisons' {level:.0%} intervals here have a median width of " + ", ".join(shown)
        if shown
        else ""
    )
    return (
        f"Few items: {fewest} (fewer than {FEW_ITEMS}). At this size a {level:.0%} interval on "
        f"a share (an accuracy) spans up to ±{half_width(fewest, level) * 100:.0f} points "
        f"(z·0.5/√n){measured}: a smaller difference cannot show, so 'no detectable "
        "difference' here is weak evidence of no difference."
    )


def uninformative_cells(runs: Iterable[RunRecord]) -> dict[Cell, tuple[int, int]]:
    """Each (task, attack, ε > 0, seed) where every model kept at least
    :data:`UNINFORMATIVE_SHARE` of its outputs under attack, with the fewest items kept and
    their total. Runs that do not record ``unchanged`` (older results) count as informative."""
    kept: dict[Cell, list[tuple[int, int] | None]] = defaultdict(list)
    for run in runs:
        if run.reference != "clean" or run.eps <= 0 or run.n_images == 0:
            continue
        counted = None if run.unchanged is None else (run.unchanged, run.n_images)
        kept[(run.task, run.attack, run.eps, run.seed)].append(counted)
    found = {}
    for cell, counts in kept.items():
        if all(c is not None and c[0] >= UNINFORMATIVE_SHARE * c[1] for c in counts):
            found[cell] = min((c for c in counts if c is not None), key=lambda c: c[0] / c[1])
    return found


def quiet_everywhere(runs: list[RunRecord]) -> set[tuple[str, str, float]]:
    """The (task, attack, ε) whose attack barely changes any output in every training seed."""
    quiet = uninformative_cells(runs)
    seeds: dict[tuple[str, str, float], set] = defaultdict(set)
    for run in runs:
        if run.reference == "clean" and run.eps > 0:
            seeds[(run.task, run.attack, run.eps)].add(run.seed)
    return {cell for cell, found in seeds.items() if all((*cell, s) in quiet for s in found)}


def uninformative_line(runs: list[RunRecord]) -> str | None:
    """The line naming the cells whose attacks barely change any output; None when none."""
    found = uninformative_cells(runs)
    if not found:
        return None
    total = len(
        {(r.task, r.attack, r.eps, r.seed) for r in runs if r.reference == "clean" and r.eps > 0}
    )
    norms = {(r.task, r.attack, r.eps): r.norm or "linf" for r in runs}
    named = []
    for (task, attack, eps, seed), (kept, n) in sorted(
        found.items(), key=lambda item: (item[0][0], item[0][1], item[0][2], item[0][3] or 0)
    ):
        where = f"{task} {attack} at {eps_text(eps, norms[(task, attack, eps)])}"
        named.append(where + (f" seed {seed}" if seed is not None else "") + f" ({kept}/{n})")
    shown = "; ".join(named[:8]) + (f"; +{len(named) - 8} more" if len(named) > 8 else "")
    return (
        f"The attacks barely change the outputs in {len(found)} of {total} attack × ε cells: "
        f"every model kept its clean output on at least {UNINFORMATIVE_SHARE:.0%} of the items "
        f"(fewest kept in brackets): {shown}. These cells measure little whichever model is "
        "more robust: a stronger attack (more steps, a larger ε) is needed there."
    )


def cascade_line(runs: list[RunRecord]) -> str | None:
    """What a cascade (``worst_case.stop_below``) left out: how many item-attacks it skipped, and
    that an attack's own row (its scores, its success rate) covers only the items it ran on;
    None without a cascade."""
    skipped = {
        (r.seeded_label, r.task, r.attack, r.eps): r.cascade_skipped
        for r in runs
        if r.cascade_skipped
    }
    if not skipped:
        return None
    cells = len(skipped)
    return (
        f"A cascade skipped {sum(skipped.values())} item-attacks in {cells} attack × ε "
        f"cell{'s' if cells > 1 else ''}: items already at or below `stop_below` after the "
        "attacks before them. Each of those cells' own scores and success rates cover only the "
        "items it ran on, a selection, and are not compared between models; the `worst-case` "
        "row covers every item."
    )
