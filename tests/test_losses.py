"""The losses against an independent float64 computation written directly from the formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prsl.losses import PRSLoss, get_loss, loss_parameters, prsl_loss, prsl_terms


def reference_prsl(logits, labels, *, k, start, weight, ignore_index=-100):
    """The definition literally: loops over rows, full sort of the non-target logits, float64."""
    z = logits.double().reshape(-1, logits.shape[-1])
    y = labels.reshape(-1)
    ce_terms, means = [], []
    for row, label in zip(z, y.tolist(), strict=True):
        if label == ignore_index:
            continue
        ce_terms.append(-torch.log_softmax(row, dim=0)[label])
        others = torch.cat([row[:label], row[label + 1 :]])
        ranked = torch.sort(others, descending=True).values
        means.append(ranked[start : start + k].mean())
    if not ce_terms:
        return torch.zeros((), dtype=torch.float64)
    ce = torch.stack(ce_terms).mean()
    m = torch.stack(means)
    r = -(m - torch.logsumexp(m, dim=0)).sum()
    return ce + weight * r


def reference_drsl(logits, labels, *, weight, ignore_index=-100):
    z = logits.double().reshape(-1, logits.shape[-1])
    y = labels.reshape(-1)
    ce_terms, spreads = [], []
    for row, label in zip(z, y.tolist(), strict=True):
        if label == ignore_index:
            continue
        ce_terms.append(-torch.log_softmax(row, dim=0)[label])
        others = torch.cat([row[:label], row[label + 1 :]])
        spreads.append(((others - others.mean()) ** 2).sum())
    return torch.stack(ce_terms).mean() + weight * torch.stack(spreads).sum()


def random_batch(seed, shape=(3, 7), vocab=40, ignored_fraction=0.3, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, vocab, generator=gen) * scale
    labels = torch.randint(0, vocab, shape, generator=gen)
    labels[torch.rand(shape, generator=gen) < ignored_fraction] = -100
    return logits, labels


@pytest.mark.parametrize("k,start", [(1, 0), (4, 0), (10, 0), (6, 3), (10, 11), (38, 1)])
@pytest.mark.parametrize("weight", [1e-5, 0.3])
def test_prsl_matches_formula(k, start, weight):
    logits, labels = random_batch(seed=k * 100 + start)
    got = prsl_loss(logits, labels, k=k, start=start, weight=weight)
    want = reference_prsl(logits, labels, k=k, start=start, weight=weight)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=2e-6)


def test_prsl_accepts_flat_and_batched_shapes_equally():
    logits, labels = random_batch(seed=1)
    batched = prsl_loss(logits, labels, k=5, weight=0.1)
    flat = prsl_loss(logits.reshape(-1, 40), labels.reshape(-1), k=5, weight=0.1)
    torch.testing.assert_close(batched, flat)


def test_prsl_parts_split_ce_and_regulariser():
    logits, labels = random_batch(seed=2)
    terms = prsl_terms(logits, labels, k=4, weight=0.5)
    counted = labels != -100
    ce = F.cross_entropy(logits[counted], labels[counted])
    torch.testing.assert_close(terms.ce, ce)
    torch.testing.assert_close(terms.loss, terms.ce + 0.5 * terms.regularizer)


def test_prsl_gradient_matches_gradcheck():
    logits, labels = random_batch(seed=3, shape=(2, 4), vocab=12)
    logits = logits.double().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda z: prsl_loss(z, labels, k=3, start=1, weight=0.7), (logits,)
    )


def test_prsl_gradient_matches_reference_autograd():
    logits, labels = random_batch(seed=4)
    ours = logits.clone().requires_grad_()
    prsl_loss(ours, labels, k=6, start=2, weight=0.2).backward()
    theirs = logits.double().requires_grad_()
    reference_prsl(theirs, labels, k=6, start=2, weight=0.2).backward()
    torch.testing.assert_close(ours.grad.double(), theirs.grad, rtol=1e-5, atol=1e-6)


def test_drsl_matches_formula_and_gradcheck():
    logits, labels = random_batch(seed=5)
    got = get_loss("drsl", weight=1e-3)(logits, labels)
    want = reference_drsl(logits, labels, weight=1e-3)
    torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=2e-6)
    small, small_labels = random_batch(seed=6, shape=(2, 3), vocab=9)
    assert torch.autograd.gradcheck(
        lambda z: get_loss("drsl", weight=0.1)(z, small_labels),
        (small.double().requires_grad_(),),
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4])
def test_label_smoothing_equals_torch(smoothing):
    logits, labels = random_batch(seed=7)
    got = get_loss("ls", smoothing=smoothing)(logits, labels)
    want = F.cross_entropy(
        logits.reshape(-1, 40), labels.reshape(-1), label_smoothing=smoothing, ignore_index=-100
    )
    torch.testing.assert_close(got, want)


def test_ce_equals_torch():
    logits, labels = random_batch(seed=8)
    got = get_loss("ce")(logits, labels)
    torch.testing.assert_close(got, F.cross_entropy(logits.reshape(-1, 40), labels.reshape(-1)))


@pytest.mark.parametrize("name", ["ce", "prsl", "drsl", "ls"])
def test_no_counted_position_gives_zero_loss_and_zero_gradient(name):
    logits = torch.randn(2, 5, 30, requires_grad=True)
    labels = torch.full((2, 5), -100)
    loss = get_loss(name)(logits, labels)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("name", ["ce", "prsl", "drsl", "ls"])
def test_no_position_at_all_gives_zero_loss(name):
    # A shifted length-1 sequence leaves (B, 0, V) logits: 0, not the NaN of 0 * log(sum of none).
    logits = torch.randn(2, 0, 30, requires_grad=True)
    loss = get_loss(name)(logits, torch.zeros(2, 0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0
    assert logits.grad.shape == logits.shape


def test_custom_ignore_index_and_ignored_rows_get_no_gradient():
    logits, labels = random_batch(seed=9)
    labels = torch.where(labels == -100, torch.tensor(7), labels)
    labels[0] = 7
    logits.requires_grad_()
    prsl_loss(logits, labels, k=3, weight=0.5, ignore_index=7).backward()
    assert torch.equal(logits.grad[0], torch.zeros_like(logits.grad[0]))
    kept = labels != 7
    want = reference_prsl(
        logits.detach(), torch.where(kept, labels, -100), k=3, start=0, weight=0.5
    )
    got = prsl_loss(logits.detach(), labels, k=3, weight=0.5, ignore_index=7)
    torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": -3}, "k must be an integer >= 1"),
        ({"start": -1}, "start must be an integer >= 0"),
        ({"k": 10}, r"start \+ k = 10 must be < vocabulary size V = 10"),
        ({"k": 4, "start": 6}, r"start \+ k = 10 must be < vocabulary size V = 10"),
    ],
)
def test_window_outside_vocabulary_is_a_clear_error(kwargs, message):
    logits, labels = random_batch(seed=10, vocab=10)
    with pytest.raises(ValueError, match=message):
        prsl_loss(logits, labels, **kwargs)


def test_largest_valid_window_works():
    logits, labels = random_batch(seed=11, vocab=10, ignored_fraction=0.0)
    got = prsl_loss(logits, labels, k=9, weight=0.1)
    torch.testing.assert_close(
        got.double(), reference_prsl(logits, labels, k=9, start=0, weight=0.1), rtol=2e-6, atol=1e-6
    )


def test_construction_rejects_bad_parameters_before_training():
    with pytest.raises(ValueError, match="k must be"):
        PRSLoss(k=0)
    with pytest.raises(ValueError, match="unknown loss 'focal'; choose one of"):
        get_loss("focal")
    with pytest.raises(
        ValueError, match=r"loss 'prsl' does not take 'smoothing'; its parameters are: k, start"
    ):
        get_loss("prsl", smoothing=0.1)
    assert loss_parameters("prsl")["k"] == 10


def test_shape_errors_name_the_fix():
    with pytest.raises(ValueError, match="labels shape"):
        prsl_loss(torch.randn(4, 30), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, V\) or \(B, T, V\)"):
        prsl_loss(torch.randn(2, 2, 2, 30), torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        prsl_loss(torch.randn(4, 30), torch.zeros(4))


def test_non_finite_logits_checked_only_on_request():
    logits, labels = random_batch(seed=12, ignored_fraction=0.0)
    logits[0, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        prsl_loss(logits, labels, check_finite=True)
    assert torch.isnan(prsl_loss(logits, labels))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_accumulates_in_fp32(dtype):
    logits, labels = random_batch(seed=13, shape=(4, 16), vocab=300)
    low = logits.to(dtype)
    got = prsl_loss(low, labels, k=10, weight=0.01)
    assert got.dtype == torch.float32
    # Same values as fp32 on the rounded logits: only the input is low precision.
    torch.testing.assert_close(got, prsl_loss(low.float(), labels, k=10, weight=0.01))
    # And close to full-precision logits within the input's rounding error.
    torch.testing.assert_close(got, prsl_loss(logits, labels, k=10, weight=0.01), rtol=2e-2, atol=0)
    grad_input = low.clone().requires_grad_()
    prsl_loss(grad_input, labels, k=10, weight=0.01).backward()
    assert grad_input.grad.dtype == dtype and torch.isfinite(grad_input.grad.float()).all()


def test_regulariser_minimum_is_n_log_n_when_all_centres_are_equal():
    vocab, n = 20, 6
    logits = torch.zeros(n, vocab)
    labels = torch.arange(n)
    logits[torch.arange(n), labels] = 5.0  # every row: target 5, all competitors 0
    terms = prsl_terms(logits, labels, k=4, weight=1.0)
    assert terms.regularizer.item() == pytest.approx(n * math.log(n), rel=1e-6)
