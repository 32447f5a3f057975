"""Idefics3 and SmolVLM: image splitting as a tile layout (:mod:`prsl.models.tiling`).

With splitting on (the processor's ``do_image_splitting``, on in the released checkpoints),
the processor resizes the image so its longest edge is ``size["longest_edge"]``, then up to
multiples of ``max_image_size``, cuts that into a grid of ``max_image_size`` squares (row by row)
and appends the whole resized image shrunk to one square (the global image); every resize is
Lanczos on the 8-bit image. The canvas defaults to the square of ``size["longest_edge"]``: both
resizes are then identities, so each tile is exactly a block of canvas pixels, and the grid is
the largest the model takes (4 x 4 in the released checkpoints).

With splitting off, one global image: the processor's resize to the ``max_image_size`` square is
done once in ``prepare`` (the canvas is that square), as before tiling existed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from prsl.core.errors import InvalidInput
from prsl.models.pixels import PIL_PROCESSOR, register
from prsl.models.tiling import (
    Size,
    TileLayout,
    TilingPipeline,
    View,
    grid_tiles,
    image_settings,
    pil_backend,
)
from prsl.models.tiling import whole as whole_view


@register("idefics3", "smolvlm")
class Idefics3(TilingPipeline):
    """SmolVLM and Idefics3, image splitting on or off as their processor says (module
    docstring); images in [-1, 1], an all-ones pixel mask (a fixed canvas needs no padding)."""

    projector = "connector"
    vision_tower = "vision_model"
    revision = f"split; {PIL_PROCESSOR}"  # splitting as the processor says; before: always off

    def __init__(self, processor: Any, config: Any, image_size: Size | None = None):
        settings = image_settings(processor)
        self.split = self.tiled = bool(settings["do_image_splitting"])
        self.side = int(settings["max_image_size"]["longest_edge"])
        self.longest = int(settings["size"].longest_edge or self.side)
        self.processor_options = {"do_image_splitting": self.split}
        super().__init__(processor, config, image_size)

    def default_canvas(self) -> Size:
        if not self.split:
            return self.side, self.side
        return self._grid_size((self.longest, self.longest))

    def check_canvas(self, canvas: Size) -> None:
        super().check_canvas(canvas)
        if not self.split and canvas != (self.side, self.side):
            raise InvalidInput(
                f"a {self.config.model_type!r} model without image splitting takes "
                f"{self.side}x{self.side} images (its max_image_size); image_size {canvas} cannot "
                "be produced by its processor (turn do_image_splitting on to tile a larger canvas)"
            )

    def _first_size(self, canvas: Size) -> Size:
        """The processor's resize of the longest edge to ``size["longest_edge"]``."""
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            get_resize_output_image_size,
        )

        probe = np.empty((3, *canvas), dtype=np.uint8)  # only its shape is read
        return tuple(get_resize_output_image_size(probe, resolution_max_side=self.longest))

    def _grid_size(self, first: Size) -> Size:
        """The processor's resize of that to multiples of ``max_image_size`` (run on a blank
        image: the size is computed inside the method that resizes)."""
        probe = np.zeros((3, *first), dtype=np.uint8)
        resized = pil_backend(self.image_processor).resize_for_vision_encoder(
            probe, self.side, self.resample
        )
        return tuple(resized.shape[-2:])

    def layout(self, canvas: Size) -> TileLayout:
        square = (self.side, self.side)
        if not self.split:
            return TileLayout(canvas, self.resample, (View(),), (whole_view(0, canvas),), (0, 0))
        first = self._first_size(canvas)
        grid_size = self._grid_size(first)
        probe = np.zeros((3, *grid_size), dtype=np.uint8)
        size = {"longest_edge": self.side}
        _, rows, cols = pil_backend(self.image_processor).split_images(probe, size, self.resample)
        chain = (first, grid_size)
        if rows == 0:  # no larger than one square: the image alone, no global image
            only = (whole_view(0, square),)
            return TileLayout(canvas, self.resample, (View(chain),), only, (0, 0))
        views = (View(chain), View((*chain, square)))
        tiles = (*grid_tiles(0, (rows, cols), square), whole_view(1, square))
        return TileLayout(canvas, self.resample, views, tiles, (rows, cols))

    def prepare(self, images: list[Image.Image]) -> torch.Tensor:
        if self.split:
            return super().prepare(images)
        out = self.image_processor(
            [[image] for image in images],  # one image per sample, not one sample of several
            do_rescale=False,
            do_normalize=False,
            return_tensors="pt",
            **self.processor_options,
        )["pixel_values"]
        return out[:, 0].float().div(255.0).clamp(0.0, 1.0).contiguous()

    def pack(self, tiles: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, count, _, height, width = tiles.shape
        mask = torch.ones(batch, count, height, width, dtype=torch.long, device=tiles.device)
        return {"pixel_values": tiles, "pixel_attention_mask": mask}

    def vision_features(self, tower: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The tower's output per tile (B, tiles, T, D): no tile is padding, so every patch is
        real (the tower's default mask)."""
        values = inputs["pixel_values"]
        hidden = tower(pixel_values=values.flatten(0, 1)).last_hidden_state
        return hidden.unflatten(0, values.shape[:2])
