"""Adversarial fine-tuning: each step's examples attacked on the fly against the model as it is.

Madry et al.'s recipe, for any loss and any adapter: before the forward of a micro-batch, a
``fraction`` of its images (chosen at random from the run's seed, the step, the micro-batch and
the process, so a resumed run picks the same ones) is replaced by adversarial images crafted
with the configured attack, untargeted on the examples' ground-truth texts. The crafting runs on
the unwrapped model in eval mode with every parameter frozen (:func:`prsl.attacks.attack_mode`:
no dropout while crafting, no parameter gradient from the attack's backward passes), and the
train/eval flags and ``requires_grad`` flags come back as they were; the update then trains on
the mix as on any batch. Each process crafts its own share of the micro-batch.
"""

from __future__ import annotations

import torch

from prsl.attacks import AttackResult, attack_mode, untargeted_loss
from prsl.models import HFAdapter
from prsl.train.config import AdversarialConfig

_STREAMS = (1_000_003, 10_007, 101)  # mixes (step, micro-batch, rank) into one seed


def mixing_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The seed of one micro-batch's choice of examples and of its attack's random draws."""
    a, b, c = _STREAMS
    return (seed * a + step * b + micro * c + rank) % (2**63 - 1)


def adversarial_mix(
    adapter: HFAdapter,
    pixels: torch.Tensor,
    texts: list[str],
    prompts: list[str] | None,
    cfg: AdversarialConfig,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixels with ``round(fraction * B)`` images replaced by adversarial ones, which rows);
    with a fraction of 0 the pixels themselves, untouched, and no random draw."""
    chosen_count = round(cfg.fraction * len(texts))
    if chosen_count == 0:
        return pixels, torch.zeros(0, dtype=torch.long)
    choice = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(texts), generator=choice)[:chosen_count].sort().values
    subset = [texts[i] for i in chosen.tolist()]
    asked = None if prompts is None else [prompts[i] for i in chosen.tolist()]
    draws = torch.Generator(device=pixels.device).manual_seed(seed)
    wrapper = adapter.forward_module
    adapter.set_forward_module(None)  # the plain model: no DDP hooks for the attack's passes
    try:
        with attack_mode(adapter):  # once for the whole attack
            crafted = cfg.built(
                pixels[chosen.to(pixels.device)].detach(),
                untargeted_loss(adapter, subset, asked),
                generator=draws,
            )
    finally:
        adapter.set_forward_module(wrapper)
    if isinstance(crafted, AttackResult):
        crafted = crafted.final
    mixed = pixels.detach().clone()
    mixed[chosen.to(pixels.device)] = crafted.detach().to(mixed.dtype)
    return mixed, chosen
