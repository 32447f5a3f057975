"""Per item, the lowest-scoring of several runs of one attack: the ensemble's worst case.

A cell with ``targets`` or ``reference: each_ground_truth`` runs its attack several times per
item and its ledger rows keep every run (:mod:`prsl.evaluate.aims`). Before scoring, each
item keeps the run whose adversarial output scores lowest against the item's ground truth on
one metric (:func:`selection_metric`), as RobustVLM keeps per image the lowest CIDEr over its
attacks; ties keep the earlier run. Every later step (scores, intervals, ``item_scores.jsonl``,
the gallery) sees that run as the row's adversarial output. The choice is made from the ledger
alone, so a resumed or rescored run makes the same one.

Why at scoring time and not while attacking: a corpus metric such as CIDEr-D weighs an item's
n-grams by document frequencies over every item's references, which a batch does not have.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np

from prsl.evaluate.config import WorstCaseConfig
from prsl.evaluate.ledger import AttackRun, Prediction, RunKey
from prsl.metrics import Scorer
from prsl.metrics.vqa import DEFAULT_VQA_PROTOCOL, VQAProtocol
from prsl.results import HEADLINE

RUN_LABEL = "reference {}"
"""How ``each_ground_truth`` runs are named in the results: by their reference's place."""


def selection_metric(
    metrics: list[str] | None, task: str, worst_case: WorstCaseConfig | None = None
) -> str:
    """The metric an item's lowest-scoring run is chosen by: the worst case's, when the
    evaluation takes one (so a run chosen here is the one the worst case would pick), else the
    evaluation's first metric, or the task's headline metric (CIDEr, VQA accuracy) when
    ``metrics`` is left to the default."""
    if worst_case is not None:  # its metric defaults to the headline too
        return worst_case.metric or HEADLINE[task][0]
    return metrics[0] if metrics else HEADLINE[task][0]


def choose_runs(
    rows: list[Prediction],
    scorer: Scorer,
    metric: str,
    vqa_protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL,
) -> list[Prediction]:
    """``rows`` with every row that holds several runs replaced by its lowest-scoring run
    (``chosen`` set to its place); rows of one run are returned as they are."""
    groups: dict[RunKey, list[Prediction]] = defaultdict(list)
    for row in rows:
        if row.runs:
            groups[row.run_key].append(row)
    if not groups:
        return rows
    corpora, spans = [], []
    for group in groups.values():
        references = [row.references for row in group]
        first = len(corpora)
        for r in range(max(len(row.runs or ()) for row in group)):
            # an item with fewer runs repeats its last: its score there is never lower
            outputs = [last_run(row, r).adversarial for row in group]
            corpora.append((outputs, references))
        spans.append(range(first, len(corpora)))
    scores = scorer.score_items(corpora, [metric], vqa_protocol=vqa_protocol)
    chosen: dict[int, Prediction] = {}
    for group, span in zip(groups.values(), spans, strict=True):
        per_run = np.stack([scores[c].item_scores(metric) for c in span])
        for n, row in enumerate(group):
            best = int(np.argmin(per_run[: len(row.runs or ()), n]))
            chosen[id(row)] = kept_run(row, best)
    return [chosen.get(id(row), row) for row in rows]


def last_run(row: Prediction, r: int) -> AttackRun:
    """Run ``r`` of the row, or its last when it has fewer."""
    runs = row.runs or []
    return runs[min(r, len(runs) - 1)]


def kept_run(row: Prediction, index: int) -> Prediction:
    """The row with run ``index`` as its adversarial output."""
    run = (row.runs or [])[index]
    return replace(
        row,
        adversarial=run.adversarial,
        linf=run.linf,
        per_step=run.per_step,
        gallery=run.gallery,
        chosen=index,
    )


@dataclass(frozen=True)
class Choice:
    """Which run an item kept, for ``item_scores.jsonl``: its place, what it aimed at, and how
    many runs the item had."""

    run: int
    aim: str
    runs: int

    def as_json(self) -> dict:
        return {"won": {"run": self.run, "aim": self.aim}, "runs": self.runs}


def choice_of(row: Prediction) -> Choice | None:
    """The run a chosen row kept (None for a row of one run)."""
    if not row.runs or row.chosen is None:
        return None
    return Choice(row.chosen, row.runs[row.chosen].aim, len(row.runs))
