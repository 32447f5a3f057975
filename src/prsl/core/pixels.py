"""Pixels are floats in [0, 1]; an 8-bit image holds the grey levels k / LEVELS, k = 0..LEVELS.

Attacks work in these units (their ε is a pixel distance), so the conversion to a saved image is
one rule shared by the attacks' 8-bit grid and JPEG round trip and by every image prsl writes.
"""

from __future__ import annotations

import numpy as np
import torch

LEVELS = 255
"""Grey levels of an 8-bit image, minus one."""


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """One image (3, H, W) in [0, 1] as an (H, W, 3) uint8 array, rounded to the nearest level."""
    levels = (image.detach().clamp(0, 1) * LEVELS).round().to(torch.uint8)
    return levels.permute(1, 2, 0).cpu().numpy()
