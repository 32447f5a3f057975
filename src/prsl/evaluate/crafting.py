"""Crafting a cell's adversarial images, and generating with a model: the work of a batch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from prsl.attacks import AttackResult, craft_on_surrogate
from prsl.core.errors import InvalidInput
from prsl.evaluate.config import EvalConfig
from prsl.evaluate.grid import Cell
from prsl.models import VLMAdapter, model_prompts
from prsl.provenance import ModelRef


def generate(
    adapter: VLMAdapter, pixels: torch.Tensor, prompts: list[str] | None, max_new_tokens: int
) -> list[str]:
    """Greedy outputs for a batch, on the adapter's device, without a graph."""
    with torch.no_grad():
        return adapter.generate(pixels.to(adapter.device), prompts, max_new_tokens=max_new_tokens)


STEP_BATCHES = 4
"""Default images per per-step ``generate`` call, in batches (``EvalConfig.step_batch_size``)."""


def generate_steps(
    adapter: VLMAdapter,
    steps: list[torch.Tensor],
    final: tuple[torch.Tensor, list[str]],
    prompts: list[str] | None,
    max_new_tokens: int,
    images_per_call: int,
) -> list[list[str]]:
    """The outputs after every step (one list per step), generated ``images_per_call`` images at
    a time across steps: ten steps of a small batch are one or a few calls instead of ten. A
    step whose images are the final ones (BIM's last) reuses the final outputs."""
    final_pixels, final_outputs = final
    todo = [i for i, step in enumerate(steps) if not torch.equal(step, final_pixels)]
    outputs: list[list[str]] = [list(final_outputs) for _ in steps]
    if not todo:
        return outputs
    batch = final_pixels.shape[0]
    stacked = torch.cat([steps[i] for i in todo])
    asked = None if prompts is None else prompts * len(todo)
    generated: list[str] = []
    for first in range(0, stacked.shape[0], images_per_call):
        part = slice(first, first + images_per_call)
        generated += generate(
            adapter, stacked[part], asked[part] if asked else None, max_new_tokens
        )
    for n, i in enumerate(todo):
        outputs[i] = generated[n * batch : (n + 1) * batch]
    return outputs


def craft(
    cell: Cell,
    pixels: torch.Tensor,
    crafter: VLMAdapter,
    texts: list[str],
    prompts: list[str] | None,
    seed: int,
    *,
    targeted: bool = False,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The cell's attack on ``crafter`` (the evaluated model, or the surrogate for a transfer
    cell): adversarial pixels and, when the attack records them, the images after every step.
    ``targeted``: drive the output toward ``texts`` instead of away from them. ``start``: where
    the attack begins (a ``start: worst_case`` cell), its ball still centred on ``pixels``; the
    model computes in the cell's ``dtype`` while it crafts.

    A generator seeded with ``seed`` drives any random draw, so a rerun crafts the same images.
    """
    pixels = pixels.to(crafter.device)
    start = None if start is None else start.to(crafter.device)
    generator = torch.Generator(device=pixels.device).manual_seed(seed)
    with computing_in(crafter, cell.dtype):
        result = craft_on_surrogate(
            cell.attack,
            pixels,
            crafter,
            texts,
            prompts,
            targeted=targeted,
            generator=generator,
            start=start,
        )
    if isinstance(result, AttackResult):
        return result.final, result.steps
    return result, None


def used_prompts(cfg: EvalConfig, model: ModelRef) -> dict[str, str]:
    """The prompts this evaluation gives the model (its own, with the config's caption_prompt
    and vqa_template instead of its own where set), read before it is loaded: what the results
    record."""
    prompts = model_prompts(model.given)
    if cfg.caption_prompt is not None and "caption_prompt" in prompts:
        prompts["caption_prompt"] = cfg.caption_prompt
    if cfg.vqa_template is not None:
        prompts["vqa_template"] = cfg.vqa_template
    return prompts


@contextmanager
def computing_in(adapter: VLMAdapter, dtype: str | None) -> Iterator[None]:
    """The adapter's model computes in ``dtype`` for the block (None: as loaded), then every
    floating weight and buffer is back in its own dtype, bit for bit: a bfloat16 or float16
    weight goes to float32 and back exactly; a cast that loses precision keeps the original.
    Why in place: reloading a VLM takes minutes; RobustVLM reloads it for its fp32 pass."""
    module = getattr(adapter, "model", None)
    if dtype is None or not isinstance(module, torch.nn.Module):
        yield
        return
    wanted = getattr(torch, dtype)
    tensors = [
        t
        for t in (*module.parameters(), *module.buffers())
        if t.is_floating_point() and t.dtype != wanted
    ]
    # a widening cast is undone exactly by casting back, so only a narrowing one keeps a copy
    saved = [(t, t.dtype if _widens(t.dtype, wanted) else t.data) for t in tensors]
    for t in tensors:
        t.data = t.data.to(wanted)
    try:
        yield
    finally:
        for t, original in saved:
            t.data = t.data.to(original) if isinstance(original, torch.dtype) else original


def _widens(dtype: torch.dtype, wanted: torch.dtype) -> bool:
    """Whether every value of ``dtype`` is exactly a value of ``wanted`` (and back)."""
    halves = (torch.bfloat16, torch.float16)
    return wanted in (torch.float32, torch.float64) and (dtype in halves or dtype == torch.float32)


def instructed(adapter: VLMAdapter, cfg: EvalConfig, model: ModelRef) -> VLMAdapter:
    """The adapter with the config's captioning instruction (where the model takes one) and
    VQA template, where the config gives them."""
    if cfg.vqa_template is not None:
        adapter.vqa_template = cfg.vqa_template
    if cfg.caption_prompt is None:
        return adapter
    if not hasattr(adapter, "caption_prompt"):
        raise InvalidInput(
            f"caption_prompt is for chat VLMs; {model.name} ({adapter.family}) takes no "
            "instruction: leave caption_prompt unset"
        )
    adapter.caption_prompt = cfg.caption_prompt
    return adapter
