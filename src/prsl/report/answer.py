"""The report's first line: one sentence that answers "is it more robust than the baseline?".

The sentence is computed from the ``comparisons`` of ``results.json`` by these rules:

- **Cells.** A model is judged on its comparisons with the baseline on each task's headline
  metric (CIDEr, VQA accuracy), in every attack, ε > 0 and reference; where a task has a
  ``worst-case`` attack (the per-item worst over the others) only its cells count there, the
  others being what it is the worst of. Models named alike are pooled over tasks: a model is
  named by its recipe (its loss, ``-AT`` when trained adversarially), ``PRSL`` vs ``CE``, when
  no two models of one task share a recipe, else by their labels. A model whose clean outputs
  say nothing (degenerate), or whose baseline's do, is left out, and the sentence says so.
- **Counts.** "More robust in X of k cells, less in Y": the comparisons' own outcomes (the
  paired-bootstrap interval excludes 0 and p < 1 − level; with several training seeds, every
  seed agrees).
- **Chance.** With k cells each tested at α = 1 − level, about k·α of them show a difference
  when nothing differs; the sentence says how many.
- **Conclusion.** A direction is stated when a cell survives Holm's step-down correction at α
  over the model's k cells, which holds however the cells depend on each other (they share
  items, models and attacks); cells surviving in both directions are "mixed". With none, an
  excess of one direction over the other that chance gives with probability below α is only a
  hint: |X − Y| for X "less" and Y "more" cells, each cell one or the other with probability
  α/2 independently (cells are not independent, so this test is too eager, hence a hint: 3
  cells one way and 1 the other in 24 is no hint). Otherwise: no evidence either way. With
  several seeds a cell's p-value is its largest over the seeds (each must reject). Fewer
  than :data:`~prsl.report.caveats.FEW_ITEMS` items, and attacks that change no model's outputs
  (:mod:`prsl.report.caveats`), are said in the sentence.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from prsl.report.caveats import FEW_ITEMS, quiet_everywhere
from prsl.report.plots import headline_metric
from prsl.report.seeds import SeedComparison, gathered
from prsl.results import WORST_CASE, Results, RunRecord, eps_text, floor_reason

DEFAULT_LEVEL = 0.95
"""The level assumed for results that do not record theirs."""


@dataclass(frozen=True)
class Family:
    """The cells one model (``name``) is judged on against one baseline."""

    name: str
    baseline: str
    cells: list[SeedComparison]


@dataclass(frozen=True)
class Judged:
    """A family's counts and what they support (see the module docstring)."""

    family: Family
    less: int
    more: int
    held_less: int
    held_more: int
    hint: str | None

    @property
    def tier(self) -> str:
        """``more`` (robust), ``less``, ``mixed``, ``hint`` or ``none``."""
        if self.held_less and self.held_more:
            return "mixed"
        if self.held_less or self.held_more:
            return "more" if self.held_less else "less"
        return "hint" if self.hint else "none"


def holm(p_values: list[float], alpha: float) -> list[bool]:
    """Which hypotheses Holm's step-down procedure rejects at family-wise level ``alpha``."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (len(p_values) - rank):
            break
        rejected[i] = True
    return rejected


def _log_binomial(n: int, k: int, p: float) -> float:
    """log P(X = n) for X ~ Binomial(k, p), 0 < p < 1."""
    return (
        math.lgamma(k + 1)
        - math.lgamma(n + 1)
        - math.lgamma(k - n + 1)
        + n * math.log(p)
        + (k - n) * math.log1p(-p)
    )


def excess_p(less: int, more: int, cells: int, alpha: float) -> float:
    """P(|X − Y| >= |less − more|) when each of ``cells`` cells shows "less" or "more" with
    probability α/2 each, independently: the total X + Y is Binomial(cells, α), and given it
    X is Binomial(total, 1/2)."""
    excess = abs(less - more)
    if excess == 0:
        return 1.0
    found = 0.0
    for total in range(excess, cells + 1):
        weight = math.exp(_log_binomial(total, cells, alpha))
        split = sum(
            math.exp(_log_binomial(x, total, 0.5))
            for x in range(total + 1)
            if abs(2 * x - total) >= excess
        )
        found += weight * split
    return min(1.0, found)


def judge(family: Family, level: float) -> Judged:
    """Count a family's outcomes, correct them with Holm, test their excess against chance."""
    alpha = 1 - level
    cells = family.cells
    held = holm([c.p_value for c in cells], alpha)
    directed = [c.outcome for c, kept in zip(cells, held, strict=True) if kept]
    less = sum(c.outcome == "less" for c in cells)
    more = sum(c.outcome == "more" for c in cells)
    hint = None
    if less != more and excess_p(less, more, len(cells), alpha) < alpha:
        hint = "less" if less > more else "more"
    return Judged(family, less, more, directed.count("less"), directed.count("more"), hint)


def recipe(run: RunRecord) -> str:
    """How the sentence names a model when models are pooled over tasks: ``PRSL``, ``CE-AT``."""
    return run.loss.upper() + ("-AT" if run.train_adversarial else "")


def counted(results: Results) -> tuple[list[SeedComparison], list[str]]:
    """The cells the sentence counts, and the degenerate models left out (with why)."""
    runs = results.runs
    broken = {(r.task, r.label) for r in runs if r.degenerate or floor_reason(r)}
    worst = {r.task for r in runs if r.attack == WORST_CASE}
    cells, left_out = [], set()
    for c in gathered(results.comparisons):
        if c.metric != headline_metric(c.task, runs) or c.eps <= 0:
            continue
        if c.task in worst and c.attack != WORST_CASE:
            continue
        sides = (f"{c.model} ({c.loss})", f"{c.baseline} ({c.baseline_loss})")
        bad = [s for s in sides if (c.task, s) in broken]
        if bad:
            left_out.update(bad)
            continue
        cells.append(c)
    return cells, sorted(left_out)


def families(cells: list[SeedComparison], runs: list[RunRecord]) -> list[Family]:
    """The cells by model and baseline: pooled over tasks under recipe names when no two models
    of a task share one, else under the models' labels."""
    named = {(r.model, r.task): recipe(r) for r in runs}
    per_task: dict[tuple[str, str], set[str]] = defaultdict(set)
    for c in cells:
        per_task[(c.task, named.get((c.model, c.task), c.loss.upper()))].add(c.model)
    by_recipe = all(len(models) == 1 for models in per_task.values())
    groups: dict[tuple[str, str], list[SeedComparison]] = defaultdict(list)
    for c in cells:
        if by_recipe:
            key = (
                named.get((c.model, c.task), c.loss.upper()),
                named.get((c.baseline, c.task), c.baseline_loss.upper()),
            )
        else:
            key = (f"{c.model} ({c.loss})", f"{c.baseline} ({c.baseline_loss})")
        groups[key].append(c)
    return [Family(name, baseline, found) for (name, baseline), found in groups.items()]


def answer(results: Results) -> str:
    """The one sentence (see the module docstring)."""
    runs = results.runs
    if not runs:
        return "These results hold no runs: nothing was measured."
    if all(r.eps <= 0 for r in runs):
        return _clean_only(runs)
    if not results.comparisons:
        return _no_comparison(runs)
    cells, left_out = counted(results)
    if not cells:
        if left_out:
            return (
                f"No answer: {_names(left_out)} {'is' if len(left_out) == 1 else 'are'} "
                "degenerate (one output for nearly every image, or none), so the comparisons "
                "say nothing about robustness; check the training first."
            )
        return _clean_only(runs)
    level = results.level or DEFAULT_LEVEL
    judged = [judge(f, level) for f in families(cells, runs)]
    return _sentence(judged, runs, level, left_out)


def _sentence(
    judged: list[Judged], runs: list[RunRecord], level: float, left_out: list[str]
) -> str:
    cells = [c for j in judged for c in j.family.cells]
    items = min(c.n_items for c in cells)
    data = f"these {items} items (few: see below)" if items < FEW_ITEMS else "this data"
    seeds = max(c.seeds for c in cells)
    chance = _chance(judged, level, seeds)
    tail = f" ({_names(left_out)} left out: degenerate)" if left_out else ""
    quiet = quiet_everywhere(runs)
    if all((c.task, c.attack, c.eps) in quiet for c in cells):
        return (
            f"{_heads(judged)}; but the attacks barely change any output (every model keeps "
            "its clean output on at least 90% of the items in every cell), so this data cannot "
            f"tell{tail}."
        )
    by_baseline: dict[str, list[Judged]] = defaultdict(list)
    for j in judged:
        by_baseline[j.family.baseline].append(j)
    if len(judged) == 1:
        (only,) = judged
        return f"{_heads(judged)}; {chance}: {_single(only, data)}{tail}."
    clauses = [
        f"{_heads(group)}; {chance}: on {data}, {_conclusions(group)}"
        for group in by_baseline.values()
    ]
    return "; ".join(clauses) + f"{tail}."


def _heads(judged: list[Judged]) -> str:
    """``PRSL is more robust than CE in 3 of 24 cells, less in 1``, or with several models
    against one baseline ``Against CE, PRSL is more robust in 3 of 24 cells and less in 1, ...``."""
    if len(judged) == 1:
        j = judged[0]
        f = j.family
        return (
            f"{f.name} is more robust than {f.baseline} in {j.less} of {len(f.cells)} "
            f"{_cells(len(f.cells))}, less in {j.more}"
        )
    parts = [
        f"{j.family.name} is more robust in {j.less} of {len(j.family.cells)} "
        f"{_cells(len(j.family.cells))} and less in {j.more}"
        for j in judged
    ]
    return f"Against {judged[0].family.baseline}, " + ", ".join(parts)


def _chance(judged: list[Judged], level: float, seeds: int) -> str:
    sizes = {len(j.family.cells) for j in judged}
    where = f"at the {level:.0%} level"
    bound = "at most " if seeds > 1 else ""  # every seed must agree: fewer by chance
    if len(sizes) > 1:
        return f"{bound}about {1 - level:.0%} of cells expected by chance {where}"
    (k,) = sizes
    expected = k * (1 - level)
    count = "fewer than 1" if expected < 0.5 else f"about {expected:.0f}"
    each = f" of {k} each" if len(judged) > 1 else ""
    return f"{bound}{count}{each} expected by chance {where}"


def _single(j: Judged, data: str) -> str:
    k, name = len(j.family.cells), j.family.name
    survive = f"survive Holm's correction for {k} comparisons"
    if j.tier == "more":
        return f"{name} is more robust on {data} ({j.held_less} {_cells(j.held_less)} {survive})"
    if j.tier == "less":
        return f"{name} is less robust on {data} ({j.held_more} {_cells(j.held_more)} {survive})"
    if j.tier == "mixed":
        return (
            f"mixed on {data}: {j.held_less} {_cells(j.held_less)} more robust and {j.held_more} "
            f"less {survive}"
        )
    if j.tier == "hint":
        way = "more" if j.hint == "less" else "less"
        return (
            f"more cells one way than chance alone gives, but none {survive}: a hint that "
            f"{name} is {way} robust, not evidence, on {data}"
        )
    return f"no evidence either way on {data}"


def _conclusions(judged: list[Judged]) -> str:
    tiers: dict[str, list[Judged]] = defaultdict(list)
    for j in judged:
        tiers[j.tier].append(j)
    said = {
        "more": ("more robust", lambda j: j.held_less),
        "less": ("less robust", lambda j: j.held_more),
    }
    phrases = []
    for tier in ("more", "less", "mixed", "hint", "none"):
        group = tiers.get(tier)
        if not group:
            continue
        names = _names([j.family.name for j in group])
        plural = len(group) > 1
        if tier in said:
            what, held = said[tier]
            counts = " and ".join(str(held(j)) for j in group)
            phrases.append(
                f"{names} {'are' if plural else 'is'} {what} ({counts} "
                f"{_cells(max(held(j) for j in group))} survive Holm's correction)"
            )
        elif tier == "mixed":
            phrases.append(
                f"{names} {'are' if plural else 'is'} mixed (cells survive Holm's "
                "correction in both directions)"
            )
        elif tier == "hint":
            phrases.append(
                f"{names} only {'hint' if plural else 'hints'} at a difference "
                "(beyond chance in one direction, no cell survives Holm's correction)"
            )
        else:
            phrases.append(f"{names} {'show' if plural else 'shows'} no evidence either way")
    return ", ".join(phrases)


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _cells(n: int) -> str:
    return "cell" if n == 1 else "cells"


def _clean_only(runs: list[RunRecord]) -> str:
    """No attack at ε > 0: the clean scores, against the ground truth where there is one."""
    shown = []
    for task in sorted({r.task for r in runs}):
        metric = headline_metric(task, runs)
        mine = [r for r in runs if r.task == task and metric in r.clean]
        truth = [r for r in mine if r.reference == "ground_truth"] or mine
        first = {r.seeded_label: r for r in reversed(truth)}  # each model's first run
        scores = ", ".join(f"{label} {first[label].clean[metric]:.3f}" for label in sorted(first))
        if scores:
            shown.append(f"{task} {metric}: {scores}")
    said = f"; clean scores: {'; '.join(shown)}" if shown else ""
    return f"Clean scores only (no attack ran at ε > 0), so robustness was not measured{said}."


def _no_comparison(runs: list[RunRecord]) -> str:
    models = {r.task: set() for r in runs}
    for run in runs:
        models[run.task].add(run.seeded_label)
    if all(len(found) == 1 for found in models.values()):
        return _one_model(runs)
    if not any(r.intervals is not None for r in runs):
        return (
            "No answer: these results carry no intervals, so no difference can be told from "
            "noise; rerun `prsl evaluate` on the same output_dir with `bootstrap.resamples` "
            "above 0 (the predictions are reused)."
        )
    return (
        "No answer: several models were evaluated but none was compared with a baseline (none "
        "was trained with CE and no `baseline:` was set), so nothing is concluded."
    )


def _one_model(runs: list[RunRecord]) -> str:
    """One model per task: nothing to compare, so its largest drop under attack."""
    said = []
    for task in sorted({r.task for r in runs}):
        metric = headline_metric(task, runs)
        mine = [r for r in runs if r.task == task and r.eps > 0 and metric in r.degradation]
        worst_rows = [r for r in mine if r.attack == WORST_CASE]
        mine = worst_rows or [r for r in mine if not r.cascade_skipped]  # over every item
        if not mine:
            continue
        truth = [r for r in mine if r.reference == "ground_truth"] or mine
        worst = max(truth, key=lambda r: r.degradation[metric])
        against = "the ground truth" if worst.reference == "ground_truth" else "its clean output"
        said.append(
            f"{worst.seeded_label}'s {metric} against {against} falls from "
            f"{worst.clean[metric]:.3f} to {worst.adversarial[metric]:.3f} under {worst.attack} "
            f"at ε={eps_text(worst.eps, worst.norm or 'linf')}"
        )
    one = "Only one model was evaluated" + (" per task" if len(said) > 1 else "")
    return f"{one}, so nothing is compared: " + "; ".join(said) + " (its largest drop measured)."


def rules_line(results: Results) -> str | None:
    """How the answer was reached, for the details: which cells, the correction, and whether
    the bootstrap had resamples enough for the correction to be met at all."""
    cells, _ = counted(results)
    if not cells:
        return None
    level = results.level or DEFAULT_LEVEL
    alpha = 1 - level
    sizes = [len(f.cells) for f in families(cells, results.runs)]
    k = max(sizes)
    worst = (
        " (a task with a `worst-case` row counts only those)"
        if any(c.attack == WORST_CASE for c in cells)
        else ""
    )
    line = (
        f"The answer counts each model's cells on the headline metric (every attack{worst}, "
        f"ε and reference; {', '.join(map(str, sizes))} per model) and states a direction only "
        f"when a cell survives Holm's correction at {alpha:.0%} over them, which holds however "
        "the cells depend on each other; a count beyond chance without one is only a hint."
    )
    boot = results.meta.bootstrap
    resamples = boot.resamples if boot is not None else None
    if resamples and 2 / (resamples + 1) > alpha / k:
        line += (
            f" With {resamples} resamples no bootstrap p-value is below "
            f"{2 / (resamples + 1):.2g}, above Holm's first threshold {alpha:.0%}/{k} = "
            f"{alpha / k:.2g}, so no cell could survive: set `bootstrap.resamples` to at least "
            f"{math.ceil(2 * k / alpha)} for the correction to be met."
        )
    return line
