"""Every metric as per-item sufficient statistics and the function that makes them a corpus score.

A corpus metric is not always a mean over items: corpus BLEU combines the n-gram counts of all
captions before taking the geometric mean and the brevity penalty, and corpus METEOR sums the
alignment statistics of all captions before computing precision, recall and the fragmentation
penalty. To resample items (the bootstrap) and still recompute the metric the way the field
does, each metric keeps, per item, a row of statistics that can be summed over any multiset of
items, and a ``reduce`` that turns summed rows into the metric's value:

- BLEU-n (pycocoevalcap's ``BleuScorer``, ``closest`` reference length): test length, reference
  length, guessed and correct n-gram counts for n = 1..4;
- METEOR (the meteor-1.5 jar, ``-l en -norm``): the jar's 23 alignment statistics of the best
  reference, with the chunks counted as the jar's ``EVAL`` sums them (none for an item identical
  to its reference), reduced by the jar's own formula (``MeteorScorer.computeMetrics``) with its
  English parameters;
- ROUGE-L, CIDEr-D, BERTScore, VQA accuracy: the item's own score (their corpus value is the
  mean over items; CIDEr-D's document frequencies stay those of the whole corpus).

``reduce(stats.sum(0), n)`` is the corpus score, and ``reduce(stats[i], 1)`` item i's own
(sentence-level) score, so the same rows give both; the tests check the first against the
libraries' corpus scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

Reduce = Callable[[np.ndarray, int], np.ndarray]
"""``reduce(summed, n)``: summed statistics (``(..., k)``) of ``n`` items -> values (``(...)``)."""

BLEU_ORDER = 4
BLEU_COLUMNS = 2 + 2 * BLEU_ORDER  # testlen, reflen, guess[1..4], correct[1..4]
_BLEU_SMALL, _BLEU_TINY = 1e-9, 1e-15  # BleuScorer's guards, so identical values come out

# The meteor-1.5 jar's English parameters (task "default", as `-l en -norm` runs it): alpha,
# beta, gamma, delta, and the weights of its four matching stages (exact, stem, synonym,
# paraphrase). A test reproduces the jar's corpus scores from its statistics with them.
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA, METEOR_DELTA = 0.85, 0.20, 0.60, 0.75
METEOR_STAGE_WEIGHTS = (1.0, 0.6, 0.8, 0.6)
METEOR_COLUMNS = 4 + 4 * len(METEOR_STAGE_WEIGHTS) + 3
"""testLen, refLen, testFunctionWords, refFunctionWords; per stage: test content, reference
content, test function, reference function matches; chunks, testWordMatches, refWordMatches."""


def bleu_reduce(order: int) -> Reduce:
    """BLEU-``order`` from summed ``BleuScorer`` statistics."""

    def reduce(summed: np.ndarray, n: int) -> np.ndarray:
        summed = np.asarray(summed, dtype=np.float64)
        testlen, reflen = summed[..., 0], summed[..., 1]
        guess = summed[..., 2 : 2 + BLEU_ORDER]
        correct = summed[..., 2 + BLEU_ORDER : 2 + 2 * BLEU_ORDER]
        # the product is built in BleuScorer's order, factor by factor, so values agree exactly
        product = np.ones_like(testlen)
        for k in range(order):
            product = product * (correct[..., k] + _BLEU_TINY) / (guess[..., k] + _BLEU_SMALL)
        value = product ** (1.0 / order)
        ratio = (testlen + _BLEU_TINY) / (reflen + _BLEU_SMALL)
        with np.errstate(divide="ignore", over="ignore"):
            penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
        return value * penalty

    return reduce


def meteor_reduce(summed: np.ndarray, n: int) -> np.ndarray:
    """METEOR from summed jar statistics: the jar's ``computeMetrics``, vectorised."""
    s = np.asarray(summed, dtype=np.float64)
    test_len, ref_len, test_fn, ref_fn = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    stages = len(METEOR_STAGE_WEIGHTS)
    per_stage = s[..., 4 : 4 + 4 * stages].reshape(*s.shape[:-1], stages, 4)
    chunks, test_words, ref_words = s[..., -3], s[..., -2], s[..., -1]
    weights = np.asarray(METEOR_STAGE_WEIGHTS)
    d = METEOR_DELTA
    test_weighted = (per_stage[..., 0] * d + per_stage[..., 2] * (1 - d)) @ weights
    ref_weighted = (per_stage[..., 1] * d + per_stage[..., 3] * (1 - d)) @ weights
    test_total = per_stage[..., 0].sum(-1) + per_stage[..., 2].sum(-1)
    ref_total = per_stage[..., 1].sum(-1) + per_stage[..., 3].sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = test_weighted / (d * (test_len - test_fn) + (1 - d) * test_fn)
        recall = ref_weighted / (d * (ref_len - ref_fn) + (1 - d) * ref_fn)
        f_mean = 1.0 / ((1 - METEOR_ALPHA) / precision + METEOR_ALPHA / recall)
        identical = (test_total == test_len) & (ref_total == ref_len) & (chunks == 1)
        fragmentation = np.where(identical, 0.0, chunks / ((test_words + ref_words) / 2))
        score = f_mean * (1 - METEOR_GAMMA * fragmentation**METEOR_BETA)
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


def mean_reduce(summed: np.ndarray, n: int) -> np.ndarray:
    """A metric whose corpus value is the mean of its items' scores (one column: the score)."""
    return np.asarray(summed, dtype=np.float64)[..., 0] / n


REDUCERS: Mapping[str, Reduce] = {
    **{f"BLEU-{k}": bleu_reduce(k) for k in range(1, BLEU_ORDER + 1)},
    "METEOR": meteor_reduce,
    "ROUGE-L": mean_reduce,
    "CIDEr": mean_reduce,
    "BERTScore": mean_reduce,
    "VQA-acc": mean_reduce,
}


CORPUS_METRICS = frozenset({"CIDEr"})
"""Metrics whose item score depends on the other items of the corpus: CIDEr-D weighs n-grams by
document frequencies counted over every item's references (never over the candidates)."""


def corpus_value(metric: str, stats: np.ndarray) -> float:
    """The corpus score of the items whose statistics are the rows of ``stats``."""
    stats = np.asarray(stats, dtype=np.float64)
    return float(REDUCERS[metric](stats.sum(0), len(stats)))


def item_values(metric: str, stats: np.ndarray) -> np.ndarray:
    """Each item's own (sentence-level) score."""
    return REDUCERS[metric](np.asarray(stats, dtype=np.float64), 1)
