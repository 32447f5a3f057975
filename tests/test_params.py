"""Typed parameter objects: each loss and attack declares its parameters once, on its class.

Properties: what is built from valid values round-trips through what it records; the functional
form, the class and the registry are one schema (same defaults, same errors); a value of the
wrong kind or out of range, or a name the object does not take, fails when it is built, naming
the field.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from prsl.attacks import ATTACKS, apgd, bim, cw_l2, fgsm, get_attack, mifgsm, pgd, square
from prsl.core.errors import InvalidInput
from prsl.losses import LOSSES, build_loss, get_loss

FUNCTIONS = {
    "fgsm": fgsm,
    "bim": bim,
    "pgd": pgd,
    "mifgsm": mifgsm,
    "apgd": apgd,
    "cw": cw_l2,
    "square": square,
}
LINEAR = torch.nn.Linear(3 * 4 * 4, 1)
IMAGES = torch.full((2, 3, 4, 4), 0.5)


def loss_fn(x: torch.Tensor) -> torch.Tensor:
    return LINEAR(x.flatten(1))[:, 0]


valid_attack_values = st.fixed_dictionaries(
    {},
    optional={
        "eps": st.floats(0, 1),
        "alpha": st.one_of(st.none(), st.floats(1e-4, 1)),
        "steps": st.integers(1, 3),
        "decay": st.floats(0, 2),
        "queries": st.integers(1, 3),
        "p_init": st.floats(0.01, 1),
        "quantize": st.sampled_from([None, "uint8"]),
        "jpeg_quality": st.one_of(st.none(), st.integers(1, 100)),
        "record_every_step": st.booleans(),
    },
)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(ATTACKS)), values=valid_attack_values)
@example(name="bim", values={"eps": 5e-324})  # ε/4 underflows to 0
def test_an_attack_round_trips_through_what_it_records(name, values):
    cls = ATTACKS[name]
    values = {k: v for k, v in values.items() if k in cls.model_fields}
    attack = cls(**values)
    assert attack.given() == values
    rebuilt = cls(**attack.recorded())
    assert rebuilt.recorded() == attack.recorded()
    assert attack.iterations >= 1 and attack.ball_norm in ("linf", "l2")
    if "alpha" in attack.recorded() and attack.eps > 0:
        # a subnormal ε (hypothesis found 5e-324) makes ε/4 underflow to 0: nothing moves,
        # and α stays unset as at ε = 0; any ε above that has its α recorded
        if attack.eps >= 1e-300:
            assert attack.recorded()["alpha"] == attack.step_size > 0
        else:
            assert attack.recorded()["alpha"] in (None, attack.step_size)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_the_function_the_class_and_the_registry_share_one_schema(name):
    cls = ATTACKS[name]
    assert get_attack(name) == cls()
    eps = {"eps": 0.1} | ({"search_steps": 1} if name == "cw" else {})
    gen = (
        {"generator": torch.Generator().manual_seed(0)} if name in ("pgd", "apgd", "square") else {}
    )
    again = {"generator": torch.Generator().manual_seed(0)} if gen else {}
    assert torch.equal(
        FUNCTIONS[name](IMAGES, loss_fn, **eps, **gen), cls(**eps)(IMAGES, loss_fn, **again)
    )
    with pytest.raises(InvalidInput, match=f"attack {name!r} does not take 'nrom'"):
        FUNCTIONS[name](IMAGES, loss_fn, nrom="l2")


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("bad", [True, "many", -1, math.inf])
def test_a_wrong_kind_of_value_names_the_field(name, bad):
    field = "queries" if name == "square" else "steps" if name != "fgsm" else "eps"
    with pytest.raises(InvalidInput, match=f"attack {name!r}: {field} must be"):
        ATTACKS[name](**{field: bad})


def test_alpha_defaults_to_a_quarter_of_eps_and_to_eps_for_one_step():
    assert get_attack("bim", eps=8 / 255).step_size == pytest.approx(2 / 255)
    assert get_attack("bim", eps=8 / 255, steps=1).step_size == 8 / 255
    assert get_attack("pgd", eps=0.5, norm="l2", alpha=0.1).recorded()["alpha"] == 0.1
    assert get_attack("fgsm", eps=0.1).iterations == 1


def test_an_linf_budget_above_one_is_refused_but_an_l2_one_is_not():
    with pytest.raises(InvalidInput, match=r"eps must be in \[0, 1\] for an L∞ ball"):
        get_attack("pgd", eps=2.0)
    assert get_attack("pgd", eps=2.0, norm="l2").eps == 2.0
    assert get_attack("cw", eps=5.0).ball_norm == "l2"


valid_loss_values = st.fixed_dictionaries(
    {},
    optional={
        "k": st.integers(1, 50),
        "start": st.integers(0, 10),
        "weight": st.floats(0, 1),
        "smoothing": st.floats(0, 0.99),
        "check_finite": st.booleans(),
    },
)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(LOSSES)), values=valid_loss_values)
def test_a_loss_round_trips_and_computes_what_its_function_computes(name, values):
    cls = LOSSES[name]
    values = {k: v for k, v in values.items() if k in cls.model_fields}
    loss = build_loss(name, **values)
    assert cls(**loss.recorded()) == loss
    logits = torch.randn(2, 3, 70, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 70, (2, 3), generator=torch.Generator().manual_seed(1))
    assert torch.equal(get_loss(name, **values)(logits, labels), loss(logits, labels))


@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("prsl", {"k": True}, "k must be an integer >= 1"),
        ("prsl", {"k": 2.0}, "k must be an integer >= 1"),
        ("prsl", {"weight": -1e-5}, "weight must be a finite number >= 0"),
        ("prsl", {"ignore_index": 7}, "loss 'prsl' does not take 'ignore_index'"),
        ("prsl", {"inplace": True, "backend": "torch"}, "inplace=True needs the fused kernel"),
        ("drsl", {"weight": "heavy"}, "weight must be a finite number >= 0"),
        ("ls", {"smoothing": 1.0}, r"smoothing must be a finite number in \[0, 1\)"),
        ("ce", {"weight": 1.0}, "loss 'ce' does not take 'weight'"),
    ],
)
def test_a_bad_loss_parameter_fails_when_built(name, values, message):
    with pytest.raises(InvalidInput, match=message):
        build_loss(name, **values)


def test_numbers_may_be_written_as_text():
    assert build_loss("prsl", weight="1e-5").weight == 1e-5
    assert get_attack("pgd", eps="8/255", alpha="0.5/255").step_size == 0.5 / 255


def test_a_loss_object_with_parameters_beside_it_is_refused():
    from prsl.losses import PRSL, hf_loss

    with pytest.raises(InvalidInput, match="set them on the object"):
        get_loss(PRSL(k=2), k=5)
    with pytest.raises(InvalidInput, match="set them on the object"):
        hf_loss(PRSL(k=2), weight=3.0)
    assert get_loss(PRSL(k=2)).params.k == 2


def test_an_attack_spec_is_only_what_a_config_can_say():
    from prsl.evaluate import AttackSpec

    with pytest.raises(ValueError, match="'attacks' is not a field of an attack spec"):
        AttackSpec.model_validate({"name": "pgd", "eps": [0.1, 0.2], "attacks": [{}]})
    with pytest.raises(ValueError, match="needs a finite ε"):
        AttackSpec.model_validate({"name": "cw", "eps": None})
    with pytest.raises(ValueError, match="may not contain '@'"):
        AttackSpec.model_validate({"name": "bim", "label": "bim@x"})
    spec = AttackSpec.model_validate({"name": "pgd", "eps": ["2/255", 0.5], "norm": "l2"})
    assert [a.eps for a in spec.attacks] == spec.eps == [2 / 255, 0.5]
    assert spec.model_dump() == {"name": "pgd", "eps": [2 / 255, 0.5], "norm": "l2"}


# --- the one parser of the flat attack specs configs write ---------------------------------------


def test_one_parser_builds_every_flat_attack_spec():
    from prsl.attacks import PGD, parse_attack, parse_attacks

    spec = {"name": "pgd", "eps": "4/255", "steps": 2, "label": "PGD-2"}
    built = parse_attack(spec, reserved=("label",))
    assert built == PGD(eps=4 / 255, steps=2) == get_attack("pgd", eps="4/255", steps=2)
    assert parse_attack({"attack": "bim"}, name_key="attack", default="pgd").name == "bim"
    assert parse_attack({}, default="pgd", fixed={"norm": "l2"}).norm == "l2"
    assert parse_attack({"norm": "l2"}, default="pgd", fixed={"norm": "linf"}).norm == "linf"
    grid = parse_attacks({"name": "fgsm", "eps": ["2/255", 0.5]})
    assert [a.eps for a in grid] == [2 / 255, 0.5] and {a.name for a in grid} == {"fgsm"}
    assert [a.eps for a in parse_attacks({"name": "bim", "eps": 0.1})] == [0.1]
    assert [a.eps for a in parse_attacks({"name": "bim"})] == [8 / 255]  # the attack's default


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        ({"name": 3}, {}, "^name must be an attack name, got 3$"),
        ({"attack": ["pgd"]}, {"name_key": "attack"}, "^attack must be an attack name"),
        ({"name": "bimm"}, {}, "^unknown attack 'bimm'; choose one of: fgsm, bim"),
        ({"name": "pgd", "nrom": 1}, {}, "^attack 'pgd' does not take 'nrom'; its parameters"),
        ({"name": "pgd", "label": "x"}, {}, "^attack 'pgd' does not take 'label'"),
        ({"name": "pgd", "eps": -1}, {}, r"^attack 'pgd': eps must be a finite number >= 0"),
        ({"name": "pgd", "eps": -1}, {"owner": ""}, r"^eps must be a finite number >= 0"),
        ({"name": "pgd", "eps": 2}, {"owner": ""}, r"^eps must be in \[0, 1\] for an L∞ ball"),
        ({"eps": 0.1, "steps": 0}, {"owner": "train.x"}, "^train.x: steps must be an integer"),
    ],
)
def test_the_parser_names_the_spec_and_the_field_once(data, options, message):
    from prsl.attacks import parse_attack

    with pytest.raises(InvalidInput, match=message) as caught:
        parse_attack(data, **options)
    assert "attack 'pgd': attack 'pgd'" not in str(caught.value)


@pytest.mark.parametrize(
    ("eps", "message"),
    [([], "attack 'bim': eps is empty"), ([0.1, None], "attack 'bim': an evaluation grid needs")],
)
def test_a_grid_needs_a_finite_eps_for_every_cell(eps, message):
    from prsl.attacks import parse_attacks

    with pytest.raises(InvalidInput, match=message):
        parse_attacks({"name": "bim", "eps": eps})


def test_build_is_the_constructor_with_the_owner_its_errors_name():
    from prsl.attacks import PGD

    assert PGD.build({"eps": "8/255"}) == PGD(eps=8 / 255)
    with pytest.raises(InvalidInput, match="^attack 'pgd': steps must be"):
        PGD.build({"steps": 0})
    with pytest.raises(InvalidInput, match="^steps must be"):
        PGD.build({"steps": 0}, owner="")
