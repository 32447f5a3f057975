"""The processes of an evaluation: one, or several under ``accelerate launch``.

Every process of a launch must reach :func:`close_processes` before any exits: a process that
leaves while another still talks to the process group (the first, scoring) aborts in gloo's
threads, and the launcher then kills the others.
"""

from __future__ import annotations

import torch
from accelerate import PartialState


def processes() -> PartialState:
    """This process's place in the launch (a single process when there is no launch); on a
    machine without a GPU the processes talk over gloo."""
    return PartialState(cpu=not torch.cuda.is_available())


def close_processes(state: PartialState) -> None:
    """Wait for every process, then close the process group (nothing to do alone)."""
    state.wait_for_everyone()
    state.destroy_process_group()
