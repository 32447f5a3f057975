"""Plain records every reader yields, so training, attacks and evaluation never see file formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

ImageSource = str | Path | Image.Image
"""A path to an image file, or an image already in memory (the synthetic shapes data)."""


@dataclass(frozen=True)
class CaptionExample:
    """One image with its reference captions."""

    image: ImageSource
    references: tuple[str, ...]
    image_id: str


@dataclass(frozen=True)
class VQAExample:
    """One question about one image, with the human answers (VQAv2 has ten per question)."""

    image: ImageSource
    question: str
    answers: tuple[str, ...]
    image_id: str
    question_id: str


@dataclass
class Skipped:
    """Something a reader or the image loader passed over, with why, for the run's log."""

    path: str
    reason: str


@dataclass
class DatasetSplit:
    """What a reader returns: the usable examples and everything it skipped (never silently)."""

    examples: list[CaptionExample] | list[VQAExample]
    skipped: list[Skipped] = field(default_factory=list)
    task: str = "caption"  # "caption" | "vqa"
