"""What every attack shares: the parameter object it is, the loss-function type, the result.

An attack is a typed parameter object (``PGD(eps=8/255, steps=10)``): its fields are the only
declaration of its parameters, checked once when it is built (an unknown name, a wrong type or an
out-of-range value is one clear error), and calling it runs it: ``attack(images, loss_fn)``.
Objects that only exist at run time, the random ``generator`` (and C&W's ``success_fn``), are
arguments of the call, not parameters. The functional forms (``pgd(images, loss_fn, ...)``)
build the object and call it.

Return convention (one for all attacks): the adversarial images, a tensor (B, 3, H, W); with
``record_every_step=True`` an :class:`AttackResult` ``(final, steps)`` instead, where ``steps``
holds the iterate after each step (for the paper's per-iteration curves). It is a NamedTuple,
so ``final, steps = attack(...)`` and ``result.final`` both work.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from pydantic import model_validator

from prsl.attacks._checks import LossFn, check_generator, check_images
from prsl.core.lazy import lazy_import
from prsl.core.params import Params

torch = lazy_import("torch", globals())

DEFAULT_EPS = 8 / 255
"""The usual L∞ budget for images in [0, 1]; every attack's default ε."""
LINF = "linf"


class AttackResult(NamedTuple):
    """Adversarial images plus the iterate after every step (``record_every_step=True``)."""

    final: torch.Tensor
    steps: list[torch.Tensor]


def finish(
    final: torch.Tensor, history: list[torch.Tensor], record: bool
) -> torch.Tensor | AttackResult:
    """Apply the shared return convention."""
    return AttackResult(final, history) if record else final


class Attack(Params):
    """Base of the registered attacks (see the module docstring)."""

    kind: ClassVar[str] = "attack"
    uses_gradients: ClassVar[bool] = True
    """False for a score-based attack (Square): it cannot be fooled by masked gradients."""
    uses_success: ClassVar[bool] = False
    """True for an attack whose call takes ``success_fn`` (C&W's search over c needs one)."""
    takes_start: ClassVar[bool] = False
    """True for an attack that steps from a point and so can begin at a given ``start``."""

    @property
    def ball_norm(self) -> str:
        """The norm of the ε-ball the attack stays in: "linf" or "l2"."""
        return getattr(self, "norm", LINF)

    @property
    def iterations(self) -> int:
        """How many steps (or loss queries) the attack takes: what results record as steps."""
        return int(getattr(self, "steps", 1))

    @property
    def step_size(self) -> float:
        """α as it runs: the ``alpha`` given, else ε/4 (ε for a single step)."""
        alpha = getattr(self, "alpha", None)
        if alpha is not None:
            return alpha
        eps = getattr(self, "eps", None) or 0.0
        return eps if self.iterations == 1 else eps / 4

    @model_validator(mode="after")
    def _linf_budget_is_a_pixel_range(self) -> Attack:
        eps = getattr(self, "eps", None)
        if eps is not None and self.ball_norm == LINF and eps > 1:
            raise ValueError(
                f"eps must be in [0, 1] for an L∞ ball (pixel units, e.g. 8/255); got {eps!r}"
            )
        return self

    def recorded(self) -> dict[str, Any]:
        """Every parameter as it runs (α resolved; at ε = 0 nothing moves and α stays unset),
        for the results."""
        fields = self.model_dump()
        if "alpha" in fields and self.step_size > 0:
            fields["alpha"] = self.step_size
        return fields

    def __call__(
        self,
        images: torch.Tensor,
        loss_fn: LossFn,
        *,
        generator: torch.Generator | None = None,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor | AttackResult:
        """Adversarial examples for ``images`` against ``loss_fn``; ``generator`` seeds any
        random draw (random starts, Square's squares) and must live on the images' device.

        ``start`` (attacks with :attr:`takes_start`): where the first run begins instead of the
        clean images or a random start, e.g. an earlier attack's images. It is projected into
        the ball around ``images`` first, and every step is projected around ``images``: the
        threat model is always the clean images' ball. Further restarts start at random."""
        check_generator(generator)
        check_images(images)
        if start is None:
            return self.run(images, loss_fn, generator)
        if not self.takes_start:
            raise ValueError(f"{self.name} does not step from a point: it takes no start")
        if start.shape != images.shape:
            raise ValueError(
                f"start must have the images' shape {tuple(images.shape)}; got {tuple(start.shape)}"
            )
        from prsl.attacks.constraint import BallConstraint  # it imports this module

        inside = BallConstraint(images, getattr(self, "eps", 0.0), self.ball_norm).project(start)
        return self.run(images, loss_fn, generator, start=inside)

    def run(
        self, images: torch.Tensor, loss_fn: LossFn, generator: torch.Generator | None
    ) -> torch.Tensor | AttackResult:
        raise NotImplementedError
