"""Intervals and comparisons for ``results.json``: the paired bootstrap over an evaluation's items.

Every run (model x attack x ε x reference) gets a percentile interval for its clean score, its
adversarial score and its degradation, metric by metric. Every model but the baseline is then
compared with the baseline cell by cell: the difference in degradation (model - baseline; below
0 the model degrades less), its interval and p-value, and an outcome: ``less`` or ``more`` when
the interval excludes 0, ``none`` (no detectable difference) otherwise. One set of resamples is
drawn per item count and applied to every run on those items, clean and adversarial, every
model, so all of it is paired (:mod:`prsl.metrics.bootstrap`). Differences within
:data:`TIE_TOLERANCE` of 0 are ``none`` whatever their interval: equal scores are never a win, and
neither is float noise.

The items' own scores, and the statistics the bootstrap resamples, are written to
``item_scores.jsonl``, one line per model, attack, ε, reference and item (for a cell that ran
its attack several times per item, also the run it kept, ``won``, and how many it had,
``runs``).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from prsl.core.errors import InvalidInput
from prsl.evaluate.config import BootstrapConfig
from prsl.metrics.bootstrap import aligned, interval, p_value, resample_counts, resampled
from prsl.metrics.scorer import CorpusScores
from prsl.metrics.statistics import corpus_value
from prsl.provenance import ModelRef
from prsl.results import RESULTS, Comparison, RunRecord, read_results

if TYPE_CHECKING:  # the ensemble reads predictions, which import torch: not for a sweep config
    from prsl.evaluate.ensemble import Choice

ITEM_SCORES = "item_scores.jsonl"
TIE_TOLERANCE = 1e-9
"""Differences (and interval ends) closer to 0 than this count as 0: float noise, not an effect."""


@dataclass
class ScoredRun:
    """A results row with what it was computed from: its model, items and their statistics.

    ``record`` may be given in its JSON form (a dict), which is validated."""

    record: RunRecord
    model: ModelRef
    keys: tuple[str, ...]
    clean: CorpusScores
    adversarial: CorpusScores
    choices: list[Choice | None] | None = None
    """Per item of an ensemble cell, the run it kept (:mod:`prsl.evaluate.ensemble`)."""
    sources: tuple[str, ...] | None = None
    """For a worst-case row, the attack each item's output comes from."""

    def __post_init__(self) -> None:
        if not isinstance(self.record, RunRecord):
            self.record = RunRecord.model_validate(self.record)

    @property
    def fields(self) -> dict:
        """The row as ``results.json`` holds it (a copy)."""
        return self.record.as_json()

    @property
    def cell(self) -> tuple:
        r = self.record
        return (r.task, r.attack, r.eps, r.reference)


class Resamples:
    """One set of resample multiplicities per item count, shared by every run (the pairing)."""

    def __init__(self, boot: BootstrapConfig, seed: int) -> None:
        self.boot, self.seed = boot, seed
        self._counts: dict[int, np.ndarray] = {}

    def counts(self, n_items: int) -> np.ndarray:
        if n_items not in self._counts:
            self._counts[n_items] = resample_counts(n_items, self.boot.resamples, self.seed)
        return self._counts[n_items]


def add_intervals(runs: list[ScoredRun], resamples: Resamples) -> None:
    """``intervals`` on each run: ``{"clean"|"adversarial"|"degradation": {metric: [lo, hi]}}``."""
    level = resamples.boot.level
    for run in runs:
        counts = resamples.counts(len(run.keys))
        parts: dict[str, dict[str, list[float]]] = {"clean": {}, "adversarial": {}}
        parts["degradation"] = {}
        for metric in run.clean.values:
            clean = resampled(metric, run.clean.stats[metric], counts)
            adversarial = resampled(metric, run.adversarial.stats[metric], counts)
            parts["clean"][metric] = list(interval(clean, level))
            parts["adversarial"][metric] = list(interval(adversarial, level))
            parts["degradation"][metric] = list(interval(clean - adversarial, level))
        run.record = run.record.updated(intervals=parts)


def choose_baseline(models: list[ModelRef], given: str | None) -> ModelRef | None:
    """The model named by ``given`` (as given, its location or its shown name), else the first
    one trained with CE; None when there is no such model."""
    if given is None:
        return next((m for m in models if m.loss == "ce"), None)
    as_path = str(Path(given).expanduser().resolve()) if Path(given).expanduser().exists() else None
    for model in models:
        # a model's path names it without a tower; with one, its location or shown name does
        path = model.given if model.vision_tower is None else None
        if given in (path, model.location, model.name) or as_path == model.location:
            return model
    names = ", ".join(m.name for m in models)
    raise InvalidInput(f"baseline {given!r} is not one of the evaluated models: {names}")


def compare(runs: list[ScoredRun], baseline: ModelRef | None, resamples: Resamples) -> list[dict]:
    """Each other model against ``baseline``, per task, attack, ε, reference and metric: the
    :class:`~prsl.results.Comparison` records in their JSON form."""
    if baseline is None:
        return []
    base = {run.cell: run for run in runs if run.model.location == baseline.location}
    level = resamples.boot.level
    found = []
    for run in runs:
        other = base.get(run.cell)
        if other is None or run.model.location == baseline.location:
            continue
        if run.record.cascade_skipped or other.record.cascade_skipped:
            continue  # each model's cascade kept other items: no like-for-like comparison
        common = sorted(set(run.keys) & set(other.keys))
        if not common:
            continue
        counts = resamples.counts(len(common))
        for metric in run.clean.values:
            point, samples = [], []
            for scored in (run, other):
                clean = aligned(scored.keys, scored.clean.stats[metric], common)
                adversarial = aligned(scored.keys, scored.adversarial.stats[metric], common)
                point.append(corpus_value(metric, clean) - corpus_value(metric, adversarial))
                samples.append(
                    resampled(metric, clean, counts) - resampled(metric, adversarial, counts)
                )
            difference, spread = point[0] - point[1], samples[0] - samples[1]
            bounds = interval(spread, level)
            p = p_value(spread)
            mine, theirs = run.record, other.record
            found.append(
                Comparison(
                    model=mine.model,
                    baseline=theirs.model,
                    loss=mine.loss,
                    baseline_loss=theirs.loss,
                    task=mine.task,
                    attack=mine.attack,
                    eps=mine.eps,
                    norm=mine.norm or "linf",
                    reference=mine.reference,
                    metric=metric,
                    n_items=len(common),
                    difference=difference,
                    interval=list(bounds),
                    p_value=p,
                    outcome=outcome(difference, bounds, p, level),
                ).as_json()
            )
    return found


def outcome(
    difference: float, bounds: tuple[float, float], p: float = 0.0, level: float = 0.95
) -> str:
    """``less`` (the model degrades less than the baseline), ``more``, or ``none``: a
    direction needs the interval to exclude 0 *and* a p-value below ``1 - level`` (the two agree
    with enough resamples; with too few the interval's ends are single draws)."""
    low, high = bounds
    if abs(difference) <= TIE_TOLERANCE or p >= 1.0 - level:
        return "none"
    if high < -TIE_TOLERANCE:
        return "less"
    if low > TIE_TOLERANCE:
        return "more"
    return "none"


def read_scored(folder: Path, name: str) -> list[ScoredRun]:
    """The runs of an evaluation folder with the items' statistics it wrote (``results.json``
    and ``item_scores.jsonl``), its model shown and keyed as ``name``: how a sweep compares its
    cells, each evaluated in its own folder on the same items. Runs of an evaluation that
    wrote no statistics (``bootstrap.resamples: 0`` still writes them; an older prsl did not)
    are left out."""
    results = read_results(folder / RESULTS)
    items: dict[tuple, list[dict]] = defaultdict(list)
    path = folder / ITEM_SCORES
    if not path.is_file():
        return []
    with path.open() as source:
        for line in source:
            row = json.loads(line)
            items[(row["model"], row["attack"], row["eps"], row["reference"])].append(row)
    scored = []
    for run in results.runs:
        rows = items.get((run.model, run.attack, run.eps, run.reference))
        if not rows:
            continue
        ref = ModelRef(name, name, name, "", run.loss, run.loss_params)
        keys = tuple(r["key"] for r in rows)
        clean = _read_corpus(run.clean, rows, "clean")
        adversarial = _read_corpus(run.adversarial, rows, "adversarial")
        scored.append(ScoredRun(run.updated(model=name), ref, keys, clean, adversarial))
    return scored


def _read_corpus(scores: dict[str, float], rows: list[dict], part: str) -> CorpusScores:
    """One side (clean or adversarial) of a run, from its items' written statistics."""
    stats = {m: np.asarray([r["stats"][part][m] for r in rows], float) for m in scores}
    return CorpusScores(dict(scores), stats)


def write_item_scores(path: Path, runs: list[ScoredRun]) -> None:
    """``item_scores.jsonl``: per run and item, its clean and adversarial scores and the
    statistics they come from (atomically: rewritten whole from the predictions each time)."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w") as sink:
        for run in runs:
            identity = {
                "model": run.record.model,
                "model_path": run.model.location,
                "attack": run.record.attack,
                "eps": run.record.eps,
                "reference": run.record.reference,
            }
            metrics = list(run.clean.values)
            clean = {m: run.clean.item_scores(m) for m in metrics}
            adversarial = {m: run.adversarial.item_scores(m) for m in metrics}
            for i, key in enumerate(run.keys):
                source = {"worst_of": run.sources[i]} if run.sources is not None else {}
                row = identity | {
                    "key": key,
                    **source,
                    "clean": {m: float(clean[m][i]) for m in metrics},
                    "adversarial": {m: float(adversarial[m][i]) for m in metrics},
                    "stats": {
                        "clean": {m: run.clean.stats[m][i].tolist() for m in metrics},
                        "adversarial": {m: run.adversarial.stats[m][i].tolist() for m in metrics},
                    },
                }
                choice = run.choices[i] if run.choices else None
                if choice is not None:  # which run of an ensemble the item kept
                    row |= choice.as_json()
                sink.write(json.dumps(row) + "\n")
    os.replace(partial, path)
