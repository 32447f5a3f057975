"""VQAv2 soft accuracy and answer normalisation (prsl.metrics.vqa); pure Python, no Java."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prsl.metrics import mean_vqa_accuracy, normalize_answer, score, vqa_accuracy


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
        ("10:30", "10:30"),  # colon is not in the official list
        ("dont", "don't"),  # missing apostrophes restored
        ("Isnt it?", "isn't it"),
        ("couldnt've", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        ("couldntve", "couldn't've"),
        ("im", "i'm"),
        ("twas", "'twas"),
        ("its", "its"),  # words that merely look like contractions are left alone
        ("well", "well"),
        ("don't", "don't"),
        ("", ""),
    ],
)
def test_normalize_answer_worked_examples(raw: str, normalised: str) -> None:
    assert normalize_answer(raw) == normalised


@given(st.text(max_size=40))
def test_normalisation_is_idempotent(text: str) -> None:
    """Already-normalised answers (VQAv2 annotation files) must not change when normalised again."""
    once = normalize_answer(text)
    assert normalize_answer(once) == once


@pytest.mark.parametrize(
    ("matching", "expected"),
    # Leave-one-out average of min(1, matches/3) over the 10 annotators: dropping one of the m
    # matching leaves m-1, dropping one of the 10-m others leaves m. For m = 3:
    # (3 * 2/3 + 7 * 1) / 10 = 0.9, not 1, because a matching annotator may be the one left out.
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_accuracy_ten_annotators(matching: int, expected: float) -> None:
    humans = ["two"] * matching + ["cat"] * (10 - matching)
    assert vqa_accuracy("2", humans) == pytest.approx(expected, rel=1e-12)


def test_both_sides_are_normalised() -> None:
    # The official script leaves unanimous human answers untouched; here "2" still matches "Two".
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0
    assert vqa_accuracy("the dog.", ["Dog"] * 10) == 1.0
    assert vqa_accuracy("dont know", ["don't know"] * 10) == 1.0
    assert vqa_accuracy("two dogs", ["2"] * 10) == 0.0


def test_single_human_answer_is_exact_match_after_normalisation() -> None:
    assert vqa_accuracy("A cat.", ["cat"]) == 1.0
    assert vqa_accuracy("dog", ["cat"]) == 0.0


def _leave_one_out(answer: str, humans: list[str]) -> float:
    """Independent computation: enumerate the n subsets that leave one annotator out."""
    if len(humans) == 1:
        return float(normalize_answer(humans[0]) == normalize_answer(answer))
    needed = min(3, len(humans) - 1)
    target = normalize_answer(answer)
    total = 0.0
    for i in range(len(humans)):
        others = humans[:i] + humans[i + 1 :]
        agreeing = sum(normalize_answer(h) == target for h in others)
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
    answers = ["2", "red", "yes"]
    humans = [["two"] * 3 + ["3"] * 7, ["red"] * 10, ["no"] * 9 + ["yes"]]
    expected = (0.9 + 1.0 + 0.3) / 3
    assert mean_vqa_accuracy(answers, humans) == pytest.approx(expected, rel=1e-12)
    monkeypatch.setenv("PATH", str(tmp_path))  # VQA accuracy must not need Java
    result = score(answers, humans, ["VQA-acc"])
    assert result == {"VQA-acc": pytest.approx(expected, rel=1e-12)}
    assert type(result["VQA-acc"]) is float


def test_self_reference_protocol_scores_identical_answers_one() -> None:
    # evaluate.py scores adversarial answers against ten copies of the clean answer.
    assert mean_vqa_accuracy(["a cat", "3"], [["cat"] * 10, ["4"] * 10]) == 0.5


def test_bad_input_is_rejected_with_the_fix() -> None:
    with pytest.raises(ValueError, match="human_answers is empty"):
        vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match=r"len\(answers\)=2 but len\(human_answers\)=1"):
        mean_vqa_accuracy(["yes", "no"], [["yes"]])
    with pytest.raises(ValueError, match="answers is empty"):
        mean_vqa_accuracy([], [])
