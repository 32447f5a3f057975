"""R and the window it is taken over: what the torch reference and the fused kernel share.

    m_i = mean of the ranked non-target logits start .. start+k-1 of row i (largest first)
    R   = -sum_{i in M} log( exp(m_i) / sum_{j in M} exp(m_j) )
        = n * logsumexp_{j in M}(m_j) - sum_{i in M} m_i

a log-softmax taken across the n counted positions M of the batch and summed. R >= n log n, with
equality when every m_i is equal.
"""

from __future__ import annotations

from prsl.core.errors import InvalidInput
from prsl.core.lazy import lazy_import
from prsl.losses._common import FlatBatch

torch = lazy_import("torch", globals())


def check_window(k: int, start: int, vocab_size: int) -> None:
    """The window start..start+k-1 must fit in the V-1 non-target logits of a row."""
    if start + k >= vocab_size:
        raise InvalidInput(
            f"start + k = {start + k} must be < vocabulary size V = {vocab_size}: the window "
            f"start..start+k-1 has to fit in the V-1 = {vocab_size - 1} non-target logits"
        )


def recentralization(m: torch.Tensor, batch: FlatBatch) -> torch.Tensor:
    """R from the window means ``m`` (N,); exactly 0 with zero gradient when nothing counts."""
    # With no counted row, fill with 0 instead of -inf so logsumexp (and its gradient) stays finite;
    # the n = 0 factor then zeroes both the value and the gradient. With no row at all (e.g. a
    # shifted length-1 sequence) logsumexp of nothing is -inf, so return the empty sum instead.
    if m.numel() == 0:
        return m.sum()
    fill = torch.where(batch.n > 0, float("-inf"), 0.0).to(m.dtype)
    lse = torch.logsumexp(torch.where(batch.counted, m, fill), dim=0)
    m_sum = torch.where(batch.counted, m, torch.zeros_like(m)).sum()
    return batch.n.to(m.dtype) * lse - m_sum
