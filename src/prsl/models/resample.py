"""Pillow's image resize, exactly, as a differentiable torch operation.

A tiling processor (Idefics3 / SmolVLM image splitting, LLaVA-NeXT's anyres, InternVL's dynamic
patches) resizes the image it is given at least once more after the geometry prsl fixes: the
global thumbnail, or the resize to the chosen grid. To attack such a model through its real
preprocessing, that resize must run in torch on the attacked pixels and still give what the
processor gives. Hugging Face's PIL-backend image processors resize 8-bit images with Pillow,
which works in fixed point: per output pixel a normalised filter (box, bilinear, Hamming,
bicubic with a = -0.5, Lanczos-3), widened by the scale factor when shrinking, is turned into
integer weights of 22 fractional bits; the horizontal pass runs first and is rounded to 8 bits,
then the vertical one. :func:`resize` repeats exactly that arithmetic (in float64, where every
sum of these integer products is exact), so its output equals Pillow's bit for bit on images of
whole levels, and it reads off-grid pixels (an attack's) as the nearest level, as a saved PNG of
them would be.

The rounding has no useful derivative, so the gradient is that of the same filters in real
numbers, without the rounding (a straight-through estimate): the attack sees the resize as the
linear map it is up to one level per pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

Resampling = Image.Resampling
"""The filters, numbered as Pillow (and ``transformers``' ``PILImageResampling``) number them."""

LEVELS = 255
PRECISION_BITS = 32 - 8 - 2
"""Fractional bits of Pillow's 8-bit resampling weights (two spare bits for overshoot)."""
_ONE = float(1 << PRECISION_BITS)
_HALF = float(1 << (PRECISION_BITS - 1))


def _box(x: float) -> float:
    return 1.0 if -0.5 < x <= 0.5 else 0.0


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x *= math.pi
    # Pillow writes the window's constants as C floats: keep their float32 values
    return math.sin(x) / x * (float(np.float32(0.54)) + float(np.float32(0.46)) * math.cos(x))


def _bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


FILTERS: dict[int, tuple[Callable[[float], float], float]] = {
    Resampling.BOX: (_box, 0.5),
    Resampling.BILINEAR: (_bilinear, 1.0),
    Resampling.HAMMING: (_hamming, 1.0),
    Resampling.BICUBIC: (_bicubic, 2.0),
    Resampling.LANCZOS: (_lanczos, 3.0),
}
"""Each convolution filter and its support (in input pixels at scale 1)."""


def _c_int(value: float) -> int:
    """C's conversion of a double to int: toward zero."""
    return int(value)


@lru_cache(maxsize=64)
def weights(in_size: int, out_size: int, resample: int) -> tuple[np.ndarray, np.ndarray]:
    """One pass's weights as dense (out_size, in_size) matrices: the normalised real weights
    and Pillow's fixed-point integers (both float64). Nearest neighbour is a 0/1 matrix."""
    real = np.zeros((out_size, in_size))
    scale = in_size / out_size
    if resample == Resampling.NEAREST:
        # Pillow samples the source pixel under each output centre, walking the centres by
        # repeated addition in double precision (its scaling transform): keep its sums
        position = scale * 0.5
        for out in range(out_size):
            real[out, min(int(position), in_size - 1)] = 1.0
            position += scale
        return real, real * _ONE
    if resample not in FILTERS:
        raise ValueError(f"unknown Pillow resampling filter {resample!r}")
    kernel, support = FILTERS[resample]
    stretch = max(scale, 1.0)
    reciprocal = 1.0 / stretch  # Pillow multiplies by it (not divides): same rounding
    support *= stretch
    for out in range(out_size):
        centre = (out + 0.5) * scale
        first = max(_c_int(centre - support + 0.5), 0)
        last = min(_c_int(centre + support + 0.5), in_size)
        taps = [kernel((x + first - centre + 0.5) * reciprocal) for x in range(last - first)]
        total = sum(taps)
        real[out, first:last] = [t / total if total != 0.0 else t for t in taps]
    fixed = np.where(real < 0, np.trunc(real * _ONE - 0.5), np.trunc(real * _ONE + 0.5))
    return real, fixed


@lru_cache(maxsize=64)
def _matrices(
    in_size: int, out_size: int, resample: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass's weights on ``device``, made once: an attack resizes at every step, and
    copying them to a GPU each time would cost more than the resize."""
    real, fixed = weights(in_size, out_size, resample)
    return (
        torch.from_numpy(real).to(device=device, dtype=torch.float32),
        torch.from_numpy(fixed).to(device=device, dtype=torch.float64),
    )


def _pass_8bit(levels: torch.Tensor, fixed: torch.Tensor, dim: int) -> torch.Tensor:
    """One fixed-point pass along ``dim`` (-1 columns, -2 rows) on whole levels, rounded and
    clipped to 8 bits as Pillow does (an arithmetic shift is a floor)."""
    moved = levels.transpose(dim, -1) if dim != -1 else levels
    summed = moved @ fixed.T + _HALF
    out = torch.floor(summed / _ONE).clamp_(0, LEVELS)
    return out.transpose(dim, -1) if dim != -1 else out


@lru_cache(maxsize=64)
def vertical_first(in_size: tuple[int, int], size: tuple[int, int], resample: int) -> bool:
    """Whether this Pillow runs the vertical pass first for this resize.

    Pillow 13 picks the order of its two rounded passes by the sizes involved, and the order
    changes the result by a level here and there; rather than copy a rule that differs between
    versions, ask the installed Pillow once per geometry: resize a random probe both ways and
    keep the order that reproduces it."""
    (in_height, in_width), (height, width) = in_size, size
    probe = np.random.default_rng(0).integers(0, LEVELS + 1, (in_height, in_width, 3), np.uint8)
    want = np.asarray(Image.fromarray(probe).resize((width, height), resample))
    levels = torch.from_numpy(probe).permute(2, 0, 1).double()
    fixed_w = torch.from_numpy(weights(in_width, width, resample)[1])
    fixed_h = torch.from_numpy(weights(in_height, height, resample)[1])
    for first_vertical in (False, True):
        out = _exact(levels, fixed_h, fixed_w, first_vertical)
        if np.array_equal(out.permute(1, 2, 0).numpy().astype(np.uint8), want):
            return first_vertical
    raise RuntimeError(
        f"this Pillow resizes {in_width}x{in_height} to {width}x{height} (filter {resample}) "
        "in neither pass order prsl reproduces; please report it with your Pillow version"
    )


def _exact(
    levels: torch.Tensor, fixed_h: torch.Tensor, fixed_w: torch.Tensor, first_vertical: bool
) -> torch.Tensor:
    """Both fixed-point passes on whole levels, in the given order (a pass whose size does not
    change is skipped, as in Pillow)."""
    passes = [(fixed_w, -1), (fixed_h, -2)]
    for fixed, dim in reversed(passes) if first_vertical else passes:
        if fixed.shape[0] != fixed.shape[1]:
            levels = _pass_8bit(levels, fixed.to(levels.device), dim)
    return levels


def resize(pixels: torch.Tensor, size: tuple[int, int], resample: int) -> torch.Tensor:
    """``PIL.Image.resize((width, height), resample)`` of 8-bit images, on pixels in [0, 1].

    ``pixels`` is (..., H, W); ``size`` is (height, width). The value is Pillow's, bit for bit,
    for pixels on whole levels (others are read as the nearest level); the gradient is that of
    the real-valued filters (module docstring).
    """
    height, width = (int(v) for v in size)
    in_height, in_width = (int(v) for v in pixels.shape[-2:])
    if (in_height, in_width) == (height, width):
        return pixels
    device = pixels.device
    real_w, fixed_w = _matrices(in_width, width, resample, device)
    real_h, fixed_h = _matrices(in_height, height, resample, device)
    order = vertical_first((in_height, in_width), (height, width), resample)
    exact = _exact(torch.round(pixels.detach().double() * LEVELS), fixed_h, fixed_w, order)
    linear = real_h.to(pixels.dtype) @ pixels @ real_w.T.to(pixels.dtype)
    # the exact value, carrying the linear map's gradient (x - x is exactly 0 forward)
    return (exact / LEVELS).to(pixels.dtype) + (linear - linear.detach())
