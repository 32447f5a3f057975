"""From dataset records to model inputs: task-level samples and batches of pixels.

Readers yield captioning or VQA records; models take pixels, texts and prompts. This module is
the one place that turns the first into the second, for training and evaluation alike, and that
skips (and reports) images that cannot be decoded instead of crashing a long run.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from prsl.core.errors import InvalidInput
from prsl.data.images import ImageLoadError, Prepare, load_images, load_rgb
from prsl.data.types import (
    CaptionExample,
    DatasetSplit,
    ImageSource,
    Skipped,
    VQAExample,
    skip_summary,
)

log = logging.getLogger(__name__)

PromptFn = Callable[[str], str]
"""How a model turns a VQA question into its prompt (an adapter's ``vqa_prompt``)."""


@dataclass(frozen=True)
class Sample:
    """One model input: an image, the text to train on or to score, and the prompt (VQA)."""

    key: str  # unique among the samples of a run: the ledger and the skip counts use it
    item: str  # the dataset item it comes from: the image id (captioning) or question id (VQA)
    image: ImageSource
    text: str
    prompt: str | None
    references: tuple[str, ...]
    question: str | None = None


def majority_answer(answers: tuple[str, ...]) -> str:
    """The most frequent human answer (ties: the first given), the usual VQA training target."""
    counts = Counter(answers)
    return max(answers, key=lambda a: (counts[a], -answers.index(a)))


def vqa_sample(ex: VQAExample, vqa_prompt: PromptFn) -> Sample:
    """One question: its majority answer is the text to train on or attack, all ten the refs."""
    return Sample(
        ex.question_id,
        ex.question_id,
        ex.image,
        majority_answer(ex.answers),
        vqa_prompt(ex.question),
        ex.answers,
        ex.question,
    )


def training_samples(split: DatasetSplit, vqa_prompt: PromptFn) -> list[Sample]:
    """Every (image, reference caption) pair, or every question with its majority answer."""
    samples = []
    for ex in split.examples:
        if isinstance(ex, VQAExample):
            samples.append(vqa_sample(ex, vqa_prompt))
        else:
            samples.extend(
                Sample(f"{ex.image_id}#{i}", ex.image_id, ex.image, ref, None, ex.references)
                for i, ref in enumerate(ex.references)
            )
    return _unique_keys(samples)


def evaluation_samples(split: DatasetSplit, vqa_prompt: PromptFn) -> list[Sample]:
    """One sample per image (captioning) or per question (VQA), with all references."""
    samples = []
    for ex in split.examples:
        if isinstance(ex, VQAExample):
            samples.append(vqa_sample(ex, vqa_prompt))
        elif isinstance(ex, CaptionExample):
            samples.append(
                Sample(ex.image_id, ex.image_id, ex.image, ex.references[0], None, ex.references)
            )
    return _unique_keys(samples)


def _unique_keys(samples: list[Sample]) -> list[Sample]:
    """A dataset that lists one id twice gets ``id``, ``id~2``, ...: keys must name one sample."""
    seen: Counter[str] = Counter()
    unique = []
    for sample in samples:
        seen[sample.key] += 1
        if seen[sample.key] > 1:
            key = f"{sample.key}~{seen[sample.key]}"
            sample = Sample(key, key, *_fields_after_item(sample))
        unique.append(sample)
    return unique


def _fields_after_item(sample: Sample) -> tuple:
    return (sample.image, sample.text, sample.prompt, sample.references, sample.question)


def batch_prompts(samples: Sequence[Sample]) -> list[str] | None:
    """The prompts of a batch, or None for captioning (whose samples have no prompt)."""
    if not samples or samples[0].prompt is None:
        return None
    return [s.prompt for s in samples]  # type: ignore[misc]


def load_batch(
    samples: list[Sample], size: tuple[int, int], prepare: Prepare | None = None
) -> tuple[torch.Tensor | None, list[Sample], list[Skipped]]:
    """Decode a batch of images to (B, 3, H, W) pixels in [0, 1], skipping unreadable files.

    ``prepare`` is the model's own resize to its input ``size`` (see ``load_images``). Returns
    the pixels of the kept samples (None when none could be read), the kept samples, and one
    ``Skipped`` per sample left out, keyed by its item.
    """
    loaded = load_images([s.image for s in samples], size, log, prepare)
    kept = [samples[i] for i in loaded.kept]
    lost = sorted(set(range(len(samples))) - set(loaded.kept))
    skipped = [
        Skipped(why.path, why.reason, samples[i].item)
        for i, why in zip(lost, loaded.skipped, strict=True)
    ]
    return (loaded.pixels if kept else None), kept, skipped


def any_readable(images: Sequence[ImageSource]) -> bool:
    """Whether at least one of the images decodes: stops at the first that does, so this costs
    one decode unless every image is broken (then a run would have nothing to work on)."""
    for image in images:
        try:
            load_rgb(image)
        except ImageLoadError:
            continue
        return True
    return False


def require_usable(split: DatasetSplit, dataset: str, purpose: str) -> None:
    """Refuse a split that leaves nothing to work on: no item at all, or no readable image.

    ``purpose`` completes the message: "to train on", "to evaluate".
    """
    if not split.examples:
        looked_at = len(split.skipped)
        raise InvalidInput(
            f"dataset {dataset!r} gave no item {purpose} ({skip_summary(split.skipped, looked_at)})"
        )
    if not any_readable([example.image for example in split.examples]):
        also = f"; {skip_summary(split.skipped, len(split.skipped))} by the reader"
        raise InvalidInput(
            f"none of the {len(split.examples)} images of dataset {dataset!r} can be read "
            f"(check the image files and data.options{also if split.skipped else ''})"
        )
