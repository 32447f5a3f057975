"""Attack strength where the reference implementations were stronger: PGD-L2's random start
(radius ε·U), APGD's restarts, and Square's memory at a 5,000-query budget."""

from __future__ import annotations

import gc
import math
import tracemalloc
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prsl.attacks import apgd, get_attack, pgd, square
from prsl.attacks.constraint import BallConstraint, per_example_norm
from test_attacks_properties import MODEL, batch, ce_loss

FEW = settings(max_examples=25, deadline=None)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def flat_loss(x: torch.Tensor) -> torch.Tensor:
    """Depends on the images but has a zero gradient: PGD's steps do not move, so a one-step
    PGD returns its random start."""
    return (0 * x).flatten(1).sum(dim=1)


def in_l2_ball(adv, images, eps) -> bool:
    return bool((per_example_norm(adv - images) <= eps * (1 + 1e-5) + 1e-6).all())


# ------------------------------------------------------------------ PGD-L2's random start


@FEW
@given(
    seed=st.integers(0, 2**16),
    size=st.integers(1, 4),
    side=st.integers(1, 8),
    eps=st.floats(0.0, 3.0),
)
def test_l2_start_of_radius_eps_u_is_inside_the_ball_and_the_image_range(seed, size, side, eps):
    images, _ = batch(seed, size, side)
    start = BallConstraint(images, eps, "l2").random_start(seeded(seed), l2_radius="eps_u")
    assert start.min() >= 0 and start.max() <= 1
    assert in_l2_ball(start, images, eps)


def test_l2_start_radius_is_eps_times_uniform_not_uniform_in_the_ball():
    # d = 192 and grey images with eps = 0.4: no pixel moves 0.5, so clipping never shortens δ
    images = torch.full((4000, 3, 8, 8), 0.5)
    eps = 0.4
    constraint = BallConstraint(images, eps, "l2")
    radius = per_example_norm(constraint.random_start(seeded(0), l2_radius="eps_u") - images) / eps
    assert abs(radius.mean().item() - 0.5) < 0.02  # E[U] = 1/2
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):  # and every quantile of U
        assert abs(radius.quantile(q).item() - q) < 0.03
    in_ball = per_example_norm(constraint.random_start(seeded(0), l2_radius="ball") - images) / eps
    assert in_ball.mean() > 0.99  # E[U^(1/d)] = d / (d + 1): nearly on the surface


def test_pgd_l2_starts_at_radius_eps_u():
    images = torch.full((2000, 3, 8, 8), 0.5)
    eps = 0.4
    start = pgd(images, flat_loss, eps=eps, steps=1, norm="l2", generator=seeded(3))
    drawn = BallConstraint(images, eps, "l2").random_start(seeded(3), l2_radius="eps_u")
    assert torch.allclose(start, drawn, atol=1e-6)
    assert abs((per_example_norm(start - images) / eps).mean().item() - 0.5) < 0.03


def test_l2_starts_are_reproducible_and_share_their_direction():
    images, _ = batch(1, 3, 6)
    constraint = BallConstraint(images, 0.3, "l2")
    first = constraint.random_start(seeded(5), l2_radius="eps_u")
    assert torch.equal(first, constraint.random_start(seeded(5), l2_radius="eps_u"))
    assert not torch.equal(first, constraint.random_start(seeded(6), l2_radius="eps_u"))
    # the two radii scale the same draw: away from the image range's edges, same direction
    grey = torch.full((3, 3, 6, 6), 0.5)
    grey_constraint = BallConstraint(grey, 0.3, "l2")
    short = (grey_constraint.random_start(seeded(5), l2_radius="eps_u") - grey).flatten(1)
    long = (grey_constraint.random_start(seeded(5), l2_radius="ball") - grey).flatten(1)
    cosine = nn.functional.cosine_similarity(short, long, dim=1)
    assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-5)


def test_unknown_l2_radius_is_rejected():
    images, _ = batch(1, 1, 4)
    with pytest.raises(ValueError, match="l2_radius must be 'ball' or 'eps_u'"):
        BallConstraint(images, 0.3, "l2").random_start(None, l2_radius="sphere")


@FEW
@given(seed=st.integers(0, 2**16), eps=st.floats(0.0, 0.3))
def test_pgd_linf_start_is_unchanged_uniform_in_the_cube(seed, eps):
    images, _ = batch(seed, 3, 5)
    start = pgd(images, flat_loss, eps=eps, steps=1, generator=seeded(seed))
    unit = torch.rand(images.shape, generator=seeded(seed))
    assert torch.equal(start, (images + (2 * unit - 1) * eps).clamp(0, 1))


# ------------------------------------------------------------------------- APGD restarts


def test_apgd_restarts_default_to_one_and_are_recorded():
    attack = get_attack("apgd", eps=0.1, steps=7)
    assert attack.restarts == 1 and attack.iterations == 7
    with_restarts = get_attack("apgd", eps=0.1, steps=7, restarts=3)
    assert with_restarts.iterations == 21
    assert with_restarts.recorded()["restarts"] == 3
    with pytest.raises(ValueError, match="restarts"):
        get_attack("apgd", restarts=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_with_one_restart_is_the_plain_run(norm):
    images, labels = batch(2, 4, 6)
    loss_fn = ce_loss(MODEL, labels)
    options = {"eps": 0.1, "steps": 12, "norm": norm, "record_every_step": True}
    plain = apgd(images, loss_fn, generator=seeded(2), **options)
    one = apgd(images, loss_fn, restarts=1, generator=seeded(2), **options)
    assert torch.equal(plain.final, one.final)
    assert all(torch.equal(a, b) for a, b in zip(plain.steps, one.steps, strict=True))


@pytest.mark.parametrize("norm", ["linf", "l2"])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), restarts=st.integers(2, 4))
def test_apgd_restarts_keep_the_per_example_best(norm, seed, restarts):
    # restart 1 draws the same start as restarts=1 (same generator): per example the result is
    # that run's exactly, or one whose loss is higher
    images, labels = batch(seed, 4, 6)
    loss_fn = ce_loss(MODEL, labels)
    eps = 0.05 if norm == "linf" else 0.5
    one = apgd(images, loss_fn, eps=eps, steps=5, norm=norm, generator=seeded(seed))
    more = apgd(
        images, loss_fn, eps=eps, steps=5, norm=norm, restarts=restarts, generator=seeded(seed)
    )
    with torch.no_grad():
        loss_one, loss_more = loss_fn(one), loss_fn(more)
    same = (one == more).flatten(1).all(dim=1)
    assert (same | (loss_more > loss_one)).all()
    assert (loss_more >= loss_one).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@FEW
@given(
    seed=st.integers(0, 2**16),
    eps=st.floats(0.0, 0.3),
    quantize=st.booleans(),
)
def test_apgd_restarts_stay_in_the_ball_and_the_image_range(norm, seed, eps, quantize):
    images, labels = batch(seed, 3, 5, on_grid=quantize)
    adv = apgd(
        images,
        ce_loss(MODEL, labels),
        eps=eps,
        steps=3,
        norm=norm,
        restarts=3,
        quantize="uint8" if quantize else None,
        generator=seeded(seed),
    )
    assert adv.min() >= 0 and adv.max() <= 1
    if norm == "l2":
        assert in_l2_ball(adv, images, eps)
    else:
        assert (adv - images).abs().max() <= eps + 1e-6
    if quantize:
        levels = adv * 255
        assert (levels - levels.round()).abs().max() < 1e-3


def test_apgd_restarts_record_the_steps_of_the_restart_kept():
    images, labels = batch(9, 4, 6)
    loss_fn = ce_loss(MODEL, labels)
    final, steps = apgd(
        images, loss_fn, eps=0.1, steps=6, restarts=3, generator=seeded(9), record_every_step=True
    )
    assert len(steps) == 6
    with torch.no_grad():
        recorded = torch.stack([loss_fn(x) for x in steps]).max(dim=0).values
        assert (loss_fn(final) >= recorded - 1e-6).all()  # the best iterate of that restart
    # ... and it is one of them, per example: steps of another restart would not hold it
    for i in range(len(images)):
        assert any(torch.equal(final[i], step[i]) for step in steps), i
    for step in steps:
        assert (step - images).abs().max() <= 0.1 + 1e-6


def test_apgd_restarts_differ_from_one_run_on_a_rugged_loss():
    # many local maxima: some example must gain from another start (else restarts do nothing)
    images, _ = batch(4, 8, 6)
    direction = torch.randn(3 * 6 * 6, generator=seeded(4))

    def rugged(x):
        return torch.sin(3 * x.flatten(1) @ direction)

    one = apgd(images, rugged, eps=0.3, steps=4, generator=seeded(4))
    more = apgd(images, rugged, eps=0.3, steps=4, restarts=4, generator=seeded(4))
    assert (rugged(more) > rugged(one)).any()
    assert (rugged(more) >= rugged(one)).all()


# --------------------------------------------------------------- Square at 5,000 queries


def live_tensors() -> tuple[int, int]:
    """How many tensors the garbage collector sees alive, and their bytes."""
    with warnings.catch_warnings():  # deprecated torch objects warn when inspected
        warnings.simplefilter("ignore")
        tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    return len(tensors), sum(t.nelement() * t.element_size() for t in tensors)


def test_square_with_5000_queries_keeps_constant_state():
    # the loss is queried once per query; at query 500 and at the last one the live tensors
    # (the attack's state, plus this test's) and the Python heap must be the same size
    images, labels = batch(11, 2, 8)
    model_loss = ce_loss(MODEL, labels)
    seen: dict[int, tuple[int, int, int]] = {}
    calls = 0

    def loss_fn(x):
        nonlocal calls
        calls += 1
        if calls in (500, 5000):
            gc.collect()
            count, size = live_tensors()
            seen[calls] = (count, size, tracemalloc.get_traced_memory()[0])
        return model_loss(x)

    tracemalloc.start()
    try:
        adv = square(images, loss_fn, eps=0.05, queries=5000, generator=seeded(11))
    finally:
        tracemalloc.stop()
    assert calls == 5000
    assert (adv - images).abs().max() <= 0.05 + 1e-6
    (count_early, bytes_early, heap_early), (count_late, bytes_late, heap_late) = (
        seen[500],
        seen[5000],
    )
    assert count_late <= count_early and bytes_late <= bytes_early
    # 4,500 queries in between: even 8 bytes kept per query would be 36 kB
    assert heap_late - heap_early < 16_000, (heap_early, heap_late)
    with torch.no_grad():
        assert math.isfinite(float(model_loss(adv).sum()))
