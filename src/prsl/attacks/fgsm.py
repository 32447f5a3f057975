"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size ε."""

from __future__ import annotations

from typing import ClassVar

from prsl.attacks._ascent import signed_ascent
from prsl.attacks._checks import Eps, JpegQuality, Quantize, RecordEveryStep
from prsl.attacks.base import DEFAULT_EPS, Attack


class FGSM(Attack):
    """FGSM: x + ε·sign(∇loss), projected onto [0, 1] (and the 8-bit grid / JPEG when asked)."""

    name: ClassVar[str] = "fgsm"
    takes_start: ClassVar[bool] = True

    eps: Eps = DEFAULT_EPS
    quantize: Quantize = None
    record_every_step: RecordEveryStep = False
    jpeg_quality: JpegQuality = None

    def run(self, images, loss_fn, generator, start=None):
        return signed_ascent(self, images, loss_fn, start)


def fgsm(images, loss_fn, *, generator=None, **params):
    """:class:`FGSM` as a function: ``fgsm(images, loss_fn, eps=8/255)``."""
    return FGSM(**params)(images, loss_fn, generator=generator)
