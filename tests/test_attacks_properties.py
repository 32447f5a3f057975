"""Property tests: every attack's invariants on a small fixed random model, any batch, any ε."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from prsl.attacks import apgd, bim, cw_l2, fgsm, mifgsm, pgd, square
from prsl.attacks.apgd import should_halve

FEW = settings(max_examples=25, deadline=None)
CLASSES = 5


def fixed_model(seed: int = 0) -> nn.Module:
    """A tiny conv net with weights drawn from ``seed`` (no global RNG involved)."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, CLASSES),
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen))
    return model


MODEL = fixed_model()


def ce_loss(model: nn.Module, labels: torch.Tensor):
    return lambda x: nn.functional.cross_entropy(model(x), labels, reduction="none")


def batch(seed: int, size: int, side: int, on_grid: bool = False):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(size, 3, side, side, generator=gen)
    if on_grid:
        images = (images * 255).round() / 255
    labels = torch.randint(0, CLASSES, (size,), generator=gen)
    return images, labels


def run(name: str, images, loss_fn, eps: float, seed: int = 0, **options):
    """Each attack with a small budget; L2 attacks get ``eps`` as their L2 radius."""
    gen = torch.Generator().manual_seed(seed)
    alpha = max(eps / 4, 1e-3)
    calls = {
        "fgsm": lambda: fgsm(images, loss_fn, eps=eps, **options),
        "bim": lambda: bim(images, loss_fn, eps=eps, alpha=alpha, steps=3, **options),
        "pgd-linf": lambda: pgd(
            images, loss_fn, eps=eps, alpha=alpha, steps=3, generator=gen, **options
        ),
        "pgd-l2": lambda: pgd(
            images, loss_fn, eps=eps, alpha=alpha, steps=3, norm="l2", generator=gen, **options
        ),
        "pgd-restarts": lambda: pgd(
            images, loss_fn, eps=eps, alpha=alpha, steps=2, restarts=2, generator=gen, **options
        ),
        "mifgsm": lambda: mifgsm(images, loss_fn, eps=eps, alpha=alpha, steps=3, **options),
        "apgd-linf": lambda: apgd(images, loss_fn, eps=eps, steps=4, generator=gen, **options),
        "apgd-l2": lambda: apgd(
            images, loss_fn, eps=eps, steps=4, norm="l2", generator=gen, **options
        ),
        "cw": lambda: cw_l2(images, loss_fn, steps=4, search_steps=1, eps=eps, lr=0.05, **options),
        "square": lambda: square(images, loss_fn, eps=eps, queries=15, generator=gen, **options),
    }
    return calls[name]()


ALL = ["fgsm", "bim", "pgd-linf", "pgd-l2", "pgd-restarts", "mifgsm", "apgd-linf", "apgd-l2"]
ALL += ["cw", "square"]
GRADIENT = [name for name in ALL if name != "square"]
RANDOM = ["pgd-linf", "pgd-l2", "pgd-restarts", "apgd-linf", "apgd-l2", "square"]
L2 = {"pgd-l2", "apgd-l2", "cw"}


def assert_valid(name: str, adv, images, eps: float, quantized: bool) -> None:
    assert adv.shape == images.shape and adv.dtype == images.dtype
    assert not adv.requires_grad
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - images).flatten(1)
    if name in L2:
        assert (delta.norm(dim=1) <= eps * (1 + 1e-5) + 1e-6).all()
    else:
        assert delta.abs().max() <= eps + 1e-6
    if quantized:
        levels = adv * 255
        assert (levels - levels.round()).abs().max() < 1e-3


@pytest.mark.parametrize("name", ALL)
@FEW
@given(
    seed=st.integers(0, 2**16),
    size=st.integers(1, 3),
    side=st.integers(3, 8),
    eps=st.floats(0.0, 0.3),
    quantize=st.booleans(),
)
def test_output_is_inside_the_ball_and_the_image_range(name, seed, size, side, eps, quantize):
    images, labels = batch(seed, size, side, on_grid=quantize)
    eps = eps * 5 if name in L2 else eps
    options = {"quantize": "uint8"} if quantize else {}
    adv = run(name, images, ce_loss(MODEL, labels), eps, seed, **options)
    assert_valid(name, adv, images, eps, quantize)


@FEW
@given(seed=st.integers(0, 2**16), eps=st.floats(1e-4, 0.3), quantize=st.booleans())
def test_bim_with_one_step_of_size_eps_is_fgsm(seed, eps, quantize):
    images, labels = batch(seed, 2, 6, on_grid=quantize)
    loss_fn = ce_loss(MODEL, labels)
    options = {"quantize": "uint8"} if quantize else {}
    expected = fgsm(images, loss_fn, eps=eps, **options)
    actual = bim(images, loss_fn, eps=eps, alpha=eps, steps=1, **options)
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("name", GRADIENT)
@FEW
@given(seed=st.integers(0, 2**16), eps=st.floats(1e-3, 0.02))
def test_untargeted_attacks_do_not_decrease_the_loss_on_average(name, seed, eps):
    images, labels = batch(seed, 4, 6, on_grid=False)
    loss_fn = ce_loss(MODEL, labels)
    adv = run(name, images, loss_fn, eps * 5 if name in L2 else eps, seed)
    with torch.no_grad():
        assert loss_fn(adv).mean() >= loss_fn(images).mean() - 1e-6


@pytest.mark.parametrize("name", GRADIENT)
@FEW
@given(seed=st.integers(0, 2**16), eps=st.floats(1e-3, 0.02))
def test_targeted_attacks_do_not_increase_the_target_loss_on_average(name, seed, eps):
    images, _ = batch(seed, 4, 6, on_grid=False)
    targets = torch.arange(4) % CLASSES
    target_ce = ce_loss(MODEL, targets)
    adv = run(name, images, lambda x: -target_ce(x), eps * 5 if name in L2 else eps, seed)
    with torch.no_grad():
        assert target_ce(adv).mean() <= target_ce(images).mean() + 1e-6


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@FEW
@given(seed=st.integers(0, 2**16), eps=st.floats(0.0, 0.3), queries=st.integers(2, 30))
def test_square_never_ends_below_its_stripe_start(seed, eps, queries):
    # the stripes are drawn first, so with the same seed queries=1 returns exactly the start
    images, labels = batch(seed, 3, 6, on_grid=False)
    loss_fn = ce_loss(MODEL, labels)
    start = square(images, loss_fn, eps=eps, queries=1, generator=seeded(seed))
    final = square(images, loss_fn, eps=eps, queries=queries, generator=seeded(seed))
    with torch.no_grad():
        assert (loss_fn(final) >= loss_fn(start)).all()


def test_square_starts_from_vertical_stripes_of_height_h():
    images = torch.full((2, 3, 5, 7), 0.5)
    eps = 0.1
    start = square(images, ce_loss(MODEL, torch.tensor([0, 1])), eps=eps, queries=1)
    delta = start - images
    assert torch.allclose(delta.abs(), torch.full_like(delta, eps))
    assert torch.equal(delta, delta[:, :, :1, :].expand_as(delta))  # constant down each column


@FEW
@given(seed=st.integers(0, 2**16))
def test_pgd_restarts_keep_the_per_example_best(seed):
    # restart 1 of restarts=3 is the restarts=1 run (same generator), so no example gets worse
    images, labels = batch(seed, 4, 6, on_grid=False)
    loss_fn = ce_loss(MODEL, labels)
    options = {"eps": 0.1, "alpha": 0.03, "steps": 2}
    one = pgd(images, loss_fn, restarts=1, generator=seeded(seed), **options)
    three = pgd(images, loss_fn, restarts=3, generator=seeded(seed), **options)
    with torch.no_grad():
        assert (loss_fn(three) >= loss_fn(one)).all()


def rugged_loss(seed: int):
    """sin of a random projection: many local maxima, so the last iterate is rarely the best."""
    direction = torch.randn(3 * 6 * 6, generator=seeded(seed))
    return lambda x: torch.sin(3 * x.flatten(1) @ direction)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_apgd_returns_the_best_iterate_per_example(norm, seed):
    # 100 steps: the last checkpoint is 99, so step 100 is free to lose ground
    images, _ = batch(seed, 4, 6, on_grid=False)
    loss_fn = rugged_loss(seed)
    final, steps = apgd(
        images,
        loss_fn,
        eps=0.3,
        steps=100,
        norm=norm,
        generator=seeded(seed),
        record_every_step=True,
    )
    recorded = torch.stack([loss_fn(x) for x in steps]).max(dim=0).values
    assert (loss_fn(final) >= recorded - 1e-6).all()


@FEW
@given(seed=st.integers(0, 2**16), eps=st.floats(1e-3, 0.3))
def test_mifgsm_without_momentum_is_bim(seed, eps):
    images, labels = batch(seed, 2, 6, on_grid=False)
    loss_fn = ce_loss(MODEL, labels)
    options = {"eps": eps, "alpha": eps / 3, "steps": 3}
    assert torch.equal(
        mifgsm(images, loss_fn, decay=0.0, **options), bim(images, loss_fn, **options)
    )


def test_mifgsm_momentum_carries_past_the_optimum():
    # loss -(x - 0.625)² from x = 0.25 in steps of 0.125: BIM stops at 0.625 (zero gradient);
    # MI-FGSM's accumulated direction (1, 2, 3, 3, 3 - 1) keeps it going to 0.875
    images = torch.full((1, 3, 1, 1), 0.25)

    def loss_fn(x):
        return -((x - 0.625) ** 2).flatten(1).sum(dim=1)

    options = {"eps": 0.75, "alpha": 0.125, "steps": 5}
    assert torch.equal(bim(images, loss_fn, **options), torch.full_like(images, 0.625))
    assert torch.equal(mifgsm(images, loss_fn, **options), torch.full_like(images, 0.875))


@pytest.mark.parametrize("name", RANDOM)
def test_same_generator_seed_gives_identical_output(name):
    images, labels = batch(1, 3, 6, on_grid=False)
    loss_fn = ce_loss(MODEL, labels)
    first = run(name, images, loss_fn, 0.1, seed=7)
    again = run(name, images, loss_fn, 0.1, seed=7)
    other = run(name, images, loss_fn, 0.1, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", ALL)
def test_attacks_leave_parameter_gradients_and_train_mode_alone(name):
    model = fixed_model(3).train()
    images, labels = batch(2, 2, 6, on_grid=False)
    run(name, images, ce_loss(model, labels), 0.1)
    assert all(param.grad is None for param in model.parameters())
    assert all(param.requires_grad for param in model.parameters())
    assert model.training


def test_quantized_linf_attack_uses_the_whole_grid_budget_and_never_more():
    images, labels = batch(4, 2, 6, on_grid=True)
    images = images.clamp(26 / 255, 229 / 255)  # on the grid, away from 0 and 1
    loss_fn = ce_loss(MODEL, labels)
    adv = fgsm(images, loss_fn, eps=8.7 / 255, quantize="uint8")
    assert torch.allclose((adv - images).abs() * 255, torch.full_like(adv, 8.0), atol=1e-3)
    # below one grey level no other 8-bit image lies in the ball: rounding must not escape it
    assert torch.equal(fgsm(images, loss_fn, eps=0.6 / 255, quantize="uint8"), images)


def test_quantized_l2_attack_stays_in_the_ball():
    images, labels = batch(5, 3, 8, on_grid=True)
    loss_fn = ce_loss(MODEL, labels)
    for eps in (0.5 / 255, 3 / 255, 0.2):
        adv = pgd(images, loss_fn, eps=eps, alpha=eps, steps=3, norm="l2", quantize="uint8")
        assert_valid("pgd-l2", adv, images, eps, quantized=True)


@pytest.mark.parametrize("name", ["bim", "pgd-linf", "mifgsm", "apgd-linf", "cw"])
def test_record_every_step_returns_each_iterate_inside_the_ball(name):
    images, labels = batch(6, 2, 6, on_grid=True)
    result = run(name, images, ce_loss(MODEL, labels), 0.1, record_every_step=True)
    expected_steps = {"bim": 3, "pgd-linf": 3, "mifgsm": 3, "apgd-linf": 4, "cw": 4}[name]
    assert len(result.steps) == expected_steps
    for step in [result.final, *result.steps]:
        assert_valid(name, step, images, 0.1, quantized=False)
    if name in ("bim", "pgd-linf", "mifgsm"):  # these return their last iterate
        assert torch.equal(result.final, result.steps[-1])
    final, steps = result  # also unpacks as a tuple
    assert final is result.final and steps is result.steps


def test_fgsm_record_every_step_has_the_single_step():
    images, labels = batch(6, 2, 6, on_grid=False)
    final, steps = fgsm(images, ce_loss(MODEL, labels), eps=0.05, record_every_step=True)
    assert len(steps) == 1 and torch.equal(steps[0], final)


def test_cw_with_an_always_true_success_keeps_the_least_distorted_iterate():
    # the first iterate is the clean image (up to tanh round-off): nothing is closer
    images, labels = batch(8, 3, 6, on_grid=False)
    adv = cw_l2(
        images,
        ce_loss(MODEL, labels),
        steps=5,
        lr=0.1,
        success_fn=lambda x: torch.ones(x.shape[0], dtype=torch.bool),
    )
    assert (adv - images).flatten(1).norm(dim=1).max() < 1e-4


def test_cw_falls_back_to_the_highest_loss_when_never_successful():
    images, labels = batch(8, 3, 6, on_grid=False)
    loss_fn = ce_loss(MODEL, labels)

    def never(x):
        return torch.zeros(x.shape[0], dtype=torch.bool)

    once = cw_l2(images, loss_fn, steps=5, lr=0.1, eps=1.0, search_steps=1, success_fn=never)
    plain = cw_l2(images, loss_fn, steps=5, lr=0.1, eps=1.0, search_steps=1)
    assert torch.equal(once, plain)
    searched = cw_l2(images, loss_fn, steps=5, lr=0.1, eps=1.0, search_steps=3, success_fn=never)
    with torch.no_grad():
        assert (loss_fn(plain) >= loss_fn(images) - 1e-4).all()
        # c grows x10 each failed round, and the best of every round is kept
        assert (loss_fn(searched) >= loss_fn(plain) - 1e-6).all()


def test_jpeg_option_runs_the_round_trip_and_stays_in_the_ball():
    images, labels = batch(9, 2, 16, on_grid=True)
    loss_fn = ce_loss(MODEL, labels)
    plain = bim(images, loss_fn, eps=0.05, alpha=0.02, steps=2)
    jpeg = bim(images, loss_fn, eps=0.05, alpha=0.02, steps=2, jpeg_quality=50)
    assert_valid("bim", jpeg, images, 0.05, quantized=False)
    assert not torch.equal(plain, jpeg)
    # the projection after decoding leaves the grid unless quantize asks to stay on it
    both = bim(images, loss_fn, eps=0.05, alpha=0.02, steps=2, jpeg_quality=50, quantize="uint8")
    assert_valid("bim", both, images, 0.05, quantized=True)


def test_jpeg_roundtrip_is_close_on_a_smooth_image_and_on_the_grid():
    from prsl.attacks import jpeg_roundtrip

    ramp = torch.linspace(0.2, 0.8, 16)
    image = (ramp[None, None, :, None] * ramp[None, None, None, :]).expand(1, 3, 16, 16)
    image = (image * 255).round() / 255
    decoded = jpeg_roundtrip(image, 95)
    assert decoded.shape == image.shape
    assert (decoded - image).abs().max() <= 3 / 255
    assert ((decoded * 255) - (decoded * 255).round()).abs().max() < 1e-3


def test_apgd_step_size_checkpoints_follow_the_paper():
    # p: 0, .22, .41, .57, .70, .80, .87, .93, .99 (then 1.05 > 1), times N = 100
    from prsl.attacks import apgd_checkpoints

    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(1) == [1]
    assert all(1 <= w <= n for n in range(1, 30) for w in apgd_checkpoints(n))


def test_square_fraction_halves_at_the_paper_iterations():
    from prsl.attacks import square_fraction

    assert square_fraction(0, 10_000, 0.8) == 0.8
    assert square_fraction(10, 10_000, 0.8) == 0.8
    assert square_fraction(11, 10_000, 0.8) == 0.4
    assert square_fraction(60, 1000, 0.8) == 0.8 / 2**4  # 6000 of 10 000 rescaled: 500 < . <= 1000
    assert math.isclose(square_fraction(9999, 10_000, 0.8), 0.8 / 2**9)


def test_apgd_halves_on_too_few_rises_or_on_a_stall_after_a_checkpoint_that_kept_eta():
    # Five examples: [few rises, stalled after keeping η, stalled after halving, improved after
    # keeping η, improved with few rises]; 10 steps since the last checkpoint, ρ = 0.75.
    rises = torch.tensor([7.0, 8.0, 8.0, 9.0, 2.0])
    halved_last = torch.tensor([False, False, True, False, False])
    best_then = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])
    best_now = torch.tensor([2.0, 1.0, 1.0, 1.5, 3.0])
    halve = should_halve(rises, 10, halved_last, best_now, best_then)
    assert halve.tolist() == [True, True, False, False, True]
