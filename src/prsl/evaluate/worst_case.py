"""The ``worst-case`` rows of the results: per item, the lowest score over the grid's attacks.

For every model, group of cells (one ε and ball norm: :attr:`Cell.group`) and reference, each
item keeps the adversarial output of the cell whose score for the worst-case metric is lowest
(the first in the grid's order on a tie), over every cell of the grid in the group: white-box,
transferred (``attack@surrogate``: images crafted elsewhere are attacks on this model too) and
any other kind a cell stands for. The clean outputs are the model's own. The row is named
:data:`WORST_CASE` (``worst-case-l2`` for an L2 group) and is scored like any attack: the
items' statistics of the chosen outputs are taken as the chosen cell scored them, and every
metric's corpus value is recomputed from them (:func:`~prsl.metrics.statistics.corpus_value`:
BLEU and METEOR from summed counts as the COCO evaluation does, the others as means), so the
row's item scores in ``item_scores.jsonl`` are exactly the per-item minimum, and its intervals
and comparisons come from the same bootstrap as every other row's.

Why an item's scores can be compared across cells: every cell of a model is scored on the same
items against the same references (``results`` pads the items a cascade skipped, see
:mod:`prsl.evaluate.scoring`), and no metric's item score depends on the other candidates:
CIDEr-D's document frequencies are counted over the references alone, as pycocoevalcap does,
so one item's CIDEr is the same in every cell's corpus. RobustVLM picks its per-image worst
the same way: per-image CIDEr of each attack's captions against the ground truth of all images.
Unlike RobustVLM, the clean output is not a candidate: the row is the worst over attacks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from prsl.attacks.base import LINF
from prsl.evaluate.config import WORST_CASE
from prsl.evaluate.grid import Cell
from prsl.evaluate.uncertainty import ScoredRun
from prsl.metrics.scorer import CorpusScores
from prsl.metrics.statistics import corpus_value
from prsl.provenance import ModelRef
from prsl.results import RunRecord


@dataclass(frozen=True)
class Candidate:
    """One cell's run against one reference, scored over all of the model's items."""

    model: ModelRef
    cell: Cell
    reference: str
    items: tuple[str, ...]
    ran: tuple[int, ...]
    """Positions in ``items`` of the items the cell ran on (the others were skipped)."""
    clean: CorpusScores
    adversarial: CorpusScores
    record: RunRecord


def worst_case_name(norm: str) -> str:
    """The row's attack name for a group of cells of this ball norm."""
    return WORST_CASE if norm == LINF else f"{WORST_CASE}-{norm}"


def worst_case_runs(
    candidates: list[Candidate], metric: str, stop_below: float | None
) -> list[ScoredRun]:
    """The worst-case rows, one per model, group and reference, from the cells' scores."""
    groups: dict[tuple, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        key = (candidate.model.location, candidate.cell.group, candidate.reference)
        groups[key].append(candidate)
    return [_worst(group, metric, stop_below) for group in groups.values()]


def _worst(group: list[Candidate], metric: str, stop_below: float | None) -> ScoredRun:
    first = group[0]
    scores = np.full((len(group), len(first.items)), np.inf)
    for row, candidate in enumerate(group):
        assert candidate.items == first.items, "a model's cells are scored on the same items"
        ran = list(candidate.ran)
        scores[row, ran] = candidate.adversarial.item_scores(metric)[ran]
    choice = scores.argmin(0)  # the first lowest: the grid's order breaks ties
    kept = np.flatnonzero(np.isfinite(scores.min(0)))  # an item no cell ran on has no worst
    chosen = [group[choice[i]] for i in kept]
    stats = {
        m: np.stack([c.adversarial.stats[m][i] for c, i in zip(chosen, kept, strict=True)])
        for m in first.adversarial.stats
    }
    adversarial = CorpusScores({m: corpus_value(m, s) for m, s in stats.items()}, stats)
    clean_stats = {m: s[kept] for m, s in first.clean.stats.items()}
    clean = CorpusScores({m: corpus_value(m, s) for m, s in clean_stats.items()}, clean_stats)
    if len(kept) == len(first.items):  # the clean corpus as scored, to the last bit
        clean = first.clean
    record = _record(group, clean, adversarial, metric, stop_below)
    keys = tuple(first.items[i] for i in kept)
    sources = tuple(c.cell.name for c in chosen)
    return ScoredRun(record, first.model, keys, clean, adversarial, sources=sources)


def _record(
    group: list[Candidate],
    clean: CorpusScores,
    adversarial: CorpusScores,
    metric: str,
    stop_below: float | None,
) -> RunRecord:
    """The row: the model's fields as its cells carry them, the worst case's own beside."""
    cells = [c.cell for c in group]
    eps, norm = cells[0].group
    params = {"metric": metric, "of": [c.name for c in cells], "stop_below": stop_below}
    return group[0].record.updated(
        attack=worst_case_name(norm),
        eps=eps,
        norm=norm,
        steps=sum(c.attack.iterations for c in cells),
        attack_params=params,
        n_images=len(next(iter(adversarial.stats.values()))),
        gradient_free=False,
        transfer_of=None,
        clean=dict(clean.values),
        adversarial=dict(adversarial.values),
        degradation={m: clean.values[m] - adversarial.values[m] for m in clean.values},
        per_step=None,
        intervals=None,
        degenerate=None,
        cascade_skipped=None,
    )
