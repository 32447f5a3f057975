"""The report's gallery: clean and adversarial images of a few items, saved as an evaluation goes.

The first ``gallery`` items of every (model, attack, ε) are saved as PNG pairs into
``<output_dir>/gallery`` (:func:`save_pair`), and ``results.json`` lists them with their
outputs (:func:`gallery_rows`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from prsl.core.paths import slug
from prsl.data import save_image
from prsl.evaluate.grid import Cell
from prsl.evaluate.ledger import Prediction
from prsl.provenance import ModelRef
from prsl.results import GalleryEntry, GalleryImages

GALLERY = "gallery"


def save_pair(out: Path, stem: str, clean: torch.Tensor, adversarial: torch.Tensor) -> dict:
    """Clean and adversarial image of one item into ``out/gallery``; paths relative to ``out``."""
    folder = out / GALLERY
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, image, suffix in (("clean", clean, "clean"), ("adversarial", adversarial, "adv")):
        file = folder / f"{slug(stem)}_{suffix}.png"
        save_image(image, file)
        paths[part] = str(file.relative_to(out))
    return paths


def gallery_rows(
    rows: list[Prediction], models: list[ModelRef], cells: list[Cell]
) -> list[GalleryEntry]:
    """The report's gallery: each pair with its captions, image paths relative to the run."""
    norms = {(c.name, c.eps): c.attack.ball_norm for c in cells}
    refs = {m.location: m for m in models}
    return [
        GalleryEntry(
            model=refs[r.model_path].name,
            loss=refs[r.model_path].loss,
            attack=r.attack,
            eps=r.eps,
            norm=norms[(r.attack, r.eps)],
            key=r.key,
            clean=r.clean,
            adversarial=r.adversarial,
            images=GalleryImages.model_validate(r.gallery),
        )
        for r in rows
        if r.gallery is not None
    ]
