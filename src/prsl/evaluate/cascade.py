"""The worst case during the run: judging each attack's outputs, the cascade, the worst images.

With ``worst_case.stop_below`` (or an attack that starts at the worst case so far) the loop
scores every adversarial output as it is made, with the worst-case metric against
``worst_case.reference`` (:class:`Judge`). Per batch and per group of cells (one ε and ball
norm, :attr:`Cell.group`), :class:`WorstSoFar` keeps each item's lowest score, the cell that gave
it and, when a later cell starts from it, its adversarial image. The cells run in the grid's
order; an item whose lowest score is at or below ``stop_below`` is not attacked by the group's
later cells: the ledger records a skipped row for each (:attr:`Prediction.skipped_after`), so a
resumed run skips it too.

The judge's score is the score the results give the item: CIDEr-D takes its document
frequencies from the ground-truth references of all the model's items (known before the run,
counted once: :class:`~prsl.metrics.cider.CiderAmong`), as the results do; the cascade refuses
CIDEr against the model's own clean outputs (they are known only at the end). An image that
fails to decode leaves the results' item set, and with it CIDEr's frequencies, slightly smaller
than the judge's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from prsl.data import Sample
from prsl.evaluate.config import START_WORST, WorstCaseConfig
from prsl.evaluate.grid import Cell
from prsl.evaluate.scoring import self_reference
from prsl.metrics import Scorer
from prsl.metrics.cider import CiderAmong
from prsl.metrics.statistics import CORPUS_METRICS
from prsl.metrics.vqa import VQAProtocol


@dataclass
class Judge:
    """Scores a batch's outputs with the worst-case metric, as the results will score them."""

    config: WorstCaseConfig
    scorer: Scorer
    task: str
    vqa_protocol: VQAProtocol
    everyone: list[Sample]
    """Every item of the model: CIDEr's document frequencies come from their references."""

    def __post_init__(self) -> None:
        self.position = {s.key: i for i, s in enumerate(self.everyone)}
        self._among: CiderAmong | None = None

    @property
    def stop_below(self) -> float | None:
        return self.config.stop_below

    def scores(self, judged: list[Judged]) -> list[list[float]]:
        """Each item's score, per batch of outputs, from one call of the scorer (one request to
        its tokenizer, for the texts it has not seen)."""
        metric = self.config.metric
        assert metric is not None
        if metric in CORPUS_METRICS:  # CIDEr; allowed against the ground truth only
            return self._corpus_scores(judged)
        corpora = [self._corpus(j) for j in judged]
        scored = self.scorer.score_items(corpora, [metric], vqa_protocol=self.vqa_protocol)
        return [[float(v) for v in c.item_scores(metric)] for c in scored]

    def _corpus_scores(self, judged: list[Judged]) -> list[list[float]]:
        """CIDEr among every item of the model, with the frequencies of their references
        counted once (a scoring of the whole corpus per call would grow with it)."""
        if self._among is None:
            self._among = self.scorer.cider_among([list(s.references) for s in self.everyone])
        parts = [([self.position[s.key] for s in j.samples], j.outputs) for j in judged]
        return self.scorer.cider_items(self._among, parts)

    def _corpus(self, judged: Judged) -> tuple[list[str], list[list[str]]]:
        """The outputs against their references."""
        if self.config.reference == "ground_truth":
            return judged.outputs, [list(s.references) for s in judged.samples]
        refs = [self_reference(c, self.task, self.vqa_protocol) for c in judged.clean]
        return judged.outputs, refs


@dataclass(frozen=True)
class Judged:
    """One cell's outputs for some items of a batch, waiting to be scored."""

    cell: Cell
    samples: list[Sample]
    clean: list[str]
    outputs: list[str]
    images: torch.Tensor | None


@dataclass
class _Worst:
    score: float = math.inf
    cell: str | None = None
    image: torch.Tensor | None = None


@dataclass
class WorstSoFar:
    """One batch's lowest score per group and item, and the image that gave it (if needed).

    Outputs are judged lazily, when a later cell of their group needs to know (whether an item
    stopped, where it starts), all waiting outputs in one scorer call: the last cells of a grid
    are never judged, and the cells of every ε of one attack are judged together."""

    cells: list[Cell]
    judge: Judge
    found: dict[tuple, dict[str, _Worst]] = field(default_factory=dict)
    waiting: list[Judged] = field(default_factory=list)

    def _of(self, cell: Cell, key: str) -> _Worst:
        return self.found.setdefault(cell.group, {}).setdefault(key, _Worst())

    def _settle(self, cell: Cell) -> None:
        """Judge the waiting outputs if any of them is of this cell's group."""
        if not any(j.cell.group == cell.group for j in self.waiting):
            return
        judged, self.waiting = self.waiting, []
        for j, scores in zip(judged, self.judge.scores(judged), strict=True):
            for i, (sample, score) in enumerate(zip(j.samples, scores, strict=True)):
                worst = self._of(j.cell, sample.key)
                if score < worst.score:  # the first lowest wins a tie: the grid's order
                    worst.score, worst.cell = score, j.cell.name
                    worst.image = j.images[i].detach().clone() if j.images is not None else None

    def stopped(self, cell: Cell, key: str) -> str | None:
        """The cell after which the item reached ``stop_below`` in this cell's group, if it did
        (never without ``stop_below``: then only a ``start: worst_case`` cell judges)."""
        stop = self.judge.stop_below
        if stop is None:
            return None
        self._settle(cell)
        worst = self._of(cell, key)
        return worst.cell if worst.score <= stop else None

    def keeps_images(self, cell: Cell, todo: list[Cell]) -> bool:
        """Whether a later cell of the group still to run (in ``todo``) starts from the worst
        images."""
        later = self.cells[self.cells.index(cell) + 1 :]
        return any(c.start == START_WORST and c.group == cell.group and c in todo for c in later)

    def note(self, judged: Judged) -> None:
        """Take a cell's outputs into account (judged when a later cell needs them)."""
        if judged.samples:
            self.waiting.append(judged)

    def start(self, cell: Cell, keys: list[str], clean: torch.Tensor) -> torch.Tensor:
        """Where a ``start: worst_case`` cell begins: each item's worst image so far (the clean
        image where no earlier cell of the group ran on it)."""
        self._settle(cell)
        images = [self._of(cell, key).image for key in keys]
        return torch.stack(
            [
                clean[i] if image is None else image.to(clean.device)
                for i, image in enumerate(images)
            ]
        )
