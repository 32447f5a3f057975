"""One call that scores candidates against references with any of the supported metrics.

:class:`Scorer` holds the configuration and the expensive resources (the BERTScore model, the
METEOR and PTB tokenizer JVMs), started on first use and reused, because evaluation scores many
times.
:func:`score` is the one-off version.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from statistics import fmean
from types import TracebackType

import numpy as np

from prsl.core.errors import InvalidInput
from prsl.metrics.bertscore import BertScore
from prsl.metrics.cider import CiderAmong
from prsl.metrics.coco import (
    COCO_METRICS,
    MeteorProcess,
    coco_scores,
    ptb_tokenize,
    require_java,
)
from prsl.metrics.ptb import PTBProcess
from prsl.metrics.statistics import item_values
from prsl.metrics.vqa import DEFAULT_VQA_PROTOCOL, VQAProtocol, mean_vqa_accuracy, vqa_accuracy

CAPTION_METRICS = (*COCO_METRICS, "BERTScore")
VQA_METRICS = ("VQA-acc",)
ALL_METRICS = (*CAPTION_METRICS, *VQA_METRICS)
TOKEN_CACHE_SIZE = 1_000_000
"""Distinct texts whose PTB tokens one Scorer keeps (emptied when full)."""


def resolve_metrics(metrics: Sequence[str] | None) -> list[str]:
    """The metric names to compute, in the order given, without repeats; None means captioning."""
    if metrics is None:
        return list(CAPTION_METRICS)
    if isinstance(metrics, str):
        raise InvalidInput(f"metrics must be a list of names, e.g. [{metrics!r}], not a string")
    unknown = [name for name in metrics if name not in ALL_METRICS]
    if unknown:
        raise InvalidInput(f"unknown metric(s) {unknown}; valid names: {', '.join(ALL_METRICS)}")
    if not metrics:
        raise InvalidInput(f"metrics is empty: name at least one of {', '.join(ALL_METRICS)}")
    return list(dict.fromkeys(metrics))


def validate_inputs(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Reject inputs that would otherwise be scored wrongly or crash deep inside a scorer."""
    if isinstance(candidates, str) or isinstance(references, str):
        raise ValueError("candidates and references must be lists, not a single string")
    if not candidates:
        raise ValueError("candidates is empty: give at least one candidate caption or answer")
    if len(candidates) != len(references):
        raise ValueError(
            f"len(candidates)={len(candidates)} but len(references)={len(references)}: "
            "give one list of references per candidate"
        )
    for i, cand in enumerate(candidates):
        if not isinstance(cand, str):
            raise ValueError(f"candidates[{i}] is a {type(cand).__name__}, expected a str")
    for i, refs in enumerate(references):
        if isinstance(refs, str):
            raise ValueError(
                f"references[{i}] is a str, expected a list of str: with one reference per "
                "candidate pass [[r] for r in references]"
            )
        if not refs:
            raise ValueError(
                f"references[{i}] is empty: every candidate needs at least one reference"
            )
        if not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references[{i}] must contain only str")


@dataclass(frozen=True)
class CorpusScores:
    """One corpus scored: ``values`` the corpus scores (as :meth:`Scorer.score` gives them),
    ``stats`` per metric the items' statistics (rows in corpus order; see
    :mod:`prsl.metrics.statistics`), from which any resample's score is recomputed."""

    values: dict[str, float]
    stats: dict[str, np.ndarray]

    def item_scores(self, metric: str) -> np.ndarray:
        """Each item's own (sentence-level) score for ``metric``."""
        return item_values(metric, self.stats[metric])


def _column(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)


class Scorer:
    """Scores candidates against references; reuse one instance to avoid reloading models.

    Args:
        bertscore_model: hub name or local directory of the BERTScore model; None for the
            offline MiniLM default (see :data:`prsl.metrics.BERTSCORE_DEFAULT`).
        bertscore_num_layers: embedding layer for BERTScore; None for the model's default.
        device: torch device for BERTScore; None picks CUDA when available.
        bertscore_batch_size: sentences per BERTScore forward pass.

    Use it as a context manager, or call :meth:`close`, to stop its JVMs as soon as scoring
    is done; otherwise they stop when the Scorer is garbage-collected. Not thread-safe.
    """

    def __init__(
        self,
        *,
        bertscore_model: str | None = None,
        bertscore_num_layers: int | None = None,
        device: str | None = None,
        bertscore_batch_size: int = 64,
    ) -> None:
        self._bertscore = BertScore(
            bertscore_model, bertscore_num_layers, device=device, batch_size=bertscore_batch_size
        )
        self._meteor = MeteorProcess()
        self._ptb = PTBProcess()
        self._tokens: dict[str, str] = {}

    def bertscore_description(self) -> str:
        """Which BERTScore model and layer this Scorer reports, e.g. for a results file."""
        return self._bertscore.description

    def score(
        self,
        candidates: Sequence[str],
        references: Sequence[Sequence[str]],
        metrics: Sequence[str] | None = None,
        *,
        vqa_protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL,
    ) -> dict[str, float]:
        """Corpus-level scores of ``candidates[i]`` against the list ``references[i]``.

        Args:
            candidates: one generated caption (or VQA answer) per item; empty strings count as
                wrong answers, they are never dropped.
            references: for each item, one or more reference captions (or human answers).
            metrics: names from :data:`ALL_METRICS`; None means all of :data:`CAPTION_METRICS`.
            vqa_protocol: how VQA-acc normalises answers, ``official`` (the VQA challenge's
                script) or ``evalai`` (EvalAI / lmms-eval); see :mod:`prsl.metrics.vqa`.

        Returns:
            ``{name: value}`` in the order asked. BLEU, METEOR, ROUGE-L, BERTScore and VQA-acc
            lie in [0, 1]; CIDEr (CIDEr-D, as in pycocoevalcap) is usually in [0, 10].

        Raises:
            InvalidInput: on an unknown metric name; ValueError on malformed input.
            MissingDependency: when a Java-based metric is asked for and Java is missing.
        """
        return self.score_many([(candidates, references)], metrics, vqa_protocol=vqa_protocol)[0]

    def score_many(
        self,
        corpora: Sequence[tuple[Sequence[str], Sequence[Sequence[str]]]],
        metrics: Sequence[str] | None = None,
        *,
        vqa_protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL,
    ) -> list[dict[str, float]]:
        """:meth:`score` for each ``(candidates, references)`` corpus, the same values.

        Why: an evaluation scores hundreds of small corpora (every attack, ε, reference and
        iteration), many of them identical (a model's clean outputs recur in every attack's
        cells). Here each distinct corpus is scored once, and the Java PTB tokenizer runs once
        for all their texts instead of twice per corpus.
        """
        scored = self.score_items(corpora, metrics, vqa_protocol=vqa_protocol)
        return [dict(corpus.values) for corpus in scored]

    def score_items(
        self,
        corpora: Sequence[tuple[Sequence[str], Sequence[Sequence[str]]]],
        metrics: Sequence[str] | None = None,
        *,
        vqa_protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL,
    ) -> list[CorpusScores]:
        """:meth:`score_many`, each corpus's values with its items' statistics beside them
        (:class:`CorpusScores`: per-item scores, and what a bootstrap resamples)."""
        names = resolve_metrics(metrics)
        for candidates, references in corpora:
            validate_inputs(candidates, references)
        keys = [(tuple(cands), tuple(tuple(refs) for refs in refss)) for cands, refss in corpora]
        distinct = list(dict.fromkeys(keys))
        found = self._score_distinct(distinct, names, vqa_protocol)
        scored = dict(zip(distinct, found, strict=True))
        return [scored[key] for key in keys]

    def _score_distinct(
        self,
        corpora: Sequence[tuple[Sequence[str], Sequence[Sequence[str]]]],
        names: list[str],
        vqa_protocol: VQAProtocol,
    ) -> list[CorpusScores]:
        coco_wanted = [name for name in names if name in COCO_METRICS]
        tokens = None
        if coco_wanted:
            require_java()
            tokens = self._tokenized(
                text
                for candidates, references in corpora
                for text in (*candidates, *(r for refs in references for r in refs))
            )
        f1s: Iterator[float] = iter(())
        if "BERTScore" in names:  # per-pair F1 (no IDF): one batched pass for every corpus
            f1s = iter(
                self._bertscore.f1(
                    [c for candidates, _ in corpora for c in candidates],
                    [refs for _, references in corpora for refs in references],
                )
            )
        results = []
        for candidates, references in corpora:
            values: dict[str, float] = {}
            stats: dict[str, np.ndarray] = {}
            if coco_wanted:
                coco, counts = coco_scores(
                    candidates, references, coco_wanted, self._meteor, tokens
                )
                values.update(coco)
                stats.update(counts)
            if "BERTScore" in names:
                f1 = [next(f1s) for _ in candidates]
                values["BERTScore"], stats["BERTScore"] = fmean(f1), _column(f1)
            if "VQA-acc" in names:
                values["VQA-acc"] = mean_vqa_accuracy(candidates, references, vqa_protocol)
                pairs = zip(candidates, references, strict=True)
                accuracy = [vqa_accuracy(a, h, vqa_protocol) for a, h in pairs]
                stats["VQA-acc"] = _column(accuracy)
            results.append(
                CorpusScores({n: values[n] for n in names}, {n: stats[n] for n in names})
            )
        return results

    def cider_among(self, references: Sequence[Sequence[str]]) -> CiderAmong:
        """A corpus's references, ready for :meth:`cider_items` (tokenised and counted once)."""
        validate_inputs([""] * len(references), references)
        require_java()
        tokens = self._tokenized(r for refs in references for r in refs)
        return CiderAmong([[tokens[r] for r in refs] for refs in references])

    def cider_items(
        self, corpus: CiderAmong, parts: Sequence[tuple[Sequence[int], Sequence[str]]]
    ) -> list[list[float]]:
        """For each ``(positions, candidates)``, each candidate's CIDEr-D against the
        references at its position in ``corpus``: exactly the item scores :meth:`score_items`
        gives that item in the whole corpus, in time that does not grow with the corpus."""
        for positions, candidates in parts:
            if isinstance(candidates, str) or not all(isinstance(c, str) for c in candidates):
                raise ValueError("candidates must be a list of str")
            if not all(0 <= p < len(corpus) for p in positions):
                raise ValueError(f"positions must lie in [0, {len(corpus)})")
        tokens = self._tokenized(c for _, candidates in parts for c in candidates)
        return [corpus.scores(p, [tokens[c] for c in candidates]) for p, candidates in parts]

    def _tokenized(self, texts: Iterable[str]) -> dict[str, str]:
        """The PTB tokens of ``texts``, the Java tokenizer asked only for texts it has not
        tokenised before (the tokens of a text do not depend on the others): an evaluation
        that judges outputs during the run scores many small corpora sharing their
        references. The tokenizer's JVM is this Scorer's, started once."""
        wanted = list(dict.fromkeys(texts))
        new = [t for t in wanted if t not in self._tokens]
        if len(self._tokens) + len(new) > TOKEN_CACHE_SIZE:
            self._tokens.clear()
            new = wanted
        if new:
            self._tokens.update(ptb_tokenize(new, self._ptb))
        return {t: self._tokens[t] for t in wanted}

    def close(self) -> None:
        """Stop the METEOR and tokenizer JVMs; the Scorer stays usable and restarts them when
        needed."""
        self._meteor.close()
        self._ptb.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def score(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] | None = None,
    *,
    bertscore_model: str | None = None,
    vqa_protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL,
) -> dict[str, float]:
    """Score once with a fresh :class:`Scorer` (see :meth:`Scorer.score`); use a Scorer to
    score repeatedly without reloading the BERTScore model and restarting METEOR each time."""
    with Scorer(bertscore_model=bertscore_model) as scorer:
        return scorer.score(candidates, references, metrics, vqa_protocol=vqa_protocol)
