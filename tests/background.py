"""Long child processes that some tests need, started as soon as the session knows it will run
those tests, so they run beside the in-process tests instead of after them.

The suite runs in one thread (see conftest), and CI has two cores: ``prsl quickstart --fast
--defenses`` and the Triton interpreter's parity checks are child processes of a minute or two
each, so starting them when collection ends lets the second core work while the first runs the
rest. A test module declares its jobs in a module-level ``BACKGROUND`` list of :class:`Job`;
conftest starts those that a selected test needs (:func:`start_needed`) and kills whatever is
still running when the session ends (:func:`stop_all`). A fixture takes a job's outcome with
:func:`outcome`, which starts the job itself if nothing did (a module run alone still works)
and waits for it. Nothing is skipped or hidden: a failed job fails the tests that need it, with
the end of its output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Job:
    """``command(folder)``: the argv to run, given an empty folder of the job's own; started
    when a collected test uses ``fixture``."""

    name: str
    fixture: str
    command: Callable[[Path], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 900


@dataclass
class Outcome:
    folder: Path
    returncode: int
    output: str


@dataclass
class _Running:
    job: Job
    folder: Path
    process: subprocess.Popen
    log: Path


_running: dict[str, _Running] = {}
_root: list[Path] = []


def _folder(name: str) -> Path:
    if not _root:
        _root.append(Path(tempfile.mkdtemp(prefix="prsl-background-")))
    folder = _root[0] / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start(job: Job) -> None:
    """Start ``job`` unless it is already running or done."""
    if job.name in _running:
        return
    folder = _folder(job.name)
    log = folder.with_suffix(".log")
    with log.open("w") as sink:  # a file, not a pipe: a chatty child never blocks on it
        process = subprocess.Popen(
            job.command(folder),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **job.env},
        )
    _running[job.name] = _Running(job, folder, process, log)


def start_needed(jobs: list[Job], fixtures: set[str]) -> None:
    """Start the jobs whose fixture is among ``fixtures`` (those of the selected tests)."""
    for job in jobs:
        if job.fixture in fixtures:
            start(job)


def outcome(job: Job) -> Outcome:
    """Wait for ``job`` (starting it if need be): its folder, exit status and output."""
    start(job)
    running = _running[job.name]
    try:
        running.process.wait(timeout=job.timeout)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()
    return Outcome(running.folder, running.process.returncode, running.log.read_text())


def stop_all() -> None:
    """Kill every job still running (the session is over or was interrupted), then remove the
    jobs' folders."""
    for running in _running.values():
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()
    for root in _root:
        shutil.rmtree(root, ignore_errors=True)
