"""One run per output folder: an OS lock on ``<folder>/.prsl.lock`` for as long as a run writes.

Every command that writes a folder holds its lock: a second run into the same folder is refused
in one line naming the holder's pid (:class:`FolderBusy`), or waits for it with ``wait=True``
(the commands' ``--wait``). The lock is ``flock(2)`` on a file holding the holder's pid, so the
kernel drops it when the process dies, however it dies: a killed run never leaves a stale lock,
and the file a dead run leaves behind is taken over by the next one.

Within one process the lock is reentrant (a sweep holds its folder while its own report is
written into it), and a lock on a folder does not cover the folders inside it (a sweep's cells
are locked by the fine-tunes and evaluations that write them). Under ``accelerate launch`` the
processes of one run share the folder: only the main process holds the lock, and every process
learns whether it got it (``state``, the launch's ``PartialState``).

The lock file is removed on release (the folder too, when the lock created it and nothing else
was written into it), so a run that stops at a later check leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prsl.core.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = ".prsl.lock"
POLL_S = 0.2
"""How often a waiting run looks again (a blocking flock could not say whom it waits for)."""
DYING_S = 10.0
"""How long a run waits for a holder that is already dead to let go: a killed process's lock is
released only once all its threads have exited, which takes a moment on a busy machine."""

_held: dict[Path, int] = {}
"""Folders this process holds, with how many times it entered each (reentrancy)."""


class FolderBusy(UserError, BlockingIOError):
    """Another run (another process) is writing the output folder."""


def holder(folder: Path) -> str:
    """The pid recorded in ``folder``'s lock file, as text ("unknown" when unreadable)."""
    for _ in range(5):  # a holder writes its pid just after taking the lock
        try:
            pid = (Path(folder) / LOCK_FILE).read_text().strip()
        except OSError:
            pid = ""
        if pid.isdigit():
            return pid
        time.sleep(0.05)
    return "unknown"


def busy_message(folder: Path, what: str, pid: str) -> str:
    return (
        f"{what} {folder} is in use by another prsl run (pid {pid}): wait for it to finish, "
        f"pass --wait to wait for it, or choose another {what}"
    )


def _created(folder: Path) -> list[Path]:
    """Make ``folder`` (and its parents); returns the folders made, innermost first."""
    made = []
    missing = folder
    while not missing.exists():
        made.append(missing)
        missing = missing.parent
    folder.mkdir(parents=True, exist_ok=True)
    return made


def _acquire(folder: Path, what: str, wait: bool) -> int:
    """A file descriptor holding the lock of ``folder``."""
    path = folder / LOCK_FILE
    said, started = False, time.monotonic()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if not wait and not _dying(holder(folder), started):
                raise FolderBusy(busy_message(folder, what, holder(folder))) from None
            if not said:
                log.warning("waiting for prsl run %s to finish with %s", holder(folder), folder)
                said = True
            time.sleep(POLL_S)
            continue
        # The holder we waited for removes the file as it releases: a lock on that removed
        # file is no lock on the folder, so take the file that is there now.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _dying(pid: str, since: float) -> bool:
    """Whether the recorded holder has exited or been killed (no such process, or a zombie) and
    ``DYING_S`` has not passed since ``since``: its lock is about to go."""
    if time.monotonic() - since > DYING_S or not pid.isdigit():
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return Path("/proc/self").exists()  # no such process (where /proc can tell)
    return state in ("Z", "X")


def _release(folder: Path, fd: int, made: list[Path]) -> None:
    try:
        (folder / LOCK_FILE).unlink(missing_ok=True)  # still held: nobody holds a new one yet
    finally:
        os.close(fd)
    _remove_empty(made)


def _remove_empty(made: list[Path]) -> None:
    """Remove the folders the lock created (innermost first), as long as nothing was written."""
    for empty in made:
        try:
            empty.rmdir()
        except OSError:
            break


@contextmanager
def hold(
    folder: str | Path, what: str = "output folder", *, wait: bool = False, state: Any = None
) -> Iterator[Path]:
    """Hold the lock of ``folder`` (made if missing) for the block; see the module docstring.

    ``what`` names the folder as the user gave it (``output_dir``, ``--out``). ``state``: the
    launch's ``PartialState`` (or ``Accelerator``) when several processes write the folder.
    """
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield folder
        finally:
            _held[key] -= 1
        return
    processes = getattr(state, "num_processes", 1)
    # without a state, a launched process is told its rank by the launcher (torchrun)
    main = getattr(state, "is_main_process", os.environ.get("RANK", "0") == "0")
    made = _created(folder) if main else []
    fd, refused, said = None, None, False
    while True:
        # One process waits on the lock alone; the processes of a launch try together, round by
        # round, so that no collective is left open (and times out) while the holder works.
        busy = None
        if main:
            try:
                fd = _acquire(folder, what, wait and processes == 1)
            except FolderBusy as err:
                busy = err
        refused = str(busy) if busy is not None and not wait else None
        still = busy is not None and wait
        if processes > 1:  # every process of the launch stops, waits or goes on, or none does
            from accelerate.utils import broadcast_object_list

            refused, still = broadcast_object_list([refused, still])
        if not still:
            break
        if busy is not None and not said:
            log.warning("waiting for prsl run %s to finish with %s", holder(folder), folder)
            said = True
        time.sleep(POLL_S)
    if refused is not None:
        _remove_empty(made)
        raise FolderBusy(refused)
    _held[key] = 1  # on every process of a launch, so all of them nest alike
    try:
        yield folder
    finally:
        del _held[key]
        if fd is not None:
            _release(folder, fd, made)
