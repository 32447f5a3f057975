"""Carlini-Wagner L2 (2017), adapted to a generic per-example loss to maximise.

The original minimises ||δ||₂² + c·max(margin, −κ) over w, with x = (tanh(w) + 1)/2 so [0, 1]
holds by construction, using Adam. Captioning and VQA have no logit margin: a caption's
cross-entropy can grow without bound. The adaptation here minimises ||δ||₂² − c·loss(x) and
keeps, per example,

- with ``success_fn`` (images -> bool (B,), e.g. "the caption changed"): the successful iterate
  with the smallest ||δ||₂; an example never successful falls back to its highest-loss iterate;
- without it: the highest-loss iterate.

``eps`` (optional) is an L2 budget: every iterate is projected onto the ball (and the 8-bit grid
/ JPEG when asked) before the loss is computed, and the gradient passes through that projection
unchanged (straight-through), so Adam still sees the unprojected tanh-space variable. The binary
search over ``c`` of the original is left out: without a margin, "success" is task-specific.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch

from prsl.attacks._checks import (
    Eps,
    JpegQuality,
    LearningRate,
    Quantize,
    Steps,
    Weight,
    check_generator,
    check_images,
    check_losses,
)
from prsl.attacks.base import Attack, AttackResult, LossFn, finish
from prsl.attacks.constraint import BallConstraint, expand, per_example_norm

SuccessFn = Callable[[torch.Tensor], torch.Tensor]
_TANH_LIMIT = 1 - 1e-6  # atanh(±1) is infinite


def _check_success(success: object, batch: int) -> torch.Tensor:
    if not isinstance(success, torch.Tensor) or tuple(success.shape) != (batch,):
        raise ValueError(f"success_fn must return a bool tensor of shape ({batch},)")
    return success.bool()


class CW(Attack):
    """C&W-L2: Adam on ||δ||₂² − c·loss in tanh space for ``steps`` steps (module docstring).

    ``eps`` is an optional L2 budget (None: unbounded); the call's ``success_fn`` picks the
    smallest successful perturbation.
    """

    name: ClassVar[str] = "cw"

    steps: Steps = 100
    c: Weight = 1.0
    lr: LearningRate = 0.01
    eps: Eps | None = None
    quantize: Quantize = None
    record_every_step: bool = False
    jpeg_quality: JpegQuality = None

    @property
    def ball_norm(self) -> str:
        return "l2"

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
        origin = images.detach()
        budget = math.inf if self.eps is None else self.eps
        constraint = BallConstraint(origin, budget, "l2", self.quantize, self.jpeg_quality)

        w = torch.atanh((2 * origin - 1).clamp(-_TANH_LIMIT, _TANH_LIMIT)).requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=self.lr)
        best = constraint.project(origin)
        best_loss = torch.full((origin.shape[0],), -math.inf, device=origin.device)
        best_dist = torch.full_like(best_loss, math.inf)
        succeeded = torch.zeros_like(best_loss, dtype=torch.bool)
        history: list[torch.Tensor] = []

        for _ in range(self.steps):
            with torch.enable_grad():
                x = (torch.tanh(w) + 1) / 2
                projected = constraint.project(x)
                straight_through = x + (projected - x).detach()
                losses = check_losses(loss_fn(straight_through), origin.shape[0])
                distortion = (x - origin).pow(2).flatten(1).sum(dim=1)
                (grad,) = torch.autograd.grad((distortion - self.c * losses).sum(), w)
            losses = losses.detach().to(best_loss.dtype)
            dist = per_example_norm(projected - origin).to(best_loss.dtype)
            if success_fn is None:
                take = losses > best_loss
            else:
                with torch.no_grad():
                    success = _check_success(success_fn(projected), origin.shape[0])
                closer = success & (~succeeded | (dist < best_dist))
                take = closer | (~succeeded & ~success & (losses > best_loss))
                succeeded = succeeded | success
            best = torch.where(expand(take, best), projected, best)
            best_loss = torch.where(take, losses, best_loss)
            best_dist = torch.where(take, dist, best_dist)
            if self.record_every_step:
                history.append(projected)
            w.grad = grad
            optimizer.step()

        return finish(best, history, self.record_every_step)


def cw_l2(images, loss_fn, *, generator=None, success_fn=None, **params):
    """:class:`CW` as a function: ``cw_l2(images, loss_fn, steps=100, c=1.0, eps=None)``."""
    return CW(**params)(images, loss_fn, generator=generator, success_fn=success_fn)
