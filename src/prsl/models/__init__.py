"""Vision-language models behind one adapter interface (pixels in [0, 1] in, logits/text out).

Families: ``vision-encoder-decoder`` (ViT-GPT2 and the tiny from-scratch captioner) and
``blip2`` (BLIP-2 with OPT). Load any of them with :func:`load_adapter`.
"""

from prsl.models.base import VLMAdapter
from prsl.models.blip2 import Blip2Adapter
from prsl.models.blip2_finetune import freeze_for_finetune, lora_merged_state_dict
from prsl.models.hf import ADAPTER_INFO, HFAdapter
from prsl.models.registry import (
    ADAPTER_FAMILIES,
    adapter_class,
    check_model_source,
    detect_family,
    load_adapter,
)
from prsl.models.tiny import build_tiny_captioner, build_word_tokenizer
from prsl.models.ved import VisionEncoderDecoderAdapter

__all__ = [
    "ADAPTER_FAMILIES",
    "ADAPTER_INFO",
    "Blip2Adapter",
    "HFAdapter",
    "VLMAdapter",
    "VisionEncoderDecoderAdapter",
    "adapter_class",
    "build_tiny_captioner",
    "build_word_tokenizer",
    "check_model_source",
    "detect_family",
    "freeze_for_finetune",
    "load_adapter",
    "lora_merged_state_dict",
]
