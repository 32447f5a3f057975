"""Shape handling and validation shared by every loss.

All losses take logits of shape (N, V) or (B, T, V) with labels (N,) or (B, T), already aligned
(the caller shifts). They flatten to rows, mark the counted positions, and never copy rows out
with boolean masks: ignored rows stay in place and are weighted out, which keeps memory at one
(N, V) buffer and avoids a host sync on the number of counted positions.
"""

from __future__ import annotations

from typing import NamedTuple

from prsl.core.labels import IGNORE_INDEX
from prsl.core.lazy import lazy_import

torch = lazy_import("torch", globals())


class LossTerms(NamedTuple):
    """A loss split into its parts, so training can log CE and the regulariser separately.

    ``loss = ce + weight * regularizer`` for PRSL/DRSL; for plain CE the regulariser is zero;
    for label smoothing ``ce`` is the unsmoothed CE (comparable across losses) and ``loss`` the
    smoothed objective.
    """

    loss: torch.Tensor
    ce: torch.Tensor
    regularizer: torch.Tensor


class FlatBatch(NamedTuple):
    logits: torch.Tensor  # (N, V), original dtype
    labels: torch.Tensor  # (N,), ignored positions replaced by class 0 so gathers stay in range
    counted: torch.Tensor  # (N,) bool
    n: torch.Tensor  # number of counted positions, 0-d long


def flatten(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    check_finite: bool = False,
) -> FlatBatch:
    """Validate shapes and flatten (B, T, V) / (N, V) logits to rows."""
    if not torch.is_floating_point(logits):
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() not in (2, 3):
        raise ValueError(
            f"logits must have shape (N, V) or (B, T, V), got {tuple(logits.shape)}; "
            "flatten extra dimensions first"
        )
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match logits shape "
            f"{tuple(logits.shape)}: expected labels of shape {tuple(logits.shape[:-1])} "
            "(already aligned with the logits; shift before calling)"
        )
    if labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if check_finite and not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).sum())
        raise ValueError(
            f"logits contain {bad} NaN/inf value(s); check the model's forward pass "
            "(learning rate, mixed-precision overflow) before the loss"
        )
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_labels = labels.reshape(-1).long()
    counted = flat_labels != ignore_index
    safe_labels = torch.where(counted, flat_labels, torch.zeros_like(flat_labels))
    return FlatBatch(flat_logits, safe_labels, counted, counted.sum())


def upcast(x: torch.Tensor) -> torch.Tensor:
    """At least fp32: half precision is accumulated in fp32, float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def mean_over_counted(per_row: torch.Tensor, batch: FlatBatch) -> torch.Tensor:
    """Sum over counted rows divided by their number; 0 (with zero gradient) when there are none."""
    total = torch.where(batch.counted, per_row, torch.zeros_like(per_row)).sum()
    return total / batch.n.clamp(min=1)


def token_cross_entropy(batch: FlatBatch) -> torch.Tensor:
    """Per-row CE in fp32; ignored rows hold a meaningless value that callers weight out."""
    return torch.nn.functional.cross_entropy(upcast(batch.logits), batch.labels, reduction="none")
