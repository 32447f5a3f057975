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
from dataclasses import dataclass

import torch

from prsl.attacks._checks import check_images, check_losses, check_params
from prsl.attacks.base import Attack, AttackResult, LossFn, finish
from prsl.attacks.constraint import BallConstraint, expand, per_example_norm

SuccessFn = Callable[[torch.Tensor], torch.Tensor]
_TANH_LIMIT = 1 - 1e-6  # atanh(±1) is infinite


def _check_success(success: object, batch: int) -> torch.Tensor:
    if not isinstance(success, torch.Tensor) or tuple(success.shape) != (batch,):
        raise ValueError(f"success_fn must return a bool tensor of shape ({batch},)")
    return success.bool()


def cw_l2(
    images: torch.Tensor,
    loss_fn: LossFn,
    *,
    steps: int,
    c: float = 1.0,
    lr: float = 0.01,
    eps: float | None = None,
    success_fn: SuccessFn | None = None,
    quantize: str | None = None,
    record_every_step: bool = False,
    jpeg_quality: int | None = None,
) -> torch.Tensor | AttackResult:
    """Adam on ||δ||₂² − c·loss in tanh space for ``steps`` steps; see the module docstring."""
    check_params(
        {
            "steps": steps,
            "c": c,
            "lr": lr,
            "eps": eps,
            "quantize": quantize,
            "jpeg_quality": jpeg_quality,
        },
        optional={"eps"},
    )
    check_images(images)
    origin = images.detach()
    budget = math.inf if eps is None else eps
    constraint = BallConstraint(origin, budget, "l2", quantize, jpeg_quality)

    w = torch.atanh((2 * origin - 1).clamp(-_TANH_LIMIT, _TANH_LIMIT)).requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr)
    best = constraint.project(origin)
    best_loss = torch.full((origin.shape[0],), -math.inf, device=origin.device)
    best_dist = torch.full_like(best_loss, math.inf)
    succeeded = torch.zeros_like(best_loss, dtype=torch.bool)
    history: list[torch.Tensor] = []

    for _ in range(steps):
        with torch.enable_grad():
            x = (torch.tanh(w) + 1) / 2
            projected = constraint.project(x)
            straight_through = x + (projected - x).detach()
            losses = check_losses(loss_fn(straight_through), origin.shape[0])
            distortion = (x - origin).pow(2).flatten(1).sum(dim=1)
            (grad,) = torch.autograd.grad((distortion - c * losses).sum(), w)
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
        if record_every_step:
            history.append(projected)
        w.grad = grad
        optimizer.step()

    return finish(best, history, record_every_step)


@dataclass(frozen=True)
class CW(Attack):
    name = "cw"
    function = cw_l2
    optional = frozenset({"eps"})

    steps: int = 100
    c: float = 1.0
    lr: float = 0.01
    eps: float | None = None
    success_fn: SuccessFn | None = None
    quantize: str | None = None
    record_every_step: bool = False
    jpeg_quality: int | None = None
