"""The paired bootstrap over items: confidence intervals for corpus scores and their differences.

Resampling items with replacement and recomputing the corpus metric on each resample gives the
sampling distribution of the metric under "other items from the same source". *Paired*: one
set of resamples (:func:`resample_counts`, item multiplicities) is drawn for an item list and
applied to every quantity measured on those items (clean and adversarial scores, every model),
so a difference between two of them is computed resample by resample and the variation the
items share cancels, the way a paired test works. Each resample's metric is recomputed from the
items' statistics (:mod:`prsl.metrics.statistics`), so corpus BLEU and METEOR are resampled as
corpus metrics, not as means of sentence scores.

Intervals are percentile intervals; the p-value of a difference is the two-sided bootstrap
p-value ``2 min(P*(d <= 0), P*(d >= 0))`` with the usual +1 correction, so it is never 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prsl.metrics.statistics import REDUCERS

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
MIN_RESAMPLES = 100
"""Fewer resamples give interval ends that are single draws: a 95 % interval from 20 resamples
is the two most extreme of them."""


def resample_counts(n_items: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n_items)`` multiplicities: row b says how often each item is drawn in the
    b-th resample of ``n_items`` draws with replacement. The same seed gives the same rows."""
    if n_items < 1:
        raise ValueError("the bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_items, np.full(n_items, 1.0 / n_items), size=resamples).astype(
        np.float64
    )


def resampled(metric: str, stats: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The metric on every resample: ``(resamples,)`` values from the items' statistics."""
    stats = np.asarray(stats, dtype=np.float64)
    if len(stats) != counts.shape[1]:
        raise ValueError(f"{len(stats)} items' statistics for resamples of {counts.shape[1]}")
    return REDUCERS[metric](counts @ stats, counts.shape[1])


def interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The percentile interval holding ``level`` of the resampled values."""
    tail = (1.0 - level) / 2
    low, high = np.quantile(np.asarray(samples, dtype=np.float64), [tail, 1.0 - tail])
    return float(low), float(high)


def p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the difference is 0" from resampled differences."""
    d = np.asarray(differences, dtype=np.float64)
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return float(min(1.0, 2.0 * (tail + 1) / (len(d) + 1)))


def aligned(keys: Sequence[str], stats: np.ndarray, wanted: Sequence[str]) -> np.ndarray:
    """The rows of ``stats`` (one per key of ``keys``) in the order of ``wanted``."""
    row = {key: i for i, key in enumerate(keys)}
    return np.asarray(stats)[[row[key] for key in wanted]]
