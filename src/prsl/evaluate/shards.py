"""How the processes of a launch share a run: every ``world``-th batch each, one file each.

``evaluate`` and ``prsl attack`` split their items alike. Under ``accelerate launch`` process
``rank`` of ``world`` takes batches ``rank``, ``rank + world``, ... (:func:`assigned_batches`),
and appends one JSON line per finished item to a file of its own (:class:`ShardFiles`:
``<name>.jsonl`` for the first process, ``<name>.<rank>.jsonl`` for the others). Every process
reads all the files, the first process's first, so a run resumed with another number of
processes skips what any of them finished. A line torn by a kill mid-write is dropped when read
and cut before the next append (:func:`drop_torn_tail`), so the item is simply done again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def assigned_batches(
    items: Sequence[T], size: int, rank: int, world: int
) -> Iterator[tuple[list[T], bool]]:
    """Every batch of ``size`` items in order, with whether process ``rank`` of ``world`` takes
    it (each process takes every ``world``-th batch, starting at its rank)."""
    for index, start in enumerate(range(0, len(items), size)):
        yield list(items[start : start + size]), index % world == rank


@dataclass(frozen=True)
class ShardFiles:
    """The JSON-lines files one command's processes append to in a folder (module docstring)."""

    name: str
    """The first process's file is ``<name>.jsonl``."""

    @property
    def first(self) -> str:
        return f"{self.name}.jsonl"

    @property
    def pattern(self) -> str:
        """A glob matching every process's file."""
        return f"{self.name}*.jsonl"

    def path(self, folder: Path, rank: int) -> Path:
        """The file process ``rank`` appends to."""
        return folder / (self.first if rank == 0 else f"{self.name}.{rank}.jsonl")

    def paths(self, folder: Path) -> list[Path]:
        """Every process's file in ``folder``, the first process's first."""
        return sorted(folder.glob(self.pattern), key=lambda p: (p.name != self.first, p.name))

    def rows(self, folder: Path) -> Iterator[dict[str, Any]]:
        """Every file's rows, file by file in the order of :meth:`paths`."""
        for path in self.paths(folder):
            yield from read_predictions(path)

    def discard(self, folder: Path) -> None:
        for path in folder.glob(self.pattern):
            path.unlink()


def read_predictions(path: Path) -> list[dict]:
    """Rows written so far; a line cut off by a crash mid-write is dropped (and redone)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("ignoring an incomplete line in %s (interrupted write)", path)
    return rows


def drop_torn_tail(path: Path) -> None:
    """Cut a last line left without its newline by a kill mid-write, before appending.

    Appending after it would glue the next row onto the fragment and lose that row too.
    """
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        log.warning("dropping an incomplete last line of %s (interrupted write)", path)
        with path.open("r+b") as handle:
            handle.truncate(keep)
