"""Output folders and the file names prsl derives from keys and labels."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from prsl.core.errors import InvalidInput

_SAFE = "-_."


def slug(text: str) -> str:
    """``text`` with every character that is not a letter, digit or one of ``-_.`` as ``-``."""
    return "".join(c if c.isalnum() or c in _SAFE else "-" for c in text)


def prepare_output_dir(path: str | Path, what: str = "output directory") -> Path:
    """Create ``path`` (and its parents) and check that files can be written there.

    Done before any work, so that a run does not spend an hour and then fail to save: a path
    that is a file, or a folder that is not writable, is an :class:`InvalidInput` naming it.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"{what} {folder} is a file, not a folder: choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InvalidInput(
            f"{what} {folder} cannot be written ({reason}): choose another path"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InvalidInput(f"{what} {folder} is not writable: choose another path")
    return folder
