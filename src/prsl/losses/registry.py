"""Losses by name, so every command takes ``--loss ce|prsl|drsl|ls`` with its parameters."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from prsl.core.errors import InvalidInput
from prsl.losses.base import Loss
from prsl.losses.baselines import DRSL, CrossEntropy, LabelSmoothing
from prsl.losses.prsl import PRSL

if TYPE_CHECKING:
    from prsl.losses.criterion import TermsLoss

LOSSES: Mapping[str, type[Loss]] = MappingProxyType(
    {cls.name: cls for cls in (CrossEntropy, PRSL, DRSL, LabelSmoothing)}
)


def loss_class(name: str) -> type[Loss]:
    """The loss registered under ``name``; an unknown name lists the valid ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise InvalidInput(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None


def loss_parameters(name: str) -> dict[str, Any]:
    """The parameters a loss accepts, with their defaults."""
    return {key: field.default for key, field in loss_class(name).model_fields.items()}


def build_loss(name: str, **params: Any) -> Loss:
    """The loss object ``name`` with ``params``; unknown names or values fail here."""
    return loss_class(name)(**params)


def as_loss(name: str | Loss, **params: Any) -> Loss:
    """The loss object for a name and its parameters, or a loss object as it is (then no
    parameters may be given: they would be ignored)."""
    if isinstance(name, Loss):
        if params:
            raise InvalidInput(
                f"got a {name.name!r} loss object and parameters {sorted(params)}: set them on "
                "the object (loss.replace(...)) or pass the loss's name"
            )
        return name
    return build_loss(name, **params)


def get_loss(name: str | Loss, **params: Any) -> TermsLoss:
    """A criterion ``(logits, labels) -> scalar`` for a loss name (with ``params``) or object;
    its ``params`` is the loss object."""
    from prsl.losses.criterion import TermsLoss

    return TermsLoss(as_loss(name, **params))
