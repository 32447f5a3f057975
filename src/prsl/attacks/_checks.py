"""Argument checks shared by every attack.

Attacks fail before the first forward pass, with a ``ValueError`` that names the argument and
its valid range, so a wrong CLI flag costs nothing. The same checks run when an attack class is
constructed, so ``get_attack("pgd", eps=-1)`` fails before a model is even loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Any

import torch

NORMS = ("linf", "l2")
QUANTIZE = ("uint8",)


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


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number; got {value!r}")
    return float(value)


def _integer(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _non_negative(name: str, hint: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        number = _number(name, value)
        if not (math.isfinite(number) and number >= 0):
            raise ValueError(f"{name} must be a finite number >= 0{hint}; got {value!r}")

    return check


def _positive(name: str, hint: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        number = _number(name, value)
        if not (math.isfinite(number) and number > 0):
            raise ValueError(f"{name} must be a finite number > 0{hint}; got {value!r}")

    return check


def _at_least(name: str, minimum: int) -> Callable[[Any], None]:
    return lambda value: _integer(name, value, minimum)


def _one_of(name: str, choices: tuple[str, ...], allow_none: bool) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value in choices or (allow_none and value is None):
            return
        valid = ", ".join(repr(c) for c in choices) + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {valid}; got {value!r}")

    return check


def _jpeg_quality(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ValueError(f"jpeg_quality must be an integer in [1, 100] or None; got {value!r}")


def _p_init(value: Any) -> None:
    number = _number("p_init", value)
    if not 0 < number <= 1:
        raise ValueError(f"p_init must be in (0, 1] (fraction of the image); got {value!r}")


def _generator(value: Any) -> None:
    if value is not None and not isinstance(value, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {value!r}")


_VALIDATORS: Mapping[str, Callable[[Any], None]] = MappingProxyType(
    {
        "eps": _non_negative("eps", " (pixel units, e.g. 8/255)"),
        "alpha": _positive("alpha", " (step size in pixel units)"),
        "steps": _at_least("steps", 1),
        "restarts": _at_least("restarts", 1),
        "queries": _at_least("queries", 1),
        "decay": _non_negative("decay", " (momentum factor)"),
        "c": _positive("c", " (weight of the loss against the distortion)"),
        "lr": _positive("lr", " (Adam learning rate)"),
        "norm": _one_of("norm", NORMS, allow_none=False),
        "quantize": _one_of("quantize", QUANTIZE, allow_none=True),
        "jpeg_quality": _jpeg_quality,
        "p_init": _p_init,
        "generator": _generator,
    }
)


def check_params(params: Mapping[str, Any], optional: Collection[str] = ()) -> None:
    """Validate every known attack parameter in ``params``; those in ``optional`` may be None."""
    for name, value in params.items():
        validator = _VALIDATORS.get(name)
        if validator is not None and not (name in optional and value is None):
            validator(value)
