"""Vision-language models behind one adapter interface (pixels in [0, 1] in, logits/text out).

Families: ``vision-encoder-decoder`` (ViT-GPT2 and the tiny from-scratch captioner), ``blip2``
(BLIP-2 with OPT) and ``image-text-to-text`` (LLaVA-1.5, PaliGemma, Gemma 3, Qwen2-VL /
Qwen2.5-VL / Qwen3-VL, Mistral 3, SmolVLM / Idefics3, InternVL, through their differentiable
pixel pipelines; tiling ones in :mod:`prsl.models.tiling`). Load any of them with
:func:`load_adapter`, which picks the family from the config's ``model_type``.
"""

from prsl.models.base import VLMAdapter
from prsl.models.blip2 import Blip2Adapter
from prsl.models.hf import ADAPTER_INFO, HFAdapter, LabelPadding
from prsl.models.image_text import ImageTextAdapter
from prsl.models.lora import freeze_for_finetune, lora_merged_state_dict
from prsl.models.pixels import PixelPipeline, register, supported_model_types
from prsl.models.registry import (
    ADAPTER_FAMILIES,
    adapter_class,
    check_model_source,
    check_vision_encoder,
    check_vision_tower,
    detect_family,
    load_adapter,
    model_prompts,
)
from prsl.models.tiny import build_tiny_captioner, build_word_tokenizer
from prsl.models.ved import VisionEncoderDecoderAdapter

__all__ = [
    "ADAPTER_FAMILIES",
    "ADAPTER_INFO",
    "Blip2Adapter",
    "HFAdapter",
    "LabelPadding",
    "ImageTextAdapter",
    "PixelPipeline",
    "VLMAdapter",
    "VisionEncoderDecoderAdapter",
    "adapter_class",
    "build_tiny_captioner",
    "build_word_tokenizer",
    "check_model_source",
    "check_vision_encoder",
    "check_vision_tower",
    "detect_family",
    "freeze_for_finetune",
    "load_adapter",
    "lora_merged_state_dict",
    "model_prompts",
    "register",
    "supported_model_types",
]
