"""``accelerate launch`` with several CPU processes, as the tests start it.

``accelerate launch --cpu --num_processes 2`` starts ONE process (accelerate 1.x spawns several
CPU processes only through ``mpirun --hostfile``). ``--multi_gpu`` goes through torchrun and
starts them all; with no visible GPU, accelerate sets them up as MULTI_CPU over gloo.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path

LAUNCH_TIMEOUT_S = 240
"""Processes importing torch + transformers on a busy two-core machine take a while."""
ENV = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_command(processes: int, *prsl_args: str) -> list[str]:
    """``accelerate launch ... -m prsl.cli <prsl_args>``, as the README documents it."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",  # `accelerate launch`
        "--multi_gpu",  # torchrun: every process (see the module docstring)
        *("--num_processes", str(processes), "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no"),
        *("--main_process_port", str(free_port())),
        *("-m", "prsl.cli", *prsl_args),
    ]


def environment() -> dict[str, str]:
    return os.environ | ENV


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own, so a
    kill of the launcher's process group misses them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def gone(pid: int) -> bool:
    """Whether every thread of ``pid`` has exited. A zombie's files, and so its locks, are
    closed, but a killed leader thread turns zombie before the other threads of its process
    have exited, and they hold the files until they do: every thread must be a zombie."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return True
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return False
        except OSError:
            continue
    return True


def kill_tree(pid: int, timeout: float = 30.0) -> None:
    """SIGKILL a launched run: the launcher and every process it started; returns once they
    have exited (a SIGKILL is delivered at once but a busy machine takes a moment to end the
    process, and until then its output folder's lock is held)."""
    targets = [pid, *descendants(pid)]
    for target in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while not all(gone(target) for target in targets) and time.monotonic() < deadline:
        time.sleep(0.02)
