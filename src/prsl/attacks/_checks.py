"""Argument checks shared by every attack: the parameter types, and the images and losses.

Parameters are fields of the attack's class (see :mod:`prsl.attacks.base`) typed with the
annotated types below, so ``get_attack("pgd", eps=-1)`` fails when it is built, before a model
is even loaded, with a message naming the parameter and its valid range. Images and per-example
losses are checked when the attack runs, before the first forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from prsl.core.lazy import lazy_import
from prsl.core.params import choice, integer, real

torch = lazy_import("torch", globals())

LossFn = Callable[["torch.Tensor"], "torch.Tensor"]
"""``loss_fn(images (B, 3, H, W)) -> per-example losses (B,)``, to be MAXIMISED."""

NORMS = ("linf", "l2")
QUANTIZE = ("uint8",)

Eps = Annotated[
    real(0, hint=" (pixel units, e.g. 8/255)"),
    Field(
        description="ε, the radius of the ball around each clean image, in pixel units (images "
        "in [0, 1]; at most 1 for L∞); 8/255 may be written as a fraction."
    ),
]
StepSize = Annotated[
    real(0, open_low=True, optional=True, hint=" (step size in pixel units)"),
    Field(description="α, the step length in pixel units; None: ε/4 (ε when there is one step)."),
]
Steps = Annotated[
    integer(1, hint=" (iterations)"),
    Field(description="Iterations (gradient steps; for C&W, Adam steps per round of its search)."),
]
Restarts = Annotated[
    integer(1, hint=" (random starts)"),
    Field(
        description="Random starts; each image keeps the start whose result has the highest loss"
    ),
]
SearchSteps = Annotated[
    integer(1, hint=" (rounds of the binary search over c)"),
    Field(description="Rounds of the binary search over c (1: the fixed c, no search)."),
]
Queries = Annotated[
    integer(1, hint=" (loss evaluations)"),
    Field(description="Loss evaluations (forward passes) the attack may spend per image."),
]
Decay = Annotated[
    real(0, hint=" (momentum factor)"),
    Field(description="μ, the momentum factor on the L1-normalised gradient."),
]
Weight = Annotated[
    real(0, open_low=True, hint=" (weight of the loss against the distortion)"),
    Field(description="c, the weight of the attack loss against ||δ||₂², where the search starts."),
]
LearningRate = Annotated[
    real(0, open_low=True, hint=" (Adam learning rate)"),
    Field(description="Adam's learning rate in tanh space."),
]
Fraction = Annotated[
    real(0, 1, open_low=True, hint=" (fraction of the image)"),
    Field(
        description="The first square's area as a fraction of the image (shrinks on a schedule)."
    ),
]
Norm = Annotated[
    choice(*NORMS),
    Field(description="The ball's norm: linf (ε per pixel) or l2 (ε for the whole image)."),
]
Quantize = Annotated[
    choice(*QUANTIZE, optional=True, hint=" (keep every iterate on the 8-bit grid)"),
    Field(
        description="uint8: keep every iterate on the 8-bit grid (k/255) inside the ball, so "
        "the images are exactly what an 8-bit file holds; None: continuous values"
    ),
]
RecordEveryStep = Annotated[
    bool,
    Field(
        description="Also return the images after every step, for per-step curves "
        "(evaluations only)"
    ),
]
JpegQuality = Annotated[
    integer(1, 100, optional=True, hint=" (JPEG round trip after every step)"),
    Field(
        description="JPEG round trip at this quality after every step (an attack that survives "
        "JPEG compression); None: none"
    ),
]


def check_generator(generator: Any) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {generator!r}")


def check_images(images: Any) -> None:
    """Images must be a non-empty float batch (B, 3, H, W) in [0, 1] (pixel units)."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor (B, 3, H, W); got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must be a 4-D tensor (B, 3, H, W) with 3 channels; got shape "
            f"{tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image; got an empty batch")
    if not images.is_floating_point():
        raise ValueError(
            f"images must be a floating tensor in [0, 1]; got dtype {images.dtype} "
            "(convert 8-bit data with images.float() / 255)"
        )
    low, high = images.min().item(), images.max().item()
    if not (low >= 0.0 and high <= 1.0):  # also rejects NaN
        raise ValueError(
            f"images must lie in [0, 1] (pixel units, before the model's normalisation); "
            f"got min {low}, max {high}"
        )


def check_losses(losses: Any, batch: int) -> torch.Tensor:
    """``loss_fn`` must return one float loss per image, shape (B,)."""
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (batch,):
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(
            f"loss_fn must return per-example losses of shape (B,) = ({batch},); got {shape} "
            "(compute the loss with reduction='none')"
        )
    if not losses.is_floating_point():
        raise ValueError(f"loss_fn must return a floating tensor; got dtype {losses.dtype}")
    return losses
