"""The model a fine-tuning run starts from, as its configuration describes it.

It composes ``prsl.models`` with the run's config and dataset (the tiny model's vocabulary
comes from the training texts), so the models package needs neither.

``name_or_path: tiny`` builds the from-scratch captioner with a vocabulary covering the
training data (captions, or VQA prompts and answers); anything else is loaded with
:func:`load_adapter`, and BLIP-2 is frozen for its fine-tuning mode.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from prsl.models import (
    ADAPTER_INFO,
    Blip2Adapter,
    HFAdapter,
    ImageTextAdapter,
    VisionEncoderDecoderAdapter,
    build_tiny_captioner,
    load_adapter,
)
from prsl.train.config import TINY

BASE = "base"
"""The folder of a run's output directory that keeps the tiny model it started from."""

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import VisionEncoderDecoderModel

    from prsl.data import DatasetSplit
    from prsl.train.config import ModelConfig


def vocabulary_texts(split: DatasetSplit, vqa_template: str) -> list[str]:
    """Every text the tiny model will read or write: references, or prompts and answers."""
    texts: list[str] = []
    for example in split.examples:
        question = getattr(example, "question", None)
        if question is None:
            texts.extend(example.references)
        else:
            texts.append(vqa_template.format(question=question.strip()))
            texts.extend(example.answers)
    return texts


def build_adapter(
    model_cfg: ModelConfig,
    split: DatasetSplit,
    *,
    base_dir: str | Path | None = None,
    accelerator: Accelerator | None = None,
    seed: int = 0,
    choose_trainable: bool = True,
) -> HFAdapter:
    """The adapter to fine-tune, on the accelerator's device, with the parameters that no loss
    reaches frozen (see :func:`freeze_encoder_pooler`).

    For the tiny model, ``base_dir`` keeps the freshly built model: the main process builds
    and saves it first, the others (and a resumed run) load it, so every process starts from
    the same vocabulary and weights.
    """
    if model_cfg.name_or_path == TINY:
        adapter = _tiny_adapter(model_cfg, split, base_dir, accelerator, seed)
    else:
        adapter = load_adapter(
            model_cfg.name_or_path,
            family=model_cfg.family,
            trust_remote_code=model_cfg.trust_remote_code,
            vision_tower=model_cfg.vision_tower,
        )
        if isinstance(adapter, ImageTextAdapter) and model_cfg.caption_prompt is not None:
            adapter.caption_prompt = model_cfg.caption_prompt
        if choose_trainable and isinstance(adapter, Blip2Adapter):
            adapter.freeze_for_finetune(
                model_cfg.blip2_trainable, lora_r=model_cfg.lora_r, lora_alpha=model_cfg.lora_alpha
            )
        elif choose_trainable and isinstance(adapter, ImageTextAdapter):
            adapter.freeze_for_finetune(
                model_cfg.vlm_trainable, lora_r=model_cfg.lora_r, lora_alpha=model_cfg.lora_alpha
            )
        if model_cfg.gradient_checkpointing:
            adapter.model.gradient_checkpointing_enable()
    if isinstance(adapter, VisionEncoderDecoderAdapter):
        freeze_encoder_pooler(adapter.model)
    if accelerator is not None:
        adapter.model.to(accelerator.device)
    return adapter


def freeze_encoder_pooler(model: VisionEncoderDecoderModel) -> None:
    """Freeze the vision encoder's pooler, which a VisionEncoderDecoder never uses.

    The decoder cross-attends to the encoder's hidden states, not to its pooled output, so the
    pooler (ViT has one) gets no gradient. DDP waits for the gradient of every trainable
    parameter and fails at the second step; frozen, the pooler is simply left out.
    """
    pooler = getattr(model.encoder, "pooler", None)
    if pooler is not None:
        pooler.requires_grad_(False)


def _tiny_adapter(
    model_cfg: ModelConfig,
    split: DatasetSplit,
    base_dir: str | Path | None,
    accelerator: Accelerator | None,
    seed: int,
) -> HFAdapter:
    main = accelerator is None or accelerator.is_main_process
    first: Any = accelerator.main_process_first() if accelerator is not None else nullcontext()
    with first:
        if base_dir is not None and (Path(base_dir) / ADAPTER_INFO).is_file():
            return load_adapter(base_dir)
        texts = vocabulary_texts(split, VisionEncoderDecoderAdapter.default_vqa_template)
        options = model_cfg.tiny.model_dump()
        dropout = options.pop("dropout")
        adapter = build_tiny_captioner(texts, **options, seed=seed)
        if dropout is not None:
            set_dropout(adapter.model, dropout)
        if base_dir is not None and main:
            adapter.save(base_dir)
    return adapter


def set_dropout(model: VisionEncoderDecoderModel, p: float) -> None:
    """Every dropout probability of a ViT + GPT-2 encoder-decoder, in its config and its modules.

    The config is what a saved copy is rebuilt from; the modules are what this copy runs: GPT-2
    reads its ``nn.Dropout`` modules, ViT's attention a float attribute.
    """
    encoder, decoder = model.config.encoder, model.config.decoder
    encoder.hidden_dropout_prob = encoder.attention_probs_dropout_prob = p
    decoder.resid_pdrop = decoder.embd_pdrop = decoder.attn_pdrop = p
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = p
