"""Output folders and the file names prsl derives from keys and labels."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from prsl.core.errors import InvalidInput

_SAFE = "-_."
ADAPTER_INFO = "prsl_adapter.json"
"""What prsl saves beside a model's weights: its family and adapter options (prompts, input
size or canvas)."""


def slug(text: str) -> str:
    """``text`` with every character that is not a letter, digit or one of ``-_.`` as ``-``."""
    return "".join(c if c.isalnum() or c in _SAFE else "-" for c in text)


def check_output_dir(path: str | Path, what: str = "output directory") -> Path:
    """Check, before any work, that results can be written to ``path``; create nothing.

    A run must not spend an hour and then fail to save, nor leave an empty folder behind when it
    stops at a later check: a path that is a file, or a folder (or, for a folder still to be
    made, the nearest existing one above it) that cannot be written, is an
    :class:`InvalidInput` naming it.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"{what} {folder} is a file, not a folder: choose another path")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInput(f"{what} {folder} is inside {existing}, a file: choose another path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InvalidInput(
            f"{what} {folder} cannot be written ({reason}): choose another path"
        ) from None
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInput(f"{what} {folder} is not writable: choose another path")
    return folder
