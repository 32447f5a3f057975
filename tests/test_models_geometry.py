"""What an image processor says about a model's pixels is read by one function, and a wrong
pixel shape is one user error, whichever adapter or pixel pipeline meets it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from prsl.core.errors import InvalidInput
from prsl.models.geometry import InputGeometry, check_pixels, fixed_size, image_geometry, size_field


@pytest.mark.parametrize(
    "size",
    [{"height": 24, "width": 32}, SimpleNamespace(height=24, width=32)],
    ids=["dict", "object"],
)
def test_a_size_reads_alike_as_a_dict_or_an_object(size):
    assert size_field(size, "height") == 24 and size_field(size, "missing") is None
    assert fixed_size(size) == (24, 32) == fixed_size(size, shortest_edge=True)


def test_a_shortest_edge_is_a_square_only_where_asked():
    for size in ({"shortest_edge": 30}, SimpleNamespace(shortest_edge=30)):
        assert fixed_size(size) is None
        assert fixed_size(size, shortest_edge=True) == (30, 30)
    assert fixed_size(None) is None and size_field(None, "height") is None


def test_image_geometry_reads_mean_std_and_size_and_refuses_what_it_cannot_use():
    processor = SimpleNamespace(
        image_mean=[0.5] * 3, image_std=[0.25] * 3, size={"height": 8, "width": 6}
    )
    assert image_geometry(processor) == InputGeometry([0.5] * 3, [0.25] * 3, (8, 6))
    processor.size = {"longest_edge": 8}
    with pytest.raises(InvalidInput, match="cannot read an input size"):
        image_geometry(processor)
    processor.image_mean = [0.5]
    with pytest.raises(InvalidInput, match="3 channel means/stds"):
        image_geometry(processor)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (3, 8, 6), (2, 1, 8, 6)])
def test_a_wrong_pixel_shape_is_a_user_error_naming_both_shapes(shape):
    check_pixels(torch.zeros(2, 3, 8, 6), (8, 6))
    with pytest.raises(InvalidInput, match=rf"\(B, 3, 8, 6\) for this model, got \({shape[0]}, "):
        check_pixels(torch.zeros(shape), (8, 6))
