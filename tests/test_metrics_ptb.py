"""The PTB tokenizer kept in one JVM (prsl.metrics.ptb) against pycocoevalcap's own tokenizer,
and its lifetime: stopped by close, after an interrupted request, and when Python exits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

import prsl.metrics.ptb as ptb_module
from prsl.metrics.coco import ptb_tokenize
from prsl.metrics.ptb import PTBProcess

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc to see the JVM end"
)

TRICKY = [
    'A man\'s dog, "running" (fast)!',
    "can't won't shouldn't y'all",
    "He lives in the U.S.",
    "Dr. Smith's 3.5 p.m. meeting, etc.",
    "é café naïve 日本 straße ÀÉÎ",
    "an emoji 😀 inside",
    "😀",
    "...",
    ".",
    "- dash -- and ; semicolon : colon",
    "&amp; <b> tags</b> and C++",
    "'90s rock 'n' roll",
    "http://example.com/a?b=c&d=e",
    "*NL* is the tokenizer's own newline token",
    "prslendofrequest",  # the sentinel itself, as a caption
    "x" * 63,  # a filler word, as a caption
    "tab\tand\u00a0no-break space",
    "",
    "   ",
    "UPPER lower MiXeD",
]


def reference_tokens(texts: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer, one text per image, as the COCO evaluation calls it."""
    found = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    return [found[i][0] for i in range(len(texts))]


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie left to an init that does not reap counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def ended_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_tokens_are_pycocoevalcaps_across_requests_and_a_large_one() -> None:
    expected = dict(zip(TRICKY, reference_tokens(TRICKY), strict=True))
    assert expected[""] == "" and expected["😀"] == "" and expected["..."] == ""
    assert expected["can't won't shouldn't y'all"] == "ca n't wo n't should n't y' all"
    many = [f"Item {i}: a {i % 7}-sided shape, isn't it? ({i}%)" for i in range(3000)]
    process = PTBProcess()
    try:
        # several requests to one JVM: each reads the filler the one before left
        assert ptb_tokenize(TRICKY[:9], process) == {t: expected[t] for t in TRICKY[:9]}
        assert ptb_tokenize(TRICKY[9:], process) == {t: expected[t] for t in TRICKY[9:]}
        assert ptb_tokenize(TRICKY, process) == expected
        # more than a pipe holds, both ways: written while it is read
        assert list(ptb_tokenize(many, process).values()) == reference_tokens(many)
        assert ptb_tokenize(TRICKY[:2], process) == {t: expected[t] for t in TRICKY[:2]}
    finally:
        process.close()


def test_a_line_lost_or_added_is_an_error_and_the_next_request_starts_afresh() -> None:
    process = PTBProcess()
    try:
        assert process.tokenize(["a cat ."]) == ["a cat"]
        pid = process._process.pid
        with pytest.raises(RuntimeError, match="different number of lines"):
            process.tokenize(["one line\u2028that Java reads as two", "a dog"])  # unguarded
        assert ended_within(pid, 10)
        assert process.tokenize(["A dog, running."]) == ["a dog running"]
    finally:
        process.close()


def test_an_interrupted_request_stops_the_jvm(monkeypatch: pytest.MonkeyPatch) -> None:
    process = PTBProcess()
    try:
        assert process.tokenize(["a cat ."]) == ["a cat"]
        pid = process._process.pid
        real = PTBProcess._line

        def interrupted(self):
            monkeypatch.setattr(PTBProcess, "_line", real)
            raise KeyboardInterrupt

        monkeypatch.setattr(PTBProcess, "_line", interrupted)
        with pytest.raises(KeyboardInterrupt):
            process.tokenize(["a dog"])
        assert ended_within(pid, 10)
        assert process.tokenize(["Two cats!"]) == ["two cats"]
    finally:
        process.close()
    assert process._process is None


def test_close_stops_the_jvm_and_it_ends_with_python_even_without_close(tmp_path) -> None:
    process = PTBProcess()
    process.tokenize(["a cat"])
    pid = process._process.pid
    process.close()
    assert ended_within(pid, 10)
    process.close()  # twice is fine
    # A Python that exits at once, running no finalizer: the JVM reads the end of its input.
    script = (
        "import os, sys\n"
        "from prsl.metrics.ptb import PTBProcess\n"
        "p = PTBProcess()\n"
        "assert p.tokenize(['a dog.']) == ['a dog']\n"
        "print(p._process.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr
    assert ended_within(int(child.stdout.split()[0]), 30)


def test_a_stalled_tokenizer_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    # The filler too short to push the output through the JVM's buffers: nothing comes back.
    monkeypatch.setattr(ptb_module, "FILLER_LINES", 0)
    monkeypatch.setattr(ptb_module, "STALL_SECONDS", 1.0)
    process = PTBProcess()
    try:
        with pytest.raises(RuntimeError, match="wrote nothing for 1 s"):
            process.tokenize(["a dog"])
        assert process._process is None
    finally:
        process.close()
