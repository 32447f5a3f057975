"""CIDEr-D of a few items at a time, among a corpus whose references are known up front.

pycocoevalcap's ``Cider`` weighs each n-gram by its document frequency over the references of
the whole corpus and by the log of the corpus size, so one item's score needs the whole corpus.
Scoring a batch of outputs by scoring the whole corpus again costs time in proportion to the
corpus (about 4 s per call at 5,000 images with 5 references), on every call. An evaluation that
judges each batch's outputs during the run (the worst case's cascade) would pay it hundreds of
times. :class:`CiderAmong` counts the frequencies once, with pycocoevalcap's own
``CiderScorer.compute_doc_freq``, and scores only the items asked, with its own
``compute_cider``: the same operations on the same numbers, so each score is bit for bit the
one ``Cider().compute_score`` gives the item within the whole corpus.
"""

from __future__ import annotations

from collections.abc import Sequence

from pycocoevalcap.cider.cider_scorer import CiderScorer, cook_test


class CiderAmong:
    """The corpus's references (PTB-tokenised), cooked and counted once."""

    def __init__(self, references: Sequence[Sequence[str]]) -> None:
        whole = CiderScorer()  # n = 4, sigma = 6: the values ``Cider()`` uses
        for refs in references:
            whole += (None, list(refs))
        whole.compute_doc_freq()
        self._cooked = whole.crefs
        self._frequencies = whole.document_frequency
        # As :func:`prsl.metrics.coco.coco_scores`: no reference word at all scores 0 (the
        # library would divide by an empty maximum).
        self._words = any(ref.split() for refs in references for ref in refs)

    def __len__(self) -> int:
        return len(self._cooked)

    def scores(self, positions: Sequence[int], candidates: Sequence[str]) -> list[float]:
        """CIDEr-D of each PTB-tokenised candidate against the references of the item at its
        position in the corpus, as the whole corpus scored would give it."""
        if len(positions) != len(candidates):
            raise ValueError(f"{len(positions)} positions but {len(candidates)} candidates")
        if not self._words:
            return [0.0] * len(candidates)
        found: list[float] = []
        size = len(self._cooked)
        for start in range(0, len(candidates), size):  # at most the corpus's size per call
            chunk = slice(start, start + size)
            found += self._scored(positions[chunk], candidates[chunk])
        return found

    def _scored(self, positions: Sequence[int], candidates: Sequence[str]) -> list[float]:
        part = CiderScorer()
        # Shared, not copied: the library reads it as a defaultdict, adding a zero for each
        # n-gram of a candidate that no reference has, which counts as absent (max(1, df)).
        part.document_frequency = self._frequencies
        part.ctest = [cook_test(c) for c in candidates]
        # compute_cider takes the corpus size from len(crefs) and pairs ctest with crefs through
        # zip, which stops at the shorter: the padding counts the corpus's other items without
        # scoring them.
        asked = [self._cooked[p] for p in positions]
        part.crefs = asked + [None] * (len(self._cooked) - len(asked))
        return [float(value) for value in part.compute_cider()]
