"""BLEU-1..4, METEOR, ROUGE-L and CIDEr through ``pycocoevalcap``, as the COCO caption evaluation.

Captions and references go through pycocoevalcap's Stanford PTB tokenizer (lower case,
punctuation removed), then ``Bleu(4)``, ``Meteor()``, ``Rouge()`` and ``Cider()`` score the
tokenised corpus, so the numbers are the field's reference numbers. Both the tokenizer and METEOR
are Java programs.

Empty captions: an empty (or whitespace-only) candidate is passed through unchanged. The
tokenizer keeps it as an empty line and every scorer counts it as a hypothesis with no words:
BLEU adds its reference length and no n-grams (the brevity penalty falls), METEOR, ROUGE-L and
CIDEr give it 0. No placeholder token is substituted, because one would be a one-word
hypothesis to BLEU and change its brevity penalty and n-gram precisions.

Three traps of the wrappers are handled here: the tokenizer reads one caption per line, so any
character Java treats as a line break (``\\r``, ``\\x0b``, ``\\u2028``, ...) would silently shift
every later caption onto the wrong image; METEOR's Java process parses numbers in the JVM's locale
(it fails on a decimal comma); and its stderr is a pipe nobody reads, which can fill and hang it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as meteor_module
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from prsl.core.errors import MissingDependency

BLEU_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
COCO_METRICS = (*BLEU_METRICS, "METEOR", "ROUGE-L", "CIDEr")

JAVA_MISSING = (
    "BLEU, METEOR, ROUGE-L and CIDEr need Java 17 on PATH: pycocoevalcap runs the Stanford PTB "
    "tokenizer and METEOR as Java programs. Install it, e.g. "
    "`apt-get install openjdk-17-jre-headless`, or score only BERTScore / VQA-acc."
)

_Tokenised = dict[int, list[str]]


def require_java() -> None:
    """Fail early, with the fix, when no ``java`` is on PATH (pycocoevalcap starts it by name)."""
    if shutil.which("java") is None:
        raise MissingDependency(JAVA_MISSING)


@contextmanager
def _stderr_captured() -> Iterator[IO[bytes]]:
    """Send this process's file descriptor 2 to a temporary file while the block runs.

    pycocoevalcap starts the PTB tokenizer's JVM with an inherited stderr, where it prints a
    "PTBTokenizer tokenized N tokens" status line onto the user's console; redirecting the
    descriptor (not ``sys.stderr``) is the only way to catch a child process's writes.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield sink
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _one_line(text: str) -> str:
    """Collapse every kind of whitespace, line breaks included, to single spaces.

    The PTB tokenizer tokenises on whitespace, so this changes no token; it only guarantees that
    a caption stays on its own line of the tokenizer's input.
    """
    return " ".join(text.split())


def ptb_tokenize(texts: Iterable[str]) -> dict[str, str]:
    """The PTB-tokenised form of every distinct text, from ONE run of the Java tokenizer.

    Why one run: each run starts a JVM (about a second), and an evaluation scores hundreds of
    small corpora that share most of their texts. The tokenizer works line by line, so
    tokenising a text alone or among others gives the same tokens. Blank texts map to "" without
    reaching Java (an empty last line would be dropped from its output).
    """
    unique = list(dict.fromkeys(texts))
    distinct = [t for t in unique if t.strip()]
    tokens = {t: "" for t in unique if not t.strip()}
    if not distinct:
        return tokens
    with _stderr_captured() as stderr:
        lines = PTBTokenizer().tokenize(
            {i: [{"caption": _one_line(t)}] for i, t in enumerate(distinct)}
        )
        stderr.seek(0)
        said = stderr.read().decode(errors="replace").strip()
    if sorted(lines) != list(range(len(distinct))) or any(len(v) != 1 for v in lines.values()):
        raise RuntimeError(
            "the PTB tokenizer returned a different number of lines than given; "
            f"its stderr: {said[-2000:] or '(nothing)'}"
        )
    tokens.update({text: lines[i][0] for i, text in enumerate(distinct)})
    return tokens


class _LocaleSafeMeteor(meteor_module.Meteor):
    """pycocoevalcap's METEOR scorer, started so that it cannot fail on locale or hang on stderr.

    Only the start-up and shutdown differ from the library class; ``compute_score`` (the protocol
    with the jar) is the library's own. ``Meteor.__init__`` is not called because it would start
    a second JVM with the unsafe command.
    """

    def __init__(self) -> None:
        self.meteor_cmd = [
            "java",
            "-Duser.language=en",  # the jar prints and parses numbers in the JVM locale
            "-Duser.country=US",
            "-jar",
            "-Xmx2G",
            meteor_module.METEOR_JAR,
            *("-", "-", "-stdio", "-l", "en", "-norm"),
        ]
        # A file, not a pipe: nothing reads stderr while scoring, and a full pipe blocks the JVM.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.meteor_p = subprocess.Popen(
            self.meteor_cmd,
            cwd=os.path.dirname(os.path.abspath(meteor_module.__file__)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.lock = threading.Lock()

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of what the JVM wrote to stderr, for error messages."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:].strip()

    def close(self) -> None:
        """Stop the JVM and release its pipes; safe to call more than once.

        Unlike the library's ``__del__`` this never waits on ``self.lock``, which a failed
        ``compute_score`` leaves held; waiting on it would hang garbage collection.
        """
        process = self.meteor_p
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, self._stderr):
            if stream is not None and not stream.closed:
                stream.close()

    def __del__(self) -> None:
        if hasattr(self, "meteor_p"):  # absent when Popen itself failed
            self.close()


class MeteorProcess:
    """A METEOR JVM started on first use and reused, because starting one takes seconds.

    The JVM exits when :meth:`close` is called, when this object is garbage-collected, or when
    its stdin closes because the Python process ended, so no process outlives its owner.
    """

    def __init__(self) -> None:
        self._meteor: _LocaleSafeMeteor | None = None

    def score(self, gts: _Tokenised, res: _Tokenised) -> float:
        """Corpus METEOR of tokenised candidates ``res`` against references ``gts``."""
        if self._meteor is None:
            self._meteor = _LocaleSafeMeteor()
        try:
            value, _ = self._meteor.compute_score(gts, res)
        except (ValueError, OSError) as exc:
            detail = self._meteor.stderr_tail() or "(nothing on stderr)"
            self.close()  # the protocol is out of step; the next call starts a fresh JVM
            raise RuntimeError(f"METEOR's Java process failed ({exc}); stderr: {detail}") from exc
        return float(value)

    def close(self) -> None:
        """Stop the JVM if one is running."""
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None


def coco_scores(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    wanted: Collection[str],
    meteor: MeteorProcess,
    tokens: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Corpus-level values of the ``wanted`` names among :data:`COCO_METRICS`.

    Inputs are assumed validated (same length, no empty reference list); ``meteor`` is reused
    across calls. ``tokens`` maps each text to its PTB tokens (from :func:`ptb_tokenize`, shared
    by many corpora); None tokenises these texts here.
    """
    if tokens is None:  # a Scorer that passes tokens has checked for Java already
        require_java()
        tokens = ptb_tokenize([*candidates, *(r for refs in references for r in refs)])
    gts = {i: [tokens[r] for r in refs] for i, refs in enumerate(references)}
    res = {i: [tokens[c]] for i, c in enumerate(candidates)}
    scores: dict[str, float] = {}
    if any(name in wanted for name in BLEU_METRICS):
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores.update({name: float(value) for name, value in zip(BLEU_METRICS, bleu, strict=True)})
    if "METEOR" in wanted:
        scores["METEOR"] = meteor.score(gts, res)
    if "ROUGE-L" in wanted:
        scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr" in wanted:
        # pycocoevalcap's CIDEr crashes on a corpus whose references hold no word at all (its
        # document frequencies are empty), e.g. a model's own empty outputs used as references;
        # with no reference n-gram there is nothing to match, so the score is 0.
        has_words = any(ref.split() for refs in gts.values() for ref in refs)
        scores["CIDEr"] = float(Cider().compute_score(gts, res)[0]) if has_words else 0.0
    return {name: scores[name] for name in COCO_METRICS if name in wanted}
