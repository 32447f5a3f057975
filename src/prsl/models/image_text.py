"""Any Hugging Face image-text-to-text VLM behind the adapter interface: LLaVA-1.5, PaliGemma,
Gemma 3, Qwen2-VL / Qwen2.5-VL / Qwen3-VL (and its MoE sibling), Mistral 3, SmolVLM / Idefics3,
InternVL, LLaVA-NeXT and LLaVA-OneVision (the architectures whose pixel pipelines
:mod:`prsl.models.pixels` registers).

The model comes from ``AutoModelForImageTextToText``, its processor from ``AutoProcessor``.
Images reach the model through the architecture's differentiable pixel pipeline, so attacks
work in pixel units at the model's fixed input size. Text goes through the processor: a prompt
is rendered by its chat template (one user turn holding the image and the text, with the
generation prompt) for chat models, or in the model's own format (PaliGemma), and the
processor lays out its image tokens; a training target is the answer and the token that ends
the turn, so a trained answer stops where ``generate`` stops. Captioning uses an instruction
(``caption_prompt``, a default per architecture), VQA the question in ``vqa_template``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText

from prsl.core.errors import InvalidInput
from prsl.models import anyres, idefics3, internvl  # noqa: F401  (register their pipelines)
from prsl.models.geometry import requested_size
from prsl.models.hf import HFAdapter, pad_batch
from prsl.models.lora import inject_lora
from prsl.models.pixels import (
    LANGUAGE_MODEL,
    PixelPipeline,
    check_separable_vision,
    pipeline_for,
)
from prsl.models.processors import image_only_processors, load_processor
from prsl.models.towers import check_swappable, read_tower, swap_weights

FINETUNE_MODES = ("lora", "lora+projector", "full")


class ImageTextAdapter(HFAdapter):
    """Captioning and VQA with a chat / instruction VLM (see the module docstring)."""

    family = "image-text-to-text"
    model_class = AutoModelForImageTextToText
    default_vqa_template = "{question}"
    default_hub_id = "llava-hf/llava-1.5-7b-hf"

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        vqa_template: str | None = None,
        caption_prompt: str | None = None,
        image_size: tuple[int, int] | list[int] | None = None,
    ) -> None:
        kind = pipeline_for(model.config.model_type)
        pipeline = kind(processor, model.config, requested_size(image_size))
        super().__init__(
            model,
            processor.tokenizer,
            processor.image_processor,
            vqa_template=kind.vqa_template if vqa_template is None else vqa_template,
            pad_token_id=processor.tokenizer.pad_token_id,
            geometry=pipeline.geometry,
        )
        self.processor = processor
        self.pipeline: PixelPipeline = pipeline
        self.caption_prompt = kind.caption_prompt if caption_prompt is None else caption_prompt
        self.prepare_images = pipeline.prepare
        self._prefixes: dict[str, list[int]] = {}
        self._vision_tower: tuple[Any, torch.nn.Module] | None = None
        self._answer_space: bool | None = None
        self.prefix_ids(self.caption_prompt)  # a template that drops the image fails here

    @property
    def vision_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_positions(self) -> int | None:
        text = getattr(self.model.config, "text_config", self.model.config)
        return getattr(text, "max_position_embeddings", None)

    def vision_encoder(self) -> torch.nn.Module:
        """The vision tower (CLIP, SigLIP), without the projector."""
        model = self.model
        if self._vision_tower is not None and self._vision_tower[0] is model:
            return self._vision_tower[1]  # FARE asks at every PGD step: find it once
        check_separable_vision(model.config.model_type)
        name = self.pipeline.vision_tower
        found = [
            module
            for path, module in model.named_modules()
            if path == name or path.endswith("." + name)
        ]
        if not found:
            raise InvalidInput(f"this {model.config.model_type!r} model has no {name!r}")
        self._vision_tower = (model, found[0])
        return found[0]

    def swap_vision_tower(self, path: str | Path) -> None:
        """Replace the vision tower's weights by a separately saved tower's (a CLIP / SigLIP
        folder or an open_clip state dict: :mod:`prsl.models.towers`)."""
        config = self.model.config
        check_swappable(config.model_type)
        tower = read_tower(path)
        swap_weights(self.vision_encoder(), tower, config.vision_config, config.model_type)

    def image_features(
        self, pixels: torch.Tensor, encoder: torch.nn.Module | None = None
    ) -> torch.Tensor:
        module = self.vision_encoder() if encoder is None else encoder
        return self.pipeline.vision_features(module, self._image_inputs(pixels))

    # ----------------------------------------------------------------- prompts
    def render(self, prompt: str) -> str:
        """The prompt as the model reads it: a chat turn with the image, or its own format."""
        if not self.pipeline.chat:
            return self.pipeline.own_format(prompt)
        return self._chat(self._turn(prompt), add_generation_prompt=True)

    @staticmethod
    def _turn(prompt: str) -> list[dict]:
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]

    def _chat(self, messages: list[dict], **options: Any) -> str:
        """``messages`` through the chat template: the processor's, else its tokenizer's (a
        template saved in ``tokenizer_config.json``)."""
        template = getattr(self.processor, "chat_template", None) or getattr(
            self.processor.tokenizer, "chat_template", None
        )
        if template is None:
            raise InvalidInput(
                f"this {self.model.config.model_type!r} processor has no chat template; save one "
                "with the processor (chat_template.jinja)"
            )
        return self.processor.apply_chat_template(
            messages, chat_template=template, tokenize=False, **options
        )

    @property
    def answer_space(self) -> bool:
        """Whether an answer follows its prompt after a space. For a chat model, what its own
        template writes after the generation prompt when the assistant's turn holds an answer
        (Vicuna's ``ASSISTANT:`` takes one; a turn that starts on a new line does not), so the
        trained tokens are those ``generate`` would write; the architecture's setting where
        the template cannot say."""
        if self._answer_space is None:
            self._answer_space = self.pipeline.answer_space
            if self.pipeline.chat:
                probe = "red"
                asked = self.render(probe)
                answered = self._turn(probe) + [
                    {"role": "assistant", "content": [{"type": "text", "text": probe}]}
                ]
                written = self._chat(answered)
                at = written.rfind(probe)
                # the user's turn as prompted (a template may space its generation prompt
                # apart from an answered turn's header: OneVision's "assistant \n")
                if at > 0 and written.startswith(asked.rstrip()):
                    self._answer_space = written[at - 1] == " "
        return self._answer_space

    def prefix_ids(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt with its image tokens laid out (cached: the input
        size is fixed, so every image takes the same tokens)."""
        if prompt not in self._prefixes:
            text = self.render(prompt)
            marker = getattr(self.processor, "image_token", None)
            if marker is not None and marker not in text:
                raise InvalidInput(
                    f"the prompt template leaves out the image: {text!r} holds no {marker}"
                )
            image_only_processors()
            encoded = self.processor(
                text=[text],
                images=[self.pipeline.placeholder()],
                return_tensors="pt",
                **self.pipeline.processor_options,
            )
            ids = encoded["input_ids"][0].tolist()
            image_token = self._image_token_id()
            if image_token is not None and image_token not in ids:
                raise InvalidInput(
                    f"the prompt template leaves out the image: {text!r} holds no image token"
                )
            self._prefixes[prompt] = ids
        return self._prefixes[prompt]

    def _image_token_id(self) -> int | None:
        for name in ("image_token_id", "image_token_index"):
            value = getattr(self.model.config, name, None)
            if isinstance(value, int):
                return value
        return None

    def _prompts(self, prompts: list[str] | None, batch: int) -> list[str]:
        if prompts is None:
            return [self.caption_prompt] * batch
        if len(prompts) != batch:
            raise ValueError(f"got {len(prompts)} prompts for {batch} images; give one per image")
        return list(prompts)

    def _answer_ids(self, texts: list[str], batch: int) -> list[list[int]]:
        if len(texts) != batch:
            raise ValueError(f"got {len(texts)} texts for {batch} images; give one per image")
        lead = " " if self.answer_space else ""
        return self._token_ids([lead + t.strip() for t in texts])

    # ----------------------------------------------------------------- model calls
    def logits_and_labels(
        self, pixels: torch.Tensor, texts: list[str], prompts: list[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = pixels.shape[0]
        prefixes = [self.prefix_ids(p) for p in self._prompts(prompts, batch)]
        device = self.device
        lengths = [len(p) for p in prefixes]
        tf = self._teacher_forcing(
            prefixes,
            self._answer_ids(texts, batch),
            device,
            extra=lambda ids: self.pipeline.text_inputs(ids, lengths),
        )
        self._check_length(tf.ids.shape[1], "the image tokens + longest prompt + text")
        out = self.forward_module(
            input_ids=tf.ids,
            attention_mask=tf.mask,
            **self._image_inputs(pixels),
            **tf.extras,
            use_cache=False,
        )
        return out.logits, tf.labels.to(out.logits.device)

    def _image_inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs = self.pipeline.model_inputs(pixels.to(self.device))
        values = inputs["pixel_values"]
        inputs["pixel_values"] = values.to(self.vision_dtype)
        return inputs

    @torch.no_grad()
    def generate(
        self,
        pixels: torch.Tensor,
        prompts: list[str] | None = None,
        max_new_tokens: int = 20,
        **gen_kwargs: Any,
    ) -> list[str]:
        batch = pixels.shape[0]
        prefixes = [self.prefix_ids(p) for p in self._prompts(prompts, batch)]
        ids, mask = pad_batch(prefixes, self.pad_token_id, left=True)
        self._check_length(ids.shape[1] + max_new_tokens, "the prompt + max_new_tokens")
        device = self.device
        extra = self.pipeline.generation_inputs(ids)
        out = self.model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            **self._image_inputs(pixels),
            **{k: v.to(device) for k, v in extra.items()},
            **self._generation_kwargs(max_new_tokens, gen_kwargs),
        )
        return self._decode(out[:, ids.shape[1] :])

    # ----------------------------------------------------------------- fine-tuning
    def freeze_for_finetune(
        self,
        mode: str = "lora",
        *,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
    ) -> int:
        """What trains, the vision tower frozen in every mode: LoRA on the language model's
        attention (``lora``), the projector too (``lora+projector``), or the language model and
        the projector whole (``full``, for small models). Returns the trainable count."""
        if mode not in FINETUNE_MODES:
            raise InvalidInput(f"mode must be one of {FINETUNE_MODES}, got {mode!r}")
        pipeline = self.pipeline
        if mode == "full":
            for name, param in self.model.named_parameters():
                vision = f".{pipeline.vision_tower}." in f".{name}"
                param.requires_grad_(not vision or pipeline.projector in name)
            return sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        also = (pipeline.projector,) if mode == "lora+projector" else ()
        return inject_lora(
            self.model, LANGUAGE_MODEL, lora_r, lora_alpha, lora_dropout, also_train=also
        )

    # ----------------------------------------------------------------- persistence
    def options(self) -> dict[str, Any]:
        return {
            "vqa_template": self.vqa_template,
            "caption_prompt": self.caption_prompt,
            "image_size": list(self.pipeline.size),
        }

    def _save_processing(self, directory: Path) -> None:
        image_only_processors()
        self.processor.save_pretrained(directory)

    @classmethod
    def _load_processing(cls, source: str, **options: Any) -> tuple[Any, ...]:
        return (load_processor(source, **options),)
