"""MI-FGSM (Dong et al. 2018): BIM with a momentum of L1-normalised gradients.

The momentum stabilises the update direction, which makes the images transfer better to other
models, the reason to use it for transfer (surrogate) evaluation.
"""

from __future__ import annotations

from typing import ClassVar

from prsl.attacks._ascent import ascend
from prsl.attacks._checks import Decay, Eps, JpegQuality, Quantize, RecordEveryStep, Steps, StepSize
from prsl.attacks.base import DEFAULT_EPS, Attack, finish
from prsl.attacks.constraint import BallConstraint, expand
from prsl.core.lazy import lazy_import

torch = lazy_import("torch", globals())


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


class MIFGSM(Attack):
    """MI-FGSM: momentum iterative FGSM (L∞) from the clean images; returns the last iterate."""

    name: ClassVar[str] = "mifgsm"
    takes_start: ClassVar[bool] = True

    eps: Eps = DEFAULT_EPS
    alpha: StepSize = None
    steps: Steps = 10
    decay: Decay = 1.0
    quantize: Quantize = None
    record_every_step: RecordEveryStep = False
    jpeg_quality: JpegQuality = None

    def run(self, images, loss_fn, generator, start=None):
        constraint = BallConstraint(images, self.eps, "linf", self.quantize, self.jpeg_quality)
        step = _MomentumStep(self.step_size, self.decay)
        first = images if start is None else start
        final, history = ascend(
            first, loss_fn, constraint, steps=self.steps, step=step, record=self.record_every_step
        )
        return finish(final, history, self.record_every_step)


def mifgsm(images, loss_fn, *, generator=None, **params):
    """:class:`MIFGSM` as a function: ``mifgsm(images, loss_fn, eps=8/255, decay=1.0)``."""
    return MIFGSM(**params)(images, loss_fn, generator=generator)
