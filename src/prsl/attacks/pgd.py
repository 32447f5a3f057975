"""PGD (Madry et al. 2018): BIM from a random point of the ball, Linf or L2, with restarts.

The L2 start is a random direction at radius ε·U (U uniform in [0, 1]), as in torchattacks,
not a point uniform in the ball: in d dimensions that one lies at radius ε·U^(1/d), nearly on
the surface, and 10 steps from there were measurably weaker (benchmarks/RESULTS.md).

With ``restarts > 1`` every restart runs from its own random start and each example keeps the
restart whose final iterate has the highest loss (one extra forward pass per restart).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import model_validator

from prsl.attacks._ascent import ascend, steepest_step
from prsl.attacks._checks import (
    Eps,
    JpegQuality,
    Norm,
    Quantize,
    RecordEveryStep,
    Restarts,
    Steps,
    StepSize,
)
from prsl.attacks.base import DEFAULT_EPS, Attack, finish
from prsl.attacks.constraint import BallConstraint, evaluate_losses, keep_better
from prsl.core.lazy import lazy_import

torch = lazy_import("torch", globals())


class PGD(Attack):
    """PGD: projected gradient ascent; per-example best over ``restarts`` random starts.

    ``alpha`` is the step length in the attack's norm (pixel units); the call's ``generator``
    makes the random starts reproducible.
    """

    name: ClassVar[str] = "pgd"
    takes_start: ClassVar[bool] = True

    eps: Eps = DEFAULT_EPS
    alpha: StepSize = None
    steps: Steps = 10
    norm: Norm = "linf"
    random_start: bool = True
    """Start from a random point of the ball: uniform in it for linf; for l2 a random direction
    at radius ε·U, U uniform in [0, 1] (False: from the clean images)."""
    restarts: Restarts = 1
    quantize: Quantize = None
    record_every_step: RecordEveryStep = False
    jpeg_quality: JpegQuality = None

    @property
    def iterations(self) -> int:
        """Gradient steps in all: ``steps`` from each of the ``restarts`` random starts."""
        return self.steps * self.restarts

    @property
    def step_size(self) -> float:
        """α as it runs: the ``alpha`` given, else ε/4 (ε for a single step per start)."""
        if self.alpha is not None:
            return self.alpha
        return self.eps if self.steps == 1 else self.eps / 4

    @model_validator(mode="after")
    def _restarts_need_random_starts(self) -> PGD:
        if self.restarts > 1 and not self.random_start:
            raise ValueError(
                "restarts > 1 needs random_start=True: restarts from the clean images are identical"
            )
        return self

    def run(self, images, loss_fn, generator, start=None):
        constraint = BallConstraint(images, self.eps, self.norm, self.quantize, self.jpeg_quality)
        step = steepest_step(self.step_size, self.norm)

        def attempt(given: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
            if given is not None:  # a start given by the caller, already inside the ball
                first = given
            elif self.random_start:
                first = constraint.random_start(generator, l2_radius="eps_u")
            else:
                first = images.detach()
            return ascend(
                first,
                loss_fn,
                constraint,
                steps=self.steps,
                step=step,
                record=self.record_every_step,
            )

        best, best_history = attempt(start)
        if self.restarts > 1:
            kept = (best, evaluate_losses(loss_fn, best), best_history)
            for _ in range(self.restarts - 1):
                final, history = attempt()
                kept = keep_better(kept, (final, evaluate_losses(loss_fn, final), history))
            best, _, best_history = kept
        return finish(best, best_history, self.record_every_step)


def pgd(images, loss_fn, *, generator=None, **params):
    """:class:`PGD` as a function: ``pgd(images, loss_fn, eps=8/255, alpha=2/255, steps=10)``."""
    return PGD(**params)(images, loss_fn, generator=generator)
