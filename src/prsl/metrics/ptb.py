"""The Stanford PTB tokenizer that pycocoevalcap runs, kept in one JVM for many calls.

pycocoevalcap's ``PTBTokenizer.tokenize`` starts a JVM per call (a few tenths of a second to a
second): an evaluation that judges outputs during the run tokenises a few dozen new texts per
batch, hundreds of times. :class:`PTBProcess` starts the same program with the same options
(``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase``, the same jar, UTF-8 as
the tokenizer's default) once, reading standard input, and removes punctuation as pycocoevalcap
does, so the tokens are pycocoevalcap's own.

The program writes through buffers it never flushes before the end of its input (8 KiB of
characters, then 8 KiB of bytes). So each request is the texts, one per line, then a sentinel
line, then filler lines whose output pushes everything before them through those buffers; the
filler's own output is read and dropped at the start of the next request. Every output line
is counted and the sentinel must come right after the texts' lines, so a line lost or added
(a text the tokenizer splits in two) is an error, never a shift of tokens onto other texts.

The JVM ends when :meth:`PTBProcess.close` is called, when the object is garbage-collected, or
when this Python process ends (its standard input closes and the tokenizer stops at the end of
its input). An interrupted request (Ctrl-C) stops it too: the next request starts a fresh one.
"""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from typing import IO

from pycocoevalcap.tokenizer import ptbtokenizer

JAR = os.path.join(
    os.path.dirname(os.path.abspath(ptbtokenizer.__file__)), ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
)
SENTINEL = "prslendofrequest"
"""One lower-case word: the tokenizer gives it back unchanged, on its own line."""
FILLER_LINES = 4
"""Filler lines after the sentinel; with :data:`FILLER_WORDS` their output (32 KiB) is more than
the tokenizer's buffers hold, so the sentinel's line is written out before the filler is read."""
FILLER_WORDS = 128
FILLER = ("x" * 63 + " ") * FILLER_WORDS
STALL_SECONDS = 600.0
"""How long a request may go without a byte of output before it is called a hang."""


def strip_punctuation(line: str) -> str:
    """pycocoevalcap's step after the tokenizer: drop its punctuation tokens."""
    return " ".join(w for w in line.rstrip().split(" ") if w not in ptbtokenizer.PUNCTUATIONS)


class PTBProcess:
    """One tokenizer JVM, started on first use; :meth:`tokenize` is pycocoevalcap's tokens."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None
        self._lines: deque[bytes] = deque()
        self._partial = b""
        self._pending = 0
        """Filler lines of the last request not read yet."""

    def tokenize(self, lines: Sequence[str]) -> list[str]:
        """The tokens of each line, punctuation removed, as pycocoevalcap gives them.

        Each line must be non-blank and free of anything Java reads as a line break (the
        caller collapses whitespace): a blank line gives no output line."""
        if not lines:
            return []
        if self._process is None:
            self._start()
        payload = "".join(f"{line}\n" for line in lines) + f"{SENTINEL}\n"
        payload += f"{FILLER}\n" * FILLER_LINES
        writer = threading.Thread(target=self._write, args=(payload.encode(),), daemon=True)
        try:  # the writer runs beside the reader: a large request would fill both pipes
            writer.start()
            for _ in range(self._pending):
                self._line()
            self._pending = 0
            found = [self._line() for _ in lines]
            if self._line() != SENTINEL.encode():
                raise RuntimeError("the PTB tokenizer gave a different number of lines")
            self._pending = FILLER_LINES
            writer.join()
        except BaseException as exc:  # out of step (or interrupted): the next request restarts
            said = self._stderr_tail()
            self.close()
            if isinstance(exc, RuntimeError | OSError):
                raise RuntimeError(f"{exc}; its stderr: {said or '(nothing)'}") from exc
            raise
        return [strip_punctuation(line.decode()) for line in found]

    def _start(self) -> None:
        # A file, not a pipe: the tokenizer logs (e.g. "Untokenizable") to stderr, unread.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._process = subprocess.Popen(
            ["java", "-cp", JAR, "edu.stanford.nlp.process.PTBTokenizer"]
            + ["-preserveLines", "-lowerCase"],
            cwd=os.path.dirname(JAR),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._lines.clear()
        self._partial, self._pending = b"", 0

    def _write(self, payload: bytes) -> None:
        process = self._process
        assert process is not None and process.stdin is not None
        try:
            process.stdin.write(payload)
            process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the JVM ended (or was stopped): the reader sees the end of its output

    def _line(self) -> bytes:
        """The next output line (without its newline), read from the pipe as it comes."""
        process = self._process
        assert process is not None and process.stdout is not None
        while not self._lines:
            ready, _, _ = select.select([process.stdout], [], [], STALL_SECONDS)
            if not ready:
                raise RuntimeError(f"the PTB tokenizer wrote nothing for {STALL_SECONDS:.0f} s")
            chunk = os.read(process.stdout.fileno(), 1 << 16)
            if not chunk:
                raise RuntimeError(f"the PTB tokenizer ended (exit status {process.wait()})")
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            self._lines.extend(complete)
        return self._lines.popleft()

    def _stderr_tail(self, limit: int = 2000) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:].strip()

    def close(self) -> None:
        """Stop the JVM if one runs; safe to call more than once, and the next request starts
        a fresh one."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None and not stream.closed:
                    with suppress(OSError, ValueError):  # unflushed input to a stopped JVM
                        stream.close()
        if self._stderr is not None and not self._stderr.closed:
            self._stderr.close()

    def __del__(self) -> None:
        if hasattr(self, "_process"):
            self.close()
