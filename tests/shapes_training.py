"""Shared by the tests that train the tiny captioner with a bare Adam loop (no ``prsl.train``):
the loop itself and a corpus BLEU written from Papineni et al., independent of pycocoevalcap."""

from __future__ import annotations

import math
from collections import Counter

import torch

from prsl.data.images import to_pixels
from prsl.data.shapes import make_shapes_captions
from prsl.data.types import CaptionExample
from prsl.models import VisionEncoderDecoderAdapter, build_tiny_captioner


def ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(candidates: list[str], references: list[tuple[str, ...]], max_n: int = 2) -> float:
    """Corpus BLEU: clipped n-gram precisions, geometric mean, closest-length brevity penalty."""
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


def tiny_captioner_for(train: list[CaptionExample], seed: int = 0) -> VisionEncoderDecoderAdapter:
    """A fresh tiny captioner whose vocabulary covers the training references."""
    return build_tiny_captioner([ref for ex in train for ref in ex.references], seed=seed)


def train_captioner(
    adapter: VisionEncoderDecoderAdapter,
    train: list[CaptionExample],
    *,
    steps: int,
    batch: int,
    lr: float = 2e-3,
    seed: int = 0,
) -> None:
    """Adam on random (image, reference) pairs; deterministic, the caller's RNG untouched."""
    pairs = [(i, ref) for i, ex in enumerate(train) for ref in ex.references]
    pixels = to_pixels([ex.image for ex in train], adapter.pixel_size)
    optimizer = torch.optim.Adam(adapter.model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout
        adapter.model.train()
        for _ in range(steps):
            chosen = torch.randint(len(pairs), (batch,), generator=order).tolist()
            loss = adapter.loss(
                pixels[[pairs[j][0] for j in chosen]], [pairs[j][1] for j in chosen]
            ).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    adapter.model.eval()


CAPTIONER_EXAMPLES = 300
CAPTIONER_STEPS = 200
CAPTIONER_BATCH = 32


def train_shapes_captioner(seed: int = 0) -> VisionEncoderDecoderAdapter:
    """The suite's trained captioner: a fresh model of ``seed`` trained with Adam for
    ``CAPTIONER_STEPS`` steps of ``CAPTIONER_BATCH`` on ``CAPTIONER_EXAMPLES`` shapes of seed 0,
    in eval mode."""
    train = make_shapes_captions(CAPTIONER_EXAMPLES, seed=0).examples
    adapter = tiny_captioner_for(train, seed=seed)
    train_captioner(adapter, train, steps=CAPTIONER_STEPS, batch=CAPTIONER_BATCH, seed=seed)
    return adapter
