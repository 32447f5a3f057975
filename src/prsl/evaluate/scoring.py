"""From the ledger's rows to ``results.json``: every cell scored against both references.

For each model x attack x ε the clean and the adversarial outputs are scored against the
model's own clean output (the paper's protocol: how far the attack moves the answer) and
against the ground truth; degradation = clean - adversarial. Every corpus of the run goes to
the scorer in one batch, which scores each distinct corpus once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass

import prsl
from prsl.data import ANSWER_COPIES
from prsl.evaluate.grid import Cell
from prsl.evaluate.ledger import Prediction, RunKey
from prsl.evaluate.uncertainty import ScoredRun
from prsl.metrics import CAPTION_METRICS, VQA_METRICS, Scorer
from prsl.metrics.scorer import CorpusScores
from prsl.metrics.vqa import DEFAULT_VQA_PROTOCOL, VQAProtocol, normalize_answer
from prsl.provenance import ModelRef
from prsl.results import Meta, RunRecord, degenerate_reason, floor_reason, same_output


@dataclass(frozen=True)
class _Run:
    """A results row in the making: what names it, and which of the batch's corpora it needs."""

    model: ModelRef
    cell: Cell
    key: RunKey
    reference: str
    corpora: range
    keys: tuple[str, ...]
    unchanged: int

    def record(self, task: str, scores: list[CorpusScores]) -> RunRecord:
        """The row, from its corpora's scores: clean, adversarial, then one per attack step."""
        clean, adversarial, *per_step = (s.values for s in scores)
        ref, attack, cost = self.model, self.cell.attack, self.model.training
        return RunRecord(
            model=ref.name,
            loss=ref.loss,
            loss_params=ref.loss_params,
            train_steps=cost.get("train_steps"),
            train_device_seconds=cost.get("train_device_seconds"),
            train_device=cost.get("train_device"),
            train_started_from=cost.get("train_started_from"),
            train_adversarial=cost.get("train_adversarial"),
            task=task,
            attack=self.key.attack,
            eps=self.key.eps,
            steps=attack.iterations,
            norm=attack.ball_norm,
            attack_params=attack.recorded(),
            n_images=len(self.keys),
            reference=self.reference,
            gradient_free=not attack.uses_gradients,
            transfer_of=self.cell.white_box,
            clean=dict(clean),
            adversarial=dict(adversarial),
            degradation={m: clean[m] - adversarial[m] for m in clean},
            per_step=[dict(step) for step in per_step] or None,
            unchanged=self.unchanged,
        )


def self_reference(
    clean: str, task: str, vqa_protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL
) -> list[str]:
    """The clean output as the reference; for VQA ten copies of it normalised as the protocol
    normalises a model's answer (it is one, not a human annotation), so soft accuracy is exact
    match of the two normalised answers."""
    if task != "vqa":
        return [clean]
    return [normalize_answer(clean, vqa_protocol)] * ANSWER_COPIES


def score_predictions(
    rows: list[Prediction],
    *,
    task: str,
    models: list[ModelRef],
    cells: list[Cell],
    metrics: list[str] | None,
    scorer: Scorer | None,
    vqa_protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL,
) -> tuple[list[ScoredRun], str]:
    """The ``runs`` of results.json, in model / attack / ε order, each with the items'
    statistics it was computed from; and the BERTScore model."""
    names = metrics or list(VQA_METRICS if task == "vqa" else CAPTION_METRICS)
    runs, corpora, clean_of = _plan(rows, task, models, cells, vqa_protocol)
    # A Scorer made here is closed (its METEOR JVM stopped) once scored; a caller's stays open.
    with Scorer() if scorer is None else nullcontext(scorer) as active:
        scores = active.score_items(corpora, names, vqa_protocol=vqa_protocol) if corpora else []
        bertscore = active.bertscore_description()
    finished = []
    for run in runs:
        clean, adversarial, *per_step = (scores[i] for i in run.corpora)
        record = run.record(task, [clean, adversarial, *per_step])
        finished.append(ScoredRun(record, run.model, run.keys, clean, adversarial))
    mark_degenerate(finished, clean_of)
    return finished, bertscore


Corpus = tuple[list[str], list[list[str]]]
"""Candidates and their references, one entry per item."""


def _plan(
    rows: list[Prediction],
    task: str,
    models: list[ModelRef],
    cells: list[Cell],
    vqa_protocol: VQAProtocol,
) -> tuple[list[_Run], list[Corpus], dict[str, dict[str, str]]]:
    """Every run to score with its corpora (clean, adversarial, then one per attack step, each
    against both references) in one batch, and each model's clean output per item."""
    by_key: dict[RunKey, list[Prediction]] = defaultdict(list)
    for row in rows:
        by_key[row.run_key].append(row)
    order = {ref.location: i for i, ref in enumerate(models)}
    cell_of = {(c.name, c.eps): c for c in cells}
    runs: list[_Run] = []
    corpora: list[Corpus] = []
    clean_of: dict[str, dict[str, str]] = defaultdict(dict)  # model -> item -> clean output
    for key in sorted(by_key, key=lambda k: (order[k.model], k.attack, k.eps)):
        items = sorted(by_key[key], key=lambda r: r.key)
        for r in items:
            clean_of[key.model].setdefault(r.key, r.clean)
        references = {
            "clean": [self_reference(r.clean, task, vqa_protocol) for r in items],
            "ground_truth": [r.references for r in items],
        }
        n_steps = len(items[0].per_step or [])
        unchanged = sum(_unchanged(r, task, vqa_protocol) for r in items)
        for reference, refs in references.items():
            outputs = [
                [r.clean for r in items],
                [r.adversarial for r in items],
                *([(r.per_step or [])[t] for r in items] for t in range(n_steps)),
            ]
            first = len(corpora)
            corpora += [(candidates, refs) for candidates in outputs]
            ref, cell = models[order[key.model]], cell_of[(key.attack, key.eps)]
            span, keys = range(first, len(corpora)), tuple(r.key for r in items)
            runs.append(_Run(ref, cell, key, reference, span, keys, unchanged))
    return runs, corpora, clean_of


def _unchanged(row: Prediction, task: str, vqa_protocol: VQAProtocol) -> bool:
    """Whether the attack left the item's output as it was (VQA answers as the protocol
    normalises them: the same answer however written is unchanged)."""
    if task == "vqa":
        normal = (normalize_answer(t, vqa_protocol) for t in (row.clean, row.adversarial))
        return same_output(*normal)
    return same_output(row.clean, row.adversarial)


def mark_degenerate(runs: list[ScoredRun], clean_of: dict[str, dict[str, str]]) -> None:
    """Set ``degenerate`` on every run of a model whose clean outputs are near-constant or
    empty, or whose clean score against its own output is at the floor (:mod:`prsl.results`)."""
    reasons: dict[str, list[str | None]] = {
        model: [degenerate_reason(list(outputs.values()))] for model, outputs in clean_of.items()
    }
    for run in runs:
        reasons.setdefault(run.model.location, []).append(floor_reason(run.record))
    for run in runs:
        found = [r for r in dict.fromkeys(reasons[run.model.location]) if r]
        if found:
            run.record = run.record.updated(degenerate="; ".join(found))


def results_meta(**fields) -> Meta:
    """The ``meta`` object: the version and time of the run, then what the caller adds."""
    return Meta.model_validate(
        {
            "prsl_version": prsl.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **fields,
        }
    )
