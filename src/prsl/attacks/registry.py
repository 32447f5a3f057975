"""Attacks by name, so the CLI and configs can say ``--attack pgd --eps 8/255``."""

from __future__ import annotations

from collections.abc import Mapping
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
    fields = attack_class(name).model_fields
    return {key: fields[key].default for key in attack_class(name).parameter_names()}


def get_attack(name: str, **params: Any) -> Attack:
    """Build the attack ``name`` (fgsm|bim|pgd|mifgsm|apgd|cw|square) with ``params``.

    Unset parameters take the class defaults (ε = 8/255, α = ε/4, 10 steps, ...). ``eps`` and
    ``alpha`` may be strings such as ``"8/255"``, as they come from a command line.
    """
    return attack_class(name)(**params)


def paper_attack(model: str, **overrides: Any) -> Attack:
    """The paper's attack for ``model`` (a key of ``PAPER_PRESETS``), e.g. to add
    ``record_every_step=True`` or ``jpeg_quality=...`` through ``overrides``."""
    if model not in PAPER_PRESETS:
        raise InvalidInput(f"no paper preset {model!r}; choose one of: {', '.join(PAPER_PRESETS)}")
    params = {**PAPER_PRESETS[model], **overrides}
    return get_attack(params.pop("attack"), **params)
