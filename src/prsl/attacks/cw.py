"""Carlini-Wagner L2 (2017), adapted to a generic per-example loss to maximise.

The original minimises ||δ||₂² + c·max(margin, −κ) over w, with x = (tanh(w) + 1)/2 so [0, 1]
holds by construction, using Adam, and searches c per example. Captioning and VQA have no logit
margin: a caption's cross-entropy can grow without bound. The adaptation here minimises
||δ||₂² − c·loss(x) and keeps, per example,

- with ``success_fn`` (images -> bool (B,), e.g. "the caption changed"): the successful iterate
  with the smallest ||δ||₂; an example never successful falls back to its highest-loss iterate;
- without it: the highest-loss iterate.

**The binary search over c**, as in the original: ``search_steps`` rounds of ``steps`` Adam
iterations, each round starting again from the clean image. After a round, an example that
succeeded lowers its upper bound to its c (a smaller perturbation may do), one that did not
raises its lower bound; c becomes the midpoint, or ×10 while no upper bound is known. Success is
what ``success_fn`` says, so the search needs it (``search_steps: 1`` runs one round with the
fixed ``c``). A fixed c is weak with an unbounded loss: the distortion term either dominates
(nothing moves) or is irrelevant, and which of the two depends on the example.

``eps`` (optional) is an L2 budget: every iterate is projected onto the ball (and the 8-bit grid
/ JPEG when asked) before the loss is computed, and the gradient passes through that projection
unchanged (straight-through), so Adam still sees the unprojected tanh-space variable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

from prsl.attacks._checks import (
    Eps,
    JpegQuality,
    LearningRate,
    Quantize,
    RecordEveryStep,
    SearchSteps,
    Steps,
    Weight,
    check_generator,
    check_images,
    check_losses,
)
from prsl.attacks.base import Attack, AttackResult, LossFn, finish
from prsl.attacks.constraint import BallConstraint, expand, per_example_norm
from prsl.core.lazy import lazy_import

torch = lazy_import("torch", globals())

SuccessFn = Callable[["torch.Tensor"], "torch.Tensor"]
_TANH_LIMIT = 1 - 1e-6  # atanh(±1) is infinite
C_GROWTH = 10.0
"""Factor c grows by after a failed round while no successful c is known (the original's)."""


def _check_success(success: object, batch: int) -> torch.Tensor:
    if not isinstance(success, torch.Tensor) or tuple(success.shape) != (batch,):
        raise ValueError(f"success_fn must return a bool tensor of shape ({batch},)")
    return success.bool()


class CW(Attack):
    """C&W-L2: Adam on ||δ||₂² − c·loss in tanh space, ``steps`` steps per round of the binary
    search over c (module docstring); ``c`` is where the search starts.

    ``eps`` is an optional L2 budget (None: unbounded); the call's ``success_fn`` picks the
    smallest successful perturbation and drives the search.
    """

    name: ClassVar[str] = "cw"
    uses_success: ClassVar[bool] = True

    steps: Steps = 100
    search_steps: SearchSteps = 5
    c: Weight = 1.0
    lr: LearningRate = 0.01
    eps: Eps | None = None
    """An L2 budget in pixel units for the returned perturbation (None: unbounded)."""
    quantize: Quantize = None
    record_every_step: RecordEveryStep = False
    jpeg_quality: JpegQuality = None

    @property
    def ball_norm(self) -> str:
        return "l2"

    @property
    def iterations(self) -> int:
        """Adam steps in all: ``steps`` in each of the ``search_steps`` rounds."""
        return self.steps * self.search_steps

    def __call__(
        self,
        images: torch.Tensor,
        loss_fn: LossFn,
        *,
        generator: torch.Generator | None = None,
        success_fn: SuccessFn | None = None,
    ) -> torch.Tensor | AttackResult:
        check_generator(generator)
        check_images(images)
        return self.run(images, loss_fn, generator, success_fn)

    def run(self, images, loss_fn, generator, success_fn: SuccessFn | None = None):
        if success_fn is None and self.search_steps > 1:
            raise ValueError(
                "cw: the binary search over c needs success_fn (images -> bool per example, "
                "e.g. misclassified); pass one, or set search_steps=1 to run with the fixed c"
            )
        origin = images.detach()
        batch = origin.shape[0]
        budget = math.inf if self.eps is None else self.eps
        constraint = BallConstraint(origin, budget, "l2", self.quantize, self.jpeg_quality)
        start = torch.atanh((2 * origin - 1).clamp(-_TANH_LIMIT, _TANH_LIMIT))

        best = constraint.project(origin)
        best_loss = torch.full((batch,), -math.inf, device=origin.device)
        best_dist = torch.full_like(best_loss, math.inf)
        succeeded = torch.zeros_like(best_loss, dtype=torch.bool)
        c = torch.full_like(best_loss, self.c)
        lower, upper = torch.zeros_like(c), torch.full_like(c, math.inf)
        history: list[torch.Tensor] = []

        for _ in range(self.search_steps):
            w = start.clone().requires_grad_(True)  # every round starts from the clean image
            optimizer = torch.optim.Adam([w], lr=self.lr)
            this_round = torch.zeros_like(succeeded)
            for _ in range(self.steps):
                with torch.enable_grad():
                    x = (torch.tanh(w) + 1) / 2
                    projected = constraint.project(x)
                    straight_through = x + (projected - x).detach()
                    losses = check_losses(loss_fn(straight_through), batch)
                    distortion = (x - origin).pow(2).flatten(1).sum(dim=1)
                    objective = distortion - c.to(losses.dtype) * losses
                    (grad,) = torch.autograd.grad(objective.sum(), w)
                losses = losses.detach().to(best_loss.dtype)
                dist = per_example_norm(projected - origin).to(best_loss.dtype)
                if success_fn is None:
                    take = losses > best_loss
                else:
                    with torch.no_grad():
                        success = _check_success(success_fn(projected), batch)
                    closer = success & (~succeeded | (dist < best_dist))
                    take = closer | (~succeeded & ~success & (losses > best_loss))
                    succeeded = succeeded | success
                    this_round = this_round | success
                best = torch.where(expand(take, best), projected, best)
                best_loss = torch.where(take, losses, best_loss)
                best_dist = torch.where(take, dist, best_dist)
                if self.record_every_step:
                    history.append(projected)
                w.grad = grad
                optimizer.step()
            # the original's update: halve towards the lower bound after a success, grow (or
            # bisect once an upper bound is known) after a failure
            upper = torch.where(this_round, torch.minimum(upper, c), upper)
            lower = torch.where(this_round, lower, torch.maximum(lower, c))
            known = torch.isfinite(upper)
            c = torch.where(known, (lower + upper) / 2, c * C_GROWTH)

        return finish(best, history, self.record_every_step)


def cw_l2(images, loss_fn, *, generator=None, success_fn=None, **params):
    """:class:`CW` as a function: ``cw_l2(images, loss_fn, success_fn=..., steps=100, c=1.0)``."""
    return CW(**params)(images, loss_fn, generator=generator, success_fn=success_fn)
