"""prsl.models.resample: Pillow's resize in torch, bit for bit, with a usable gradient.

Tiling processors resize the attacked image again after prsl's fixed geometry (the global
thumbnail, the resize to a grid); an attack through them is only an attack on the deployed
model if that resize gives exactly what the processor's Pillow gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.image_transforms import resize as hf_resize

from prsl.models.resample import LEVELS, Resampling, resize, weights

FILTERS = [
    Resampling.NEAREST,
    Resampling.BOX,
    Resampling.BILINEAR,
    Resampling.HAMMING,
    Resampling.BICUBIC,
    Resampling.LANCZOS,
]


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """Noise over a smooth gradient: both the edges that ring and the flats that don't."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, height * width * 3).reshape(height, width, 3)
    return np.clip(ramp + rng.integers(-55, 56, ramp.shape), 0, LEVELS).astype(np.uint8)


def pixels_of(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).float().div(LEVELS)


def levels_of(pixels: torch.Tensor) -> np.ndarray:
    return pixels.mul(LEVELS).round().to(torch.uint8).permute(1, 2, 0).numpy()


def pillow(array: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), resample))


@pytest.mark.parametrize("resample", FILTERS)
@pytest.mark.parametrize(
    ("source", "size"),
    [
        ((61, 97), (32, 32)),  # both shrink
        ((32, 32), (13, 29)),  # height shrinks more: this Pillow goes vertical first
        ((100, 37), (200, 18)),  # one grows, one shrinks
        ((24, 36), (96, 72)),  # both grow
        ((45, 60), (45, 20)),  # one pass only
    ],
)
def test_resize_is_pillows_bit_for_bit(source, size, resample):
    array = photo(*source, seed=sum(source))
    out = resize(pixels_of(array), size, resample)
    assert out.shape == (3, *size)
    assert np.array_equal(levels_of(out), pillow(array, size, resample))
    # and a whole level away from nothing: values are levels exactly, not near them
    assert torch.equal(out.mul(LEVELS).round(), out.mul(LEVELS))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 40),
    st.integers(2, 40),
    st.integers(1, 60),
    st.integers(1, 60),
    st.sampled_from(FILTERS),
    st.integers(0, 1000),
)
def test_any_geometry_matches_pillow(height, width, out_height, out_width, resample, seed):
    array = photo(height, width, seed)
    out = resize(pixels_of(array), (out_height, out_width), resample)
    assert np.array_equal(levels_of(out), pillow(array, (out_height, out_width), resample))


def test_it_is_what_a_transformers_image_processor_resizes_to():
    """The PIL-backend processors resize through ``transformers.image_transforms.resize``."""
    array = photo(50, 70, seed=3)
    expected = hf_resize(array, (24, 40), resample=Resampling.BICUBIC)
    out = resize(pixels_of(array), (24, 40), Resampling.BICUBIC)
    assert np.array_equal(levels_of(out), expected)


def test_off_grid_pixels_are_read_as_the_nearest_level_and_batches_are_per_image():
    array = photo(30, 30, seed=4)
    clean = pixels_of(array)
    nudged = (clean + (torch.rand_like(clean) - 0.5) * 0.9 / LEVELS).clamp(0, 1)
    both = resize(torch.stack([nudged, clean.flip(-1)]), (17, 11), Resampling.LANCZOS)
    assert torch.equal(both[0], resize(clean, (17, 11), Resampling.LANCZOS))
    assert torch.equal(both[1], resize(clean.flip(-1), (17, 11), Resampling.LANCZOS))


def test_the_gradient_is_the_real_filters_and_the_value_stays_within_rounding_of_them():
    array = photo(40, 52, seed=5)
    pixels = pixels_of(array).requires_grad_()
    out = resize(pixels, (15, 21), Resampling.BICUBIC)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    rows, _ = weights(40, 15, Resampling.BICUBIC)
    cols, _ = weights(52, 21, Resampling.BICUBIC)
    rows, cols = torch.from_numpy(rows), torch.from_numpy(cols)
    expected = rows.T @ upstream.double() @ cols  # d<upstream, R x C^T>/dx
    assert torch.allclose(pixels.grad.double(), expected, atol=1e-5)
    linear = rows @ pixels.detach().double() @ cols.T
    # each of the two passes rounds once, and the first pass's rounding is filtered again
    assert (out.detach().double() - linear).abs().max() * LEVELS <= 2.0


def test_an_unchanged_size_is_the_identity():
    pixels = torch.rand(2, 3, 8, 9)
    assert resize(pixels, (8, 9), Resampling.BICUBIC) is pixels
