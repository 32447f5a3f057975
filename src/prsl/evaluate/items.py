"""Which items an evaluation works on: the first ``n_images`` of its dataset.

The reader is asked for no more than that (``max_examples``), so what it reports as skipped is
exactly what it passed over on the way: "N of M items skipped" counts the items this run looked
at, not the rest of a large annotation file. A dataset that leaves nothing, or whose images
cannot be read at all, is refused before any model is loaded.
"""

from __future__ import annotations

import inspect
import logging

from prsl.data import READERS, DatasetSplit, Skipped, read_dataset, require_usable
from prsl.evaluate.config import EvalConfig

log = logging.getLogger(__name__)

LIMIT_OPTION = "max_examples"


def read_evaluation_data(cfg: EvalConfig) -> DatasetSplit:
    """The dataset, read up to ``n_images`` usable items (or the reader's own ``max_examples``)."""
    options = dict(cfg.data.options)
    if LIMIT_OPTION in inspect.signature(READERS[cfg.data.name]).parameters:
        given = options.get(LIMIT_OPTION)
        if given is None:
            options[LIMIT_OPTION] = cfg.n_images
        elif isinstance(given, int) and not isinstance(given, bool):
            options[LIMIT_OPTION] = min(given, cfg.n_images)  # else the reader says what is wrong
    split = read_dataset(cfg.data.name, **options)
    split.examples = split.examples[: cfg.n_images]
    require_usable(split, cfg.data.name, "to evaluate")
    return split


class SkipTally:
    """Every item a run passed over, each once with its first reason; a new one is logged."""

    def __init__(self, initial: list[Skipped]) -> None:
        self.items: dict[str, Skipped] = {s.identity: s for s in initial}

    def add(self, skipped: list[Skipped]) -> None:
        for item in skipped:
            if item.identity not in self.items:
                self.items[item.identity] = item
                log.warning("skipping unreadable image %s: %s", item.path, item.reason)

    def values(self) -> list[Skipped]:
        return list(self.items.values())
