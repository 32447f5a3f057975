"""What every attack shares: the loss-function type, the result type, and the class base.

Return convention (one for all attacks): the adversarial images, a tensor (B, 3, H, W); with
``record_every_step=True`` an :class:`AttackResult` ``(final, steps)`` instead, where ``steps``
holds the iterate after each step (for the paper's per-iteration curves). It is a NamedTuple,
so ``final, steps = attack(...)`` and ``result.final`` both work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, ClassVar, NamedTuple

import torch

from prsl.attacks._checks import check_params

LossFn = Callable[[torch.Tensor], torch.Tensor]
"""``loss_fn(images (B, 3, H, W)) -> per-example losses (B,)``, to be MAXIMISED."""


class AttackResult(NamedTuple):
    """Adversarial images plus the iterate after every step (``record_every_step=True``)."""

    final: torch.Tensor
    steps: list[torch.Tensor]


def finish(
    final: torch.Tensor, history: list[torch.Tensor], record: bool
) -> torch.Tensor | AttackResult:
    """Apply the shared return convention."""
    return AttackResult(final, history) if record else final


class Attack:
    """torchattacks-style wrapper: parameters at construction, ``attack(images, loss_fn)``.

    Subclasses are frozen dataclasses whose fields are exactly the keyword arguments of their
    functional attack (``function``); parameters are validated at construction so a bad
    configuration fails before any model is loaded.
    """

    name: ClassVar[str]
    function: ClassVar[Callable[..., Any]]
    optional: ClassVar[frozenset[str]] = frozenset()  # parameters that may be None

    def __post_init__(self) -> None:
        check_params(self.params(), self.optional)

    def params(self) -> dict[str, Any]:
        """The keyword arguments passed to the functional attack."""
        return {field.name: getattr(self, field.name) for field in fields(self)}  # type: ignore[arg-type]

    def __call__(self, images: torch.Tensor, loss_fn: LossFn) -> torch.Tensor | AttackResult:
        return type(self).function(images, loss_fn, **self.params())
