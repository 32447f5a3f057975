"""Scenes of the synthetic "shapes" dataset: what is in an image, and how it is drawn.

A ``Scene`` is the ground truth every caption and answer is derived from; ``render_scene``
draws it with numpy only, so the same scene gives the same bytes on every machine. Shapes have
distinct kinds and distinct colours within a scene (so "the circle" and "the red one" name one
shape) and their bounding boxes never touch (so every pair has a clear left/right/above/below
relation). The background is gray stripes plus per-pixel noise: textured, but never saturated,
so a shape's colour cannot be confused with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from prsl.core.errors import InvalidInput

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
KINDS = ("circle", "square", "triangle")
SIZES = ("small", "large")
TEXTURES = ("horizontal", "vertical", "diagonal")
MIN_IMAGE_SIZE = 24
MAX_SHAPES = 3
NOISE = 12  # background noise amplitude per channel; gray +- NOISE stays far from any colour
_GAP = 2  # empty pixels required between two bounding boxes
_PLACEMENT_TRIES = 200


@dataclass(frozen=True)
class Shape:
    """One shape; it lies inside the square box ``[x - radius, x + radius]`` (rows: ``y``)."""

    kind: str
    color: str
    size: str
    x: int
    y: int
    radius: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), inclusive pixel coordinates."""
        return (
            self.x - self.radius,
            self.y - self.radius,
            self.x + self.radius,
            self.y + self.radius,
        )


@dataclass(frozen=True)
class Scene:
    """Everything needed to draw one image: its shapes and its background."""

    image_size: int
    shapes: tuple[Shape, ...]
    texture: str
    period: int  # stripe width in pixels
    shades: tuple[int, int]  # the two gray levels of the stripes
    noise_seed: int


def radius_for(size: str, image_size: int) -> int:
    """Half-extent of a small or large shape; large is always visibly larger."""
    small = max(2, round(0.09 * image_size))
    return small if size == "small" else max(small + 2, round(0.17 * image_size))


def check_image_size(image_size: int) -> None:
    """Below ``MIN_IMAGE_SIZE`` three large shapes no longer fit without touching."""
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise InvalidInput(f"image_size must be an int >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise InvalidInput(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")


def generate_scene(rng: np.random.Generator, image_size: int = 32) -> Scene:
    """Draw a random scene (1 to 3 shapes, distinct kinds and colours) from ``rng`` alone."""
    check_image_size(image_size)
    count = int(rng.integers(1, MAX_SHAPES + 1))
    kinds = rng.choice(KINDS, size=count, replace=False)
    colors = rng.choice(list(COLORS), size=count, replace=False)
    sizes = rng.choice(SIZES, size=count)
    radii = [radius_for(str(size), image_size) for size in sizes]
    centres = _place(rng, radii, image_size)
    shapes = tuple(
        Shape(str(kind), str(color), str(size), x, y, radius)
        for kind, color, size, radius, (x, y) in zip(
            kinds, colors, sizes, radii, centres, strict=True
        )
    )
    shade_a, shade_b = (int(v) for v in rng.integers(90, 171, size=2))
    return Scene(
        image_size=image_size,
        shapes=shapes,
        texture=str(rng.choice(TEXTURES)),
        period=int(rng.integers(2, 6)),
        shades=(shade_a, shade_b),
        noise_seed=int(rng.integers(0, 2**31)),
    )


def _place(rng: np.random.Generator, radii: list[int], size: int) -> list[tuple[int, int]]:
    """Centres for boxes of the given radii, inside the image and ``_GAP`` apart (rejection)."""
    for _ in range(_PLACEMENT_TRIES):
        placed: list[tuple[int, int, int]] = []
        for radius in radii:
            for _ in range(_PLACEMENT_TRIES):
                x, y = (int(v) for v in rng.integers(radius + 1, size - radius - 1, size=2))
                if all(_apart((x, y, radius), other) for other in placed):
                    placed.append((x, y, radius))
                    break
            else:
                break  # this shape found no room: start the scene's placement again
        if len(placed) == len(radii):
            return [(x, y) for x, y, _ in placed]
    raise RuntimeError(f"could not place shapes of radii {radii} in a {size}px image")


def _apart(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    (xa, ya, ra), (xb, yb, rb) = a, b
    reach = ra + rb + _GAP
    return abs(xa - xb) > reach or abs(ya - yb) > reach


def relation(a: Shape, b: Shape) -> str:
    """Where ``a`` is relative to ``b``: "left of", "right of", "above" or "below".

    Boxes never overlap, so they are separated along x or y (or both); the clearer axis
    (larger gap) wins, and the relation holds for every pixel of the two shapes.
    """
    al, at, ar, ab = a.box
    bl, bt, br, bb = b.box
    gap_x = max(bl - ar, al - br)
    gap_y = max(bt - ab, at - bb)
    if gap_x >= gap_y:
        return "left of" if ar < bl else "right of"
    return "above" if ab < bt else "below"


def shape_mask(shape: Shape, image_size: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixels ``shape`` covers; it spans exactly ``shape.box``."""
    rows, cols = np.mgrid[0:image_size, 0:image_size]
    dx, dy, r = cols - shape.x, rows - shape.y, shape.radius
    inside_box = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape.kind == "square":
        return inside_box
    if shape.kind == "circle":
        return dx * dx + dy * dy <= (r + 0.5) ** 2
    return inside_box & (2 * np.abs(dx) <= dy + r)  # triangle, apex up, base on the bottom row


def render_scene(scene: Scene) -> Image.Image:
    """Draw ``scene`` as an RGB image; pure function of the scene (byte-identical output)."""
    size = scene.image_size
    rows, cols = np.mgrid[0:size, 0:size]
    phase = {"horizontal": rows, "vertical": cols, "diagonal": rows + cols}[scene.texture]
    stripes = np.where((phase // scene.period) % 2 == 0, *scene.shades)
    noise = np.random.default_rng(scene.noise_seed).integers(-NOISE, NOISE + 1, (size, size, 3))
    pixels = np.clip(stripes[..., None] + noise, 0, 255).astype(np.uint8)
    for shape in scene.shapes:
        pixels[shape_mask(shape, size)] = COLORS[shape.color]
    return Image.fromarray(pixels)  # (H, W, 3) uint8 is RGB
