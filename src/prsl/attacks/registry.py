"""Attacks by name, so the CLI and configs can say ``--attack pgd --eps 8/255``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from types import MappingProxyType
from typing import Any

from prsl.attacks.apgd import APGD
from prsl.attacks.base import Attack
from prsl.attacks.bim import BIM
from prsl.attacks.cw import CW
from prsl.attacks.fgsm import FGSM
from prsl.attacks.mifgsm import MIFGSM
from prsl.attacks.pgd import PGD
from prsl.attacks.presets import PAPER_PRESETS, parse_eps
from prsl.attacks.square import Square

ATTACKS: Mapping[str, type[Attack]] = MappingProxyType(
    {cls.name: cls for cls in (FGSM, BIM, PGD, MIFGSM, APGD, CW, Square)}
)


def attack_parameters(name: str) -> list[str]:
    """The keyword parameters ``get_attack(name, ...)`` accepts."""
    return [field.name for field in fields(_attack_class(name))]  # type: ignore[arg-type]


def get_attack(name: str, **params: Any) -> Attack:
    """Build the attack ``name`` (fgsm|bim|pgd|mifgsm|apgd|cw|square) with ``params``.

    Unset parameters take the class defaults (ε = 8/255, α = 2/255, 10 steps, ...). ``eps`` and
    ``alpha`` may be strings such as ``"8/255"``, as they come from a command line.
    """
    accepted = attack_parameters(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"attack {name!r} does not take {', '.join(unknown)}; "
            f"its parameters are: {', '.join(accepted)}"
        )
    for key in ("eps", "alpha"):
        if isinstance(params.get(key), str):
            params[key] = parse_eps(params[key], name=key)
    return _attack_class(name)(**params)


def paper_attack(model: str, **overrides: Any) -> Attack:
    """The paper's attack for ``model`` (a key of ``PAPER_PRESETS``), e.g. to add
    ``record_every_step=True`` or ``jpeg_quality=...`` through ``overrides``."""
    if model not in PAPER_PRESETS:
        raise ValueError(f"no paper preset {model!r}; choose one of: {', '.join(PAPER_PRESETS)}")
    params = {**PAPER_PRESETS[model], **overrides}
    return get_attack(params.pop("attack"), **params)


def _attack_class(name: str) -> type[Attack]:
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of: {', '.join(ATTACKS)}")
    return ATTACKS[name]
