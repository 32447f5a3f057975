"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness ..."), Linf and L2.

PGD with a fixed step size either stalls (step too small) or oscillates (too large). APGD needs
no step size: it starts at η = 2ε and halves it, per example, at checkpoints w_j = ⌈p_j·N⌉ with
p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), whenever

1. fewer than ρ = 0.75 of the steps since the last checkpoint raised the loss, or
2. the previous checkpoint did not halve η and the best loss has not improved since it,

and then restarts from the best point found so far. Each step is a projected gradient step
z = P(x_k + η·s(∇)) followed by momentum 0.75: x_{k+1} = P(x_k + 0.75(z − x_k) + 0.25(x_k −
x_{k−1})). The per-example best iterate is returned. (After a halving the momentum is reset, so
the restart from the best point does not carry the direction of the point it left.)
"""

from __future__ import annotations

import math
from typing import ClassVar

from prsl.attacks._ascent import steepest_step
from prsl.attacks._checks import (
    Eps,
    JpegQuality,
    Norm,
    Quantize,
    RecordEveryStep,
    Restarts,
    Steps,
)
from prsl.attacks.base import DEFAULT_EPS, Attack, finish
from prsl.attacks.constraint import BallConstraint, expand, keep_better, loss_and_grad
from prsl.core.lazy import lazy_import

torch = lazy_import("torch", globals())

MOMENTUM = 0.75
RHO = 0.75


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations w_1 < w_2 < ... <= ``steps`` at which the step size may be halved."""
    fractions = [0.0, 0.22]
    while fractions[-1] <= 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    # the small tolerance keeps float error from pushing 0.22·100 up to 23
    points = {math.ceil(p * steps - 1e-9) for p in fractions[1:] if p <= 1.0}
    return sorted(w for w in points if 1 <= w <= steps)


def should_halve(
    rises: torch.Tensor,
    steps_since: int,
    halved_last: torch.Tensor,
    best_loss: torch.Tensor,
    best_at_checkpoint: torch.Tensor,
) -> torch.Tensor:
    """Per example, whether to halve η at this checkpoint (the two conditions above)."""
    too_few_rises = rises < RHO * steps_since
    stalled = ~halved_last & (best_loss <= best_at_checkpoint)
    return too_few_rises | stalled


class APGD(Attack):
    """Auto-PGD from a random point of the ball; returns the per-example best-loss iterate over
    ``restarts`` random starts.

    Costs ``steps + 1`` forward/backward passes per restart (the start point is evaluated too).
    With ``restarts > 1`` every restart runs from its own random start and each example keeps
    the restart whose best iterate has the highest loss (no extra pass: APGD tracks that loss).
    ``record_every_step`` records the iterates x_1..x_N (of the restart kept), not the running
    best.
    """

    name: ClassVar[str] = "apgd"
    takes_start: ClassVar[bool] = True

    eps: Eps = DEFAULT_EPS
    steps: Steps = 10
    norm: Norm = "linf"
    restarts: Restarts = 1
    quantize: Quantize = None
    record_every_step: RecordEveryStep = False
    jpeg_quality: JpegQuality = None

    @property
    def iterations(self) -> int:
        """Gradient steps in all: ``steps`` from each of the ``restarts`` random starts."""
        return self.steps * self.restarts

    def run(self, images, loss_fn, generator, start=None):
        constraint = BallConstraint(images, self.eps, self.norm, self.quantize, self.jpeg_quality)
        kept = self._attempt(constraint, loss_fn, generator, start)
        for _ in range(self.restarts - 1):
            kept = keep_better(kept, self._attempt(constraint, loss_fn, generator))
        best, _, best_history = kept
        return finish(best, best_history, self.record_every_step)

    def _attempt(
        self, constraint: BallConstraint, loss_fn, generator, start=None
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """One APGD run from a fresh random start (or ``start``, a point of the ball): its best
        iterate, that iterate's loss (as the run measured it, with the gradient) and, if
        asked, every iterate."""
        checkpoints = set(apgd_checkpoints(self.steps))
        direction = steepest_step(1.0, self.norm)

        current = constraint.random_start(generator) if start is None else start
        previous = current
        loss, grad = loss_and_grad(loss_fn, current)
        best, best_loss, best_grad = current, loss, grad
        eta = torch.full_like(loss, 2 * self.eps)
        # As in the authors' AutoAttack code: the start counts as a halving, so condition 2 can
        # first fire at the second checkpoint.
        halved_last = torch.ones_like(loss, dtype=torch.bool)
        best_at_checkpoint = best_loss.clone()
        rises = torch.zeros_like(loss)
        last_checkpoint = 0
        history: list[torch.Tensor] = []

        for k in range(self.steps):
            z = constraint.project(current + expand(eta, current) * direction(grad))
            weight = 1.0 if k == 0 else MOMENTUM
            candidate = constraint.project(
                current + weight * (z - current) + (1 - weight) * (current - previous)
            )
            new_loss, new_grad = loss_and_grad(loss_fn, candidate)
            rises += (new_loss > loss).to(rises.dtype)
            improved = new_loss > best_loss
            best = torch.where(expand(improved, best), candidate, best)
            best_grad = torch.where(expand(improved, best), new_grad, best_grad)
            best_loss = torch.where(improved, new_loss, best_loss)
            previous, current, loss, grad = current, candidate, new_loss, new_grad
            if self.record_every_step:
                history.append(current)

            if k + 1 in checkpoints:
                halve = should_halve(
                    rises, k + 1 - last_checkpoint, halved_last, best_loss, best_at_checkpoint
                )
                eta = torch.where(halve, eta / 2, eta)
                back = expand(halve, current)
                current = torch.where(back, best, current)
                previous = torch.where(back, best, previous)
                loss = torch.where(halve, best_loss, loss)
                grad = torch.where(back, best_grad, grad)
                rises.zero_()
                halved_last, best_at_checkpoint = halve, best_loss.clone()
                last_checkpoint = k + 1

        return best, best_loss, history


def apgd(images, loss_fn, *, generator=None, **params):
    """:class:`APGD` as a function: ``apgd(images, loss_fn, eps=8/255, steps=100)``."""
    return APGD(**params)(images, loss_fn, generator=generator)
