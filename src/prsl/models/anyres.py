"""LLaVA-NeXT's and LLaVA-OneVision's "anyres" tiling, as a tile layout
(:mod:`prsl.models.tiling`).

An anyres image processor turns an image of size (H, W) into a stack of tiles: it picks the best
of its ``image_grid_pinpoints`` for that size (``select_best_resolution``), resizes the image
into it keeping the aspect ratio (``get_patch_output_size``), pads the rest with black, centred,
cuts the result row by row into tiles of the vision tower's input size, and puts first a global
view, the whole image resized to one tile. The model reads the grid back from the image size
alone (``image_sizes``), unpads its features with it, and adds a newline embedding per row.

Everything but the pixel values depends only on (H, W), so the layout is laid out once per
canvas, with transformers' own helpers (:meth:`LlavaNext.layout`), and the tiles are computed
from the canvas pixels in torch: they equal the processor's, and every tile passes its gradient
back to the one attacked canvas.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
from transformers.image_utils import ChannelDimension

from prsl.core.errors import InvalidInput
from prsl.models.geometry import fixed_size
from prsl.models.pixels import Llava, register
from prsl.models.tiling import Size, TileLayout, TilingPipeline, View, grid_tiles, whole


@register("llava_next")
class LlavaNext(TilingPipeline):
    """LLaVA-NeXT (1.6): the canvas's anyres tiles, CLIP-normalised, with ``image_sizes`` (the
    canvas size, for every image). The canvas is any (H, W) (``image_size``); by default the
    smallest square pinpoint of several tiles (:meth:`default_canvas`)."""

    def __init__(self, processor: Any, config: Any, image_size: Size | None = None):
        images = processor.image_processor
        self.pinpoints = [[int(v) for v in p] for p in images.image_grid_pinpoints]
        if self.pinpoints != [[int(v) for v in p] for p in config.image_grid_pinpoints]:
            raise InvalidInput(
                f"the image processor's image_grid_pinpoints {self.pinpoints} differ from the "
                f"model config's {config.image_grid_pinpoints}; make them the same"
            )
        self.tile = self._tile_size(images, config)
        super().__init__(processor, config, image_size)

    def _tile_size(self, images: Any, config: Any) -> Size:
        """The vision tower's input side, which the processor's resize and crop of each tile,
        and of the global view, must keep (true of every released checkpoint)."""
        side = int(config.vision_config.image_size)
        crop = fixed_size(images.crop_size) if getattr(images, "do_center_crop", False) else None
        resized = fixed_size(images.size, shortest_edge=True)
        if resized != (side, side) or crop not in (None, (side, side)):
            raise InvalidInput(
                f"this {config.model_type} image processor resizes tiles to {resized} (crop "
                f"{crop}), its vision tower takes {side}x{side}; make size and crop_size "
                f"{side}x{side}"
            )
        for pinpoint in self.pinpoints:
            if pinpoint[0] % side or pinpoint[1] % side:
                raise InvalidInput(
                    f"image_grid_pinpoints {pinpoint} is not a whole number of {side}x{side} "
                    "tiles; fix image_grid_pinpoints in the processor and the model config"
                )
        return side, side

    def default_canvas(self) -> Size:
        """The smallest square pinpoint of more than one tile: 672x672 for LLaVA-NeXT, 768x768
        for OneVision, a 2x2 grid, what a VGA or COCO photo gets from these processors; the
        tiles then see the attacked pixels at their own resolution, unresized and unpadded."""
        one = self.tile[0] * self.tile[1]
        several = [p for p in self.pinpoints if p[0] * p[1] > one] or self.pinpoints
        return tuple(min(several, key=lambda p: (p[0] != p[1], p[0] * p[1])))

    def layout(self, canvas: Size) -> TileLayout:
        """The global view, then the grid cut from the canvas resized to ``fitted`` and padded
        with black into the chosen pinpoint ``resolution``, ``offset`` (top, left) from its
        corner: the processors paste at half the slack, rounded down (an odd pixel goes below /
        right)."""
        resolution = tuple(select_best_resolution(canvas, self.pinpoints))
        shape = np.broadcast_to(np.uint8(0), (1, *canvas))  # only its size is read
        fitted = get_patch_output_size(shape, resolution, input_data_format=ChannelDimension.FIRST)
        offset = ((resolution[0] - fitted[0]) // 2, (resolution[1] - fitted[1]) // 2)
        grid = (resolution[0] // self.tile[0], resolution[1] // self.tile[1])
        views = (View((self.tile,)), View((tuple(fitted),), frame=resolution, offset=offset))
        tiles = (whole(0, self.tile), *grid_tiles(1, grid, self.tile))
        return TileLayout(canvas, self.resample, views, tiles, grid)

    def pack(self, tiles: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixel_values": tiles, "image_sizes": self.image_sizes(len(tiles), tiles.device)}

    def vision_features(self, tower: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """LLaVA's features (:meth:`Llava.vision_features`) of every tile, global view first,
        (B, N x patches, D): all the projector reads (the model drops the features of whole
        rows and columns of padding after projecting; FARE keeps them, as the tower gives them)."""
        values = inputs["pixel_values"]
        features = Llava.vision_features(self, tower, {"pixel_values": values.flatten(0, 1)})
        return features.reshape(values.shape[0], -1, features.shape[-1])


@register("llava_onevision")
class LlavaOnevision(LlavaNext):
    """LLaVA-OneVision: LLaVA-NeXT's tiles (SigLIP-normalised, no crop), one image per sample
    (``batch_num_images`` 1: several would each be one untiled square). Past ``anyres_max_N``
    tiles' worth the model shrinks the grid's features, as the processor counts its tokens."""

    answer_space = False  # the assistant turn starts on a new line

    def __init__(self, processor: Any, config: Any, image_size: Size | None = None):
        ours, theirs = processor.vision_aspect_ratio, config.vision_aspect_ratio
        if ours != theirs:
            raise InvalidInput(
                f"the processor's vision_aspect_ratio {ours!r} differs from the model config's "
                f"{theirs!r}; make them the same"
            )
        super().__init__(processor, config, image_size)

    def pack(self, tiles: torch.Tensor) -> dict[str, torch.Tensor]:
        ones = torch.ones(tiles.shape[0], dtype=torch.long, device=tiles.device)
        return {**super().pack(tiles), "batch_num_images": ones}
