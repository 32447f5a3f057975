"""InternVL (2.5 / 3, the ``-hf`` checkpoints): dynamic patches as a tile layout
(:mod:`prsl.models.tiling`).

Its processor (GotOcr2's image processor, called with ``crop_to_patches``, which the InternVL
processor turns on) picks among the grids of ``min_patches`` to ``max_patches`` tiles the one
whose aspect ratio is closest to the image's, resizes the image to that grid of ``size`` tiles,
cuts it row by row and appends a thumbnail of the whole image at the tile size (when there is
more than one tile); every resize is bicubic on the 8-bit image. The canvas defaults to 2 x 2
tiles: a square image of moderate size takes that grid, and each tile is then exactly a block of
canvas pixels (the resize to the grid is the identity). Without ``crop_to_patches``, one image
resized to the tile size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prsl.models.pixels import register
from prsl.models.tiling import Size, TileLayout, TilingPipeline, View, grid_tiles, image_settings
from prsl.models.tiling import whole as whole_view


@register("internvl")
class InternVL(TilingPipeline):
    """InternVL's tiles (module docstring), normalised, as one (tiles of the batch, 3, h, w)
    tensor, the tiles of each image consecutive."""

    foreign_tower = "InternViT (InternVLVisionModel: layer scale, optional query / key norms)"

    def __init__(self, processor: Any, config: Any, image_size: Size | None = None):
        settings = image_settings(processor)
        self.tile = (int(settings["size"].height), int(settings["size"].width))
        self.patches = (int(settings["min_patches"]), int(settings["max_patches"]))
        self.crop = bool(settings["crop_to_patches"]) and self.patches[1] > 1
        super().__init__(processor, config, image_size)

    def default_canvas(self) -> Size:
        if not self.crop:
            return self.tile
        return 2 * self.tile[0], 2 * self.tile[1]

    def layout(self, canvas: Size) -> TileLayout:
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
            get_optimal_tiled_canvas,
        )

        if not self.crop:
            only = (whole_view(0, self.tile),)
            return TileLayout(canvas, self.resample, (View((self.tile,)),), only, (1, 1))
        cols, rows = get_optimal_tiled_canvas(canvas, self.tile, *self.patches)
        grid_size = (rows * self.tile[0], cols * self.tile[1])
        tiles = grid_tiles(0, (rows, cols), self.tile)
        views = [View((grid_size,))]
        if len(tiles) > 1:  # the thumbnail: the whole canvas at the tile size
            views.append(View((self.tile,)))
            tiles = (*tiles, whole_view(1, self.tile))
        return TileLayout(canvas, self.resample, tuple(views), tiles, (rows, cols))

    def pack(self, tiles: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixel_values": tiles.flatten(0, 1)}

    def vision_features(self, tower: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the projector reads, per image (B, tiles, T, D): the chosen layer without its
        CLS token, pixel-shuffled (``downsample_ratio``), as ``get_image_features`` computes it
        before ``multi_modal_projector``."""
        from transformers.models.internvl.modeling_internvl import InternVLModel

        config, values = self.config, inputs["pixel_values"]
        layer = config.vision_feature_layer
        out = tower(pixel_values=values, output_hidden_states=layer != -1)
        hidden = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        if config.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]
        side = int(hidden.shape[1] ** 0.5)
        square = hidden.reshape(hidden.shape[0], side, side, -1)
        # the model's own shuffle, a reshape that reads nothing of the model it belongs to
        shuffled = InternVLModel.pixel_shuffle(None, square, scale_factor=config.downsample_ratio)
        features = shuffled.reshape(hidden.shape[0], -1, shuffled.shape[-1])
        return features.unflatten(0, (-1, len(self.tiles)))
