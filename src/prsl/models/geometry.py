"""The pixels a model takes, read from its image processor once, and the one check of them.

Every adapter takes float pixels (B, 3, H, W) in [0, 1] at a fixed (H, W). An image processor
keeps that size, and the mean / std it normalises with, in fields whose form varies: ``size``
(or ``crop_size``, ``max_image_size``) is an object with attributes in transformers 5 and a
plain dict in a saved config. :func:`size_field` reads a field of either, :func:`fixed_size`
the (H, W) of one, and :func:`check_pixels` is the shape check every adapter and pixel pipeline
makes before normalising (a wrong shape is the caller's mistake: :class:`InvalidInput`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from prsl.core.errors import InvalidInput

Size = tuple[int, int]
"""(height, width) in pixels."""


class InputGeometry(NamedTuple):
    """What a model's pixels look like: per-channel mean and std, and the (H, W) it takes."""

    mean: list[float]
    std: list[float]
    size: tuple[int, int]


def size_field(size: Any, name: str) -> Any:
    """Field ``name`` of an image processor's size (an object or a mapping), or None."""
    if size is None:
        return None
    value = getattr(size, name, None)
    if value is None and isinstance(size, Mapping):
        value = size.get(name)
    return value


def fixed_size(size: Any, *, shortest_edge: bool = False) -> tuple[int, int] | None:
    """(H, W) from an image processor's ``size`` / ``crop_size``, or None when it gives none.

    ``shortest_edge=True`` also takes a ``shortest_edge`` alone as a square of that side (what
    a ViT-style processor without height and width resizes to)."""
    height, width = size_field(size, "height"), size_field(size, "width")
    if height and width:
        return int(height), int(width)
    side = size_field(size, "shortest_edge") if shortest_edge else None
    return (int(side), int(side)) if side else None


def image_geometry(processor: Any) -> InputGeometry:
    """(mean, std, (H, W)) of a Hugging Face image processor, validated."""
    mean, std = list(processor.image_mean), list(processor.image_std)
    if len(mean) != 3 or len(std) != 3:
        raise InvalidInput(f"image processor must give 3 channel means/stds, got {mean} / {std}")
    size = fixed_size(processor.size, shortest_edge=True)
    if size is None:
        raise InvalidInput(f"cannot read an input size (height/width) from {processor.size!r}")
    return InputGeometry(mean, std, size)


def check_pixels(pixels: torch.Tensor, size: tuple[int, int]) -> None:
    """Refuse pixels that are not (B, 3, H, W) at the model's input ``size``."""
    height, width = size
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, height, width):
        raise InvalidInput(
            f"pixels must have shape (B, 3, {height}, {width}) for this model, "
            f"got {tuple(pixels.shape)}; bring images to its pixel_size first "
            "(adapter.prepare_images, or a resize)"
        )


def requested_size(value: Any) -> tuple[int, int] | None:
    """An ``image_size`` as given (a model folder's ``prsl_adapter.json``, an option): None, or
    ``[height, width]``, two whole numbers >= 1; anything else is one line naming it."""
    if value is None:
        return None
    numbers = list(value) if isinstance(value, list | tuple) else None
    whole = numbers is not None and all(
        isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
        for v in numbers
    )
    if not whole or len(numbers) != 2 or min(numbers) < 1:
        raise InvalidInput(
            f"image_size must be [height, width], two whole numbers >= 1; got {value!r}"
        )
    return int(numbers[0]), int(numbers[1])
