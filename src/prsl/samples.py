"""Glue between readers and models: task-level samples and pixel batches.

Readers yield captioning or VQA records; models take pixels, texts and prompts. This module is
the one place that turns the first into the second, for training and evaluation alike, and that
skips (and reports) images that cannot be decoded instead of crashing a long run.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import torch

from prsl.data.images import load_images
from prsl.data.types import CaptionExample, DatasetSplit, ImageSource, Skipped, VQAExample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One model input: an image, the text to train on or to score, and the prompt (VQA)."""

    key: str  # unique per evaluated item (image id, or question id for VQA)
    image: ImageSource
    text: str
    prompt: str | None
    references: tuple[str, ...]
    question: str | None = None


def majority_answer(answers: tuple[str, ...]) -> str:
    """The most frequent human answer (ties: the first given), the usual VQA training target."""
    counts = Counter(answers)
    return max(answers, key=lambda a: (counts[a], -answers.index(a)))


def vqa_sample(ex: VQAExample, vqa_prompt) -> Sample:
    """One question: its majority answer is the text to train on or attack, all ten the refs."""
    return Sample(
        ex.question_id,
        ex.image,
        majority_answer(ex.answers),
        vqa_prompt(ex.question),
        ex.answers,
        ex.question,
    )


def training_samples(split: DatasetSplit, vqa_prompt) -> list[Sample]:
    """Every (image, reference caption) pair, or every question with its majority answer."""
    samples = []
    for ex in split.examples:
        if isinstance(ex, VQAExample):
            samples.append(vqa_sample(ex, vqa_prompt))
        else:
            samples.extend(
                Sample(f"{ex.image_id}#{i}", ex.image, ref, None, ex.references)
                for i, ref in enumerate(ex.references)
            )
    return samples


def evaluation_samples(split: DatasetSplit, vqa_prompt) -> list[Sample]:
    """One sample per image (captioning) or per question (VQA), with all references."""
    samples = []
    for ex in split.examples:
        if isinstance(ex, VQAExample):
            samples.append(vqa_sample(ex, vqa_prompt))
        elif isinstance(ex, CaptionExample):
            samples.append(Sample(ex.image_id, ex.image, ex.references[0], None, ex.references))
    return samples


def load_batch(
    samples: list[Sample], size: tuple[int, int]
) -> tuple[torch.Tensor | None, list[Sample], list[Skipped]]:
    """Decode a batch of images to (B, 3, H, W) pixels in [0, 1], skipping unreadable files.

    Returns the pixels of the kept samples (None when none could be read), the kept samples,
    and what was skipped, each named with its path and reason in the log.
    """
    loaded = load_images([s.image for s in samples], size, log)
    kept = [samples[i] for i in loaded.kept]
    return (loaded.pixels if kept else None), kept, loaded.skipped
