"""The output folder of ``evaluate`` and ``prsl attack``: one run at a time, its settings recorded.

Both commands treat their folder alike (:class:`OutputFolder`):

1. :meth:`~OutputFolder.held`: the folder is checked to be writable before any work
   (:func:`~prsl.core.paths.check_output_dir`) and its lock held for the run
   (:mod:`prsl.core.lock`; under a launch the first process holds it for all of them); at the
   end every process waits for the others and the process group is closed;
2. :meth:`~OutputFolder.resume`: with ``overwrite`` the first process discards what the command
   wrote there before; then every process reads what is finished, and a folder holding results
   computed with other settings is refused (:func:`~prsl.provenance.settings.check_settings`);
3. :meth:`~OutputFolder.record`: the run's settings are recorded before its first result.

What the outputs of both depend on, besides their models, attacks and items, is
:func:`generation_settings`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from accelerate import PartialState

from prsl.core.lock import hold
from prsl.core.paths import check_output_dir
from prsl.evaluate.config import EvalConfig
from prsl.evaluate.processes import close_processes
from prsl.provenance import check_settings, write_settings
from prsl.provenance.settings import check_owner

T = TypeVar("T")


def generation_settings(cfg: EvalConfig) -> dict[str, Any]:
    """The settings every output of ``evaluate`` and ``prsl attack`` depends on, besides the
    models, the attacks and the items."""
    return {
        **cfg.precision(),
        "data": cfg.data.model_dump(),
        "attack_target": cfg.attack_target,
        "max_new_tokens": cfg.max_new_tokens,
        "caption_prompt": cfg.caption_prompt,
        "seed": cfg.seed,
    }


@dataclass(frozen=True)
class OutputFolder:
    """One command's output folder and the settings its results depend on (module docstring)."""

    path: Path
    what: str
    """How the user names the folder (``output_dir``, ``--out``), for messages."""
    command: str
    settings: dict[str, Any]
    discard: Callable[[Path], None]
    """Removes what an earlier run of the command wrote into the folder (and nothing else)."""
    fix: str
    """What a refusal tells the user to do instead."""
    may_grow: Collection[str] = ()
    """Sections of the settings a rerun may add entries to or leave entries out of."""

    @contextmanager
    def held(self, state: PartialState, *, wait: bool) -> Iterator[Path]:
        """Check the folder, hold its lock for the block, then close the launch's processes.
        ``wait``: wait for another run holding it instead of refusing."""
        check_output_dir(self.path, self.what)
        with hold(self.path, self.what, wait=wait, state=state):
            yield self.path
        close_processes(state)

    def resume(
        self,
        state: PartialState,
        read: Callable[[], T],
        *,
        overwrite: bool,
        has_results: Callable[[T], bool] = bool,
    ) -> T:
        """What ``read`` finds finished in the folder (read by every process), once the folder
        is known to hold results of these settings or none; ``overwrite``: discarded first."""
        check_owner(self.path, self.command)  # before --overwrite discards anything
        if overwrite and state.is_main_process:
            self.discard(self.path)
        state.wait_for_everyone()
        found = read()
        check_settings(
            self.path,
            self.command,
            self.settings,
            has_results=has_results(found),
            may_grow=self.may_grow,
            fix=self.fix,
        )
        return found

    def record(self) -> None:
        """Record the settings (merged with the recorded ``may_grow`` sections)."""
        write_settings(self.path, self.command, self.settings, may_grow=self.may_grow)
