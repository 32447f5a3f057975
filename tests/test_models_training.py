"""The tiny captioner learns: a few hundred Adam steps on shapes caption held-out images.

"Better" is measured three ways on images of another seed: teacher-forced next-token accuracy
of the references, corpus BLEU-2 of greedy captions (a plain n-gram count written here), and
BLEU-2 of each caption against the references of *another* image. The last guards against a
model that ignores the picture and writes the most common template caption.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from prsl.data.images import to_pixels
from prsl.data.shapes import make_shapes_captions
from prsl.models import VisionEncoderDecoderAdapter, build_tiny_captioner

STEPS = 200
BATCH = 32


def ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(candidates: list[str], references: list[tuple[str, ...]], max_n: int = 2) -> float:
    """Papineni et al. corpus BLEU: clipped n-gram precisions, geometric mean, brevity penalty."""
    log_precisions = []
    for n in range(1, max_n + 1):
        matched = total = 0
        for candidate, refs in zip(candidates, references, strict=True):
            counts = ngram_counts(candidate.split(), n)
            best: Counter = Counter()
            for ref in refs:
                best |= ngram_counts(ref.split(), n)
            matched += sum(min(c, best[g]) for g, c in counts.items())
            total += sum(counts.values())
        if matched == 0:
            return 0.0
        log_precisions.append(math.log(matched / total))
    cand_len = sum(len(c.split()) for c in candidates)
    ref_len = sum(
        min((len(r.split()) for r in refs), key=lambda length: abs(length - len(c.split())))
        for c, refs in zip(candidates, references, strict=True)
    )
    brevity = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / max(cand_len, 1))
    return brevity * math.exp(sum(log_precisions) / max_n)


def test_corpus_bleu_on_hand_computed_cases():
    assert corpus_bleu(["a red circle"], [("a red circle",)]) == pytest.approx(1.0)
    assert corpus_bleu(["blue"], [("a red circle",)]) == 0.0
    # unigrams 2/3, bigrams 1/2, candidate as long as the reference: sqrt(2/3 * 1/2)
    assert corpus_bleu(["a red square"], [("a red circle",)]) == pytest.approx(math.sqrt(1 / 3))
    # clipping: "a a a" matches "a" once; no bigram matches
    assert corpus_bleu(["a a a"], [("a red circle",)]) == 0.0


@torch.no_grad()
def token_accuracy(adapter: VisionEncoderDecoderAdapter, pixels, texts: list[str]) -> float:
    logits, labels = adapter.logits_and_labels(pixels, texts)
    counted = labels != -100
    return (logits.argmax(-1)[counted] == labels[counted]).float().mean().item()


def scores(adapter, pixels, references) -> dict[str, float]:
    adapter.model.eval()
    captions = adapter.generate(pixels, max_new_tokens=16)
    shifted = captions[1:] + captions[:1]
    return {
        "token_acc": token_accuracy(adapter, pixels, [r[0] for r in references]),
        "bleu": corpus_bleu(captions, references),
        "bleu_wrong_image": corpus_bleu(shifted, references),
    }


def test_tiny_captioner_learns_to_caption_held_out_shapes():
    train = make_shapes_captions(300, seed=0).examples
    held_out = make_shapes_captions(48, seed=1000).examples
    pairs = [(i, ref) for i, ex in enumerate(train) for ref in ex.references]
    adapter = build_tiny_captioner([ref for _, ref in pairs], seed=0)
    train_pixels = to_pixels([ex.image for ex in train], adapter.pixel_size)
    test_pixels = to_pixels([ex.image for ex in held_out], adapter.pixel_size)
    references = [ex.references for ex in held_out]

    before = scores(adapter, test_pixels, references)
    optimizer = torch.optim.Adam(adapter.model.parameters(), lr=2e-3)
    order = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # dropout
        adapter.model.train()
        for _ in range(STEPS):
            batch = torch.randint(len(pairs), (BATCH,), generator=order).tolist()
            loss = adapter.loss(
                train_pixels[[pairs[j][0] for j in batch]], [pairs[j][1] for j in batch]
            ).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = scores(adapter, test_pixels, references)

    assert before["bleu"] < 0.05
    assert after["token_acc"] > before["token_acc"] + 0.4
    assert after["bleu"] > 0.5
    assert after["bleu"] > after["bleu_wrong_image"] + 0.1, after
