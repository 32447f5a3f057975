"""Pixels are floats in [0, 1]; an 8-bit image holds the grey levels k / LEVELS, k = 0..LEVELS.

Attacks work in these units (their ε is a pixel distance), so the conversion to a saved image is
one rule shared by the attacks' 8-bit grid and JPEG round trip and by every image prsl writes.
"""

from __future__ import annotations

import numpy as np

from prsl.core.lazy import lazy_import

torch = lazy_import("torch", globals())

LEVELS = 255
"""Grey levels of an 8-bit image, minus one."""


def levels_text(value: float) -> str:
    """A pixel distance the way budgets are quoted: ``8/255`` when it is (within 1e-9) a whole
    number of grey levels, else a short float (``0.0123``). What every message showing an ε
    prints, so ``0.03137254901960784`` reads as ``8/255``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer():  # 0, or 1 (the whole range): no fraction says more
        return f"{value:g}"
    levels = value * LEVELS
    if abs(levels - round(levels)) <= 1e-9 * LEVELS:
        return f"{round(levels)}/{LEVELS}"
    return f"{value:.4g}"


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """One image (3, H, W) in [0, 1] as an (H, W, 3) uint8 array, rounded to the nearest level."""
    levels = (image.detach().clamp(0, 1) * LEVELS).round().to(torch.uint8)
    return levels.permute(1, 2, 0).cpu().numpy()


class Normalisation:
    """``(pixels - mean) / std`` per channel in fp32, differentiable, with the constants copied to
    each device once: an attack normalises at every step, and a host-to-device copy per step
    would wait for the device every time."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        device = pixels.device
        if device not in self._on:
            shape = (1, -1, 1, 1)
            self._on[device] = (self.mean.to(device).view(shape), self.std.to(device).view(shape))
        mean, std = self._on[device]
        return (pixels.float() - mean) / std
