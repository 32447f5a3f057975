"""The tiny captioner learns: a few hundred Adam steps on shapes caption held-out images.

"Better" is measured three ways on images of another seed: teacher-forced next-token accuracy
of the references, corpus BLEU-2 of greedy captions (a plain n-gram count written here), and
BLEU-2 of each caption against the references of *another* image. The last guards against a
model that ignores the picture and writes the most common template caption.

The model is the session's ``trained_captioner``; its figures over 12 draws (seeds and CPU
kernels, ``tests/calibration.py captioner``): token accuracy gain 0.49-0.63 (asserted > 0.3),
BLEU-2 0.48-0.80 (> 0.35), over the wrong image's by 0.13-0.31 (> 0.05).
"""

from __future__ import annotations

import math

import pytest
import torch

from prsl.data.images import to_pixels
from prsl.data.shapes import make_shapes_captions
from prsl.models import VisionEncoderDecoderAdapter
from shapes_training import CAPTIONER_EXAMPLES, corpus_bleu, tiny_captioner_for


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


def test_tiny_captioner_learns_to_caption_held_out_shapes(trained_captioner):
    train = make_shapes_captions(CAPTIONER_EXAMPLES, seed=0).examples
    held_out = make_shapes_captions(48, seed=1000).examples
    untrained = tiny_captioner_for(train)  # the trained one's starting point: same seed
    test_pixels = to_pixels([ex.image for ex in held_out], untrained.pixel_size)
    references = [ex.references for ex in held_out]

    before = scores(untrained, test_pixels, references)
    after = scores(trained_captioner, test_pixels, references)

    assert before["bleu"] < 0.05
    assert after["token_acc"] > before["token_acc"] + 0.3
    assert after["bleu"] > 0.35
    assert after["bleu"] > after["bleu_wrong_image"] + 0.05, after
