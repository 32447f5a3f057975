"""PGD (Madry et al. 2018): BIM from a random point of the ball, Linf or L2, with restarts.

With ``restarts > 1`` every restart runs from its own random start and each example keeps the
restart whose final iterate has the highest loss (one extra forward pass per restart).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prsl.attacks._ascent import ascend, steepest_step
from prsl.attacks._checks import check_images, check_params
from prsl.attacks.base import Attack, AttackResult, LossFn, finish
from prsl.attacks.constraint import BallConstraint, evaluate_losses, expand


def pgd(
    images: torch.Tensor,
    loss_fn: LossFn,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    quantize: str | None = None,
    record_every_step: bool = False,
    jpeg_quality: int | None = None,
) -> torch.Tensor | AttackResult:
    """Projected gradient ascent; per-example best over ``restarts`` random starts.

    ``alpha`` is the step length in the attack's norm (pixel units); ``generator`` makes the
    random starts reproducible (it must live on the images' device).
    """
    check_params(
        {
            "eps": eps,
            "alpha": alpha,
            "steps": steps,
            "norm": norm,
            "restarts": restarts,
            "generator": generator,
            "quantize": quantize,
            "jpeg_quality": jpeg_quality,
        }
    )
    if restarts > 1 and not random_start:
        raise ValueError(
            "restarts > 1 needs random_start=True: restarts from the clean images are identical"
        )
    check_images(images)
    constraint = BallConstraint(images, eps, norm, quantize, jpeg_quality)
    step = steepest_step(alpha, norm)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        start = constraint.random_start(generator) if random_start else images.detach()
        return ascend(start, loss_fn, constraint, steps=steps, step=step, record=record_every_step)

    best, best_history = run()
    if restarts > 1:
        best_losses = evaluate_losses(loss_fn, best)
    for _ in range(restarts - 1):
        final, history = run()
        losses = evaluate_losses(loss_fn, final)
        better = losses > best_losses
        best_losses = torch.where(better, losses, best_losses)
        keep = expand(better, final)
        best = torch.where(keep, final, best)
        best_history = [
            torch.where(keep, new, old) for new, old in zip(history, best_history, strict=True)
        ]
    return finish(best, best_history, record_every_step)


@dataclass(frozen=True)
class PGD(Attack):
    name = "pgd"
    function = pgd

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1
    generator: torch.Generator | None = None
    quantize: str | None = None
    record_every_step: bool = False
    jpeg_quality: int | None = None
