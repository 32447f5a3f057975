"""LLaVA-NeXT's and LLaVA-OneVision's "anyres" tiling, laid out once and computed in torch.

An anyres image processor turns an image of size (H, W) into a stack of tiles: it picks the best
of its ``image_grid_pinpoints`` for that size (``select_best_resolution``), resizes the image
into it keeping the aspect ratio (``get_patch_output_size``), pads the rest with black, centred,
cuts the result row by row into tiles of the vision tower's input size, and puts first a global
view, the whole image resized to one tile. The model reads the grid back from the image size
alone (``image_sizes``), unpads its features with it, and adds a newline embedding per row.

Everything but the pixel values depends only on (H, W), so prsl attacks one image of a fixed
size, the *canvas*: every image is brought to it once, outside the gradient; its tiles are laid
out once, with transformers' own helpers (:func:`anyres_layout`), and computed from the canvas
pixels in torch (:func:`anyres_tiles`), Pillow's resize reproduced bit for bit
(:func:`prsl.models.resample.resize`). The tiles equal the processor's, and every tile passes its
gradient back to the one attacked canvas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
from transformers.image_utils import ChannelDimension

from prsl.core.errors import InvalidInput
from prsl.models.geometry import check_pixels, fixed_size
from prsl.models.pixels import Llava, PixelPipeline, register
from prsl.models.resample import resize

Size = tuple[int, int]
"""(height, width) in pixels."""


@dataclass(frozen=True)
class AnyresLayout:
    """Where every tile of a canvas comes from: the global view (the canvas resized to one tile),
    then the ``grid`` (rows, columns) of tiles cut from the canvas resized to ``fitted`` and
    padded with black into ``resolution``, ``offset`` (top, left) from its corner."""

    canvas: Size
    resample: int
    grid: Size
    tile_size: Size
    resolution: Size
    fitted: Size
    offset: Size

    def __len__(self) -> int:
        """Tiles in the stack, the global view included."""
        return 1 + self.grid[0] * self.grid[1]


def anyres_layout(
    canvas: Size, pinpoints: list[list[int]], tile: Size, resample: int
) -> AnyresLayout:
    """The tile layout of a canvas, as the image processor computes it for an image that size."""
    height, width = (int(v) for v in canvas)
    resolution = tuple(select_best_resolution((height, width), pinpoints))
    shape = np.broadcast_to(np.uint8(0), (1, height, width))  # only its size is read
    fitted = get_patch_output_size(shape, resolution, input_data_format=ChannelDimension.FIRST)
    # the processors paste at half the slack, rounded down: an odd pixel goes below / right
    offset = ((resolution[0] - fitted[0]) // 2, (resolution[1] - fitted[1]) // 2)
    grid = (resolution[0] // tile[0], resolution[1] // tile[1])
    return AnyresLayout((height, width), resample, grid, tile, resolution, tuple(fitted), offset)


def anyres_tiles(pixels: torch.Tensor, layout: AnyresLayout) -> torch.Tensor:
    """Canvas pixels (B, 3, H, W) in [0, 1] -> tiles (B, N, 3, h, w) in [0, 1]: the global view,
    then the grid row by row; the processor's 8-bit values divided by 255, differentiable."""
    check_pixels(pixels, layout.canvas)
    batch, channels = pixels.shape[:2]
    (top, left), (rows, cols), (tile_h, tile_w) = layout.offset, layout.grid, layout.tile_size
    bottom = layout.resolution[0] - layout.fitted[0] - top
    right = layout.resolution[1] - layout.fitted[1] - left
    fitted = resize(pixels, layout.fitted, layout.resample)
    padded = F.pad(fitted, (left, right, top, bottom), value=0.0)  # the processors' np.pad 0
    grid = padded.reshape(batch, channels, rows, tile_h, cols, tile_w)
    grid = grid.permute(0, 2, 4, 1, 3, 5).reshape(batch, rows * cols, channels, tile_h, tile_w)
    base = resize(pixels, layout.tile_size, layout.resample).unsqueeze(1)
    return torch.cat([base, grid], dim=1)


def to_canvas(images: list[Image.Image], size: Size, resample: int) -> torch.Tensor:
    """Images resized to the canvas with the processor's filter (stretched where their aspect
    ratio differs: every image then takes the same grid), as (B, 3, H, W) pixels in [0, 1]."""
    height, width = size
    arrays = [
        np.asarray(
            image.convert("RGB").resize((width, height), resample)
            if image.size != (width, height)
            else image.convert("RGB"),
            dtype=np.uint8,
        )
        for image in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255.0)


@register("llava_next")
class LlavaNext(PixelPipeline):
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
        self.tiles = self.layout(self.size)

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

    # ------------------------------------------------------------------ the canvas and its tiles
    def default_canvas(self) -> Size:
        """The smallest square pinpoint of more than one tile: 672x672 for LLaVA-NeXT, 768x768
        for OneVision, a 2x2 grid, what a VGA or COCO photo gets from these processors; the
        tiles then see the attacked pixels at their own resolution, unresized and unpadded."""
        one = self.tile[0] * self.tile[1]
        several = [p for p in self.pinpoints if p[0] * p[1] > one] or self.pinpoints
        return tuple(min(several, key=lambda p: (p[0] != p[1], p[0] * p[1])))

    def check_canvas(self, canvas: Size) -> None:
        if len(canvas) != 2 or min(canvas) < 1:
            raise InvalidInput(f"image_size must be (height, width), both >= 1; got {canvas}")

    def input_size(self, requested: Size | None) -> Size:
        canvas = self.default_canvas() if requested is None else tuple(int(v) for v in requested)
        self.check_canvas(canvas)
        return canvas

    def layout(self, canvas: Size) -> AnyresLayout:
        resample = self.image_processor.resample
        return anyres_layout(
            canvas, self.pinpoints, self.tile, int(getattr(resample, "value", resample))
        )

    def prepare(self, images: list[Image.Image]) -> torch.Tensor:
        return to_canvas(images, self.size, self.tiles.resample)

    def model_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        tiles = anyres_tiles(pixels, self.tiles)
        return self.pack(self.normalisation(tiles))

    def pack(self, tiles: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's inputs from normalised tiles (B, N, 3, h, w)."""
        sizes = torch.tensor([list(self.size)] * tiles.shape[0], device=tiles.device)
        return {"pixel_values": tiles, "image_sizes": sizes}

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
