"""MI-FGSM (Dong et al. 2018): BIM with a momentum of L1-normalised gradients.

The momentum stabilises the update direction, which makes the images transfer better to other
models, the reason to use it for transfer (surrogate) evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prsl.attacks._ascent import ascend
from prsl.attacks._checks import check_images, check_params
from prsl.attacks.base import Attack, AttackResult, LossFn, finish
from prsl.attacks.constraint import BallConstraint, expand


class _MomentumStep:
    """g ← decay·g + ∇/mean|∇| (per example), then a step of α·sign(g); holds g between steps."""

    def __init__(self, alpha: float, decay: float) -> None:
        self.alpha = alpha
        self.decay = decay
        self.velocity: torch.Tensor | None = None

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        scale = grad.abs().flatten(1).mean(dim=1).clamp_min(1e-12)
        normalised = grad / expand(scale, grad)
        if self.velocity is None:
            self.velocity = normalised
        else:
            self.velocity = self.decay * self.velocity + normalised
        return self.alpha * self.velocity.sign()


def mifgsm(
    images: torch.Tensor,
    loss_fn: LossFn,
    *,
    eps: float,
    alpha: float,
    steps: int,
    decay: float = 1.0,
    quantize: str | None = None,
    record_every_step: bool = False,
    jpeg_quality: int | None = None,
) -> torch.Tensor | AttackResult:
    """Momentum iterative FGSM (Linf) from the clean images; returns the last iterate."""
    check_params(
        {
            "eps": eps,
            "alpha": alpha,
            "steps": steps,
            "decay": decay,
            "quantize": quantize,
            "jpeg_quality": jpeg_quality,
        }
    )
    check_images(images)
    constraint = BallConstraint(images, eps, "linf", quantize, jpeg_quality)
    step = _MomentumStep(alpha, decay)
    final, history = ascend(
        images, loss_fn, constraint, steps=steps, step=step, record=record_every_step
    )
    return finish(final, history, record_every_step)


@dataclass(frozen=True)
class MIFGSM(Attack):
    name = "mifgsm"
    function = mifgsm

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    decay: float = 1.0
    quantize: str | None = None
    record_every_step: bool = False
    jpeg_quality: int | None = None
