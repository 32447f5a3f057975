"""The losses PRSL is compared with: plain CE, DRSL (the authors' earlier loss), label smoothing.

All share PRSL's signature and reductions: CE is a mean over counted positions, regularisers are
sums over counted positions (the authors' form).
"""

from __future__ import annotations

import torch

from prsl.losses._common import (
    LossTerms,
    flatten,
    mean_over_counted,
    token_cross_entropy,
    upcast,
)


def ce_terms(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    check_finite: bool = False,
) -> LossTerms:
    """Token cross-entropy averaged over counted positions, fp32; 0 when none count."""
    batch = flatten(logits, labels, ignore_index, check_finite)
    ce = mean_over_counted(token_cross_entropy(batch), batch)
    return LossTerms(ce, ce, torch.zeros_like(ce))


def drsl_terms(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    weight: float = 1e-6,
    ignore_index: int = -100,
    check_finite: bool = False,
) -> LossTerms:
    """DRSL = CE + weight * sum_i sum_{j != y_i} (z_ij - mean_{j != y_i} z_ij)^2.

    The squared spread of the non-target logits around their own mean, summed over counted
    positions. Computed from the whole row's variance (one fused, numerically stable reduction)
    by the parallel-axis theorem, so neither a masked nor a centred copy of the row is made:
    spread = V*var(z) - (z_y - c)^2 - (V-1)*(mu - c)^2, c the row mean, mu the non-target mean.
    """
    batch = flatten(logits, labels, ignore_index, check_finite)
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
    return LossTerms(ce + weight * reg, ce, reg)


def label_smoothing_terms(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    smoothing: float = 0.1,
    ignore_index: int = -100,
    check_finite: bool = False,
) -> LossTerms:
    """Label-smoothed CE exactly as ``torch.nn.functional.cross_entropy(label_smoothing=...)``.

    Returned ``ce`` is the unsmoothed CE so runs with different losses log comparable numbers.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    batch = flatten(logits, labels, ignore_index, check_finite)
    log_probs = upcast(batch.logits).log_softmax(dim=1)
    nll = -log_probs.gather(1, batch.labels.unsqueeze(1)).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    smoothed = (1.0 - smoothing) * nll + smoothing * uniform
    ce = mean_over_counted(nll, batch)
    loss = mean_over_counted(smoothed, batch)
    return LossTerms(loss, ce, loss - ce)
