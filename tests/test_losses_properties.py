"""Property tests: the invariants of PRSL hold on any batch."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prsl.losses import get_loss, prsl_loss, prsl_terms


@st.composite
def batches(draw):
    rows = draw(st.integers(1, 12))
    vocab = draw(st.integers(3, 50))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    scale = draw(st.floats(0.1, 20.0))
    logits = torch.randn(rows, vocab, generator=gen) * scale
    labels = torch.randint(0, vocab, (rows,), generator=gen)
    ignored = torch.rand(rows, generator=gen) < draw(st.floats(0.0, 0.9))
    labels[ignored] = -100
    start = draw(st.integers(0, vocab - 2))
    k = draw(st.integers(1, vocab - 1 - start))
    return logits, labels, k, start


@settings(max_examples=150, deadline=None)
@given(batches(), st.floats(0.0, 10.0))
def test_prsl_is_at_least_ce_plus_b_n_log_n(batch, weight):
    logits, labels, k, start = batch
    terms = prsl_terms(logits, labels, k=k, start=start, weight=weight)
    n = int((labels != -100).sum())
    bound = n * math.log(n) if n else 0.0
    assert terms.regularizer.item() >= bound - 1e-4 * max(1.0, bound)
    assert terms.loss.item() >= terms.ce.item() + weight * bound - 1e-4 * (1 + weight * bound)


@settings(max_examples=100, deadline=None)
@given(batches())
def test_zero_weight_is_exactly_ce(batch):
    logits, labels, k, start = batch
    got = prsl_loss(logits, labels, k=k, start=start, weight=0.0)
    assert torch.equal(got, get_loss("ce")(logits, labels))


@settings(max_examples=100, deadline=None)
@given(batches(), st.floats(-50.0, 50.0))
def test_regulariser_invariant_to_a_constant_shift_of_the_batch(batch, shift):
    logits, labels, k, start = batch
    before = prsl_terms(logits, labels, k=k, start=start).regularizer
    after = prsl_terms(logits + shift, labels, k=k, start=start).regularizer
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-3)


@settings(max_examples=100, deadline=None)
@given(batches())
def test_ignored_positions_do_not_change_the_loss(batch):
    logits, labels, k, start = batch
    counted = labels != -100
    full = prsl_loss(logits, labels, k=k, start=start, weight=0.5)
    if counted.any():
        only = prsl_loss(logits[counted], labels[counted], k=k, start=start, weight=0.5)
        assert torch.allclose(full, only, rtol=1e-5, atol=1e-5)
    else:
        assert full.item() == 0.0
    assert torch.isfinite(full)
