"""Partially Recentralization Softmax Loss (arXiv 2402.03627), in the authors' exact form.

PRSL = CE + b * R with

    m_i = mean of the ranked non-target logits start .. start+k-1 of row i (largest first)
    R   = -sum_{i in M} log( exp(m_i) / sum_{j in M} exp(m_j) )

a log-softmax taken across the counted positions of the batch and summed (not averaged), on raw
logits. R >= n log n, with equality when every m_i is equal: it pulls the strongest competitors
of every token toward a common centre.

Unlike the authors' code this never sorts the vocabulary or copies logits through boolean
masks: one ``topk(start + k + 1)`` per row finds the window with the target removed. That torch
code is the reference; ``backend="triton"`` (or ``"auto"`` on CUDA) runs the same loss through
the fused kernel in ``prsl.losses.triton_prsl``.
"""

from __future__ import annotations

import torch

from prsl.losses._common import (
    FlatBatch,
    LossTerms,
    TermsLoss,
    flatten,
    mean_over_counted,
    token_cross_entropy,
    upcast,
)


def validate_window(k: int, start: int, vocab_size: int | None = None) -> None:
    """The window start..start+k-1 must fit in the V-1 non-target logits.

    Without ``vocab_size`` only k and start are checked (at construction, before any logits).
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (number of ranked competitors), got {k!r}")
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    if vocab_size is not None and start + k >= vocab_size:
        raise ValueError(
            f"start + k = {start + k} must be < vocabulary size V = {vocab_size}: the window "
            f"start..start+k-1 has to fit in the V-1 = {vocab_size - 1} non-target logits"
        )


BACKENDS = ("auto", "torch", "triton")


def triton_unavailable_reason(logits: torch.Tensor, k: int, start: int) -> str | None:
    """Why the fused Triton kernel cannot compute PRSL for these logits, or None when it can."""
    try:
        from prsl.losses import triton_prsl
    except ImportError as error:  # triton is an optional (GPU) dependency
        return f"triton cannot be imported ({error})"
    return triton_prsl.unsupported_reason(logits, k, start)


def use_triton(backend: str, logits: torch.Tensor, k: int, start: int) -> bool:
    """Resolve ``backend``: "auto" takes the kernel only for CUDA logits it supports.

    Raises:
        ValueError: unknown backend.
        RuntimeError: ``backend="triton"`` where the kernel cannot run, saying why.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch" or (backend == "auto" and logits.device.type != "cuda"):
        return False
    reason = triton_unavailable_reason(logits, k, start)
    if reason is not None and backend == "triton":
        raise RuntimeError(
            f"backend='triton' cannot run: {reason}; use backend='torch' (or 'auto', which "
            "falls back to it)"
        )
    return reason is None


def competitor_means(batch: FlatBatch, k: int, start: int) -> torch.Tensor:
    """m_i: fp32 mean of the non-target logits ranked start..start+k-1 in each row, shape (N,).

    Takes the top start+k+1 entries of the raw row and drops the target if it is among them,
    otherwise the last one; both leave exactly the top start+k non-target values.
    """
    depth = start + k
    values, indices = batch.logits.topk(depth + 1, dim=1)
    is_target = indices == batch.labels.unsqueeze(1)
    drop = is_target.clone()
    drop[:, -1] |= ~is_target.any(dim=1)
    kept = values[~drop].view(-1, depth)
    return upcast(kept[:, start:depth]).mean(dim=1)


def recentralization(m: torch.Tensor, batch: FlatBatch) -> torch.Tensor:
    """R = n * logsumexp_{j in M}(m_j) - sum_{i in M} m_i; exactly 0 with zero grad when n = 0."""
    # With no counted row, fill with 0 instead of -inf so logsumexp (and its gradient) stays finite;
    # the n = 0 factor then zeroes both the value and the gradient. With no row at all (e.g. a
    # shifted length-1 sequence) logsumexp of nothing is -inf, so return the empty sum instead.
    if m.numel() == 0:
        return m.sum()
    fill = torch.where(batch.n > 0, float("-inf"), 0.0).to(m.dtype)
    lse = torch.logsumexp(torch.where(batch.counted, m, fill), dim=0)
    m_sum = torch.where(batch.counted, m, torch.zeros_like(m)).sum()
    return batch.n.to(m.dtype) * lse - m_sum


def prsl_terms(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int = 10,
    start: int = 0,
    weight: float = 1e-5,
    ignore_index: int = -100,
    check_finite: bool = False,
    backend: str = "auto",
) -> LossTerms:
    """PRSL split into CE, R and the total ``CE + weight * R``.

    ``backend``: "torch" (the reference below), "triton" (the fused kernel; a RuntimeError says
    why when it cannot run) or "auto" (the kernel for CUDA logits it supports, else torch).
    """
    validate_window(k, start, logits.shape[-1])
    if use_triton(backend, logits, k, start):
        from prsl.losses.triton_prsl import prsl_terms_triton

        return prsl_terms_triton(
            logits,
            labels,
            k=k,
            start=start,
            weight=weight,
            ignore_index=ignore_index,
            check_finite=check_finite,
        )
    batch = flatten(logits, labels, ignore_index, check_finite)
    ce = mean_over_counted(token_cross_entropy(batch), batch)
    reg = recentralization(competitor_means(batch, k, start), batch)
    return LossTerms(ce + weight * reg, ce, reg)


def prsl_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int = 10,
    start: int = 0,
    weight: float = 1e-5,
    ignore_index: int = -100,
    check_finite: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """PRSL = CE + weight * R as a scalar fp32 tensor.

    Args:
        logits: (N, V) or (B, T, V), any float dtype (accumulated in fp32).
        labels: (N,) or (B, T), aligned with ``logits`` (the caller shifts); ``ignore_index``
            marks positions that do not count (padding, prompt tokens).
        k: how many ranked non-target logits form the window (``end = start + k``).
        start: rank of the first competitor in the window (0 = the strongest).
        weight: b, the regulariser's weight (authors: 1e-5 ViT-GPT2, 1e-6 BLIP-2).
        check_finite: raise a clear error on NaN/inf logits (costs a device sync).
        backend: "auto" (fused Triton kernel for supported CUDA logits, else torch), "torch"
            or "triton" (error when the kernel cannot run).
    """
    return prsl_terms(
        logits,
        labels,
        k=k,
        start=start,
        weight=weight,
        ignore_index=ignore_index,
        check_finite=check_finite,
        backend=backend,
    ).loss


class PRSLoss(TermsLoss):
    """``nn.Module`` form of :func:`prsl_loss` for training loops that expect a criterion."""

    def __init__(
        self,
        k: int = 10,
        start: int = 0,
        weight: float = 1e-5,
        ignore_index: int = -100,
        check_finite: bool = False,
        backend: str = "auto",
    ) -> None:
        validate_window(k, start)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        super().__init__(
            prsl_terms,
            k=k,
            start=start,
            weight=weight,
            ignore_index=ignore_index,
            check_finite=check_finite,
            backend=backend,
        )
