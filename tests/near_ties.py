"""Greedy decisions that another CPU could take the other way, and how to leave them out.

Two computations of the same logits (teacher-forced vs token-by-token generation, a batch vs one
row, AVX-512 vs AVX2 kernels, one thread vs two) agree only to float rounding: about 1e-6 on the
suite's tiny models. Where two candidate tokens are closer than that, greedy decoding may pick
either, so "the two computations give the same text" holds only where every decision on the way
is clear. :func:`decision_margins` measures that per row; tests compare outputs on the rows whose
margin exceeds :data:`MARGIN` and assert that such rows are most of them (a test that excluded
everything would assert nothing).

``make test-portability`` reruns the sensitive tests under other kernels and thread counts; the
differences it has shown between two logits computations stay below 1e-4, so a margin of 1e-3
leaves a factor of ten or more.
"""

from __future__ import annotations

import torch

from prsl.core import IGNORE_INDEX

MARGIN = 1e-3
"""Logit gap below which a greedy choice counts as a near tie (see the module docstring)."""

MOST = 0.85
"""At least this share of the rows must be decisive, or the comparison says too little."""


@torch.no_grad()
def decision_margins(
    adapter, pixels: torch.Tensor, texts: list[str], prompts=None, *, with_end: bool = True
) -> torch.Tensor:
    """Per row, the smallest logit gap among the greedy decisions that fix whether decoding
    reproduces ``texts``: at each of the text's positions, up to and including the first one
    where the text's token is not the most likely, |logit(text token) - best other logit|.
    ``with_end=False`` leaves the end token out (an output cut at ``max_new_tokens``)."""
    logits, labels = adapter.logits_and_labels(pixels, texts, prompts)
    logits = logits.float()
    counted = labels != IGNORE_INDEX
    if not with_end:  # the last counted position of each row is the end token
        counted = counted & (counted.long().cumsum(dim=1) < counted.sum(dim=1, keepdim=True))
    index = labels.clamp(min=0).unsqueeze(-1)
    own = logits.gather(-1, index).squeeze(-1)
    others = logits.scatter(-1, index, float("-inf")).amax(dim=-1)
    missed = (own < others) & counted
    after_first_miss = (missed.long().cumsum(dim=1) - missed.long()) > 0
    deciding = counted & ~after_first_miss
    return (own - others).abs().masked_fill(~deciding, float("inf")).amin(dim=1)


def decisive(
    adapter, pixels: torch.Tensor, texts: list[str], prompts=None, *, with_end: bool = True
) -> list[bool]:
    """Whether each row's greedy decisions are all clearer than :data:`MARGIN`."""
    margins = decision_margins(adapter, pixels, texts, prompts, with_end=with_end)
    return (margins > MARGIN).tolist()


def assert_mostly_decisive(mask: list[bool]) -> None:
    assert sum(mask) >= MOST * len(mask), f"only {sum(mask)} of {len(mask)} rows decisive"


def agree_where_decisive(got: list, expected: list, mask: list[bool]) -> None:
    """``got == expected`` on every decisive row, and most rows decisive."""
    assert_mostly_decisive(mask)
    kept = [(i, g, e) for i, (g, e, m) in enumerate(zip(got, expected, mask, strict=True)) if m]
    assert [(i, g) for i, g, _ in kept] == [(i, e) for i, _, e in kept]
