"""End to end on a classifier trained in the test: the attacks really find adversarial examples.

Four classes of 8x8 RGB Gaussian blobs: each class is a ±0.05 checkerboard-like pattern around
grey plus pixel noise of std 0.15. Clean accuracy is ~100 %, but the class means are only 0.1
apart per pixel, so an Linf perturbation of ~0.05 summed over 192 pixels can cross the margin:
a non-robust model, as adversarial training literature predicts for such data.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blob_classifier import CLASSES, accuracy, trained_classifier
from prsl.attacks import apgd, cw_l2, get_attack, pgd, square

EPS = 12 / 255


@pytest.fixture(scope="module")
def trained():
    return trained_classifier()


def per_example_ce(model: nn.Module, labels: torch.Tensor):
    return lambda x: nn.functional.cross_entropy(model(x), labels, reduction="none")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_classifier_is_accurate_on_clean_images(trained):
    model, images, labels = trained
    assert accuracy(model, images, labels) >= 0.95


def test_pgd_10_drives_accuracy_far_below_clean(trained):
    model, images, labels = trained
    adv = pgd(
        images, per_example_ce(model, labels), eps=EPS, alpha=EPS / 4, steps=10, generator=seeded(0)
    )
    assert (adv - images).abs().max() <= EPS + 1e-6
    assert accuracy(model, adv, labels) <= 0.4 * accuracy(model, images, labels)


@pytest.mark.parametrize("alpha", [EPS / 4, EPS / 40, 2 * EPS], ids=["usual", "small", "large"])
def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_budget(trained, alpha):
    # APGD has no step size to tune; PGD is compared at its usual, a too small, a too large one
    model, images, labels = trained
    loss_fn = per_example_ce(model, labels)
    with_pgd = pgd(images, loss_fn, eps=EPS, alpha=alpha, steps=10, generator=seeded(0))
    with_apgd = apgd(images, loss_fn, eps=EPS, steps=10, generator=seeded(0))
    with torch.no_grad():
        assert loss_fn(with_apgd).mean() >= loss_fn(with_pgd).mean()
    assert accuracy(model, with_apgd, labels) <= accuracy(model, with_pgd, labels)


def test_gradient_free_square_attack_also_lowers_accuracy(trained):
    model, images, labels = trained
    adv = square(images, per_example_ce(model, labels), eps=EPS, queries=300, generator=seeded(0))
    assert (adv - images).abs().max() <= EPS + 1e-6
    assert accuracy(model, adv, labels) <= accuracy(model, images, labels) - 0.3


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fgsm", {"eps": EPS}),
        ("bim", {"eps": EPS, "alpha": EPS / 4, "steps": 10}),
        ("mifgsm", {"eps": EPS, "alpha": EPS / 4, "steps": 10}),
        ("pgd", {"eps": EPS * 14, "alpha": EPS * 4, "steps": 10, "norm": "l2"}),
        ("apgd", {"eps": EPS * 14, "steps": 10, "norm": "l2"}),
        ("cw", {"eps": EPS * 14, "steps": 30, "lr": 0.05, "c": 10.0, "search_steps": 1}),
    ],
)
def test_every_attack_finds_adversarial_examples(trained, name, params):
    # L2 budgets: ε·√192 ≈ 14ε is the L2 size of a full Linf-ε perturbation
    model, images, labels = trained
    adv = get_attack(name, **params)(images, per_example_ce(model, labels))
    assert accuracy(model, adv, labels) <= accuracy(model, images, labels) - 0.3


def test_cw_search_over_c_breaks_what_a_fixed_c_misses(trained):
    """With CE (unbounded) and a fixed c = 1 the distortion term wins on part of the images; the
    original's binary search over c breaks every one, like the margin form does, with smaller
    perturbations than a fixed large c that also breaks them."""
    model, images, labels = trained
    ce = per_example_ce(model, labels)

    def margin(x):  # the original's f6 with κ = 0, as a loss to maximise
        logits = model(x)
        true = logits.gather(1, labels[:, None])[:, 0]
        other = logits.masked_fill(nn.functional.one_hot(labels, CLASSES).bool(), -1e9)
        return (other.max(dim=1).values - true).clamp(max=0.0)

    def misclassified(x):
        return model(x).argmax(dim=1) != labels

    def broken(loss, **params):
        adv = cw_l2(images, loss, success_fn=misclassified, steps=50, lr=0.01, **params)
        return 1 - accuracy(model, adv, labels), adv

    fixed, _ = broken(ce, search_steps=1)
    searched, adv = broken(ce, search_steps=5)
    by_margin, _ = broken(margin, search_steps=5)
    assert fixed < 0.9 and searched >= 0.98 and searched >= by_margin - 0.02
    # the search keeps the smallest successful iterate, so it spends less than its 5 rounds
    # of unbounded Adam could: far inside the ball a fixed large c would reach
    large_c = cw_l2(images, ce, success_fn=misclassified, steps=50, lr=0.01, c=1e3, search_steps=1)
    norms = [(x - images).flatten(1).norm(dim=1).mean() for x in (adv, large_c)]
    assert norms[0] < norms[1], norms


def test_targeted_pgd_steers_predictions_to_the_target_class(trained):
    model, images, labels = trained
    targets = (labels + 1) % CLASSES
    target_ce = per_example_ce(model, targets)
    adv = pgd(
        images, lambda x: -target_ce(x), eps=2 * EPS, alpha=EPS / 2, steps=10, generator=seeded(0)
    )
    assert accuracy(model, images, targets) <= 0.05
    assert accuracy(model, adv, targets) >= 0.5
