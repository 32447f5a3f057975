"""Which samples each optimizer step sees: a pure function of (seed, epoch), so a resumed run
replays exactly the order the interrupted one would have followed."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

_EPOCH_STRIDE = 1000003  # a prime: (seed, epoch) pairs never share a generator seed


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch."""
    gen = torch.Generator().manual_seed(seed * _EPOCH_STRIDE + epoch)
    return torch.randperm(n, generator=gen).tolist()


def steps_per_epoch(n: int, micro: int, accum: int) -> int:
    return math.ceil(n / (micro * accum))


def step_groups(
    n: int, micro: int, accum: int, seed: int, epoch: int, skip: int
) -> Iterator[tuple[int, int, list[list[int]]]]:
    """Yield (epoch, index in epoch, micro-batches of one optimizer step) forever from a position.

    ``skip`` optimizer steps of ``epoch`` are passed over: they were done before a resume.
    """
    while True:
        order = epoch_order(n, seed, epoch)
        batches = [order[i : i + micro] for i in range(0, n, micro)]
        groups = [batches[i : i + accum] for i in range(0, len(batches), accum)]
        for index in range(skip, len(groups)):
            yield epoch, index, groups[index]
        epoch, skip = epoch + 1, 0
