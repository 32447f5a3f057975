"""What identifies a dataset item in a run: its texts and its image file (or pixels).

A settings record keeps one short digest per evaluated item, so a rerun notices an annotation
file whose captions were edited, or an image file replaced under the same name (its size or
modification time changed), instead of reusing predictions made from the old ones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from prsl.data import ImageSource, LazyImage, Sample


def image_identity(image: ImageSource) -> str:
    """A file's path, size and modification time; an in-memory image's pixels."""
    if isinstance(image, LazyImage):
        return f"lazy:{image.identity}"
    if isinstance(image, Image.Image):
        digest = hashlib.sha1(image.tobytes()).hexdigest()
        return f"pixels:{image.mode}:{image.size}:{digest}"
    path = Path(image)
    try:
        stat = path.stat()
    except OSError:
        return f"file:{path}:missing"
    return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}"


def item_digest(sample: Sample) -> str:
    parts = [image_identity(sample.image), sample.question or "", *sample.references]
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


def item_digests(samples: list[Sample]) -> dict[str, str]:
    """``{item key: digest}`` for a settings record."""
    return {sample.key: item_digest(sample) for sample in samples}
