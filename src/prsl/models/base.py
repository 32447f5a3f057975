"""The one interface every vision-language model sits behind.

Losses, attacks and evaluation only ever talk to a :class:`VLMAdapter`, so they never care
which Hugging Face architecture is underneath. Pixels are always float tensors in [0, 1] of
shape (B, 3, H, W) at ``pixel_size``; the adapter applies the model's mean/std normalisation
itself, so an attack's ε is in pixel units.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from prsl.core.labels import IGNORE_INDEX


class VLMAdapter(ABC):
    """A captioning / VQA model with a uniform, differentiable-in-pixels interface."""

    family: str  # registry name, e.g. "vision-encoder-decoder", "blip2"
    model: nn.Module  # the underlying Hugging Face model
    vqa_template: str  # how a VQA question becomes a decoder prefix, with a ``{question}`` field
    _forward_module: nn.Module | None = None

    def vqa_prompt(self, question: str) -> str:
        """The prompt that asks ``question`` (a decoder prefix: its tokens never carry a label)."""
        return self.vqa_template.format(question=question.strip())

    def set_forward_module(self, module: nn.Module | None) -> None:
        """Run training forwards through ``module`` (e.g. a DDP wrapper of ``model``); None resets.

        Gradient synchronisation under ``accelerate`` happens in the wrapper's forward, so the
        differentiable path must call it, while ``generate`` and ``save`` keep using ``model``.
        """
        self._forward_module = module

    @property
    def forward_module(self) -> nn.Module:
        """What differentiable forwards call: the wrapper when one is set, else ``model``."""
        return self.model if self._forward_module is None else self._forward_module

    @property
    @abstractmethod
    def pixel_size(self) -> tuple[int, int]:
        """(H, W) the model expects."""

    prepare_images: Callable[[list[Image.Image]], torch.Tensor] | None = None
    """How decoded RGB images reach ``pixel_size`` (B, 3, H, W) in [0, 1], done once and outside
    any gradient; None: a plain bicubic resize. A model whose own processor resizes otherwise
    (shortest edge then centre crop, say) sets it, so pixels match what its processor would give."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @abstractmethod
    def logits_and_labels(
        self, pixels: torch.Tensor, texts: list[str], prompts: list[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, T, V), labels (B, T)) already aligned (labels[t] is predicted by logits[t]).

        Positions that must not count (padding, prompt tokens) carry ``IGNORE_INDEX``, so any
        registered loss from :mod:`prsl.losses` can be applied directly.
        """

    def loss(
        self, pixels: torch.Tensor, texts: list[str], prompts: list[str] | None = None
    ) -> torch.Tensor:
        """Per-example mean token cross-entropy of ``texts`` (B,); differentiable in ``pixels``."""
        logits, labels = self.logits_and_labels(pixels, texts, prompts)
        token_ce = nn.functional.cross_entropy(
            logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
        )
        counted = (labels != IGNORE_INDEX).sum(dim=1).clamp(min=1)
        return token_ce.sum(dim=1) / counted

    def tokens_match(
        self, pixels: torch.Tensor, texts: list[str], prompts: list[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Whether the most likely token at every counted position is the text's own, given the
        text before it, without a graph: ``(whole, begun)``, both (B,) bool, from one forward.

        ``whole`` counts the end token: for a model's own greedy output it is True exactly while
        greedy decoding would still produce it, so False is "the output changed", at the cost of
        one forward pass and no generation. ``begun`` leaves the end token out: for an output
        that generation cut at ``max_new_tokens`` (it never ended), True while decoding would
        still begin with it."""
        with torch.no_grad():
            logits, labels = self.logits_and_labels(pixels, texts, prompts)
            counted = labels != IGNORE_INDEX
            hit = logits.argmax(dim=-1) == labels
            # the last counted position of each row is the end token
            before_end = counted & (counted.long().cumsum(dim=1) < counted.sum(dim=1, keepdim=True))
            return (hit | ~counted).all(dim=1), (hit | ~before_end).all(dim=1)

    @abstractmethod
    def generate(
        self, pixels: torch.Tensor, prompts: list[str] | None = None, **gen_kwargs
    ) -> list[str]:
        """Batched generation (greedy by default), one string per image, prompts stripped."""

    @abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write weights (safetensors), config, tokenizer and processor so ``load`` restores it."""
