"""Attacks by name, so the CLI and configs can say ``--attack pgd --eps 8/255``.

A config writes an attack flat, its name beside its parameters (``{name: pgd, eps: 8/255,
steps: 20}``). :func:`parse_attack` (one attack) and :func:`parse_attacks` (one per ε of a list)
are the one parser of such specs: every config section that holds an attack (an evaluation's
grid, adversarial fine-tuning, FARE) builds it through them, so the names, the checks and the
error messages are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Any

from prsl.attacks.apgd import APGD
from prsl.attacks.base import Attack
from prsl.attacks.bim import BIM
from prsl.attacks.cw import CW
from prsl.attacks.fgsm import FGSM
from prsl.attacks.mifgsm import MIFGSM
from prsl.attacks.pgd import PGD
from prsl.attacks.presets import PAPER_PRESETS
from prsl.attacks.square import Square
from prsl.core.errors import InvalidInput

ATTACKS: Mapping[str, type[Attack]] = MappingProxyType(
    {cls.name: cls for cls in (FGSM, BIM, PGD, MIFGSM, APGD, CW, Square)}
)


def attack_class(name: str) -> type[Attack]:
    """The attack registered under ``name``; an unknown name lists the valid ones."""
    if name not in ATTACKS:
        raise InvalidInput(f"unknown attack {name!r}; choose one of: {', '.join(ATTACKS)}")
    return ATTACKS[name]


def attack_parameters(name: str) -> dict[str, Any]:
    """The parameters ``get_attack(name, ...)`` accepts, with their defaults."""
    kind = attack_class(name)
    return {key: kind.model_fields[key].default for key in kind.parameter_names()}


def get_attack(name: str, **params: Any) -> Attack:
    """Build the attack ``name`` (fgsm|bim|pgd|mifgsm|apgd|cw|square) with ``params``.

    Unset parameters take the class defaults (ε = 8/255, α = ε/4, 10 steps, ...). ``eps`` and
    ``alpha`` may be strings such as ``"8/255"``, as they come from a command line.
    """
    return parse_attack({"name": name, **params})


def _spec(
    data: Mapping[str, Any], name_key: str, default: str, reserved: Collection[str]
) -> tuple[type[Attack], dict[str, Any]]:
    """The attack class a spec names and the parameters beside its name."""
    name = data.get(name_key, default)
    if not isinstance(name, str):
        raise InvalidInput(f"{name_key} must be an attack name, got {name!r}")
    skip = {name_key, *reserved}
    return attack_class(name), {k: v for k, v in data.items() if k not in skip}


def parse_attack(
    data: Mapping[str, Any],
    *,
    name_key: str = "name",
    default: str = "bim",
    reserved: Collection[str] = (),
    fixed: Mapping[str, Any] | None = None,
    owner: str | None = None,
) -> Attack:
    """The attack a flat spec says, validated: ``{name: pgd, eps: 8/255, steps: 20}``.

    ``data[name_key]`` names the attack (``default`` when absent); every other key but those
    ``reserved`` for the spec's owner is a parameter of the attack, and ``fixed`` ones are set
    whatever the spec says. A failure is one :class:`InvalidInput` naming ``owner``: by default
    the attack (``attack 'pgd' does not take 'nrom'``), ``""`` for none, when the section it
    sits in is named by its own path (``train.fare: eps must be ...``).
    """
    kind, params = _spec(data, name_key, default, reserved)
    return kind.build({**params, **(fixed or {})}, owner=owner)


def parse_attacks(
    data: Mapping[str, Any],
    *,
    name_key: str = "name",
    default: str = "bim",
    reserved: Collection[str] = (),
    eps_key: str = "eps",
) -> list[Attack]:
    """One attack per ε of ``data[eps_key]`` (a value or a list; absent: the attack's default
    ε), as :func:`parse_attack` builds them: the cells of an evaluation grid."""
    kind, params = _spec(data, name_key, default, {*reserved, eps_key})
    given = data.get(eps_key, kind.model_fields["eps"].default)
    levels = given if isinstance(given, list) else [given]
    if not levels:
        raise InvalidInput(f"{kind.owner()}: {eps_key} is empty; give at least one value")
    if any(eps is None for eps in levels):
        raise InvalidInput(
            f"{kind.owner()}: an evaluation grid needs a finite ε for every cell (for cw an L2 "
            "budget in pixel units, e.g. eps: [0.5, 1.0])"
        )
    return [kind.build({**params, "eps": eps}) for eps in levels]


def paper_attack(model: str, **overrides: Any) -> Attack:
    """The paper's attack for ``model`` (a key of ``PAPER_PRESETS``), e.g. to add
    ``record_every_step=True`` or ``jpeg_quality=...`` through ``overrides``."""
    if model not in PAPER_PRESETS:
        raise InvalidInput(f"no paper preset {model!r}; choose one of: {', '.join(PAPER_PRESETS)}")
    params = {**PAPER_PRESETS[model], **overrides}
    return get_attack(params.pop("attack"), **params)
