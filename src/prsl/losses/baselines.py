"""The losses PRSL is compared with: plain CE, DRSL (the authors' earlier loss), label smoothing.

All share PRSL's reductions: CE is a mean over counted positions, regularisers are sums over
counted positions (the authors' form).
"""

from __future__ import annotations

from typing import ClassVar

from prsl.core.labels import IGNORE_INDEX
from prsl.core.lazy import lazy_import
from prsl.core.params import real
from prsl.losses._common import (
    LossTerms,
    flatten,
    mean_over_counted,
    token_cross_entropy,
    upcast,
)
from prsl.losses.base import Loss

torch = lazy_import("torch", globals())


class CrossEntropy(Loss):
    """Token cross-entropy averaged over counted positions, fp32; 0 when none count."""

    name: ClassVar[str] = "ce"
    mean_over_tokens: ClassVar[bool] = True

    def terms(self, logits, labels, *, ignore_index: int = IGNORE_INDEX) -> LossTerms:
        batch = flatten(logits, labels, ignore_index, self.check_finite)
        ce = mean_over_counted(token_cross_entropy(batch), batch)
        return LossTerms(ce, ce, torch.zeros_like(ce))


class DRSL(Loss):
    """DRSL = CE + weight * sum_i sum_{j != y_i} (z_ij - mean_{j != y_i} z_ij)^2.

    The squared spread of the non-target logits around their own mean, summed over counted
    positions. Computed from the whole row's variance (one fused, numerically stable reduction)
    by the parallel-axis theorem, so neither a masked nor a centred copy of the row is made:
    spread = V*var(z) - (z_y - c)^2 - (V-1)*(mu - c)^2, c the row mean, mu the non-target mean.
    """

    name: ClassVar[str] = "drsl"

    weight: real(0, hint=" (d, the weight of the spread term)") = 1e-6
    """d, the weight of the spread term (authors: 1e-6)."""

    def terms(self, logits, labels, *, ignore_index: int = IGNORE_INDEX) -> LossTerms:
        batch = flatten(logits, labels, ignore_index, self.check_finite)
        z = upcast(batch.logits)
        if z.shape[0] == 0:  # no position at all (var_mean of nothing warns): every term is 0
            zero = z.sum()
            return LossTerms(zero, zero, zero)
        vocab = z.shape[1]
        var, centre = torch.var_mean(z, dim=1, correction=0)
        target = z.gather(1, batch.labels.unsqueeze(1)).squeeze(1)
        mu = (centre * vocab - target) / (vocab - 1)
        spread = vocab * var - (target - centre).square() - (vocab - 1) * (mu - centre).square()
        reg = torch.where(batch.counted, spread, torch.zeros_like(spread)).sum()
        # CE from the fp32 copy already made: token_cross_entropy would upcast half logits again
        ce_rows = torch.nn.functional.cross_entropy(z, batch.labels, reduction="none")
        ce = mean_over_counted(ce_rows, batch)
        return LossTerms(ce + self.weight * reg, ce, reg)


class LabelSmoothing(Loss):
    """Label-smoothed CE exactly as ``torch.nn.functional.cross_entropy(label_smoothing=...)``.

    ``ce`` in its terms is the unsmoothed CE, so runs with different losses log comparable
    numbers; ``loss`` is the smoothed objective.
    """

    name: ClassVar[str] = "ls"
    mean_over_tokens: ClassVar[bool] = True

    smoothing: real(0, 1, open_high=True, hint=" (probability mass spread over the vocabulary)") = (
        0.1
    )
    """Probability mass moved from the target to the uniform distribution."""

    def terms(self, logits, labels, *, ignore_index: int = IGNORE_INDEX) -> LossTerms:
        batch = flatten(logits, labels, ignore_index, self.check_finite)
        log_probs = upcast(batch.logits).log_softmax(dim=1)
        nll = -log_probs.gather(1, batch.labels.unsqueeze(1)).squeeze(1)
        uniform = -log_probs.mean(dim=1)
        smoothed = (1.0 - self.smoothing) * nll + self.smoothing * uniform
        ce = mean_over_counted(nll, batch)
        loss = mean_over_counted(smoothed, batch)
        return LossTerms(loss, ce, loss - ce)


def ce_terms(logits, labels, *, ignore_index: int = IGNORE_INDEX, **params) -> LossTerms:
    """:class:`CrossEntropy` as a function."""
    return CrossEntropy(**params).terms(logits, labels, ignore_index=ignore_index)


def drsl_terms(logits, labels, *, ignore_index: int = IGNORE_INDEX, **params) -> LossTerms:
    """:class:`DRSL` as a function, e.g. ``drsl_terms(logits, labels, weight=1e-6)``."""
    return DRSL(**params).terms(logits, labels, ignore_index=ignore_index)


def label_smoothing_terms(
    logits, labels, *, ignore_index: int = IGNORE_INDEX, **params
) -> LossTerms:
    """:class:`LabelSmoothing` as a function, e.g. ``smoothing=0.1``."""
    return LabelSmoothing(**params).terms(logits, labels, ignore_index=ignore_index)
