"""CIDEr-D of a few items among a fixed corpus (prsl.metrics.cider, Scorer.cider_items): exactly
pycocoevalcap's per-item scores of the whole corpus, whatever items are asked and in what order."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from prsl.metrics import Scorer
from prsl.metrics.cider import CiderAmong

WORDS = "a the red blue green circle square triangle on left right of small big near".split()  # noqa: SIM905


def corpus(n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Tokenised captions: 1 to 5 references per item, some candidates empty or off-vocabulary."""
    rng = random.Random(seed)

    def caption() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))

    refs = [[caption() for _ in range(rng.randint(1, 5))] for _ in range(n)]
    candidates = [caption() if i % 7 else "" for i in range(n)]
    candidates[3] = "zebra unseen words only"
    return candidates, refs


@pytest.mark.parametrize("seed", [0, 1])
def test_scores_of_some_items_are_bit_for_bit_those_of_the_whole_corpus(seed: int) -> None:
    candidates, refs = corpus(40, seed)
    _, whole = Cider().compute_score(
        dict(enumerate(refs)), {i: [c] for i, c in enumerate(candidates)}
    )
    among = CiderAmong(refs)
    rng = random.Random(seed)
    for size in (1, 5, 40, 93):  # 93: more than the corpus, some items more than once
        positions = [rng.randrange(40) for _ in range(size)]
        found = among.scores(positions, [candidates[p] for p in positions])
        assert found == [float(whole[p]) for p in positions]  # exactly, not nearly
    # an item's score depends on its own candidate only: another candidate for item 0
    assert among.scores([0], [refs[0][0]]) == [
        float(Cider().compute_score(dict(enumerate(refs)), {
            i: [refs[0][0] if i == 0 else c] for i, c in enumerate(candidates)
        })[1][0])
    ]  # fmt: skip
    with pytest.raises(ValueError, match="2 positions but 1 candidates"):
        among.scores([0, 1], ["a"])


def test_references_without_a_word_score_zero_as_the_scorer_does(scorer: Scorer) -> None:
    refs = [[""], [" "]]
    among = scorer.cider_among(refs)
    assert scorer.cider_items(among, [([1, 0], ["a red circle", ""])]) == [[0.0, 0.0]]
    assert scorer.score_items([(["a red circle", ""], refs)], ["CIDEr"])[0].item_scores(
        "CIDEr"
    ).tolist() == [0.0, 0.0]


def test_scorer_cider_items_equal_score_items_on_the_whole_corpus(scorer: Scorer) -> None:
    # raw captions: punctuation, case and a contraction go through the same PTB tokens
    refs = [
        ["A brown dog is running across a grassy field.", "A dog runs on the green grass."],
        ["Two seagulls fly above the ocean.", "Birds flying over the water!"],
        ["A man rides his red bike down the street.", "Someone's riding a bicycle."],
        ["A plate with rice, beans and vegetables."],
        ["A cat sleeps on a sofa.", "A grey cat asleep.", "The cat isn't awake."],
    ]
    candidates = ["A dog runs, fast!", "", "A man's red bicycle.", "Rice and beans.", "a cat"]
    whole = scorer.score_items([(candidates, refs)], ["CIDEr"])[0].item_scores("CIDEr")
    among = scorer.cider_among(refs)
    parts = [
        ([4, 1], [candidates[4], candidates[1]]),
        ([0, 2, 3], candidates[0:1] + candidates[2:4]),
    ]
    found = scorer.cider_items(among, parts)
    assert found == [[whole[4], whole[1]], [whole[0], whole[2], whole[3]]]
    assert np.all(np.array(found[1]) > 0)
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 5\)"):
        scorer.cider_items(among, [([5], ["a"])])
    with pytest.raises(ValueError, match="references\\[0\\] is empty"):
        scorer.cider_among([[]])
