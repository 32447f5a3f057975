"""Crafting a cell's adversarial images, and generating with a model: the work of a batch."""

from __future__ import annotations

import torch

from prsl.attacks import AttackResult, craft_on_surrogate
from prsl.core.errors import InvalidInput
from prsl.data import Sample
from prsl.evaluate.config import EvalConfig
from prsl.evaluate.grid import Cell
from prsl.models import VLMAdapter
from prsl.provenance import ModelRef


def generate(
    adapter: VLMAdapter, pixels: torch.Tensor, prompts: list[str] | None, max_new_tokens: int
) -> list[str]:
    """Greedy outputs for a batch, on the adapter's device, without a graph."""
    with torch.no_grad():
        return adapter.generate(pixels.to(adapter.device), prompts, max_new_tokens=max_new_tokens)


def attack_texts(target: str, own_clean: list[str], samples: list[Sample]) -> list[str]:
    """What the untargeted attack pushes away from: the crafter's own clean output (the
    paper's protocol) or the ground truth."""
    return own_clean if target == "clean" else [s.text for s in samples]


def craft(
    cell: Cell,
    pixels: torch.Tensor,
    crafter: VLMAdapter,
    texts: list[str],
    prompts: list[str] | None,
    seed: int,
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The cell's attack on ``crafter`` (the evaluated model, or the surrogate for a transfer
    cell): adversarial pixels and, when the attack records them, the images after every step.

    A generator seeded with ``seed`` drives any random draw, so a rerun crafts the same images.
    """
    pixels = pixels.to(crafter.device)
    generator = torch.Generator(device=pixels.device).manual_seed(seed)
    result = craft_on_surrogate(cell.attack, pixels, crafter, texts, prompts, generator=generator)
    if isinstance(result, AttackResult):
        return result.final, result.steps
    return result, None


def instructed(adapter: VLMAdapter, cfg: EvalConfig, model: ModelRef) -> VLMAdapter:
    """The adapter with the config's captioning instruction, where the model takes one."""
    if cfg.caption_prompt is None:
        return adapter
    if not hasattr(adapter, "caption_prompt"):
        raise InvalidInput(
            f"caption_prompt is for chat VLMs; {model.name} ({adapter.family}) takes no "
            "instruction: leave caption_prompt unset"
        )
    adapter.caption_prompt = cfg.caption_prompt
    return adapter
