"""Tiling as a differentiable operation: the crops, resizes and thumbnail of a tiling processor,
computed in torch from one attacked image.

A tiling processor (Idefics3 / SmolVLM image splitting, InternVL's dynamic patches, LLaVA-NeXT's
anyres) turns one image into several images of the vision tower's size: a grid of tiles cut from
a resized copy, and usually a global thumbnail. Which grid depends on the image's size, so prsl
fixes that size: every image is brought once, outside the gradient, to a *canvas* of fixed
(H, W), and the grid is computed once for that canvas, by the processor's own helpers. What
happens after, on the attacked pixels, is a :class:`TileLayout` applied by :func:`tile_pixels`:

- a :class:`View` is the canvas resized through a chain of sizes, each step rounded to 8 bits
  as a PIL-backend processor resizes a ``uint8`` image (:func:`prsl.models.resample.resize`,
  Pillow's arithmetic bit for bit, with the real filter's gradient), then optionally padded
  into a larger frame;
- a :class:`Tile` is a box cut from a view, optionally resized once more;
- the layout lists the views and the tiles in the order the model takes them.

So the perturbation is one image in the ε-ball and every tile sees its share of it: the
gradient of a loss on the tiles flows back through the crops and resizes to the canvas.

A family then needs only its layout (:meth:`TilingPipeline.layout`), how its tiles are
packed into model inputs (:meth:`TilingPipeline.pack`) and its default canvas;
:class:`TilingPipeline` does the rest (the canvas and ``prepare``, as every
:class:`~prsl.models.pixels.CanvasPipeline`, the tiles, rescale and normalise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prsl.models.geometry import Size, check_pixels
from prsl.models.pixels import CanvasPipeline
from prsl.models.resample import resize


@dataclass(frozen=True)
class View:
    """The canvas resized through ``sizes`` in order (each (height, width); empty: the canvas
    itself), then, with ``frame``, placed at ``offset`` (top, left) in a (height, width) frame
    filled with ``fill`` (per-channel pixel values in [0, 1], before normalisation: a processor
    that pads with 0 after normalising pads with the mean)."""

    sizes: tuple[Size, ...] = ()
    frame: Size | None = None
    offset: Size = (0, 0)
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Tile:
    """The box (top, left, height, width) of view number ``view``, resized to ``size`` if given."""

    view: int
    box: tuple[int, int, int, int]
    size: Size | None = None

    @property
    def shape(self) -> Size:
        return self.size if self.size is not None else (self.box[2], self.box[3])


@dataclass(frozen=True)
class TileLayout:
    """How a processor turns a canvas of ``canvas`` (H, W) into the images its model takes.

    ``grid`` is the (rows, columns) the processor chose ((0, 0) or (1, 1) when it does not
    split), ``resample`` the Pillow filter of every resize, and every tile has the same size."""

    canvas: Size
    resample: int
    views: tuple[View, ...]
    tiles: tuple[Tile, ...]
    grid: Size

    def __post_init__(self) -> None:
        shapes = {tile.shape for tile in self.tiles}
        if len(shapes) != 1:
            raise ValueError(f"a layout's tiles must share one size, got {sorted(shapes)}")
        for tile in self.tiles:
            top, left, height, width = tile.box
            frame = self.view_size(tile.view)
            if top < 0 or left < 0 or top + height > frame[0] or left + width > frame[1]:
                raise ValueError(f"tile box {tile.box} lies outside its view of {frame}")

    @property
    def tile_size(self) -> Size:
        return self.tiles[0].shape

    def __len__(self) -> int:
        return len(self.tiles)

    def view_size(self, index: int) -> Size:
        view = self.views[index]
        if view.frame is not None:
            return view.frame
        return view.sizes[-1] if view.sizes else self.canvas


def grid_tiles(view: int, grid: Size, tile: Size) -> tuple[Tile, ...]:
    """The tiles of a ``grid`` (rows, columns) of ``tile``-sized boxes from the top-left corner
    of a view, row by row (the order every tiling processor in transformers uses)."""
    rows, cols = grid
    height, width = tile
    return tuple(
        Tile(view, (row * height, col * width, height, width))
        for row in range(rows)
        for col in range(cols)
    )


def whole(view: int, size: Size) -> Tile:
    """The whole of a view of ``size`` as one tile (a global image, a thumbnail)."""
    return Tile(view, (0, 0, *size))


def tile_pixels(pixels: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """The layout's tiles of canvases (B, 3, H, W) in [0, 1], as (B, N, 3, h, w) in [0, 1];
    differentiable (every resize is :func:`~prsl.models.resample.resize`)."""
    check_pixels(pixels, layout.canvas)
    resized: dict[tuple[Size, ...], torch.Tensor] = {(): pixels}

    def chain(sizes: tuple[Size, ...]) -> torch.Tensor:
        if sizes not in resized:  # views sharing a prefix of resizes share its result
            resized[sizes] = resize(chain(sizes[:-1]), sizes[-1], layout.resample)
        return resized[sizes]

    views = [_framed(chain(view.sizes), view) for view in layout.views]
    tiles = []
    for tile in layout.tiles:
        top, left, height, width = tile.box
        crop = views[tile.view][..., top : top + height, left : left + width]
        tiles.append(crop if tile.size is None else resize(crop, tile.size, layout.resample))
    return torch.stack(tiles, dim=1)


def _framed(pixels: torch.Tensor, view: View) -> torch.Tensor:
    if view.frame is None:
        return pixels
    batch, channels, height, width = pixels.shape
    fill = torch.tensor(view.fill, dtype=pixels.dtype, device=pixels.device).view(1, -1, 1, 1)
    frame = fill.expand(batch, channels, *view.frame).clone()
    top, left = view.offset
    frame[..., top : top + height, left : left + width] = pixels
    return frame


def image_settings(processor: Any, **options: Any) -> dict[str, Any]:
    """The settings a processor's image processor runs with when the processor is called with
    ``options``: the processor's own defaults for images (InternVL's ``crop_to_patches``),
    then the image processor's attributes, standardised (``size`` as a ``SizeDict``)."""
    init = processor.tokenizer.init_kwargs
    merged = processor._merge_kwargs(tokenizer_init_kwargs=init, **options)
    return processor.image_processor._merge_and_standardize_kwargs(**merged["images_kwargs"])


def pil_backend(image_processor: Any) -> Any:
    """The PIL-backend twin of an image processor, with the same settings (itself if it is one).

    ``load_adapter`` loads the PIL class (:mod:`prsl.models.processors`), but a processor built
    by hand with the torchvision ("fast") class, whose methods take tensors, reaches an adapter
    too; a tiling pipeline asks the PIL class's own methods for its layout, and reproduces the
    PIL class's numbers."""
    from transformers.image_processing_backends import PilBackend

    if isinstance(image_processor, PilBackend):
        return image_processor
    import transformers

    name = type(image_processor).__name__.removesuffix("Fast") + "Pil"
    settings = {k: v for k, v in image_processor.to_dict().items() if not k.startswith("_")}
    return getattr(transformers, name)(**settings)


class TilingPipeline(CanvasPipeline):
    """A pixel pipeline whose input is a canvas the processor tiles (module docstring).

    Subclasses write :meth:`layout` (the processor's grid for the canvas size, from its own
    helpers), :meth:`pack` (the tiles, normalised, as the model's inputs) and, as every
    canvas pipeline, :meth:`default_canvas`; they refuse in :meth:`check_canvas` the sizes
    their processor cannot produce."""

    tiled: bool = True
    """Whether ``model_inputs`` does all of the processor's work from the canvas (else
    ``prepare`` already ran the processor's geometry, as for a model that does not tile)."""

    def __init__(self, processor: Any, config: Any, image_size: Size | None = None):
        super().__init__(processor, config, image_size)
        self.tiles = self.layout(self.size)

    def layout(self, canvas: Size) -> TileLayout:
        """The processor's tiling of a canvas of this size."""
        raise NotImplementedError

    def pack(self, tiles: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's image inputs from normalised tiles (B, N, 3, h, w)."""
        raise NotImplementedError

    def model_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        tiles = tile_pixels(pixels, self.tiles)
        batch, count = tiles.shape[:2]
        normalised = self.normalisation(tiles.flatten(0, 1))
        return self.pack(normalised.unflatten(0, (batch, count)))
