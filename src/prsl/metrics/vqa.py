"""VQAv2 soft accuracy under the protocols in use: ``official``, ``evalai`` and ``openflamingo``.

The VQAv2 rule gives an answer full credit when at least three of the ten human annotators gave
it: ``acc = min(1, #matching others / 3)``, averaged over the ten ways of leaving one annotator
out, so that a machine is scored like a human held out of the pool. The protocols differ in
which answers they normalise before comparing them:

- ``official`` (the default): the VQA challenge's ``vqaEval.py``. The model's answer is always
  normalised (punctuation, lower case, number words to digits, articles dropped, the script's
  contraction table); the human answers are left as they are when they all agree, and get only
  the punctuation rule when they disagree. Its quirks are kept, because they are the rules the
  published numbers were computed with: the contraction table as written (its ``Im``, ``Ive``
  and ``Id've`` entries are capitalised, so they never match a lower-cased word), at most
  :data:`PERIOD_LIMIT` full stops stripped per answer (the script passes ``re.UNICODE``, 32, as
  the count of ``re.sub``), and ASCII digits only in its patterns (the Python 2 semantics it was
  written for).
- ``evalai``: the convention of EvalAI's answer processor as lmms-eval applies it. The model's
  answer is lower-cased, loses commas and question marks, and is normalised; when the human
  answers disagree, both the humans' and the model's answers get the punctuation rule and the
  number/article/contraction rule again.
- ``openflamingo``: OpenFlamingo's evaluation as RobustVLM (Schlarmann et al. 2024) runs it on
  VQAv2, TextVQA, VizWiz and OK-VQA. The model's answer is first cut before the first
  ``Question``, ``Answer`` or ``Short`` and before the first ``", "`` (its
  ``postprocess_vqa_generation``); then the model's answer and every human answer, agreeing or
  not, get the punctuation rule and the number/article/contraction rule (its ``VQAEval``, with
  Python 3's Unicode digits). VizWiz's ``unanswerable`` is an answer like any other: a model
  that says "Unanswerable." matches it.

The script assumes ten answers. For ``n`` answers the leave-one-out average is kept and full
credit needs ``min(3, n - 1)`` matching others, so ten answers give exactly the script's value and
a single answer (Visual Genome QA) reduces to exact match after normalisation instead of the
script's constant 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

VQAProtocol = Literal["official", "evalai", "openflamingo"]
VQA_PROTOCOLS: tuple[str, ...] = ("official", "evalai", "openflamingo")
DEFAULT_VQA_PROTOCOL: VQAProtocol = "official"

# The scripts' single-character marks: deleted when they touch a space (or when the answer has
# a thousands separator), otherwise replaced by a space. The apostrophe and the colon are not
# in the list, so "don't" and "10:30" survive.
PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
    ",", "?", "!",
)  # fmt: skip
PERIOD_LIMIT = 32
"""Full stops ``vqaEval.py`` strips at most: its ``periodStrip.sub("", text, re.UNICODE)``
passes the flag as the count."""
# "(?!<=\d)" is the scripts' typo for a look-behind; as written it is a look-ahead that never
# fails, so the rule is "a full stop not followed by a digit".
_PERIOD = {
    "official": re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII),
    "evalai": re.compile(r"(?!<=\d)(\.)(?!\d)"),
    "openflamingo": re.compile(r"(?!<=\d)(\.)(?!\d)"),
}
_THOUSANDS = {
    "official": re.compile(r"(\d)(\,)(\d)", re.ASCII),
    "evalai": re.compile(r"(?<=\d)(\,)+(?=\d)"),
    "openflamingo": re.compile(r"(\d)(\,)(\d)"),
}
_CONTINUATION = re.compile("Question|Answer|Short")
"""Where OpenFlamingo cuts a generated answer (the model going on to a next question)."""
_CLAUSE = ", "
"""OpenFlamingo also keeps only what comes before the first comma and space."""
NUMBER_WORDS = {
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
ARTICLES = frozenset({"a", "an", "the"})
# The contraction table of vqaEval.py (and of EvalAI's processor, the same), pair by pair as
# written, including the entries that cannot fire (capitalised keys) and the one that maps the
# wrong way ("somebody'd" -> "somebodyd").
_CONTRACTION_PAIRS = """
aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've
couldnt've couldn't've|didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've
hadn'tve hadn't've|hasnt hasn't|havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's
howd how'd|howll how'll|hows how's|Id've I'd've|I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd
itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am|mightnt mightn't
mightnt've mightn't've|mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've
neednt needn't|notve not've|oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at
'ow'sat 'ow's'at|shant shan't|shed've she'd've|she'dve she'd've|she's she's|shouldve should've
shouldnt shouldn't|shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd
somebodyd've somebody'd've|somebody'dve somebody'd've|somebodyll somebody'll
somebodys somebody's|someoned someone'd|someoned've someone'd've|someone'dve someone'd've
someonell someone'll|someones someone's|somethingd something'd|somethingd've something'd've
something'dve something'd've|somethingll something'll|thats that's|thered there'd
thered've there'd've|there'dve there'd've|therere there're|theres there's|theyd they'd
theyd've they'd've|they'dve they'd've|theyll they'll|theyre they're|theyve they've|twas 'twas
wasnt wasn't|wed've we'd've|we'dve we'd've|weve we've|werent weren't|whatll what'll
whatre what're|whats what's|whatve what've|whens when's|whered where'd|wheres where's
whereve where've|whod who'd|whod've who'd've|who'dve who'd've|wholl who'll|whos who's
whove who've|whyll why'll|whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't
wouldnt've wouldn't've|wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll
yall'd've y'all'd've|y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've
you'dve you'd've|youll you'll|youre you're|youve you've
"""
CONTRACTIONS = dict(
    pair.split(" ") for pair in _CONTRACTION_PAIRS.replace("\n", "|").split("|") if pair
)


def _check(protocol: str) -> None:
    if protocol not in VQA_PROTOCOLS:
        raise ValueError(
            f"unknown VQA protocol {protocol!r}; choose one of {', '.join(VQA_PROTOCOLS)}"
        )


def process_punctuation(text: str, protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL) -> str:
    """The scripts' punctuation rule. Whether a mark touches a space, and whether the answer
    has a thousands separator, is decided on the original text, as the scripts do."""
    glue = _THOUSANDS[protocol].search(text) is not None
    out = text
    for mark in PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if glue or touches_space else " ")
    return _PERIOD[protocol].sub("", out, count=PERIOD_LIMIT)


def process_digit_article(text: str) -> str:
    """Lower-case, number words to digits, articles dropped, then the contraction table."""
    words = (NUMBER_WORDS.get(word, word) for word in text.lower().split())
    kept = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in kept)


def _one_line(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str, protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL) -> str:
    """A model's answer as ``protocol`` normalises it before any comparison.

    >>> normalize_answer("Two dogs.")
    '2 dogs'
    >>> normalize_answer("the black-and-white cat")
    'black and white cat'
    """
    _check(protocol)
    if protocol == "evalai":  # EvalAI's word_tokenize comes first
        answer = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    if protocol == "openflamingo":
        answer = _CONTINUATION.split(answer, maxsplit=1)[0].split(_CLAUSE, 1)[0]
    return process_digit_article(process_punctuation(_one_line(answer), protocol))


def compared_answers(
    answer: str, human_answers: Sequence[str], protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL
) -> tuple[str, list[str]]:
    """The model's and the humans' answers as ``protocol`` compares them."""
    mine = normalize_answer(answer, protocol)
    if protocol == "official":
        humans = list(human_answers)
        if len(set(humans)) > 1:
            humans = [process_punctuation(h, protocol) for h in humans]
        return mine, humans
    if protocol == "openflamingo":
        humans = [_one_line(h) for h in human_answers]
        return mine, [process_digit_article(process_punctuation(h, protocol)) for h in humans]
    humans = [_one_line(h) for h in human_answers]
    if len(set(humans)) > 1:
        humans = [process_digit_article(process_punctuation(h, protocol)) for h in humans]
        mine = process_digit_article(process_punctuation(mine, protocol))
    return mine, humans


def _credit(answer: str, human_answers: Sequence[str]) -> float:
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


def vqa_accuracy(
    answer: str, human_answers: Sequence[str], protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL
) -> float:
    """VQAv2 soft accuracy of one ``answer`` against the ``human_answers`` to its question.

    With ten human answers: 0 matching gives 0, 1 gives 0.3, 2 give 0.6, 3 give 0.9 and 4 or
    more give 1 (the leave-one-out average of ``min(1, matches / 3)``).
    """
    if not human_answers:
        raise ValueError("human_answers is empty: give at least one human answer")
    return _credit(*compared_answers(answer, human_answers, protocol))


def mean_vqa_accuracy(
    answers: Sequence[str],
    human_answers: Sequence[Sequence[str]],
    protocol: VQAProtocol = DEFAULT_VQA_PROTOCOL,
) -> float:
    """Corpus VQA accuracy: the mean of :func:`vqa_accuracy` over questions, in [0, 1]."""
    if len(answers) != len(human_answers):
        raise ValueError(
            f"len(answers)={len(answers)} but len(human_answers)={len(human_answers)}: "
            "give one list of human answers per answer"
        )
    if not answers:
        raise ValueError("answers is empty: give at least one answer")
    pairs = zip(answers, human_answers, strict=True)
    return sum(vqa_accuracy(a, humans, protocol) for a, humans in pairs) / len(answers)
