"""Which parameters of a pretrained VLM train: LoRA on its language model, or a named part.

``peft`` is imported only when LoRA is asked for: it is slow to import and most runs never
need it. LoRA layers are injected into the model in place (no wrapper), so an adapter keeps
calling the same Hugging Face model; saving merges them into a plain copy that loads without
peft. BLIP-2 has a second mode, the paper's: the Q-Former (and projection) train, the LLM frozen.
"""

from __future__ import annotations

import sys
from typing import Literal, get_args

import torch
from torch import nn

from prsl.core.errors import InvalidInput

FinetuneMode = Literal["qformer", "lora"]
LORA_TARGETS = ("q_proj", "v_proj")
"""The language models' attention projections (OPT, Llama, Qwen2, Gemma); the vision towers and
BLIP-2's Q-Former name theirs differently, so a regex on the language model's path selects them."""
BLIP2_LANGUAGE_MODEL = r"language_model\..*"


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
    if mode == "lora":
        return inject_lora(model, BLIP2_LANGUAGE_MODEL, lora_r, lora_alpha, lora_dropout)
    model.requires_grad_(False)
    model.query_tokens.requires_grad_(True)
    model.qformer.requires_grad_(True)
    model.language_projection.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def inject_lora(
    model: nn.Module,
    language_model: str,
    r: int,
    alpha: int,
    dropout: float,
    *,
    also_train: tuple[str, ...] = (),
) -> int:
    """Freeze ``model`` but rank-``r`` LoRA adapters on the attention projections of the modules
    matching ``language_model`` (a regex on module paths), and the parameters whose names
    contain one of ``also_train`` (a projector); returns the number of trainable parameters."""
    if r < 1:
        raise InvalidInput(f"lora_r must be >= 1, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise InvalidInput(f"lora_dropout must be in [0, 1), got {dropout}")
    if has_lora(model):
        raise InvalidInput("this model already carries LoRA layers; freeze it only once")
    from peft import LoraConfig, inject_adapter_in_model

    targets = "|".join(LORA_TARGETS)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=rf"{language_model}\.({targets})",
    )
    was_training = model.training
    inject_adapter_in_model(config, model)
    model.train(was_training)  # new dropout layers start in training mode; keep the model's
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name or any(part in name for part in also_train))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
