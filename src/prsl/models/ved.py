"""``VisionEncoderDecoderModel`` (ViT encoder + GPT-2 decoder): the paper's captioner.

A VQA question is a decoder prefix (``question: {q} answer:``) after the decoder-start token;
the model then continues with the answer. Generation left-pads prefixes of different lengths
and passes explicit position ids counted from each row's first real token, so a batch decodes
exactly as its images would one at a time.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import VisionEncoderDecoderModel

from prsl.core.errors import InvalidInput
from prsl.models.hf import HFAdapter, pad_batch


class VisionEncoderDecoderAdapter(HFAdapter):
    """Captioning / prefix-VQA with any Hugging Face ``VisionEncoderDecoderModel``."""

    family = "vision-encoder-decoder"
    model_class = VisionEncoderDecoderModel
    default_vqa_template = "question: {question} answer:"
    default_hub_id = "nlpconnect/vit-gpt2-image-captioning"

    def __init__(
        self, model: VisionEncoderDecoderModel, tokenizer: Any, image_processor: Any, **kw
    ):
        config = model.config
        super().__init__(model, tokenizer, image_processor, pad_token_id=config.pad_token_id, **kw)
        start = config.decoder_start_token_id
        if start is None:
            start = model.generation_config.decoder_start_token_id
        if start is None:
            raise InvalidInput("the model config defines no decoder_start_token_id")
        self.start_token_id = int(start)

    @property
    def vision_dtype(self) -> torch.dtype:
        return self.model.encoder.dtype

    def vision_encoder(self) -> torch.nn.Module:
        return self.model.encoder

    @property
    def max_positions(self) -> int | None:
        return getattr(self.model.config.decoder, "max_position_embeddings", None)

    def logits_and_labels(
        self, pixels: torch.Tensor, texts: list[str], prompts: list[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = pixels.shape[0]
        values = self.normalise(pixels)
        prefixes = [[self.start_token_id] + p for p in self._prompt_ids(prompts, batch)]
        text_ids = self._text_ids(texts, prompts, batch)
        batch = self._teacher_forcing(prefixes, text_ids, values.device)
        self._check_length(batch.ids.shape[1], "the longest prompt + text")
        out = self.forward_module(
            pixel_values=values,
            decoder_input_ids=batch.ids,
            decoder_attention_mask=batch.mask,
            use_cache=False,
        )
        return out.logits, batch.labels.to(out.logits.device)

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
        prefixes = [[self.start_token_id] + p for p in self._prompt_ids(prompts, batch)]
        ids, mask = pad_batch(prefixes, self.pad_token_id, left=True)
        self._check_length(ids.shape[1] + max_new_tokens, "the longest prompt + max_new_tokens")
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        device = values.device
        out = self.model.generate(
            pixel_values=values,
            decoder_input_ids=ids.to(device),
            decoder_attention_mask=mask.to(device),
            decoder_position_ids=positions.to(device),
            **self._generation_kwargs(max_new_tokens, gen_kwargs),
        )
        return self._decode(out[:, ids.shape[1] :])
