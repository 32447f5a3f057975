"""BLEU-1..4, METEOR, ROUGE-L and CIDEr through ``pycocoevalcap``, as the COCO caption evaluation.

Captions and references go through pycocoevalcap's Stanford PTB tokenizer (lower case,
punctuation removed), then ``Bleu(4)``, ``Meteor()``, ``Rouge()`` and ``Cider()`` score the
tokenised corpus, so the numbers are the field's reference numbers. Both the tokenizer and METEOR
are Java programs; the tokenizer runs in one JVM for many calls (:mod:`prsl.metrics.ptb`).

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
import tempfile
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import IO

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as meteor_module
from pycocoevalcap.rouge.rouge import Rouge

from prsl.core.errors import MissingDependency
from prsl.metrics.ptb import PTBProcess
from prsl.metrics.statistics import BLEU_COLUMNS, BLEU_ORDER, METEOR_COLUMNS

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


def _one_line(text: str) -> str:
    """Collapse every kind of whitespace, line breaks included, to single spaces.

    The PTB tokenizer tokenises on whitespace, so this changes no token; it only guarantees that
    a caption stays on its own line of the tokenizer's input.
    """
    return " ".join(text.split())


def ptb_tokenize(texts: Iterable[str], process: PTBProcess | None = None) -> dict[str, str]:
    """The PTB-tokenised form of every distinct text, as pycocoevalcap's ``PTBTokenizer``
    gives it, from ONE request to the Java tokenizer (``process``, kept by a Scorer for many
    requests; None starts one for this call).

    Why one request: an evaluation scores hundreds of small corpora that share most of their
    texts. The tokenizer works line by line, so tokenising a text alone or among others gives
    the same tokens. Blank texts map to "" without reaching Java (a blank line gives no line of
    output).
    """
    unique = list(dict.fromkeys(texts))
    distinct = [t for t in unique if t.strip()]
    tokens = {t: "" for t in unique if not t.strip()}
    if not distinct:
        return tokens
    owned = process is None
    active = PTBProcess() if process is None else process
    try:
        lines = active.tokenize([_one_line(t) for t in distinct])
    finally:
        if owned:
            active.close()
    tokens.update(zip(distinct, lines, strict=True))
    return tokens


def aggregable_meteor_stats(rows: np.ndarray) -> np.ndarray:
    """The jar's statistics lines as its ``EVAL`` sums them: an item identical to its reference
    (every word matched, in one chunk) adds no chunk to the corpus (``MeteorStats.addStats``),
    so a corpus of identical captions scores 1, not 1 minus a fragmentation penalty. Its own
    score is unchanged: with no chunk its fragmentation is 0, as the jar's special case says."""
    rows = rows.copy()
    stages = (rows.shape[1] - 7) // 4
    per_stage = rows[:, 4 : 4 + 4 * stages].reshape(len(rows), stages, 4)
    test_total = per_stage[..., 0].sum(-1) + per_stage[..., 2].sum(-1)
    ref_total = per_stage[..., 1].sum(-1) + per_stage[..., 3].sum(-1)
    identical = (test_total == rows[:, 0]) & (ref_total == rows[:, 1]) & (rows[:, -3] == 1)
    rows[identical, -3] = 0.0
    return rows


STAT_CACHE_SIZE = 200_000
"""Distinct items whose METEOR statistics one JVM keeps (a few hundred bytes each)."""


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
        self._stats: dict[tuple[str, tuple[str, ...]], str] = {}

    def _cached_stat(self, hypothesis: str, references: list[str]) -> str:
        """The jar's statistics line for one item, asked once per distinct (candidate,
        references): an evaluation scores the same item in many corpora (every step of an
        attack, every cell), and each ``SCORE`` is a round trip to the JVM."""
        key = (hypothesis, tuple(references))
        if key not in self._stats:
            if len(self._stats) >= STAT_CACHE_SIZE:
                self._stats.clear()
            self._stats[key] = self._stat(hypothesis, references)
        return self._stats[key]

    def compute_score_and_stats(self, gts: _Tokenised, res: _Tokenised) -> tuple[float, np.ndarray]:
        """The library's ``compute_score`` (the same protocol with the jar: one ``SCORE`` line
        per item, then one ``EVAL`` of all their statistics), keeping each item's statistics
        (the rows of :data:`~prsl.metrics.statistics.METEOR_COLUMNS`) instead of dropping them."""
        with self.lock:
            stats = [self._cached_stat(res[i][0], gts[i]) for i in gts]
            self.meteor_p.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
            self.meteor_p.stdin.flush()
            for _ in stats:  # the items' own scores: the same as reduce(stats[i])
                self.meteor_p.stdout.readline()
            score = float(self.meteor_p.stdout.readline().strip())
        rows = np.array([[float(x) for x in line.split()] for line in stats], dtype=np.float64)
        return score, aggregable_meteor_stats(rows.reshape(len(stats), METEOR_COLUMNS))

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

    def score(self, gts: _Tokenised, res: _Tokenised) -> tuple[float, np.ndarray]:
        """Corpus METEOR of tokenised candidates ``res`` against references ``gts``, and each
        item's statistics."""
        if self._meteor is None:
            self._meteor = _LocaleSafeMeteor()
        try:
            return self._meteor.compute_score_and_stats(gts, res)
        except (ValueError, OSError) as exc:
            detail = self._meteor.stderr_tail() or "(nothing on stderr)"
            self.close()  # the protocol is out of step; the next call starts a fresh JVM
            raise RuntimeError(f"METEOR's Java process failed ({exc}); stderr: {detail}") from exc

    def close(self) -> None:
        """Stop the JVM if one is running."""
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None


def bleu_stats(gts: _Tokenised, res: _Tokenised) -> np.ndarray:
    """Each item's BLEU statistics (:data:`~prsl.metrics.statistics.BLEU_COLUMNS`), counted by
    pycocoevalcap's own ``cook_refs`` / ``cook_test``, with the ``closest`` reference length
    that ``Bleu.compute_score`` uses."""
    rows = []
    for i in gts:
        cooked = cook_test(res[i][0], cook_refs(gts[i], n=BLEU_ORDER), n=BLEU_ORDER)
        testlen = cooked["testlen"]
        reflen = min((abs(length - testlen), length) for length in cooked["reflen"])[1]
        rows.append([testlen, reflen, *cooked["guess"], *cooked["correct"]])
    return np.array(rows, dtype=np.float64).reshape(len(rows), BLEU_COLUMNS)


def coco_scores(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    wanted: Collection[str],
    meteor: MeteorProcess,
    tokens: Mapping[str, str] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Corpus-level values of the ``wanted`` names among :data:`COCO_METRICS`, and each
    metric's per-item statistics (see :mod:`prsl.metrics.statistics`).

    Inputs are assumed validated (same length, no empty reference list); ``meteor`` is reused
    across calls. ``tokens`` maps each text to its PTB tokens (from :func:`ptb_tokenize`, shared
    by many corpora); None tokenises these texts here. The values are pycocoevalcap's own.
    """
    if tokens is None:  # a Scorer that passes tokens has checked for Java already
        require_java()
        tokens = ptb_tokenize([*candidates, *(r for refs in references for r in refs)])
    gts = {i: [tokens[r] for r in refs] for i, refs in enumerate(references)}
    res = {i: [tokens[c]] for i, c in enumerate(candidates)}
    scores: dict[str, float] = {}
    stats: dict[str, np.ndarray] = {}
    if any(name in wanted for name in BLEU_METRICS):
        bleu, _ = Bleu(BLEU_ORDER).compute_score(gts, res, verbose=0)
        scores.update({name: float(value) for name, value in zip(BLEU_METRICS, bleu, strict=True)})
        counts = bleu_stats(gts, res)
        stats.update({name: counts for name in BLEU_METRICS})
    if "METEOR" in wanted:
        scores["METEOR"], stats["METEOR"] = meteor.score(gts, res)
    if "ROUGE-L" in wanted:
        value, per_item = Rouge().compute_score(gts, res)
        scores["ROUGE-L"], stats["ROUGE-L"] = float(value), _column(per_item)
    if "CIDEr" in wanted:
        # pycocoevalcap's CIDEr crashes on a corpus whose references hold no word at all (its
        # document frequencies are empty), e.g. a model's own empty outputs used as references;
        # with no reference n-gram there is nothing to match, so the score is 0.
        has_words = any(ref.split() for refs in gts.values() for ref in refs)
        if has_words:  # per item: CIDEr-D with the document frequencies of this whole corpus
            value, per_item = Cider().compute_score(gts, res)
            scores["CIDEr"], stats["CIDEr"] = float(value), _column(per_item)
        else:
            scores["CIDEr"], stats["CIDEr"] = 0.0, np.zeros((len(res), 1))
    order = [name for name in COCO_METRICS if name in wanted]
    return {name: scores[name] for name in order}, {name: stats[name] for name in order}


def _column(values: Iterable[float]) -> np.ndarray:
    """Per-item scores as the one-column statistics of a mean metric."""
    return np.asarray(list(values), dtype=np.float64).reshape(-1, 1)
