"""``Blip2ForConditionalGeneration`` with a decoder-only LLM (OPT): the paper's VQA model.

transformers 5.x splices the Q-Former outputs into the LLM input wherever ``input_ids`` holds
``config.image_token_index``, so every sequence starts with ``num_query_tokens`` copies of it,
then BOS, then the prompt (``Question: {q} Answer:``) and, for training, the answer. Both the
loss and ``generate`` build that layout here, so what is trained is what is generated.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Blip2ForConditionalGeneration

from prsl.core.errors import InvalidInput
from prsl.models.hf import HFAdapter, pad_batch
from prsl.models.lora import (
    FinetuneMode,
    freeze_for_finetune,
)


class Blip2Adapter(HFAdapter):
    """Captioning and VQA with BLIP-2 (OPT language model)."""

    family = "blip2"
    model_class = Blip2ForConditionalGeneration
    default_vqa_template = "Question: {question} Answer:"
    default_hub_id = "Salesforce/blip2-opt-2.7b"

    def __init__(
        self, model: Blip2ForConditionalGeneration, tokenizer: Any, image_processor: Any, **kw
    ):
        config = model.config
        if not config.use_decoder_only_language_model:
            raise InvalidInput(
                "Blip2Adapter supports decoder-only language models (OPT); this checkpoint "
                f"uses {config.text_config.model_type!r}"
            )
        if config.image_token_index is None:
            raise InvalidInput(
                "the BLIP-2 config defines no image_token_index; transformers >= 4.47 "
                "checkpoints (or a config with image_token_index set) are required"
            )
        text = config.text_config
        super().__init__(model, tokenizer, image_processor, pad_token_id=text.pad_token_id, **kw)
        self.image_token_id = int(config.image_token_index)
        self.num_query_tokens = int(config.num_query_tokens)
        self.bos_token_id = int(text.bos_token_id)

    @property
    def vision_dtype(self) -> torch.dtype:
        return self.model.vision_model.dtype

    def vision_encoder(self) -> torch.nn.Module:
        return self.model.vision_model

    @property
    def max_positions(self) -> int | None:
        return getattr(self.model.config.text_config, "max_position_embeddings", None)

    def _prefixes(self, prompts: list[str] | None, batch: int) -> list[list[int]]:
        start = [self.image_token_id] * self.num_query_tokens + [self.bos_token_id]
        return [start + p for p in self._prompt_ids(prompts, batch)]

    def logits_and_labels(
        self, pixels: torch.Tensor, texts: list[str], prompts: list[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = pixels.shape[0]
        values = self.normalise(pixels)
        tf = self._teacher_forcing(
            self._prefixes(prompts, batch), self._text_ids(texts, prompts, batch), values.device
        )
        self._check_length(tf.ids.shape[1], "the image tokens + longest prompt + text")
        # Positions before BOS predict image placeholders or BOS and never carry a label:
        # the LM head skips them (logits_to_keep), which saves memory with a 50k vocabulary.
        keep = tf.ids.shape[1] - self.num_query_tokens
        out = self.forward_module(
            pixel_values=values,
            input_ids=tf.ids,
            attention_mask=tf.mask,
            logits_to_keep=keep,
            use_cache=False,
        )
        labels = tf.labels[:, self.num_query_tokens :]
        return out.logits, labels.to(out.logits.device)

    @torch.no_grad()
    def generate(
        self,
        pixels: torch.Tensor,
        prompts: list[str] | None = None,
        max_new_tokens: int = 20,
        **gen_kwargs: Any,
    ) -> list[str]:
        batch = pixels.shape[0]
        values = self.normalise(pixels)
        ids, mask = pad_batch(self._prefixes(prompts, batch), self.pad_token_id, left=True)
        self._check_length(ids.shape[1] + max_new_tokens, "the prompt + max_new_tokens")
        out = self.model.generate(
            pixel_values=values,
            input_ids=ids.to(values.device),
            attention_mask=mask.to(values.device),
            **self._generation_kwargs(max_new_tokens, gen_kwargs),
        )
        return self._decode(out[:, ids.shape[1] :])

    def _generation_kwargs(self, max_new_tokens: int, overrides: dict[str, Any]) -> dict[str, Any]:
        """Greedy defaults; the image placeholder is never generated.

        It is not a word, and a generated placeholder would be taken for an image slot.
        """
        return super()._generation_kwargs(
            max_new_tokens, {"suppress_tokens": [self.image_token_id], **overrides}
        )

    def freeze_for_finetune(
        self,
        mode: FinetuneMode = "qformer",
        *,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
    ) -> int:
        """Set which parameters train (see :func:`freeze_for_finetune`); returns their count."""
        return freeze_for_finetune(
            self.model, mode, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout
        )
