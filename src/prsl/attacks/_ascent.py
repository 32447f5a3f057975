"""The loop shared by FGSM, BIM, PGD and MI-FGSM: step along a gradient direction, project."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prsl.attacks.base import LossFn, finish
from prsl.attacks.constraint import BallConstraint, expand, loss_and_grad, per_example_norm
from prsl.core.lazy import lazy_import

torch = lazy_import("torch", globals())

Step = Callable[["torch.Tensor"], "torch.Tensor"]
"""Maps the loss gradient at the current iterate to the change to add to it."""


def sign_step(alpha: float) -> Step:
    """Linf steepest ascent: every pixel moves by ``alpha``."""
    return lambda grad: alpha * grad.sign()


def l2_step(alpha: float) -> Step:
    """L2 steepest ascent: each example moves by ``alpha`` along its normalised gradient."""
    return lambda grad: alpha * grad / expand(per_example_norm(grad).clamp_min(1e-12), grad)


def steepest_step(alpha: float, norm: str) -> Step:
    return sign_step(alpha) if norm == "linf" else l2_step(alpha)


def ascend(
    start: torch.Tensor,
    loss_fn: LossFn,
    constraint: BallConstraint,
    *,
    steps: int,
    step: Step,
    record: bool,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``steps`` projected ascent steps; returns the last iterate and, if asked, all."""
    current = start
    history: list[torch.Tensor] = []
    for _ in range(steps):
        _, grad = loss_and_grad(loss_fn, current)
        current = constraint.project(current + step(grad))
        if record:
            history.append(current)
    return current, history


def signed_ascent(
    attack: Any, images: torch.Tensor, loss_fn: LossFn, start: torch.Tensor | None = None
) -> Any:
    """Run BIM (or FGSM, its single step of size ε): ``attack.iterations`` L∞ sign steps of
    ``attack.step_size`` from the clean images (or ``start``, a point of their ball), with the
    attack's 8-bit / JPEG options."""
    constraint = BallConstraint(images, attack.eps, "linf", attack.quantize, attack.jpeg_quality)
    final, history = ascend(
        images if start is None else start,
        loss_fn,
        constraint,
        steps=attack.iterations,
        step=sign_step(attack.step_size),
        record=attack.record_every_step,
    )
    return finish(final, history, attack.record_every_step)
