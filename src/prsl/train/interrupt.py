"""Ctrl-C and SIGTERM during fine-tuning: finish the step under way, save it, stop.

While the optimizer steps run, the first SIGINT (Ctrl-C) or SIGTERM (what schedulers send
before they kill a job) only asks the run to stop: the step under way completes, a checkpoint of
every finished step is written (the one ``save_every`` would write there, so ``--resume``
continues exactly as the uninterrupted run would have), and the run raises
:class:`~prsl.core.errors.Interrupted` saying so, with exit status 130 (SIGINT) or 143
(SIGTERM). A second signal stops at once, without saving. Under ``accelerate launch`` the
processes agree after every step, so they all stop at the same one.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import torch
from accelerate import Accelerator

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""128 + the signal's number: what a shell reports for a process ended by it."""


class StopAtOnce(KeyboardInterrupt):
    """A second signal: the run stops where it is, saving nothing more."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.code = EXIT_CODES.get(signum, 130)


class StopRequests:
    """Within the block, SIGINT and SIGTERM are noted instead of raised (main thread only)."""

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            raise StopAtOnce(signum)
        self.received = signum
        name = signal.Signals(signum).name
        sys.stderr.write(
            f"{name}: stopping after the step under way to save a checkpoint "
            "(send it again to stop at once, losing the steps since the last checkpoint)\n"
        )

    def signal(self) -> int | None:
        """The signal that asked the run to stop (on any process), or None."""
        received = self.received or 0
        if self.accelerator.num_processes > 1:
            mine = torch.tensor(received, device=self.accelerator.device)
            received = int(self.accelerator.reduce(mine, reduction="max"))
        return received or None
