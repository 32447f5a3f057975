"""Bad input fails early with a message naming the argument; the registry, ε parser and presets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prsl.attacks import (
    ATTACKS,
    CLIP_STD,
    PAPER_PRESETS,
    Attack,
    AttackResult,
    apgd,
    bim,
    cw_l2,
    fgsm,
    get_attack,
    mifgsm,
    paper_attack,
    parse_eps,
    pgd,
    square,
)

LINEAR = nn.Linear(3 * 4 * 4, 2)
IMAGES = torch.full((2, 3, 4, 4), 0.5)


def loss_fn(x: torch.Tensor) -> torch.Tensor:
    return LINEAR(x.flatten(1))[:, 0]


# every attack with a valid minimal configuration; each case below overrides one argument
VALID = {
    fgsm: {"eps": 0.1},
    bim: {"eps": 0.1, "alpha": 0.01, "steps": 2},
    pgd: {"eps": 0.1, "alpha": 0.01, "steps": 2},
    mifgsm: {"eps": 0.1, "alpha": 0.01, "steps": 2},
    apgd: {"eps": 0.1, "steps": 2},
    cw_l2: {"steps": 2, "eps": 0.1, "search_steps": 1},
    square: {"eps": 0.1, "queries": 2},
}
ALL = list(VALID)
ITERATIVE = [bim, pgd, mifgsm, apgd, cw_l2]
STEPPED = [bim, pgd, mifgsm]
GRADIENT = [fgsm, bim, pgd, mifgsm, apgd, cw_l2]

BAD_IMAGES = [
    (torch.full((3, 4, 4), 0.5), r"images must be a 4-D tensor \(B, 3, H, W\).*\(3, 4, 4\)"),
    (torch.full((2, 1, 4, 4), 0.5), r"images must be a 4-D tensor \(B, 3, H, W\) with 3 channels"),
    (torch.full((0, 3, 4, 4), 0.5), "images must hold at least one image"),
    (torch.full((2, 3, 4, 4), 1.5), r"images must lie in \[0, 1\].*max 1.5"),
    (torch.full((2, 3, 4, 4), -0.25), r"images must lie in \[0, 1\].*min -0.25"),
    (torch.full((2, 3, 4, 4), math.nan), r"images must lie in \[0, 1\]"),
    (torch.full((2, 3, 4, 4), 128, dtype=torch.uint8), r"floating tensor.*/ 255"),
    ([[0.5]], "images must be a torch.Tensor"),
]


@pytest.mark.parametrize("attack", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("images", "message"), BAD_IMAGES)
def test_bad_images_are_rejected(attack, images, message):
    with pytest.raises(ValueError, match=message):
        attack(images, loss_fn, **VALID[attack])


def cases(attacks, key, values, message):
    return [
        pytest.param(attack, key, value, message, id=f"{attack.__name__}-{key}={value!r}")
        for attack in attacks
        for value in values
    ]


BAD_ARGUMENTS = [
    *cases(ALL, "eps", [-0.1, math.inf, math.nan], r"eps must be a finite number >= 0"),
    *cases(ITERATIVE, "steps", [0, -3, 2.5, True], r"steps must be an integer >= 1"),
    *cases(STEPPED, "alpha", [0, -0.01, math.nan], r"alpha must be a finite number > 0"),
    *cases([pgd, apgd], "norm", ["l1", "Linf", None], r"norm must be one of 'linf', 'l2'"),
    *cases(ALL, "quantize", ["uint16", True], r"quantize must be 'uint8' or None"),
    *cases(
        GRADIENT, "jpeg_quality", [0, 101, 50.0], r"jpeg_quality must be an integer in \[1, 100\]"
    ),
    *cases([pgd, apgd, square], "generator", [0], r"generator must be a torch.Generator"),
    *cases([pgd], "restarts", [0], r"restarts must be an integer >= 1"),
    *cases([mifgsm], "decay", [-1.0], r"decay must be a finite number >= 0"),
    *cases([cw_l2], "c", [0.0], r"c must be a finite number > 0"),
    *cases([cw_l2], "lr", [-1.0], r"lr must be a finite number > 0"),
    *cases([square], "queries", [0], r"queries must be an integer >= 1"),
    *cases([square], "p_init", [0.0, 1.5], r"p_init must be a finite number in \(0, 1\]"),
]


@pytest.mark.parametrize(("attack", "key", "value", "message"), BAD_ARGUMENTS)
def test_bad_arguments_are_rejected_with_the_valid_range(attack, key, value, message):
    with pytest.raises(ValueError, match=message):
        attack(IMAGES, loss_fn, **{**VALID[attack], key: value})


def test_pgd_restarts_without_random_start_are_rejected():
    with pytest.raises(ValueError, match="restarts > 1 needs random_start=True"):
        pgd(IMAGES, loss_fn, eps=0.1, alpha=0.01, steps=2, restarts=2, random_start=False)


@pytest.mark.parametrize("attack", ALL, ids=lambda f: f.__name__)
def test_quantize_needs_images_on_the_8_bit_grid(attack):
    off_grid = torch.full((2, 3, 4, 4), 0.5001)
    with pytest.raises(ValueError, match=r"8-bit grid.*\(images \* 255\).round\(\) / 255"):
        attack(off_grid, loss_fn, **VALID[attack], quantize="uint8")


@pytest.mark.parametrize("attack", ALL, ids=lambda f: f.__name__)
def test_a_loss_that_is_not_per_example_is_rejected(attack):
    with pytest.raises(ValueError, match=r"loss_fn must return per-example losses.*\(2,\)"):
        attack(IMAGES, lambda x: loss_fn(x).sum(), **VALID[attack])


@pytest.mark.parametrize("attack", [fgsm, bim, pgd, mifgsm, apgd], ids=lambda f: f.__name__)
def test_a_loss_without_gradients_points_to_square(attack):
    def detached(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loss_fn(x)

    with pytest.raises(ValueError, match="not differentiable w.r.t. images.*'square'"):
        attack(IMAGES, detached, **VALID[attack])
    assert isinstance(square(IMAGES, detached, eps=0.1, queries=3), torch.Tensor)


def test_cw_rejects_a_malformed_success_fn():
    with pytest.raises(ValueError, match=r"success_fn must return a bool tensor of shape \(2,\)"):
        cw_l2(IMAGES, loss_fn, steps=1, success_fn=lambda x: torch.tensor(True))


def test_cw_search_without_a_success_criterion_is_refused():
    with pytest.raises(ValueError, match="binary search over c needs success_fn.*search_steps=1"):
        cw_l2(IMAGES, loss_fn, steps=1)
    with pytest.raises(ValueError, match="search_steps must be"):
        cw_l2(IMAGES, loss_fn, steps=1, search_steps=0)


# --- registry -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd", "mifgsm", "apgd", "cw", "square"])
def test_every_registered_attack_builds_with_defaults_and_runs(name):
    attack = get_attack(name)
    assert isinstance(attack, Attack) and attack.name == name and ATTACKS[name] is type(attack)
    judged = {"success_fn": lambda x: torch.zeros(len(x), dtype=torch.bool)} if name == "cw" else {}
    adv = attack(IMAGES, loss_fn, **judged)  # C&W's default search over c needs a criterion
    assert isinstance(adv, torch.Tensor) and adv.shape == IMAGES.shape


def test_registry_classes_match_the_functional_attacks():
    gen_a = torch.Generator().manual_seed(5)
    gen_b = torch.Generator().manual_seed(5)
    built = get_attack("pgd", eps="8/255", alpha="2/255", steps=3, norm="l2")
    expected = pgd(IMAGES, loss_fn, eps=8 / 255, alpha=2 / 255, steps=3, norm="l2", generator=gen_b)
    assert torch.equal(built(IMAGES, loss_fn, generator=gen_a), expected)


def test_registry_record_every_step_gives_an_attack_result():
    result = get_attack("bim", eps=0.1, alpha=0.05, steps=3, record_every_step=True)(
        IMAGES, loss_fn
    )
    assert isinstance(result, AttackResult) and len(result.steps) == 3


def test_unknown_attack_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown attack 'deepfool'; choose one of: fgsm, bim"):
        get_attack("deepfool")


def test_unknown_parameter_names_the_accepted_ones():
    with pytest.raises(
        ValueError, match=r"attack 'square' does not take 'steps'; its parameters are: eps"
    ):
        get_attack("square", steps=10)


def test_bad_parameter_fails_at_construction_before_any_image():
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        get_attack("pgd", eps=-1.0)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0 or None"):
        get_attack("bim", alpha="two/255")


# --- eps parsing and paper presets ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8/255", 8 / 255),
        (" 16 / 255 ", 16 / 255),
        ("0.03", 0.03),
        ("0", 0.0),
        (0.25, 0.25),
        (2, 2.0),
    ],
)
def test_parse_eps_reads_numbers_and_fractions(text, value):
    assert parse_eps(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1/0", "-1/255", "nan", "inf", "8/255/2", None, True])
def test_parse_eps_rejects_what_is_not_a_finite_non_negative_number(text):
    with pytest.raises(ValueError, match="eps must be"):
        parse_eps(text)


def test_paper_presets_are_the_normalised_budgets_times_the_std():
    vit = PAPER_PRESETS["vit-gpt2"]
    assert dict(vit) == {"attack": "bim", "steps": 10, "alpha": 0.005, "eps": 0.25}
    blip = PAPER_PRESETS["blip2"]
    std = (0.26862954 + 0.26130258 + 0.27577711) / 3
    assert blip["attack"] == "bim" and blip["steps"] == 10
    assert math.isclose(blip["eps"], 1 * std) and math.isclose(blip["alpha"], 0.3 * std)
    assert all(abs(s / blip["eps"] - 1) < 0.03 for s in CLIP_STD)
    with pytest.raises(TypeError):
        PAPER_PRESETS["blip2"]["eps"] = 1.0  # read-only: a run cannot change it for the next


def test_paper_attack_builds_the_preset_with_overrides():
    attack = paper_attack("vit-gpt2", record_every_step=True)
    assert attack.recorded() == {
        "eps": 0.25,
        "alpha": 0.005,
        "steps": 10,
        "quantize": None,
        "record_every_step": True,
        "jpeg_quality": None,
    }
    with pytest.raises(ValueError, match="no paper preset 'llava'; choose one of: vit-gpt2, blip2"):
        paper_attack("llava")
