"""Plain records every reader yields, so training, attacks and evaluation never see file formats."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass(frozen=True)
class LazyImage:
    """An image read only when a batch needs it: a row of a ``datasets`` table, say.

    ``load()`` returns a PIL image, the encoded bytes of one, or a path; ``name`` is how logs and
    skip records call it; ``identity`` is what a rerun's check fingerprints (it changes when the
    image does). Holding one costs nothing like holding the pixels, so a split of any size stays
    small in memory.
    """

    load: Callable[[], Any]
    name: str
    identity: str


ImageSource = str | Path | Image.Image | LazyImage
"""A path to an image file, an image in memory (the synthetic shapes data), or a lazy one."""


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


@dataclass(frozen=True)
class Skipped:
    """Something passed over, with why, for the run's log and results: an item (image or
    question) that could not be used, or a reference dropped from an item that was kept.

    ``key`` names the item when it is known (its image or question id), so an item found
    unreadable by several models or epochs is counted once.
    """

    path: str
    reason: str
    key: str | None = None

    @property
    def identity(self) -> str:
        return self.key if self.key is not None else self.path

    def as_dict(self) -> dict[str, str | None]:
        return {"path": self.path, "reason": self.reason, "key": self.key}


@dataclass
class DatasetSplit:
    """What a reader returns: the usable examples and everything it passed over (never silently).

    ``skipped`` holds one entry per item left out (a missing image, an image without any
    non-empty caption, a malformed row); ``dropped`` one per reference left out of an item that
    was kept (an empty caption beside good ones).
    """

    examples: list[CaptionExample] | list[VQAExample]
    skipped: list[Skipped] = field(default_factory=list)
    task: str = "caption"  # "caption" | "vqa"
    dropped: list[Skipped] = field(default_factory=list)


def unique_skips(skipped: Iterable[Skipped]) -> list[Skipped]:
    """Each skipped item once (the first reason given for it), in the order first seen."""
    seen: dict[str, Skipped] = {}
    for item in skipped:
        seen.setdefault(item.identity, item)
    return list(seen.values())


def skip_summary(skipped: list[Skipped], total: int, what: str = "items") -> str:
    """ "3 of 50 items skipped: 2 image file not found, 1 unreadable image" (reasons by kind)."""
    kinds = Counter(s.reason.split(" (")[0].split(":")[0] for s in skipped)
    reasons = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
    return f"{len(skipped)} of {total} {what} skipped" + (f": {reasons}" if reasons else "")


def dropped_summary(dropped: list[Skipped]) -> str:
    """ "2 empty captions dropped from items that were kept" (by kind, like skip_summary)."""
    kinds = Counter(s.reason.split(" (")[0] for s in dropped)
    listed = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
    return f"{listed} dropped from items that were kept"
