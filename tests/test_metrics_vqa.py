"""VQAv2 soft accuracy under the ``official``, ``evalai`` and ``openflamingo`` protocols
(prsl.metrics.vqa).

Parity: each protocol is checked on random answers against a line-by-line transcription, in
this file, of the script it follows (the VQA challenge's ``vqaEval.py``; lmms-eval's
``vqav2_process_results`` with EvalAI's answer processor; OpenFlamingo's
``postprocess_vqa_generation`` and ``VQAEval`` as RobustVLM runs them), so any rewording of their
rules in the library shows up as a mismatch. Pure Python, no Java.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prsl.evaluate.scoring import self_reference
from prsl.metrics import mean_vqa_accuracy, normalize_answer, score, vqa_accuracy
from prsl.metrics.vqa import CONTRACTIONS, NUMBER_WORDS, compared_answers

# --- the reference scripts, transcribed (their structure, not ours) ----------------------------

_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@"]
_PUNCT += ["`", ",", "?", "!"]


def _script_punctuation(in_text, comma_strip, period_strip):
    out_text = in_text
    for p in _PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(comma_strip, in_text) != None):  # noqa: E711
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return period_strip.sub("", out_text, re.UNICODE)


def _script_digit_article(in_text):
    out_text = []
    for word in in_text.lower().split():
        word = dict(NUMBER_WORDS).setdefault(word, word)
        if word not in ["a", "an", "the"]:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in CONTRACTIONS:
            out_text[word_id] = CONTRACTIONS[word]
    return " ".join(out_text)


def _script_accuracy(res_ans, gt_answers):
    answers = [{"answer": a, "answer_id": i} for i, a in enumerate(gt_answers)]
    gt_acc = []
    for datum in answers:
        others = [item for item in answers if item != datum]
        matching = [item for item in others if item["answer"] == res_ans]
        gt_acc.append(min(1, float(len(matching)) / 3))
    return float(sum(gt_acc)) / len(gt_acc)


_OFFICIAL = (re.compile(r"(\d)(\,)(\d)", re.ASCII), re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII))
_EVALAI = (re.compile(r"(?<=\d)(\,)+(?=\d)"), re.compile(r"(?!<=\d)(\.)(?!\d)"))


def official_script(answer, humans):
    """vqaEval.py's evaluate() for one question."""
    res_ans = answer.replace("\n", " ").replace("\t", " ").strip()
    res_ans = _script_digit_article(_script_punctuation(res_ans, *_OFFICIAL))
    if len(set(humans)) > 1:
        humans = [_script_punctuation(h, *_OFFICIAL) for h in humans]
    return _script_accuracy(res_ans, humans)


def evalai_script(answer, humans):
    """lmms-eval's vqav2_process_results with EvalAIAnswerProcessor, for one question."""
    item = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    item = item.replace("\n", " ").replace("\t", " ").strip()
    res_ans = _script_digit_article(_script_punctuation(item, *_EVALAI))
    humans = [h.replace("\n", " ").replace("\t", " ").strip() for h in humans]
    if len(set(humans)) > 1:
        humans = [_script_digit_article(_script_punctuation(h, *_EVALAI)) for h in humans]
        res_ans = _script_digit_article(_script_punctuation(res_ans, *_EVALAI))
    return _script_accuracy(res_ans, humans)


_OPENFLAMINGO = (re.compile(r"(\d)(\,)(\d)"), re.compile(r"(?!<=\d)(\.)(?!\d)"))


def openflamingo_script(answer, humans):
    """RobustVLM's postprocess_vqa_generation, then OpenFlamingo's VQAEval.evaluate() for one
    question: every human answer normalised, agreeing or not."""
    answer = re.split("Question|Answer|Short", answer, maxsplit=1)[0]
    answer = re.split(", ", answer, maxsplit=1)[0]
    res_ans = answer.replace("\n", " ").replace("\t", " ").strip()
    res_ans = _script_digit_article(_script_punctuation(res_ans, *_OPENFLAMINGO))
    humans = [h.replace("\n", " ").replace("\t", " ").strip() for h in humans]
    humans = [_script_digit_article(_script_punctuation(h, *_OPENFLAMINGO)) for h in humans]
    return _script_accuracy(res_ans, humans)


# Answers built from the pieces the rules act on, so random ones exercise every branch.
PIECES = [
    "Two",
    "two",
    "2",
    "none",
    "the",
    "a",
    "An",
    "dog",
    "Dog",
    "dont",
    "don't",
    "Im",
    "im",
    "its",
    "1,000",
    "3.5",
    "a.m.",
    "yes!",
    "black-and-white",
    "-",
    " ",
    "  ",
    ".",
    ",",
    "?",
    "(left)",
    "10:30",
    "somebody'd",
    "\n",
    "\t",
    "\u0663.\u0665",
    "'s",
    "what's",
    "whats",
    ", ",
    "Question",
    "Short",
    "Answer:",
]
answers = st.lists(st.sampled_from(PIECES), max_size=5).map("".join)


@settings(max_examples=400)
@given(answers, st.lists(answers, min_size=10, max_size=10))
def test_official_equals_the_script(answer, humans) -> None:
    assert vqa_accuracy(answer, humans, "official") == pytest.approx(
        official_script(answer, humans)
    )


@settings(max_examples=400)
@given(answers, st.lists(answers, min_size=10, max_size=10))
def test_evalai_equals_lmms_eval(answer, humans) -> None:
    assert vqa_accuracy(answer, humans, "evalai") == pytest.approx(evalai_script(answer, humans))


@settings(max_examples=400)
@given(answers, st.lists(answers, min_size=10, max_size=10))
def test_openflamingo_equals_robustvlm(answer, humans) -> None:
    assert vqa_accuracy(answer, humans, "openflamingo") == pytest.approx(
        openflamingo_script(answer, humans)
    )


@settings(max_examples=200)
@given(
    answers,
    st.lists(st.sampled_from(["2", "dog", "yes", "black and white"]), min_size=10, max_size=10),
)
def test_scripts_agree_on_normalised_annotations(answer, humans) -> None:
    """VQAv2's own annotations are already in normalised form; on them the two protocols differ
    only by EvalAI's extra comma and question-mark removal."""
    if "," not in answer and "?" not in answer:
        assert vqa_accuracy(answer, humans, "official") == vqa_accuracy(answer, humans, "evalai")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two", "2"),  # number words become digits
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("The red ball.", "red ball"),  # articles dropped, final full stop deleted
        ("an apple", "apple"),
        ("  A  \n Cat\t", "cat"),  # line breaks and tabs are spaces, case folded
        ("3.5", "3.5"),  # a full stop before a digit is a decimal point and stays
        ("a.m.", "am"),
        ("1,000", "1000"),  # a thousands separator glues the digits...
        ("yes, 1,000", "yes 1000"),  # ...and makes every mark of the answer vanish
        ("black-and-white", "black and white"),  # a mark between letters separates words
        ("black - white", "black white"),  # a mark touching a space is deleted
        ("yes!", "yes"),
        ("(left)", "left"),
        ("10:30", "10:30"),  # colon is not in the list
        ("dont", "don't"),  # the contraction table restores apostrophes it lists...
        ("Isnt it?", "isn't it"),
        ("couldnt've", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        ("couldntve", "couldntve"),  # ...and only those
        ("im", "im"),  # the table's "Im" is capitalised: it never matches a lower-cased word
        ("ive", "ive"),
        ("somebody'd", "somebodyd"),  # the table's one entry that maps the wrong way
        ("twas", "'twas"),
        ("its", "its"),
        ("don't", "don't"),
        ("." * 40, "." * 8),  # at most 32 full stops are stripped
        ("\u0663.\u0665", "\u0663\u0665"),  # ASCII digits only: an Arabic-Indic 3.5 loses its stop
        ("", ""),
    ],
)
def test_official_normalisation_worked_examples(raw: str, normalised: str) -> None:
    assert normalize_answer(raw, "official") == normalised


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two?", "2"),
        ("yes, 1,000", "yes 1000"),
        ("what's that", "what 's that"),  # EvalAI splits the possessive off first
        ("\u0663.\u0665", "\u0663.\u0665"),  # Python's Unicode digits: the stop stays
    ],
)
def test_evalai_normalisation_worked_examples(raw: str, normalised: str) -> None:
    assert normalize_answer(raw, "evalai") == normalised


@pytest.mark.parametrize(
    ("matching", "expected"),
    # Leave-one-out average of min(1, matches/3) over the 10 annotators: dropping one of the m
    # matching leaves m-1, dropping one of the 10-m others leaves m. For m = 3:
    # (3 * 2/3 + 7 * 1) / 10 = 0.9, not 1, because a matching annotator may be the one left out.
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_accuracy_ten_annotators(matching: int, expected: float) -> None:
    humans = ["2"] * matching + ["cat"] * (10 - matching)
    assert vqa_accuracy("two", humans) == pytest.approx(expected, rel=1e-12)


def test_the_protocols_differ_where_the_scripts_do() -> None:
    # The model's answer is always normalised: "Two" matches humans saying "2".
    assert vqa_accuracy("Two", ["2"] * 10, "official") == 1.0
    # Unanimous humans are left as they are: "Dog" is not "dog" under either script.
    assert vqa_accuracy("the dog.", ["Dog"] * 10, "official") == 0.0
    assert vqa_accuracy("the dog.", ["Dog"] * 10, "evalai") == 0.0
    # Disagreeing humans: official applies only the punctuation rule to them, EvalAI all of it.
    humans = ["Dog"] * 5 + ["dog"] * 5
    assert vqa_accuracy("dog", humans, "official") == pytest.approx(1.0)
    assert vqa_accuracy("the dog", ["The dog"] * 5 + ["dog"] * 5, "official") == 1.0
    assert vqa_accuracy("the dog", ["The Dog"] * 5 + ["a cat"] * 5, "evalai") == 1.0
    assert vqa_accuracy("the dog", ["The Dog"] * 5 + ["a cat"] * 5, "official") == 0.0


def test_openflamingo_worked_examples() -> None:
    """Values by hand from RobustVLM's rules (its VQAEval normalises every human answer)."""
    # Unanimous "two": official leaves the humans as written, so the model's "2" matches none;
    # OpenFlamingo normalises them to "2", ten matches.
    assert vqa_accuracy("2", ["two"] * 10, "official") == 0.0
    assert vqa_accuracy("2", ["two"] * 10, "openflamingo") == 1.0
    # The generated text is cut at the first ", " and before "Question"/"Answer"/"Short".
    assert normalize_answer("Yes, it is.", "openflamingo") == "yes"
    assert normalize_answer("red Question: what", "openflamingo") == "red"
    assert normalize_answer("Yes, it is.", "official") == "yes it is"
    # VizWiz: "unanswerable" is an answer like any other. Two of ten humans gave it: leaving
    # out one of those two leaves 1 match (1/3), leaving out any of the 8 others leaves 2
    # (2/3): (2 * 1/3 + 8 * 2/3) / 10 = 0.6.
    vizwiz = ["unanswerable"] * 2 + ["blue"] * 8
    assert vqa_accuracy("Unanswerable.", vizwiz, "openflamingo") == pytest.approx(0.6)
    assert vqa_accuracy("unanswerable", ["unanswerable"] * 10, "openflamingo") == 1.0


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(
        ValueError, match="unknown VQA protocol 'vqa2'; choose one of official, evalai"
    ):
        vqa_accuracy("yes", ["yes"], "vqa2")  # type: ignore[arg-type]


def test_single_human_answer_is_exact_match_after_normalisation() -> None:
    assert vqa_accuracy("A cat.", ["cat"]) == 1.0
    assert vqa_accuracy("dog", ["cat"]) == 0.0


def _leave_one_out(answer: str, humans: list[str]) -> float:
    """Independent computation: enumerate the n subsets that leave one annotator out."""
    target, humans = compared_answers(answer, humans)
    if len(humans) == 1:
        return float(humans[0] == target)
    needed = min(3, len(humans) - 1)
    total = 0.0
    for i in range(len(humans)):
        others = humans[:i] + humans[i + 1 :]
        agreeing = sum(h == target for h in others)
        total += min(1.0, agreeing / needed)
    return total / len(humans)


ANSWERS = ["2", "two", "Two.", "3", "three", "the dog", "dog", "Dog!", "yes", "no", "dont", "don't"]


@given(
    st.sampled_from(ANSWERS),
    st.lists(st.sampled_from(ANSWERS), min_size=1, max_size=12),
)
def test_closed_form_equals_subset_enumeration(answer: str, humans: list[str]) -> None:
    assert vqa_accuracy(answer, humans) == pytest.approx(_leave_one_out(answer, humans), abs=1e-12)


@given(st.sampled_from(ANSWERS), st.lists(st.sampled_from(ANSWERS), min_size=1, max_size=12))
def test_accuracy_is_a_fraction_and_order_free(answer: str, humans: list[str]) -> None:
    value = vqa_accuracy(answer, humans)
    assert 0.0 <= value <= 1.0
    assert vqa_accuracy(answer, humans[::-1]) == pytest.approx(value, abs=1e-12)


def test_corpus_accuracy_is_the_mean_and_available_through_score(monkeypatch, tmp_path) -> None:
    answers = ["two", "red", "yes"]
    humans = [["2"] * 3 + ["3"] * 7, ["red"] * 10, ["no"] * 9 + ["yes"]]
    expected = (0.9 + 1.0 + 0.3) / 3
    assert mean_vqa_accuracy(answers, humans) == pytest.approx(expected, rel=1e-12)
    monkeypatch.setenv("PATH", str(tmp_path))  # VQA accuracy must not need Java
    result = score(answers, humans, ["VQA-acc"])
    assert result == {"VQA-acc": pytest.approx(expected, rel=1e-12)}
    assert type(result["VQA-acc"]) is float


@pytest.mark.parametrize("protocol", ["official", "evalai"])
def test_self_reference_protocol_scores_identical_answers_one(protocol) -> None:
    # evaluate scores adversarial answers against ten copies of the clean answer, normalised as
    # a model's answer is: the same answer, however written, scores 1.
    clean = ["The Cat.", "3", "Two dogs?"]
    adversarial = ["the cat", "4", "two dogs"]
    references = [self_reference(c, "vqa", protocol) for c in clean]
    assert mean_vqa_accuracy(adversarial, references, protocol) == pytest.approx(2 / 3)
    assert mean_vqa_accuracy(clean, references, protocol) == 1.0


def test_bad_input_is_rejected_with_the_fix() -> None:
    with pytest.raises(ValueError, match="human_answers is empty"):
        vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match=r"len\(answers\)=2 but len\(human_answers\)=1"):
        mean_vqa_accuracy(["yes", "no"], [["yes"]])
    with pytest.raises(ValueError, match="answers is empty"):
        mean_vqa_accuracy([], [])
