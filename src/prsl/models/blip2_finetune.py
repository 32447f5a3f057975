"""Which BLIP-2 parameters train: the paper's Q-Former fine-tune, or LoRA on the frozen LLM.

``peft`` is imported only when LoRA is asked for: it is slow to import and most runs never
need it. LoRA layers are injected into the model in place (no wrapper), so the adapter keeps
calling the same ``Blip2ForConditionalGeneration``; saving merges them into a plain copy.
"""

from __future__ import annotations

import sys
from typing import Literal, get_args

import torch
from torch import nn

from prsl.core.errors import InvalidInput

FinetuneMode = Literal["qformer", "lora"]
LORA_TARGETS = ("q_proj", "v_proj")
"""OPT attention projections; the vision tower and the Q-Former name theirs differently."""


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every injected LoRA layer; none can exist until peft was imported."""
    if "peft" not in sys.modules:
        return []
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def has_lora(model: nn.Module) -> bool:
    return bool(lora_layers(model))


def freeze_for_finetune(
    model: nn.Module,
    mode: FinetuneMode = "qformer",
    *,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
) -> int:
    """Freeze a BLIP-2 model for fine-tuning; returns the number of trainable parameters.

    ``qformer``: the vision encoder and the LLM are frozen; the query tokens, the Q-Former and
    the language projection train (the paper's setup). ``lora``: everything is frozen except
    rank-``lora_r`` LoRA adapters on the LLM's ``q_proj`` and ``v_proj``.
    """
    if mode not in get_args(FinetuneMode):
        raise InvalidInput(f"mode must be one of {get_args(FinetuneMode)}, got {mode!r}")
    if has_lora(model):
        raise InvalidInput("this model already carries LoRA layers; freeze it only once")
    model.requires_grad_(False)
    if mode == "qformer":
        model.query_tokens.requires_grad_(True)
        model.qformer.requires_grad_(True)
        model.language_projection.requires_grad_(True)
    else:
        _inject_lora(model, lora_r, lora_alpha, lora_dropout)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _inject_lora(model: nn.Module, r: int, alpha: int, dropout: float) -> None:
    if r < 1:
        raise InvalidInput(f"lora_r must be >= 1, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise InvalidInput(f"lora_dropout must be in [0, 1), got {dropout}")
    from peft import LoraConfig, inject_adapter_in_model

    targets = "|".join(LORA_TARGETS)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=rf"language_model\..*\.({targets})",
    )
    was_training = model.training
    inject_adapter_in_model(config, model)
    model.train(was_training)  # new dropout layers start in training mode; keep the model's
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name)


@torch.no_grad()
def lora_merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every LoRA delta added to its base weight, LoRA keys dropped.

    Keys read as those of the plain model (``q_proj.base_layer.weight`` -> ``q_proj.weight``),
    so ``from_pretrained`` loads the result without peft. The live model is left untouched.
    """
    deltas: dict[str, torch.Tensor] = {}
    for name, layer in lora_layers(model):
        delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters)
        deltas[f"{name}.base_layer.weight"] = delta
    merged = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        if key in deltas:
            value = value + deltas[key].to(value.dtype)
        merged[key.replace(".base_layer.", ".")] = value
    return merged
