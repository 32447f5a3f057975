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

from typing import ClassVar

from pydantic import model_validator

from prsl.core.errors import MissingDependency
from prsl.core.labels import IGNORE_INDEX
from prsl.core.lazy import lazy_import
from prsl.core.params import choice, integer, real
from prsl.losses._common import (
    FlatBatch,
    LossTerms,
    flatten,
    mean_over_counted,
    token_cross_entropy,
    upcast,
)
from prsl.losses._recentralization import check_window, recentralization
from prsl.losses.base import Loss

torch = lazy_import("torch", globals())

BACKENDS = ("auto", "torch", "triton")


class PRSL(Loss):
    """PRSL's parameters, and the loss itself: ``PRSL(k=10, weight=1e-5)(logits, labels)``."""

    name: ClassVar[str] = "prsl"

    k: integer(1, hint=" (number of ranked competitors in the window)") = 10
    """K, how many ranked non-target logits form the window (authors: 10 ViT-GPT2, 20 BLIP-2)."""
    start: integer(0, hint=" (rank of the window's first competitor)") = 0
    """Rank of the first competitor in the window (0 = the strongest)."""
    weight: real(0, hint=" (b, the regulariser's weight)") = 1e-5
    """b, the regulariser's weight (authors: 1e-5 ViT-GPT2, 1e-6 BLIP-2)."""
    backend: choice(*BACKENDS) = "auto"
    """"auto": the fused Triton kernel for CUDA logits it supports, else torch; "torch" or
    "triton" force one (an error says why the kernel cannot run). Same values either way."""
    inplace: bool = False
    """Kernel only: write the CE gradient into the logits buffer instead of a new one (the
    logits are overwritten; nothing in training needs them afterwards)."""

    @model_validator(mode="after")
    def _inplace_needs_the_kernel(self) -> PRSL:
        if self.inplace and self.backend == "torch":
            raise ValueError("inplace=True needs the fused kernel: use backend 'auto' or 'triton'")
        return self

    def terms(self, logits, labels, *, ignore_index: int = IGNORE_INDEX) -> LossTerms:
        """PRSL split into CE, R and the total ``CE + weight * R``."""
        check_window(self.k, self.start, logits.shape[-1])
        if use_triton(self.backend, logits, self.k, self.start):
            from prsl.losses.triton_prsl import fused_prsl

            ce, reg = fused_prsl(
                logits,
                labels,
                k=self.k,
                start=self.start,
                ignore_index=ignore_index,
                check_finite=self.check_finite,
                inplace=self.inplace,
            )
        else:
            batch = flatten(logits, labels, ignore_index, self.check_finite)
            ce = mean_over_counted(token_cross_entropy(batch), batch)
            reg = recentralization(competitor_means(batch, self.k, self.start), batch)
        return LossTerms(ce + self.weight * reg, ce, reg)


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
        MissingDependency: ``backend="triton"`` where the kernel cannot run, saying why.
    """
    if backend == "torch" or (backend == "auto" and logits.device.type != "cuda"):
        return False
    reason = triton_unavailable_reason(logits, k, start)
    if reason is not None and backend == "triton":
        raise MissingDependency(
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


def prsl_terms(logits, labels, *, ignore_index: int = IGNORE_INDEX, **params) -> LossTerms:
    """:class:`PRSL` as a function: ``prsl_terms(logits, labels, k=10, weight=1e-5)``."""
    return PRSL(**params).terms(logits, labels, ignore_index=ignore_index)


def prsl_loss(logits, labels, *, ignore_index: int = IGNORE_INDEX, **params) -> torch.Tensor:
    """PRSL = CE + weight * R as a scalar fp32 tensor.

    ``logits`` (N, V) or (B, T, V), any float dtype (accumulated in fp32); ``labels`` (N,) or
    (B, T), aligned with the logits (the caller shifts), ``ignore_index`` where a position does
    not count (padding, prompt tokens). ``params`` are :class:`PRSL`'s: ``k``, ``start``,
    ``weight``, ``backend``, ``inplace``, ``check_finite``.
    """
    return prsl_terms(logits, labels, ignore_index=ignore_index, **params).loss
