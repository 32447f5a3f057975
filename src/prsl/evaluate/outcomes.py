"""What an attack's outputs say besides their scores: how often a targeted attack reached its
target, how many steps an attack needed, and which runs of an ensemble the items kept.

- **Target success** (cells with ``targets``): over every (item, target) pair, whether the
  output contains the target, case-insensitive (RobustVLM's stealthy attack); for VQA whether
  the answer equals it once both are normalised as VQA accuracy normalises an answer. One rate
  per cell over all its pairs, as RobustVLM reports 25 images x 9 targets, with each target's
  own rate beside it; its interval resamples items, so the pairs of one item stay together and
  the resamples are those of every other interval on these items.
- **Iterations to success** (attacks with ``record_every_step``): per (item, run) pair, the
  first step after which the target appears (targeted), the keywords the clean output held
  have all vanished (``keywords``, the metric of Mattack's authors: BIM steps until the class
  words leave the caption), or else the output differs from the clean one. Pairs never
  successful are censored (:class:`prsl.results.IterationsToSuccess`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from prsl.evaluate.config import EACH_GROUND_TRUTH
from prsl.evaluate.ensemble import RUN_LABEL, choice_of
from prsl.evaluate.grid import Cell
from prsl.evaluate.ledger import AttackRun, Prediction, RunKey
from prsl.evaluate.uncertainty import Resamples, ScoredRun
from prsl.metrics.bootstrap import interval
from prsl.metrics.vqa import DEFAULT_VQA_PROTOCOL, VQAProtocol, normalize_answer
from prsl.results import Ensemble, IterationsToSuccess, TargetSuccess

QUARTILES = (0.25, 0.5, 0.75)


class Reading:
    """How outputs are compared in one task: VQA answers normalised as VQA accuracy does,
    captions with their spacing evened out."""

    def __init__(self, task: str, protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL) -> None:
        self.vqa, self.protocol = task == "vqa", protocol

    def form(self, text: str) -> str:
        return normalize_answer(text, self.protocol) if self.vqa else " ".join(text.split())

    def hit(self, output: str, target: str) -> bool:
        """The target reached: contained in the caption (any case), or the VQA answer."""
        if self.vqa:
            return self.form(output) == self.form(target)
        return self.form(target).casefold() in self.form(output).casefold()


def keywords_in(text: str, keywords: Sequence[str]) -> list[str]:
    """The keywords ``text`` holds as whole words, in any case."""
    return [k for k in keywords if re.search(rf"(?<!\w){re.escape(k)}(?!\w)", text, re.I)]


def pairs_of(row: Prediction) -> list[AttackRun]:
    """An item's runs: every run of a row that holds several, else its one (whose aim, the
    clean output or the ground truth, no criterion here reads)."""
    if row.runs:
        return row.runs
    return [AttackRun("", row.adversarial, row.linf, row.per_step)]


def target_success(
    rows: list[Prediction],
    targets: Sequence[str],
    reading: Reading,
    counts: np.ndarray | None,
    level: float,
) -> TargetSuccess:
    """The success rate of a targeted cell over its (item, target) pairs (module docstring);
    ``counts``: the resamples of these items (None: no interval)."""
    hits = [
        [(run.aim, reading.hit(run.adversarial, run.aim)) for run in pairs_of(row)] for row in rows
    ]
    succeeded = np.asarray([sum(h for _, h in item) for item in hits], float)
    tried = np.asarray([len(item) for item in hits], float)
    per_target = {
        target: float(np.mean([h for item in hits for aim, h in item if aim == target]))
        for target in targets
    }
    already = sum(
        reading.hit(row.clean, run.aim) and reading.hit(run.adversarial, run.aim)
        for row in rows
        for run in pairs_of(row)
    )
    bounds = None
    if counts is not None:
        bounds = list(interval((counts @ succeeded) / (counts @ tried), level))
    return TargetSuccess(
        match="exact" if reading.vqa else "contains",
        rate=float(succeeded.sum() / tried.sum()),
        interval=bounds,
        pairs=int(tried.sum()),
        succeeded=int(succeeded.sum()),
        already=already,
        per_target=per_target,
    )


Criterion = tuple[str, tuple[str, ...]]
"""What counts as a step's success (``changed``, ``keywords_vanished``, ``target_appeared``)
and the keywords it reads."""


def criterion_of(cell: Cell, keywords: Sequence[str] | None) -> Criterion:
    """A cell's success criterion: its targets', its own keywords' or the evaluation's, else
    the output changing."""
    if cell.targeted:
        return "target_appeared", ()
    words = cell.keywords or tuple(keywords or ())
    return ("keywords_vanished", words) if words else ("changed", ())


def success_test(
    criterion: Criterion, reading: Reading, clean: str, aim: str
) -> Callable[[str], bool] | None:
    """Whether an output counts as a success for this pair; None when the clean output already
    does (a target it already says, none of the keywords to begin with)."""
    kind, keywords = criterion
    if kind == "target_appeared":

        def done(output: str) -> bool:
            return reading.hit(output, aim)

    elif kind == "keywords_vanished":
        held = keywords_in(clean, keywords)
        if not held:
            return None

        def done(output: str) -> bool:
            return not keywords_in(output, held)

    else:
        before = reading.form(clean)

        def done(output: str) -> bool:
            return reading.form(output) != before

    return None if done(clean) else done


def iterations_to_success(
    rows: list[Prediction], criterion: Criterion, reading: Reading
) -> IterationsToSuccess | None:
    """The distribution of steps until success over the rows' (item, run) pairs; None when
    the attack recorded no steps."""
    pairs = [(row, run) for row in rows for run in pairs_of(row)]
    if not pairs or any(run.per_step is None for _, run in pairs):
        return None
    max_steps = max(len(run.per_step or ()) for _, run in pairs)
    first = [0] * max_steps
    already = censored = 0
    for row, run in pairs:
        done = success_test(criterion, reading, row.clean, run.aim)
        if done is None:
            already += 1
            continue
        step = next((t for t, out in enumerate(run.per_step or ()) if done(out)), None)
        if step is None:
            censored += 1
        else:
            first[step] += 1
    counted = sum(first) + censored
    kind, keywords = criterion
    return IterationsToSuccess(
        criterion=kind,
        keywords=list(keywords) or None,
        max_steps=max_steps,
        pairs=counted,
        succeeded=sum(first),
        censored=censored,
        already=already,
        first_success=first,
        quartiles=[step_quantile(first, counted, q) for q in QUARTILES],
    )


def step_quantile(first: Sequence[int], pairs: int, share: float) -> int | None:
    """The smallest step by which ``share`` of the pairs had succeeded (censored pairs count as
    later than every step), or None when fewer ever did."""
    done = 0
    for step, count in enumerate(first, start=1):
        done += count
        if pairs and done >= share * pairs:
            return step
    return None


def ensemble_of(rows: list[Prediction], cell: Cell, metric: str) -> Ensemble:
    """Which runs the items of an ensemble cell kept, and how many were made."""
    wins: Counter[str] = Counter()
    for row in rows:
        choice = choice_of(row)
        if choice is not None:
            wins[choice.aim if cell.targeted else RUN_LABEL.format(choice.run + 1)] += 1
    return Ensemble(
        over="targets" if cell.targeted else EACH_GROUND_TRUTH,
        runs=sum(len(row.runs or ()) for row in rows),
        chosen_by=metric,
        wins=dict(sorted(wins.items())),
    )


def add_outcomes(
    scored: list[ScoredRun],
    rows: list[Prediction],
    cells: list[Cell],
    *,
    keywords: Sequence[str] | None,
    protocol: VQAProtocol,
    metric: str,
    resamples: Resamples | None,
) -> None:
    """Set on each scored run what its outputs say besides scores (module docstring): its
    targets and success rate, its spec's reference, its ensemble and the items' choices, its
    iterations to success. ``rows``: the ledger's rows, runs already chosen."""
    cell_of = {(c.name, c.eps): c for c in cells}
    row_of: dict[tuple[RunKey, str], Prediction] = {(r.run_key, r.key): r for r in rows}
    for run in scored:
        record = run.record
        cell = cell_of.get((record.attack, record.eps))
        if cell is None:  # the worst-case row: its outputs come from the cells, read there
            continue
        key = RunKey(run.model.location, record.attack, record.eps)
        mine = [row_of[(key, item)] for item in run.keys]
        reading = Reading(record.task, protocol)
        changes: dict = {}
        if cell.targeted:
            counts = resamples.counts(len(mine)) if resamples is not None else None
            level = resamples.boot.level if resamples is not None else 0.0
            changes["targets"] = list(cell.targets)
            changes["target_success"] = target_success(mine, cell.targets, reading, counts, level)
        elif cell.reference is not None:
            changes["attack_reference"] = cell.reference
        if any(row.runs for row in mine):
            changes["ensemble"] = ensemble_of(mine, cell, metric)
            run.choices = [choice_of(row) for row in mine]
        found = iterations_to_success(mine, criterion_of(cell, keywords), reading)
        if found is not None:
            changes["iterations"] = found
        if changes:
            run.record = run.record.updated(**changes)
