"""Per-item statistics and the paired bootstrap: exact against the libraries and a brute force.

The statistics must give back the COCO caption evaluation's corpus scores, and the corpus score
of any resample (a multiset of items) must be what pycocoevalcap computes on that resampled
corpus written out in full: that is what makes a bootstrap of corpus BLEU and METEOR a bootstrap
of the real metric. The bootstrap itself is checked against an enumeration of every resample of
a small case, for pairing (narrower intervals on shared items) and for determinism.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from prsl.metrics.bootstrap import interval, p_value, resample_counts, resampled
from prsl.metrics.statistics import corpus_value, item_values

CANDIDATES = [
    "A brown dog runs across the green grass.",
    "Two birds are flying over the sea!",
    "A man riding a red bicycle down a busy street",
    "A plate of food, with rice and vegetables.",
    "a cat",
    "A child is holding an umbrella in the rain.",
]
REFERENCES = [
    ["A brown dog is running across a grassy field.", "A dog runs on the green grass."],
    ["Two seagulls fly above the ocean.", "Birds flying over the water."],
    ["A man rides his red bike down the street.", "Someone riding a bicycle."],
    ["A plate with rice, beans and vegetables.", "Food on a white plate."],
    ["A black cat sleeping on a sofa.", "A cat lies on the couch."],
    ["A kid with an umbrella standing in the rain.", "A small child in a raincoat."],
]
RESAMPLE = [0, 0, 2, 4, 4, 4]  # a multiset of the items: 0 twice, 2 once, 4 three times
COCO = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]


@pytest.fixture(scope="module")
def scored(scorer):
    (corpus,) = scorer.score_items([(CANDIDATES, REFERENCES)], COCO)
    return corpus


@pytest.fixture(scope="module")
def meteor(meteor_jar) -> Meteor:
    return meteor_jar


def _coco(meteor: Meteor, items: list[int]) -> dict:
    """pycocoevalcap on the corpus made of ``items`` (repeats written out), as coco-caption
    calls it: per-corpus and per-item scores."""
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize(
        {j: [{"caption": r} for r in REFERENCES[i]] for j, i in enumerate(items)}
    )
    res = tokenizer.tokenize({j: [{"caption": CANDIDATES[i]}] for j, i in enumerate(items)})
    bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    meteor_corpus, meteor_items = meteor.compute_score(gts, res)
    rouge, rouge_items = Rouge().compute_score(gts, res)
    cider, cider_items = Cider().compute_score(gts, res)
    corpus = {f"BLEU-{n}": bleu[n - 1] for n in range(1, 5)}
    corpus |= {"METEOR": meteor_corpus, "ROUGE-L": rouge, "CIDEr": cider}
    per_item = {f"BLEU-{n}": bleu_items[n - 1] for n in range(1, 5)}
    per_item |= {"METEOR": meteor_items, "ROUGE-L": rouge_items, "CIDEr": cider_items}
    return {"corpus": corpus, "items": per_item}


def test_statistics_give_back_the_corpus_scores(scored, meteor) -> None:
    direct = _coco(meteor, list(range(len(CANDIDATES))))
    for metric in COCO:
        assert corpus_value(metric, scored.stats[metric]) == pytest.approx(
            direct["corpus"][metric], abs=1e-12
        ), metric
        assert scored.values[metric] == pytest.approx(direct["corpus"][metric], abs=1e-12)


def test_meteor_of_captions_identical_to_their_references_is_the_jars(scorer) -> None:
    """The jar adds no chunk for an item identical to its reference: a model scored against its
    own clean output scores 1, on the corpus and on every resample."""
    texts = ["a red circle above a blue square", "there are two shapes", "a big green triangle"]
    mixed = [*texts, "a small green triangle"]
    references = [[t] for t in [*texts, "a big green triangle"]]
    same, part = scorer.score_items(
        [(texts, [[t] for t in texts]), (mixed, references)], ["METEOR"]
    )
    assert same.values["METEOR"] == 1.0 == corpus_value("METEOR", same.stats["METEOR"])
    assert corpus_value("METEOR", part.stats["METEOR"]) == pytest.approx(
        part.values["METEOR"], abs=1e-12
    )
    counts = resample_counts(3, 50, 0)
    np.testing.assert_allclose(resampled("METEOR", same.stats["METEOR"], counts), 1.0)


def test_item_scores_are_the_libraries_sentence_scores(scored, meteor) -> None:
    direct = _coco(meteor, list(range(len(CANDIDATES))))
    for metric in COCO:
        np.testing.assert_allclose(
            scored.item_scores(metric), direct["items"][metric], atol=1e-9, err_msg=metric
        )


@pytest.mark.parametrize("metric", ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L"])
def test_a_resample_scores_as_the_resampled_corpus_written_out(scored, meteor, metric) -> None:
    counts = np.bincount(RESAMPLE, minlength=len(CANDIDATES)).astype(float)[None, :]
    (value,) = resampled(metric, scored.stats[metric], counts)
    assert value == pytest.approx(_coco(meteor, RESAMPLE)["corpus"][metric], abs=1e-12)


def test_cider_keeps_the_full_corpus_document_frequencies(scored) -> None:
    """CIDEr-D's IDF is a property of the evaluated corpus; a resample reuses it (recomputing it
    from a resample with repeats would make repeated items look common)."""
    counts = np.bincount(RESAMPLE, minlength=len(CANDIDATES)).astype(float)[None, :]
    (value,) = resampled("CIDEr", scored.stats["CIDEr"], counts)
    assert value == pytest.approx(np.mean(scored.item_scores("CIDEr")[RESAMPLE]), abs=1e-12)


# --- the bootstrap ------------------------------------------------------------------------------

VALUES = np.array([[0.0], [1.0], [3.0]])  # three items' scores (a mean metric)


def _every_resample(n: int) -> np.ndarray:
    """The n**n equally likely ordered draws of n items with replacement, as multiplicities."""
    rows = [np.bincount(draw, minlength=n) for draw in itertools.product(range(n), repeat=n)]
    return np.asarray(rows, dtype=np.float64)


def test_resampled_means_follow_the_enumerated_distribution() -> None:
    exact = Counter(np.round(resampled("VQA-acc", VALUES, _every_resample(3)), 12))
    # 27 ordered draws; a mean of 0 only as 0+0+0, of 4/3 as 0+1+3 in its 3! orders
    assert sum(exact.values()) == 27 and exact[0.0] == 1 and exact[round(4 / 3, 12)] == 6
    draws = 40_000
    sampled = Counter(np.round(resampled("VQA-acc", VALUES, resample_counts(3, draws, 7)), 12))
    assert set(sampled) == set(exact)
    for value, ways in exact.items():
        p = ways / 27
        sd = np.sqrt(p * (1 - p) / draws)
        assert abs(sampled[value] / draws - p) < 5 * sd, value


def test_interval_is_the_exact_percentile_interval_of_the_enumeration() -> None:
    # Of the 27 resample means, sorted: the 20 % and 80 % points fall strictly inside steps of
    # the distribution, so a large bootstrap's 60 % interval must land on exactly those values.
    exact = np.sort(resampled("VQA-acc", VALUES, _every_resample(3)))
    cdf = {v: np.mean(exact <= v) for v in exact}
    low = min(v for v in exact if cdf[v] >= 0.2)
    high = min(v for v in exact if cdf[v] >= 0.8)
    assert all(abs(cdf[v] - q) > 0.04 for v in exact for q in (0.2, 0.8))
    assert (low, high) == pytest.approx((2 / 3, 2.0))
    samples = resampled("VQA-acc", VALUES, resample_counts(3, 40_000, 3))
    assert interval(samples, level=0.6) == pytest.approx((low, high), abs=1e-12)


def test_pairing_narrows_the_interval_of_a_difference() -> None:
    rng = np.random.default_rng(0)
    shared = rng.uniform(0, 1, size=200)  # item difficulty both models see
    a = (shared + rng.normal(0, 0.05, 200)).reshape(-1, 1)
    b = (shared + 0.02 + rng.normal(0, 0.05, 200)).reshape(-1, 1)
    one, two = resample_counts(200, 2000, 1), resample_counts(200, 2000, 2)
    paired = resampled("ROUGE-L", a, one) - resampled("ROUGE-L", b, one)
    unpaired = resampled("ROUGE-L", a, one) - resampled("ROUGE-L", b, two)
    width = lambda s: np.subtract(*interval(s)[::-1])  # noqa: E731
    assert width(paired) < 0.25 * width(unpaired)
    assert interval(paired)[1] < 0 < interval(unpaired)[1]  # only the paired one sees it


def test_same_seed_same_resamples_other_seed_others() -> None:
    first, again = resample_counts(50, 100, 11), resample_counts(50, 100, 11)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, resample_counts(50, 100, 12))
    assert (first.sum(axis=1) == 50).all()


def test_p_value_is_two_sided_and_never_zero() -> None:
    assert p_value(np.full(999, 0.3)) == pytest.approx(2 / 1000)
    assert p_value(np.full(999, -0.3)) == pytest.approx(2 / 1000)
    assert p_value(np.zeros(999)) == 1.0
    assert p_value(np.linspace(-1, 1, 1001)) == pytest.approx(1.0)


def test_item_values_are_each_items_own_score() -> None:
    np.testing.assert_array_equal(item_values("VQA-acc", VALUES), VALUES[:, 0])
