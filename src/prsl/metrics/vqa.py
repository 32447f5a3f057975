"""VQAv2 soft accuracy with the official answer normalisation.

The VQAv2 rule gives an answer full credit when at least three of the ten human annotators gave
it: ``acc = min(1, #matching humans / 3)``, averaged over the ten ways of leaving one annotator
out so that a machine is scored like a human held out of the pool. Answers are compared after
the normalisation of the official evaluation script (lower case, punctuation rules, number words
to digits, articles dropped, apostrophes restored in contractions), re-implemented here from its
description.

Two deliberate differences from the official script, both so that raw user data scores right:

- The script normalises human answers only when they disagree (VQAv2 annotation files are already
  normalised, so a unanimous answer was left alone) and then only their punctuation. Here both
  sides always get the full normalisation; it is idempotent, so already-normalised annotations
  are unchanged. A model answering "Two" to ten humans saying "2" is therefore right.
- The script assumes ten answers. For ``n`` answers the leave-one-out average is kept and full
  credit needs ``min(3, n - 1)`` matching others, so ten answers give exactly the official value
  and a single answer (Visual Genome QA) reduces to exact match after normalisation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from itertools import combinations

# The official list of single-character marks that separate words or vanish (see
# _strip_punctuation); the apostrophe and colon are not in it, so "don't" and "10:30" survive.
_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_THOUSANDS_COMMA = re.compile(r"\d,\d")
# The official pattern reads "(?!<=\d)(\.)(?!\d)": its intended look-behind is a typo that
# never fires, so the effective rule, reproduced here, is "a full stop not followed by a digit
# is deleted" ("3.5" stays, "dog." becomes "dog", "a.m." becomes "am").
_FULL_STOP = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# Contractions whose apostrophes annotators often drop. Forms that would collide with an English
# word once the apostrophe goes (it's/its, we'll/well, she'd/shed, i'll/ill, we're/were, ...)
# are left out, as in the official table.
_CONTRACTIONS_BY_ENDING = {
    "n't": "ain't aren't can't couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't "
    "haven't isn't mightn't mightn't've mustn't needn't oughtn't shan't shouldn't shouldn't've "
    "wasn't weren't won't wouldn't wouldn't've",
    "'d": "he'd he'd've how'd i'd've it'd it'd've she'd've somebody'd somebody'd've someone'd "
    "someone'd've something'd something'd've there'd there'd've they'd they'd've we'd've "
    "where'd who'd who'd've you'd you'd've y'all'd've",
    "'ll": "how'll it'll somebody'll someone'll something'll they'll what'll who'll why'll "
    "you'll y'all'll",
    "'s": "he's how's somebody's someone's that's there's what's when's where's who's why's",
    "'re": "there're they're what're why're you're",
    "'ve": "could've i've might've must've not've should've they've we've what've where've "
    "who've would've you've",
    "other": "i'm ma'am o'clock 'twas y'all 'ow's'at",
}
_CONTRACTIONS = [word for group in _CONTRACTIONS_BY_ENDING.values() for word in group.split()]


def _apostrophe_dropped_forms(word: str) -> Iterator[str]:
    """Every spelling of ``word`` with one or more of its apostrophes left out."""
    positions = [i for i, char in enumerate(word) if char == "'"]
    for size in range(1, len(positions) + 1):
        for dropped in combinations(positions, size):
            yield "".join(char for i, char in enumerate(word) if i not in dropped)


_RESTORE_APOSTROPHES = {
    variant: word for word in _CONTRACTIONS for variant in _apostrophe_dropped_forms(word)
}


def _strip_punctuation(text: str) -> str:
    """The official punctuation rule.

    A mark is deleted when some occurrence of it touches a space ("black - white") or when the
    answer holds a thousands separator ("1,000"); otherwise it separates words
    ("black-and-white" becomes "black and white"). The tests look at the original text, not the
    partly processed one, as the official script does.
    """
    glue = _THOUSANDS_COMMA.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if glue or touches_space else " ")
    return _FULL_STOP.sub("", out)


def _normalise_words(text: str) -> str:
    """Lower-case, map number words to digits, drop articles, restore contraction apostrophes."""
    words = (_NUMBER_WORDS.get(word, word) for word in text.lower().split())
    kept = (word for word in words if word not in _ARTICLES)
    return " ".join(_RESTORE_APOSTROPHES.get(word, word) for word in kept)


def normalize_answer(answer: str) -> str:
    """Normalise a VQA answer as the official VQAv2 evaluation does before comparing answers.

    >>> normalize_answer("Two dogs.")
    '2 dogs'
    >>> normalize_answer("the black-and-white cat")
    'black and white cat'
    """
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _normalise_words(_strip_punctuation(text))


def _credit_from_normalised(answer: str, human_answers: Sequence[str]) -> float:
    n = len(human_answers)
    matches = sum(human == answer for human in human_answers)
    if n == 1:
        return float(matches)
    needed = min(3, n - 1)

    def credit(agreeing_others: int) -> float:
        return min(1.0, agreeing_others / needed)

    # Leaving out a matching annotator leaves matches - 1 agreeing others, leaving out any
    # other annotator leaves all of them: the average over the n leave-one-out subsets.
    left_out_matching = matches * credit(matches - 1) if matches else 0.0
    return (left_out_matching + (n - matches) * credit(matches)) / n


def vqa_accuracy(answer: str, human_answers: Sequence[str]) -> float:
    """VQAv2 soft accuracy of one ``answer`` against the ``human_answers`` to its question.

    With ten human answers: 0 matching gives 0, 1 gives 0.3, 2 give 0.6, 3 give 0.9 and 4 or
    more give 1 (the leave-one-out average of ``min(1, matches / 3)``).
    """
    if not human_answers:
        raise ValueError("human_answers is empty: give at least one human answer")
    return _credit_from_normalised(
        normalize_answer(answer), [normalize_answer(human) for human in human_answers]
    )


def mean_vqa_accuracy(answers: Sequence[str], human_answers: Sequence[Sequence[str]]) -> float:
    """Corpus VQA accuracy: the mean of :func:`vqa_accuracy` over questions, in [0, 1]."""
    if len(answers) != len(human_answers):
        raise ValueError(
            f"len(answers)={len(answers)} but len(human_answers)={len(human_answers)}: "
            "give one list of human answers per answer"
        )
    if not answers:
        raise ValueError("answers is empty: give at least one answer")
    total = sum(vqa_accuracy(a, humans) for a, humans in zip(answers, human_answers, strict=True))
    return total / len(answers)
