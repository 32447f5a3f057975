"""BIM / I-FGSM (Kurakin et al. 2017): FGSM repeated with step α, projected onto the ε-ball.

The attack the paper evaluates with (10 steps, untargeted). It starts from the clean image, so
with ``steps=1, alpha=eps`` it is exactly FGSM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prsl.attacks._ascent import ascend, sign_step
from prsl.attacks._checks import check_images, check_params
from prsl.attacks.base import Attack, AttackResult, LossFn, finish
from prsl.attacks.constraint import BallConstraint


def bim(
    images: torch.Tensor,
    loss_fn: LossFn,
    *,
    eps: float,
    alpha: float,
    steps: int,
    quantize: str | None = None,
    record_every_step: bool = False,
    jpeg_quality: int | None = None,
) -> torch.Tensor | AttackResult:
    """``steps`` Linf steps of size ``alpha`` from the clean images; returns the last iterate."""
    check_params(
        {
            "eps": eps,
            "alpha": alpha,
            "steps": steps,
            "quantize": quantize,
            "jpeg_quality": jpeg_quality,
        }
    )
    check_images(images)
    constraint = BallConstraint(images, eps, "linf", quantize, jpeg_quality)
    final, history = ascend(
        images, loss_fn, constraint, steps=steps, step=sign_step(alpha), record=record_every_step
    )
    return finish(final, history, record_every_step)


@dataclass(frozen=True)
class BIM(Attack):
    name = "bim"
    function = bim

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    quantize: str | None = None
    record_every_step: bool = False
    jpeg_quality: int | None = None
