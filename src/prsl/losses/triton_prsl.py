"""Fused Triton PRSL: one streaming pass per row for log-sum-exp and the top-(start+k) window.

The torch reference (``prsl.losses.prsl``) materialises an fp32 copy of the logits, a softmax and
a ``topk``; this module reads the logits once in the forward and once in the backward, and writes
the gradient once, which is the least any exact PRSL can move apart from the re-read.

Forward (``_prsl_stats_kernel``, one program per row, the row streamed in ``BLOCK_V`` chunks):

* online log-sum-exp in fp32 (running max and rescaled sum), the target logit read directly;
* the running top-``depth`` (``depth = start + k``) of the non-target logits. Every logit gets an
  int64 sort key, ``(order-preserving int32 of its fp32 value) << 32 | (2**32 - 1 - column)``:
  keys are unique, compare like the values, and break ties in favour of the lower column. The row
  keeps its best ``depth`` keys in a register buffer (padded to a power of two with keys that never
  leave) and their minimum as a threshold. A chunk with no key above the threshold costs one
  compare and a sum; one with a few (``<= BULK_MIN``) inserts them one at a time (extract the max,
  replace the buffer's minimum); a chunk with many merges ``tl.topk`` of the chunk with the buffer
  by the bitonic rule ``max(ascending buffer, descending top)``. At the end the ``start`` best
  keys are dropped: the rest is the window, ranks start..start+k-1, and ``m_i`` is the fp32 mean
  of its values.
* Per row it stores ``nll = lse - z_y`` and ``m``, and for the backward ``lse`` and the two
  window-bounding keys (keys are unique, so ``lo <= key <= hi`` names exactly the k entries: no
  per-row index list, no scatter).

Ties: entries with equal values are ranked lower column first. Any consistent choice gives the
same ``m_i``; this one is what a stable descending sort of the row gives, so the gradient is
reproducible and testable. (``torch.topk`` documents no tie order, so the torch path may pick
other, equally valid, tied entries.) ``-0.0`` is ranked as ``+0.0``.

R across positions is N values: it is computed in torch from ``m`` exactly as the reference does.
The backward (``_prsl_grad_kernel``) recomputes ``softmax = exp(z - lse)`` and writes
``g_ce * (softmax - onehot) / n + g_R * dR/dm_i / k * [j in window_i]`` for counted rows and 0
for ignored ones, with ``dR/dm_i = n * softmax_over_rows(m)_i - 1``. CE and R keep separate
upstream gradients, so ``LossTerms.ce`` and ``.regularizer`` can be differentiated on their own
(``hf_loss`` rescales CE under gradient accumulation).

``inplace=True`` (opt-in, like Liger-Kernel's fused CE): when a gradient is required, the forward
writes the CE gradient into the logits buffer itself in a second pass over the row and keeps
the k window columns per row; the backward scales the buffer by CE's upstream gradient (skipped
when it is 1) and adds R's sparse part at those columns. No (N, V) gradient is allocated, but
**the logits are overwritten**: use it only when nothing else needs them (in training nothing
does). The logits' autograd version counter is bumped, so an op that saved them for its own
backward fails loudly instead of computing a wrong gradient.

Limits: fp32, bf16 and fp16 logits (fp32 accumulation, gradient in the logits' dtype);
``start + k <= MAX_DEPTH``; any row and column strides. A label outside ``[0, V)`` that is not
``ignore_index`` gives a NaN loss (the kernel never reads out of bounds and raising would need a
device sync). Kernels are compiled for CUDA tensors; with ``TRITON_INTERPRET=1`` set before
triton is first imported they run in Triton's CPU interpreter instead (slow; for tests).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from prsl.core.errors import InvalidInput, MissingDependency
from prsl.core.labels import IGNORE_INDEX
from prsl.losses._common import FlatBatch, flatten
from prsl.losses._recentralization import check_window, recentralization

MAX_DEPTH = 1024
"""Largest supported ``start + k``: the buffer lives in registers and ``tl.topk`` cost grows
with it."""

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
DEFAULT_BLOCK_V = 4096

_KEY_MIN: tl.constexpr = tl.constexpr(-(2**63))
_KEY_MAX: tl.constexpr = tl.constexpr(2**63 - 1)
_LOW_BITS: tl.constexpr = tl.constexpr(2**32 - 1)


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _sort_keys(z, cols):
    """Unique int64 keys ordered like the fp32 values ``z``; ties favour the lower column."""
    bits = tl.where(z == 0.0, 0.0, z).to(tl.int32, bitcast=True)  # -0.0 ranks as +0.0
    ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    return (ordered.to(tl.int64) << 32) | (_LOW_BITS - cols.to(tl.int64))


@triton.jit
def _key_values(keys):
    """The fp32 values the keys were made from."""
    ordered = (keys >> 32).to(tl.int32)
    bits = tl.where(ordered >= 0, ordered, ordered ^ 0x7FFFFFFF)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _prsl_stats_kernel(
    logits_ptr,
    stride_row,
    stride_col,
    labels_ptr,
    nll_ptr,
    lse_ptr,
    m_ptr,
    key_lo_ptr,
    key_hi_ptr,
    window_cols_ptr,
    inv_n_ptr,
    vocab,
    ignore_index,
    start,
    k,
    DEPTH_P2: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BULK_MIN: tl.constexpr,
    WRITE_CE_GRAD: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    label = tl.load(labels_ptr + row)
    slot = tl.arange(0, DEPTH_P2)
    depth = start + k
    if label != ignore_index:
        # Empty slots hold distinct keys below every real key; padding slots never leave.
        buf = tl.where(slot < depth, _KEY_MIN + slot.to(tl.int64), _KEY_MAX)
        threshold = tl.min(buf, axis=0)
        run_max = -float("inf")
        run_sum = 0.0
        for chunk in range(0, vocab, BLOCK_V):
            cols = chunk + tl.arange(0, BLOCK_V)
            valid = cols < vocab
            z = tl.load(row_ptr + cols.to(tl.int64) * stride_col, mask=valid, other=-float("inf"))
            z = z.to(tl.float32)
            new_max = tl.maximum(run_max, tl.max(z, axis=0))
            pivot = tl.where(new_max == -float("inf"), 0.0, new_max)  # all -inf so far: no NaN
            run_sum = run_sum * tl.exp(run_max - pivot) + tl.sum(tl.exp(z - pivot), axis=0)
            run_max = new_max

            keys = tl.where(valid & (cols != label), _sort_keys(z, cols), _KEY_MIN)
            above = tl.sum((keys > threshold).to(tl.int32), axis=0)
            if above > BULK_MIN:
                buf = tl.maximum(tl.sort(buf), tl.topk(keys, DEPTH_P2))
                threshold = tl.min(buf, axis=0)
            else:
                candidates = tl.where(keys > threshold, keys, _KEY_MIN)
                # Beyond the best `depth` candidates none can enter the buffer.
                for _ in range(tl.minimum(above, depth)):
                    best = tl.max(candidates, axis=0)
                    candidates = tl.where(candidates == best, _KEY_MIN, candidates)
                    # best <= threshold (already beaten by earlier inserts) leaves buf unchanged.
                    buf = tl.where(buf == threshold, tl.maximum(best, threshold), buf)
                    threshold = tl.min(buf, axis=0)
        lse = run_max + tl.log(run_sum)
        in_range = (label >= 0) & (label < vocab)
        target = tl.load(row_ptr + label * stride_col, mask=in_range, other=float("nan"))
        # Padding slots are exactly slots >= depth (the bulk merge keeps them there). Dropping
        # the start best real keys leaves the window, ranks start .. depth-1.
        window = tl.where(slot < depth, buf, _KEY_MIN)
        for _ in range(start):
            window = tl.where(window == tl.max(window, axis=0), _KEY_MIN, window)
        in_window = window != _KEY_MIN
        m = tl.sum(tl.where(in_window, _key_values(window), 0.0), axis=0) / k
        tl.store(nll_ptr + row, lse - target.to(tl.float32))
        tl.store(lse_ptr + row, lse)
        tl.store(m_ptr + row, m)
        tl.store(key_lo_ptr + row, threshold)
        tl.store(key_hi_ptr + row, tl.max(window, axis=0))
        if WRITE_CE_GRAD:
            columns = _LOW_BITS - (window & _LOW_BITS)
            packed = tl.cumsum(in_window.to(tl.int32), axis=0) - 1  # window slots -> 0 .. k-1
            tl.store(window_cols_ptr + row * k + packed, columns, mask=in_window)
            inv_n = tl.load(inv_n_ptr)
            for chunk in range(0, vocab, BLOCK_V):
                cols = chunk + tl.arange(0, BLOCK_V)
                valid = cols < vocab
                ptrs = row_ptr + cols.to(tl.int64) * stride_col
                z = tl.load(ptrs, mask=valid, other=0.0).to(tl.float32)
                grad = (tl.exp(z - lse) - (cols == label).to(tl.float32)) * inv_n
                tl.store(ptrs, grad.to(logits_ptr.dtype.element_ty), mask=valid)
    else:  # lse and the keys are left unset: the backward never reads them for ignored rows
        tl.store(nll_ptr + row, 0.0)
        tl.store(m_ptr + row, 0.0)
        if WRITE_CE_GRAD:
            for chunk in range(0, vocab, BLOCK_V):
                cols = chunk + tl.arange(0, BLOCK_V)
                zero = tl.zeros([BLOCK_V], dtype=logits_ptr.dtype.element_ty)
                tl.store(row_ptr + cols.to(tl.int64) * stride_col, zero, mask=cols < vocab)


@triton.jit
def _prsl_grad_kernel(
    logits_ptr,
    stride_row,
    stride_col,
    grad_ptr,
    grad_stride_row,
    grad_stride_col,
    labels_ptr,
    lse_ptr,
    key_lo_ptr,
    key_hi_ptr,
    row_coef_ptr,
    ce_coef_ptr,
    vocab,
    ignore_index,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    grad_row_ptr = grad_ptr + row * grad_stride_row
    label = tl.load(labels_ptr + row)
    if label != ignore_index:
        lse = tl.load(lse_ptr + row)
        key_lo = tl.load(key_lo_ptr + row)
        key_hi = tl.load(key_hi_ptr + row)
        window_coef = tl.load(row_coef_ptr + row)
        ce_coef = tl.load(ce_coef_ptr)
        for chunk in range(0, vocab, BLOCK_V):
            cols = chunk + tl.arange(0, BLOCK_V)
            valid = cols < vocab
            z = tl.load(row_ptr + cols.to(tl.int64) * stride_col, mask=valid, other=0.0)
            z = z.to(tl.float32)
            is_target = cols == label
            keys = _sort_keys(z, cols)
            in_window = (keys >= key_lo) & (keys <= key_hi) & ~is_target
            grad = (tl.exp(z - lse) - is_target.to(tl.float32)) * ce_coef
            grad += tl.where(in_window, window_coef, 0.0)
            out = grad_row_ptr + cols.to(tl.int64) * grad_stride_col
            tl.store(out, grad.to(grad_ptr.dtype.element_ty), mask=valid)
    else:
        for chunk in range(0, vocab, BLOCK_V):
            cols = chunk + tl.arange(0, BLOCK_V)
            zero = tl.zeros([BLOCK_V], dtype=grad_ptr.dtype.element_ty)
            tl.store(grad_row_ptr + cols.to(tl.int64) * grad_stride_col, zero, mask=cols < vocab)


INTERPRETED: bool = not isinstance(_prsl_stats_kernel, triton.runtime.JITFunction)
"""True when triton was imported with ``TRITON_INTERPRET=1``: the kernels then run on CPU."""


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------


def unsupported_reason(logits: torch.Tensor, k: int, start: int) -> str | None:
    """Why the fused kernel cannot compute PRSL for these logits, or None when it can."""
    if not hasattr(tl, "topk"):
        return f"triton {triton.__version__} has no tl.topk (triton >= 3.4 is needed)"
    if logits.dtype not in SUPPORTED_DTYPES:
        return f"{logits.dtype} logits are not supported (float32, bfloat16 and float16 are)"
    if start + k > MAX_DEPTH:
        return f"start + k = {start + k} exceeds the kernel's limit of {MAX_DEPTH}"
    if logits.device.type != "cuda" and not INTERPRETED:
        return (
            f"logits are on {logits.device.type}, the Triton kernel needs CUDA tensors "
            "(or TRITON_INTERPRET=1 set before triton is imported, to run its CPU interpreter)"
        )
    return None


class KernelConfig(NamedTuple):
    """Tuning knobs of the fused kernel. The loss and gradient do not depend on them (tested).

    block_v: vocabulary chunk per loop step, a power of two (None: min(4096, next power of two of
        V); raised to the buffer size when smaller).
    bulk_min: a chunk with more keys above the running threshold than this is merged with a
        bitonic ``tl.topk``, one with fewer inserts them one by one (None: ``(L*L + 4*L) // 2``,
        L = log2 of the buffer size, about where one top-k costs as much as that many
        single inserts; 0 always merges, a huge value never does).
    """

    block_v: int | None = None
    bulk_min: int | None = None

    def validate(self) -> None:
        block = self.block_v
        if block is not None and (not isinstance(block, int) or block < 1 or block & (block - 1)):
            raise InvalidInput(f"block_v must be a power of two >= 1 (or None), got {block!r}")
        if self.bulk_min is not None and (not isinstance(self.bulk_min, int) or self.bulk_min < 0):
            raise InvalidInput(f"bulk_min must be an integer >= 0 (or None), got {self.bulk_min!r}")

    def launch(self, vocab: int, depth: int) -> dict:
        """Compile-time parameters of a launch: block, buffer size, bulk threshold, warps."""
        depth_p2 = triton.next_power_of_2(depth)
        block = max(self.block_v or min(DEFAULT_BLOCK_V, triton.next_power_of_2(vocab)), depth_p2)
        log_depth = depth_p2.bit_length() - 1
        bulk_min = (log_depth**2 + 4 * log_depth) // 2 if self.bulk_min is None else self.bulk_min
        return {
            "DEPTH_P2": depth_p2,
            "BLOCK_V": block,
            "BULK_MIN": bulk_min,
            "num_warps": 8 if block >= 2048 else 4,
        }


class _RowStats(NamedTuple):
    nll: torch.Tensor  # (N,) fp32, 0 for ignored rows
    lse: torch.Tensor  # (N,) fp32, unset for ignored rows (like the keys)
    m: torch.Tensor  # (N,) fp32 window means, 0 for ignored rows
    key_lo: torch.Tensor  # (N,) int64 sort key of window rank start+k-1
    key_hi: torch.Tensor  # (N,) int64 sort key of window rank start
    window_cols: torch.Tensor  # (N, k) int64 window columns, 0 for ignored rows (in place only)


def _row_stats(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int,
    start: int,
    ignore_index: int,
    inv_n: torch.Tensor,
    write_ce_grad: bool,
    config: KernelConfig,
) -> _RowStats:
    rows, vocab = logits.shape
    f32 = dict(dtype=torch.float32, device=logits.device)
    i64 = dict(dtype=torch.int64, device=logits.device)
    stats = _RowStats(
        nll=torch.empty(rows, **f32),
        lse=torch.empty(rows, **f32),
        m=torch.empty(rows, **f32),
        key_lo=torch.empty(rows, **i64),
        key_hi=torch.empty(rows, **i64),
        # Ignored rows keep column 0: their zero R gradient is added there.
        window_cols=torch.zeros((rows, k) if write_ce_grad else (0,), **i64),
    )
    if rows:
        _prsl_stats_kernel[(rows,)](
            logits,
            logits.stride(0),
            logits.stride(1),
            labels,
            stats.nll,
            stats.lse,
            stats.m,
            stats.key_lo,
            stats.key_hi,
            stats.window_cols,
            inv_n,
            vocab,
            ignore_index,
            start,
            k,
            WRITE_CE_GRAD=write_ce_grad,
            **config.launch(vocab, start + k),
        )
    return stats


def _recentralization_slope(m: torch.Tensor, counted: torch.Tensor, n: torch.Tensor):
    """dR/dm_i = n * softmax_{j in M}(m)_i - 1 for counted rows, 0 otherwise (all 0 when n = 0)."""
    probs = torch.softmax(torch.where(counted, m, float("-inf")), dim=0)  # NaN when n = 0 ...
    return torch.where(counted, n * probs - 1.0, 0.0)  # ... and never selected then


class _FusedPRSL(torch.autograd.Function):
    """(logits (N, V), labels (N,)) -> (CE, R), each differentiable with its own upstream grad."""

    @staticmethod
    def forward(ctx, logits, labels, k, start, ignore_index, write_ce_grad, config):
        counted = labels != ignore_index
        n = counted.sum()
        inv_n = 1.0 / n.clamp(min=1).to(torch.float32)
        stats = _row_stats(
            logits,
            labels,
            k=k,
            start=start,
            ignore_index=ignore_index,
            inv_n=inv_n.reshape(1),
            write_ce_grad=write_ce_grad,
            config=config,
        )
        ce = stats.nll.sum() * inv_n
        reg = recentralization(stats.m, FlatBatch(logits, labels, counted, n))
        if write_ce_grad:
            # The logits now hold the CE gradient: make ops that saved them fail loudly.
            torch.autograd.graph.increment_version(logits)
            ctx.save_for_backward(logits, stats.m, counted, n, stats.window_cols)
        else:
            ctx.save_for_backward(
                logits, labels, stats.m, counted, n, stats.lse, stats.key_lo, stats.key_hi
            )
        ctx.k, ctx.ignore_index, ctx.config = k, ignore_index, config
        ctx.write_ce_grad = write_ce_grad
        return ce, reg

    @staticmethod
    def backward(ctx, grad_ce, grad_reg):
        if ctx.write_ce_grad:
            grad = _inplace_backward(ctx, grad_ce, grad_reg)
        else:
            grad = _recompute_backward(ctx, grad_ce, grad_reg)
        return grad, None, None, None, None, None, None


def _recompute_backward(ctx, grad_ce, grad_reg) -> torch.Tensor:
    logits, labels, m, counted, n, lse, key_lo, key_hi = ctx.saved_tensors
    row_coef = (grad_reg * _recentralization_slope(m, counted, n) / ctx.k).float()
    ce_coef = (grad_ce / n.clamp(min=1)).float().reshape(1)
    grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    rows, vocab = logits.shape
    launch = ctx.config.launch(vocab, 1)
    if rows:
        _prsl_grad_kernel[(rows,)](
            logits,
            logits.stride(0),
            logits.stride(1),
            grad,
            grad.stride(0),
            grad.stride(1),
            labels,
            lse,
            key_lo,
            key_hi,
            row_coef,
            ce_coef,
            vocab,
            ctx.ignore_index,
            BLOCK_V=launch["BLOCK_V"],
            num_warps=launch["num_warps"],
        )
    return grad


def _inplace_backward(ctx, grad_ce, grad_reg) -> torch.Tensor:
    grad, m, counted, n, window_cols = ctx.saved_tensors
    scale = float(grad_ce)  # one host sync; saves a pass over (N, V) in the usual case of 1
    if scale != 1.0:
        grad.mul_(scale)  # a Python scalar: multiplied in fp32 even for half-precision buffers
    row_coef = grad_reg * _recentralization_slope(m, counted, n) / ctx.k
    grad.scatter_add_(1, window_cols, row_coef.unsqueeze(1).expand_as(window_cols).to(grad.dtype))
    return grad


def fused_prsl(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int,
    start: int = 0,
    ignore_index: int = IGNORE_INDEX,
    check_finite: bool = False,
    inplace: bool = False,
    config: KernelConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE, R) of PRSL through the fused kernel, each differentiable with its own gradient.

    ``prsl.losses.PRSL(backend="triton")`` calls this and adds ``weight * R``; use it directly to
    set the tuning knobs.

    Args:
        inplace: when a gradient is required, overwrite the logits with their CE gradient during
            the forward instead of allocating an (N, V) gradient in the backward (see the module
            docstring). Without a gradient (``torch.no_grad``, eval) nothing is overwritten.
        config: tuning knobs (:class:`KernelConfig`); the result does not depend on them.

    Raises:
        InvalidInput: bad window or bad ``config``.
        MissingDependency: the kernel cannot run here (see :func:`unsupported_reason`).
    """
    check_window(k, start, logits.shape[-1])
    config = config or KernelConfig()
    config.validate()
    reason = unsupported_reason(logits, k, start)
    if reason is not None:
        raise MissingDependency(f"the fused Triton PRSL cannot run: {reason}")
    batch = flatten(logits, labels, ignore_index, check_finite)
    write_ce_grad = inplace and torch.is_grad_enabled() and logits.requires_grad
    return _FusedPRSL.apply(
        batch.logits, labels.reshape(-1).long(), k, start, ignore_index, write_ce_grad, config
    )
