"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size ε."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prsl.attacks._ascent import ascend, sign_step
from prsl.attacks._checks import check_images, check_params
from prsl.attacks.base import Attack, AttackResult, LossFn, finish
from prsl.attacks.constraint import BallConstraint


def fgsm(
    images: torch.Tensor,
    loss_fn: LossFn,
    *,
    eps: float,
    quantize: str | None = None,
    record_every_step: bool = False,
    jpeg_quality: int | None = None,
) -> torch.Tensor | AttackResult:
    """x + ε·sign(∇loss), projected onto [0, 1] (and the 8-bit grid / JPEG when asked)."""
    check_params({"eps": eps, "quantize": quantize, "jpeg_quality": jpeg_quality})
    check_images(images)
    constraint = BallConstraint(images, eps, "linf", quantize, jpeg_quality)
    final, history = ascend(
        images, loss_fn, constraint, steps=1, step=sign_step(eps), record=record_every_step
    )
    return finish(final, history, record_every_step)


@dataclass(frozen=True)
class FGSM(Attack):
    name = "fgsm"
    function = fgsm

    eps: float = 8 / 255
    quantize: str | None = None
    record_every_step: bool = False
    jpeg_quality: int | None = None
