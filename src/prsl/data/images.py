"""One image loader for every reader: any common file mode in, 8-bit RGB out.

The authors' scripts dropped every image that was not already RGB; real datasets hold
grayscale, palette, RGBA, CMYK and 16-bit files. ``load_rgb`` converts them all and turns every
way a file can fail (missing, truncated, not an image) into one ``ImageLoadError``, so a long run
can skip the file, count it and name it in its log instead of crashing.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from prsl.core.lazy import lazy_import
from prsl.core.pixels import to_uint8
from prsl.data.types import ImageSource, LazyImage, Skipped

torch = lazy_import("torch", globals())

IN_MEMORY = "<in-memory image>"
"""The path reported for an ``Image.Image`` source that fails to convert."""

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_PLAIN_MODES = frozenset({"1", "L", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"})
_WHITE = (255, 255, 255, 255)

_log = logging.getLogger(__name__)


class ImageLoadError(Exception):
    """An image that cannot be read or converted; ``path`` and ``reason`` go to the run's log."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot load image {path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):
        """Rebuild from (path, reason), so the error survives a DataLoader worker's pickling."""
        return type(self), (self.path, self.reason)


def load_rgb(source: ImageSource) -> Image.Image:
    """Decode ``source`` (a path or an in-memory image) fully and return it as 8-bit RGB.

    Transparency is composited over white (what a viewer shows), palettes are expanded,
    CMYK goes through Pillow's conversion, and 16-bit / 32-bit integer gray (``I;16*``, ``I``,
    read as 16-bit data) is scaled by 255/65535 rather than clipped at 255. Floating-point
    (``F``) and ``LAB`` images have no safe conversion and raise ``ImageLoadError``.
    """
    if isinstance(source, Image.Image):
        return _decode(source, IN_MEMORY)
    if isinstance(source, LazyImage):
        return _load_lazy(source)
    path = Path(source)
    if not path.is_file():
        raise ImageLoadError(str(path), MISSING)
    try:
        with Image.open(path) as image:
            return _decode(image, str(path))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageLoadError(str(path), f"{type(err).__name__}: {err}") from err


def _load_lazy(source: LazyImage) -> Image.Image:
    try:
        value = source.load()
    except Exception as err:  # a table row that cannot be read is one unreadable image
        raise ImageLoadError(source.name, f"{type(err).__name__}: {err}") from err
    if isinstance(value, Image.Image):
        return _decode(value, source.name)
    if isinstance(value, bytes | bytearray):
        try:
            with Image.open(io.BytesIO(value)) as image:
                return _decode(image, source.name)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise ImageLoadError(source.name, f"{type(err).__name__}: {err}") from err
    if isinstance(value, str | Path):
        return load_rgb(value)
    raise ImageLoadError(source.name, f"no image in the row (got {type(value).__name__})")


def _decode(image: Image.Image, path: str) -> Image.Image:
    """Decode now (a truncated file fails here, not later in a batch) and convert to RGB."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(path, f"{type(err).__name__}: {err}") from err
    return _to_rgb(image, path)


def _to_rgb(image: Image.Image, path: str) -> Image.Image:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if mode == "P":
        mode_after = "RGBA" if "transparency" in image.info else "RGB"
        return _to_rgb(image.convert(mode_after), path)
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _PLAIN_MODES:
        return image.convert("RGB") if mode != "RGB" else image.copy()
    raise ImageLoadError(path, f"unsupported image mode {mode!r} (no safe conversion to RGB)")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)  # handles byte order (I;16B is big-endian)
    gray = np.rint(np.clip(values, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def to_pixels(images: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor:
    """Stack RGB images into a float tensor (B, 3, H, W) in [0, 1] for ``size = (H, W)``.

    Resizing is bicubic in Pillow on 8-bit data, so overshoot is clipped to [0, 255] before
    the division by 255 and the tensor never leaves [0, 1].
    """
    height, width = _check_size(size)
    arrays = []
    for index, image in enumerate(images):
        if image.mode != "RGB":
            raise ValueError(
                f"images[{index}] has mode {image.mode!r}; to_pixels takes RGB images "
                "(convert with load_rgb first)"
            )
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.uint8))
    if not arrays:
        return torch.empty((0, 3, height, width), dtype=torch.float32)
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return batch.float().div_(255.0).contiguous()


def save_image(pixels: torch.Tensor, path: str | Path) -> Path:
    """Write one image (3, H, W) in [0, 1] as an 8-bit file (PNG unless the suffix says else).

    An image on the 8-bit grid (values k/255, e.g. an attack run with ``quantize="uint8"``)
    is saved exactly: reading the PNG back gives the same tensor.
    """
    Image.fromarray(to_uint8(pixels)).save(path)
    return Path(path)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if (
        len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        or min(size) < 1
    ):
        raise ValueError(f"size must be (height, width) with two positive ints, got {size!r}")
    return size[0], size[1]


MISSING = "file not found"


def unreadable_reason(err: ImageLoadError) -> str:
    """How a skipped image is reported: ``image file not found`` or ``unreadable image (...)``."""
    return "image file not found" if err.reason == MISSING else f"unreadable image ({err.reason})"


@dataclass
class LoadedImages:
    """A decoded batch: pixels of the images that loaded, their positions, and the rest.

    ``kept[i]`` is the index in the input of ``pixels[i]``, so the caller can keep its
    references, questions and ids aligned with the pixels after skips.
    """

    pixels: torch.Tensor
    kept: list[int]
    skipped: list[Skipped] = field(default_factory=list)


Prepare = Callable[[list[Image.Image]], "torch.Tensor"]
"""RGB images -> (B, 3, H, W) pixels in [0, 1] at a model's input size (its own resize rule)."""


def load_images(
    sources: Sequence[ImageSource],
    size: tuple[int, int],
    log: logging.Logger | None = None,
    prepare: Prepare | None = None,
) -> LoadedImages:
    """Load and stack ``sources``, skipping (and logging a warning for) each one that fails.

    ``prepare`` brings the decoded images to the model's input size; by default a bicubic
    resize to ``size`` (:func:`to_pixels`).

    The returned ``pixels`` has one row per kept source and may be empty (B = 0) when every
    image failed; each skipped source is named with its path and reason (the caller, which
    knows whether it has seen the item before, reports it once).
    """
    logger = log or _log
    images, kept, skipped = [], [], []
    for index, source in enumerate(sources):
        try:
            images.append(load_rgb(source))
        except ImageLoadError as err:
            skipped.append(Skipped(err.path, unreadable_reason(err)))
            logger.debug("unreadable image %s: %s", err.path, err.reason)
        else:
            kept.append(index)
    pixels = prepare(images) if prepare is not None and images else to_pixels(images, size)
    return LoadedImages(pixels, kept, skipped)
