"""BIM / I-FGSM (Kurakin et al. 2017): FGSM repeated with step α, projected onto the ε-ball.

The attack the paper evaluates with (10 steps, untargeted). It starts from the clean image, so
with ``steps=1, alpha=eps`` it is exactly FGSM.
"""

from __future__ import annotations

from typing import ClassVar

from prsl.attacks._ascent import signed_ascent
from prsl.attacks._checks import Eps, JpegQuality, Quantize, RecordEveryStep, Steps, StepSize
from prsl.attacks.base import DEFAULT_EPS, Attack


class BIM(Attack):
    """BIM: ``steps`` L∞ steps of size α from the clean images; returns the last iterate."""

    name: ClassVar[str] = "bim"
    takes_start: ClassVar[bool] = True

    eps: Eps = DEFAULT_EPS
    alpha: StepSize = None
    steps: Steps = 10
    quantize: Quantize = None
    record_every_step: RecordEveryStep = False
    jpeg_quality: JpegQuality = None

    def run(self, images, loss_fn, generator, start=None):
        return signed_ascent(self, images, loss_fn, start)


def bim(images, loss_fn, *, generator=None, **params):
    """:class:`BIM` as a function: ``bim(images, loss_fn, eps=8/255, alpha=2/255, steps=10)``."""
    return BIM(**params)(images, loss_fn, generator=generator)
