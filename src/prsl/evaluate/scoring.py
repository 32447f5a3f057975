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
from prsl.evaluate.config import WorstCaseConfig
from prsl.evaluate.grid import Cell
from prsl.evaluate.ledger import Prediction, RunKey
from prsl.evaluate.uncertainty import ScoredRun
from prsl.evaluate.worst_case import Candidate, worst_case_runs
from prsl.metrics import CAPTION_METRICS, VQA_METRICS, Scorer
from prsl.metrics.scorer import CorpusScores
from prsl.metrics.statistics import corpus_value
from prsl.metrics.vqa import DEFAULT_VQA_PROTOCOL, VQAProtocol, normalize_answer
from prsl.provenance import ModelRef
from prsl.results import Meta, RunRecord, degenerate_reason, floor_reason, same_output


@dataclass(frozen=True)
class _Run:
    """A results row in the making: what names it, and which of the batch's corpora it needs.

    The corpora hold every item of the model (``items``); ``ran`` the positions of those the
    cell ran on, all of them but where a cascade skipped some."""

    model: ModelRef
    cell: Cell
    key: RunKey
    reference: str
    corpora: range
    items: tuple[str, ...]
    ran: tuple[int, ...]
    unchanged: int
    """Items the cell ran on whose output the attack left as it was (:func:`same_output`)."""

    @property
    def keys(self) -> tuple[str, ...]:
        """The items the row is over: those the cell ran on."""
        return tuple(self.items[i] for i in self.ran)

    @property
    def skipped(self) -> int:
        return len(self.items) - len(self.ran)

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
            vision_tower=ref.vision_tower,
            vision_tower_fingerprint=ref.vision_tower_fingerprint,
            task=task,
            attack=self.key.attack,
            eps=self.key.eps,
            steps=attack.iterations,
            norm=attack.ball_norm,
            attack_params=attack.recorded() | self.cell.crafting(),
            n_images=len(self.ran),
            reference=self.reference,
            gradient_free=not attack.uses_gradients,
            transfer_of=self.cell.white_box,
            clean=dict(clean),
            adversarial=dict(adversarial),
            degradation={m: clean[m] - adversarial[m] for m in clean},
            per_step=[dict(step) for step in per_step] or None,
            cascade_skipped=self.skipped or None,
            unchanged=self.unchanged,
        )

    def within(self, scores: CorpusScores) -> CorpusScores:
        """A corpus scored over every item, restricted to the items the cell ran on (each
        metric's value recomputed from their statistics)."""
        if len(self.ran) == len(self.items):
            return scores
        ran = list(self.ran)
        stats = {m: s[ran] for m, s in scores.stats.items()}
        return CorpusScores({m: corpus_value(m, s) for m, s in stats.items()}, stats)


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
    worst_case: WorstCaseConfig | None = None,
) -> tuple[list[ScoredRun], str]:
    """The ``runs`` of results.json, in model / attack / ε order (each model's worst-case rows
    after its attacks), each with the items' statistics it was computed from; and the
    BERTScore model."""
    names = metrics or list(VQA_METRICS if task == "vqa" else CAPTION_METRICS)
    runs, corpora, clean_of = _plan(rows, task, models, cells, vqa_protocol)
    # A Scorer made here is closed (its JVMs stopped) once scored; a caller's stays open.
    with Scorer() if scorer is None else nullcontext(scorer) as active:
        scores = active.score_items(corpora, names, vqa_protocol=vqa_protocol) if corpora else []
        bertscore = active.bertscore_description()
    finished, candidates = [], []
    for run in runs:
        full = [scores[i] for i in run.corpora]
        clean, adversarial, *per_step = (run.within(s) for s in full)
        record = run.record(task, [clean, adversarial, *per_step])
        finished.append(ScoredRun(record, run.model, run.keys, clean, adversarial))
        candidates.append(
            Candidate(run.model, run.cell, run.reference, run.items, run.ran, *full[:2], record)
        )
    if worst_case is not None and candidates:
        metric = worst_case.metric_for(task, names, judged_in_run=False)
        grid = {(cell.name, cell.eps): i for i, cell in enumerate(cells)}
        candidates.sort(key=lambda c: grid[(c.cell.name, c.cell.eps)])  # ties: the grid's order
        finished += worst_case_runs(candidates, metric, worst_case.stop_below)
    order = {ref.location: i for i, ref in enumerate(models)}
    finished.sort(key=lambda run: order[run.model.location])  # stable: attacks, then worst
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
    against both references) in one batch, and each model's clean output per item.

    Every corpus of a model holds all of its items, so that CIDEr-D's document frequencies (of
    the references) are the same for every cell: the items a cascade skipped for a cell stand
    in it with an empty candidate, and are dropped from its row afterwards (:meth:`_Run.within`).
    """
    by_key: dict[RunKey, list[Prediction]] = defaultdict(list)
    first_row: dict[str, dict[str, Prediction]] = defaultdict(dict)  # model -> item -> a row
    for row in rows:
        first_row[row.model_path].setdefault(row.key, row)
        if row.attacked:
            by_key[row.run_key].append(row)
    order = {ref.location: i for i, ref in enumerate(models)}
    cell_of = {(c.name, c.eps): c for c in cells}
    runs: list[_Run] = []
    corpora: list[Corpus] = []
    clean_of: dict[str, dict[str, str]] = {
        model: {item: r.clean for item, r in found.items()} for model, found in first_row.items()
    }
    for key in sorted(by_key, key=lambda k: (order[k.model], k.attack, k.eps)):
        base = first_row[key.model]
        items = tuple(sorted(base))
        ran_rows = {r.key: r for r in by_key[key]}
        ran = tuple(i for i, item in enumerate(items) if item in ran_rows)
        own = [ran_rows.get(k, base[k]) for k in items]  # the cell's own row where it ran
        references = {
            "clean": [self_reference(r.clean, task, vqa_protocol) for r in own],
            "ground_truth": [r.references for r in own],
        }
        n_steps = len(next(iter(ran_rows.values())).per_step or [])
        outputs = [
            [r.clean for r in own],
            [ran_rows[k].adversarial if k in ran_rows else "" for k in items],
            *(
                [(ran_rows[k].per_step or [])[t] if k in ran_rows else "" for k in items]
                for t in range(n_steps)
            ),
        ]
        unchanged = sum(_unchanged(r, task, vqa_protocol) for r in ran_rows.values())
        for reference, refs in references.items():
            first = len(corpora)
            corpora += [(candidates, refs) for candidates in outputs]
            ref, cell = models[order[key.model]], cell_of[(key.attack, key.eps)]
            span = range(first, len(corpora))
            runs.append(_Run(ref, cell, key, reference, span, items, ran, unchanged))
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
