"""Tiny random-weight image-text-to-text VLMs, each with a real processor built offline.

For every supported architecture: a byte-level BPE tokenizer trained with ``tokenizers`` on the
test texts, with the family's special tokens and chat template; the family's image processor
with an explicit input size; the processor class built from both; a model from its config,
small enough to run many times in the suite. ``build(family, folder)`` saves model and processor
with ``save_pretrained``, so tests load them back through ``prsl.models.load_adapter``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import processors as post
from transformers import GenerationConfig, PreTrainedTokenizerFast

from prsl.data import read_dataset
from prsl.models.pixels import LMMS_EVAL_CAPTION, LMMS_EVAL_VQA, Pixtral
from prsl.models.processors import image_only_processors

FAMILIES = (
    "llava",
    "paligemma",
    "qwen2_vl",
    "qwen2_5_vl",
    "smolvlm",
    "idefics3",
    "gemma3",
    "qwen3_vl",
    "qwen3_vl_moe",
    "mistral3",
    "smolvlm-tiled",
    "idefics3-tiled",
    "internvl",
    "llava_next",
    "llava_onevision",
)
TILED = ("smolvlm-tiled", "idefics3-tiled", "internvl", "llava_next", "llava_onevision")
"""Families whose processor tiles the image (prsl fixes a canvas; see prsl.models.tiling)."""
PIXTRAL_VQA = Pixtral.vqa_template.format(question="")
"""Mistral's long VQA instruction, which its tokenizer learns whole (its other prompts are in
:func:`corpus`)."""
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def corpus() -> list[str]:
    """Texts the tokenizers learn from: prompts of every family and the shapes captions."""
    shapes = read_dataset("shapes", n=60, seed=0).examples
    vqa = read_dataset("shapes-vqa", n=40, seed=0).examples
    return [
        *(ref for ex in shapes for ref in ex.references),
        *(ex.question for ex in vqa),
        *(answer for ex in vqa for answer in set(ex.answers)),
        "USER: What is shown in the image? ASSISTANT: A red circle.",
        LMMS_EVAL_CAPTION,
        LMMS_EVAL_VQA.format(question=""),
        "caption en\nA photo of a red circle.",
        "answer en what colour is it?\nred",
        "system\nYou are a helpful assistant.",
        "user\nDescribe the image.",
        "assistant\nThe image shows a blue square.",
        "User: Describe the image. Assistant: A green triangle.",
    ]


def byte_bpe(
    specials: list[str], vocab: int = 400, qwen: bool = False, extra: list[str] = ()
) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    if qwen:
        split = (
            r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"""
            r"""[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
        )
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([*corpus(), *extra], trainer=trainer)
    return tokenizer


def photo(width: int = 97, height: int = 61, seed: int = 0) -> Image.Image:
    """A non-square, photo-like RGB image: gradients, noise and a few shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        255 * xx / (width - 1),
        255 * yy / (height - 1),
        128 + 100 * np.sin(xx / 7.0 + seed) * np.cos(yy / 5.0),
    ]
    array = np.stack(channels, -1) + rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse([width * 0.1, height * 0.15, width * 0.45, height * 0.7], fill=(220, 30, 40))
    draw.rectangle([width * 0.55, height * 0.4, width * 0.9, height * 0.9], fill=(30, 160, 60))
    return image


def _finish(model, tokenizer, end_ids: list[int]) -> None:
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=end_ids if len(end_ids) > 1 else end_ids[0],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.eval()


# ------------------------------------------------------------------------------- LLaVA-1.5

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def llama_tokenizer() -> PreTrainedTokenizerFast:
    """A Llama-style tokenizer (BOS first) with LLaVA's ``<image>`` token."""
    backend = byte_bpe(["<unk>", "<s>", "</s>", "<pad>", "<image>"])
    backend.post_processor = post.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )


def tiny_llama(tokenizer, **extra) -> dict:
    """A 2-layer Llama text config for this tokenizer."""
    return {
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "initializer_range": 0.2,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **extra,
    }


def llava(side: int = 32, patch: int = 8):
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = llama_tokenizer()
    images = CLIPImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        resample=3,
        do_center_crop=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=side,
            patch_size=patch,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            initializer_range=0.2,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.image_token_id,
        image_seq_length=(side // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaForConditionalGeneration(config)
    _finish(model, tokenizer, [tokenizer.eos_token_id])
    return model, processor


# ------------------------------------------------------------------------------- LLaVA-NeXT


def tiny_vision(kind: str, side: int, patch: int) -> dict:
    """A 2-layer CLIP or SigLIP vision tower config taking side x side tiles."""
    return {
        "model_type": kind,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": side,
        "patch_size": patch,
    }


NEXT_PINPOINTS = [[1, 2], [2, 1], [2, 2], [3, 1], [1, 3]]
"""LLaVA-NeXT's released image_grid_pinpoints, in tiles (336 pixels each there)."""


def llava_next(side: int = 32, patch: int = 8):
    """LLaVA-NeXT with 32-pixel tiles: its released processor settings, scaled from 336."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import (
        LlavaNextImageProcessorPil,
    )

    tokenizer = llama_tokenizer()
    pinpoints = [[rows * side, cols * side] for rows, cols in NEXT_PINPOINTS]
    images = LlavaNextImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_grid_pinpoints=pinpoints,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    processor = LlavaNextProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    config = LlavaNextConfig(
        vision_config=tiny_vision("clip_vision_model", side, patch),
        text_config=tiny_llama(tokenizer),
        image_token_index=tokenizer.image_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=False,
    )
    model = LlavaNextForConditionalGeneration(config)
    _finish(model, tokenizer, [tokenizer.eos_token_id])
    return model, processor


# ------------------------------------------------------------------------------- LLaVA-OneVision

ONEVISION_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\\n' + content['text'] }}{% endfor %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def llava_onevision(side: int = 32, patch: int = 8):
    """LLaVA-OneVision with 32-pixel tiles: its released grid (1 to 6 tiles a side), SigLIP,
    a Qwen2 language model, anyres_max_9."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionProcessor,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    image_only_processors()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_bpe(ONEVISION_SPECIALS, qwen=True),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
        chat_template=ONEVISION_TEMPLATE,
    )
    pinpoints = [[rows * side, cols * side] for rows in range(1, 7) for cols in range(1, 7)]
    images = LlavaOnevisionImageProcessorPil(
        size={"height": side, "width": side},
        image_grid_pinpoints=pinpoints,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor = LlavaOnevisionProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        num_image_tokens=(side // patch) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=ONEVISION_TEMPLATE,
    )
    text = tiny_llama(tokenizer, model_type="qwen2", bos_token_id=None)
    config = LlavaOnevisionConfig(
        vision_config=tiny_vision("siglip_vision_model", side, patch),
        text_config=text,
        image_token_index=tokenizer.image_token_id,
        video_token_index=tokenizer.video_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    _finish(model, tokenizer, [tokenizer.eos_token_id])
    return model, processor


# ------------------------------------------------------------------------------- PaliGemma


def paligemma(side: int = 32, patch: int = 8):
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_bpe(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]),
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    images = SiglipImageProcessorPil(
        size={"height": side, "width": side}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    images.image_seq_length = (side // patch) ** 2
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)  # grows the vocab
    vocab = len(tokenizer)
    config = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=side,
            patch_size=patch,
            vision_use_head=False,
            initializer_range=0.5,
        ),
        text_config=GemmaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=256,
            initializer_range=0.5,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=processor.image_token_id,
        projection_dim=32,
        hidden_size=32,
        vocab_size=vocab,
        initializer_range=0.5,
    )
    model = PaliGemmaForConditionalGeneration(config)
    _finish(model, tokenizer, [tokenizer.eos_token_id])
    return model, processor


# ------------------------------------------------------------------------------- Qwen2-VL

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen(version: str = "qwen2_vl", size: tuple[int, int] = (56, 84)):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    image_only_processors()
    if version == "qwen2_vl":
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model
        from transformers import Qwen2VLProcessor as Processor

        vision = {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "hidden_size": 64}
    else:
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model
        from transformers import Qwen2_5_VLProcessor as Processor

        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "hidden_act": "silu",
            "out_hidden_size": 64,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        }
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_bpe(QWEN_SPECIALS, qwen=True),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=QWEN_SPECIALS[1:],
        chat_template=QWEN_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    images = Qwen2VLImageProcessorPil(
        min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, patch_size=14, merge_size=2
    )
    processor = Processor(image_processor=images, tokenizer=tokenizer, chat_template=QWEN_TEMPLATE)
    config = Config(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "initializer_range": 0.2,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            **vision,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    model = Model(config)
    _finish(model, tokenizer, [ids["<|im_end|>"], ids["<|endoftext|>"]])
    return model, processor, size


# ------------------------------------------------------------------------------- SmolVLM / Idefics3

SMOL_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<image>",
    "<global-img>",
]
SMOL_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def idefics3(
    version: str = "idefics3", side: int = 32, patch: int = 8, scale: int = 2, split: bool = False
):
    """Splitting off: one ``side`` square per image; on: images resized to a longest edge of
    2 ``side`` and cut into ``side`` squares (a 2 x 2 grid and a global image for a square)."""
    from transformers import Idefics3Processor

    if version == "smolvlm":
        from transformers import SmolVLMConfig as Config
        from transformers import SmolVLMForConditionalGeneration as Model
        from transformers import SmolVLMImageProcessorPil as Images
    else:
        from transformers import Idefics3Config as Config
        from transformers import Idefics3ForConditionalGeneration as Model
        from transformers import Idefics3ImageProcessorPil as Images

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_bpe(SMOL_SPECIALS),
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=SMOL_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SMOL_SPECIALS}
    seq_len = (side // patch) ** 2 // scale**2
    images = Images(
        do_image_splitting=split,
        size={"longest_edge": 2 * side if split else side},
        max_image_size={"longest_edge": side},
    )
    processor = Idefics3Processor(
        image_processor=images,
        tokenizer=tokenizer,
        image_seq_len=seq_len,
        chat_template=SMOL_TEMPLATE,
    )
    config = Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": side,
            "patch_size": patch,
        },
        text_config={
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 512,
            "initializer_range": 0.1,
            "bos_token_id": ids["<|im_start|>"],
            "eos_token_id": ids["<end_of_utterance>"],
            "pad_token_id": ids["<|im_end|>"],
        },
        scale_factor=scale,
        image_token_id=ids["<image>"],
        tie_word_embeddings=False,
    )
    model = Model(config)
    _finish(model, tokenizer, [ids["<end_of_utterance>"]])
    return model, processor


# ------------------------------------------------------------------------------- Qwen3-VL

QWEN3_TEMPLATE = (  # Qwen3-VL's own: no default system turn
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen3(version: str = "qwen3_vl", size: tuple[int, int] = (64, 96)):
    """Qwen3-VL (or its MoE sibling): patch 16, merge 2, mean / std 0.5, DeepStack features
    from both vision layers into the first two language layers, interleaved M-RoPE."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    image_only_processors()
    if version == "qwen3_vl":
        from transformers import Qwen3VLConfig as Config
        from transformers import Qwen3VLForConditionalGeneration as Model

        text = {"intermediate_size": 128}
    else:
        from transformers import Qwen3VLMoeConfig as Config
        from transformers import Qwen3VLMoeForConditionalGeneration as Model

        text = {"moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_bpe(QWEN_SPECIALS, qwen=True),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=QWEN_SPECIALS[1:],
        chat_template=QWEN3_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    images = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 16},
        patch_size=16,
        merge_size=2,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor = Qwen3VLProcessor(
        image_processor=images, tokenizer=tokenizer, chat_template=QWEN3_TEMPLATE
    )
    config = Config(
        text_config={
            **text,
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 1024,
            "initializer_range": 0.2,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0, 1],
            "initializer_range": 0.2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    model = Model(config)
    _finish(model, tokenizer, [ids["<|im_end|>"], ids["<|endoftext|>"]])
    return model, processor, size


# ------------------------------------------------------------------------------- Gemma 3

GEMMA_SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
GEMMA_TEMPLATE = (  # Gemma 3's turns, the image as <start_of_image>, text trimmed
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def gemma3(side: int = 32, patch: int = 8, tokens: int = 4):
    """Gemma 3: SigLIP, average-pooled to ``tokens`` soft tokens; a sliding-window layer (window
    8, shorter than every prompt) then a global one."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_bpe(GEMMA_SPECIALS),
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={
            "image_token": "<image_soft_token>",
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
        },
        chat_template=GEMMA_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in GEMMA_SPECIALS}
    images = Gemma3ImageProcessorPil(
        size={"height": side, "width": side}, resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = Gemma3Processor(
        image_processor=images,
        tokenizer=tokenizer,
        image_seq_length=tokens,
        chat_template=GEMMA_TEMPLATE,
    )
    config = Gemma3Config(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=side,
            patch_size=patch,
            vision_use_head=False,
            initializer_range=0.5,
        ),
        text_config=Gemma3TextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention"],
            max_position_embeddings=512,
            initializer_range=0.05,
            bos_token_id=ids["<bos>"],
            eos_token_id=ids["<eos>"],
            pad_token_id=ids["<pad>"],
        ),
        mm_tokens_per_image=tokens,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
        initializer_range=0.05,
    )
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # initialised to zeros, which would hide the image from the model
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(std=2.0)
    _finish(model, tokenizer, [ids["<end_of_turn>"], ids["<eos>"]])
    return model, processor


# ------------------------------------------------------------------------------- Mistral 3

MISTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
MISTRAL_SPECIALS += ["[IMG]", "[IMG_BREAK]", "[IMG_END]"]
MISTRAL_TEMPLATE = (  # Mistral Small 3.1's user turns, the image as [IMG]
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST]"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}[IMG]"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}[/INST]"
    "{% else %}{{ message['content'][0]['text'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


def mistral3(size: tuple[int, int] = (32, 48), patch: int = 8, merge: int = 2):
    """Mistral 3: a Pixtral tower (2-D RoPE, images packed block by block), its patch merger
    over ``merge``-square blocks, a Mistral language model; rows of [IMG] ended by [IMG_BREAK],
    the last by [IMG_END]."""
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralVisionConfig,
    )
    from transformers.models.pixtral.image_processing_pil_pixtral import (
        PixtralImageProcessorPil,
    )

    from prsl.models.processors import pixtral_processor

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_bpe(MISTRAL_SPECIALS, extra=[PIXTRAL_VQA]),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        chat_template=MISTRAL_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in MISTRAL_SPECIALS}
    images = PixtralImageProcessorPil(
        size={"longest_edge": 64}, patch_size={"height": patch, "width": patch}
    )
    processor = pixtral_processor()(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=patch,
        spatial_merge_size=merge,
        chat_template=MISTRAL_TEMPLATE,
    )
    config = Mistral3Config(
        vision_config=PixtralVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            head_dim=16,
            image_size=64,
            patch_size=patch,
            initializer_range=0.2,
        ),
        text_config=MistralConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=1024,
            sliding_window=None,
            initializer_range=0.2,
            bos_token_id=ids["<s>"],
            eos_token_id=ids["</s>"],
            pad_token_id=ids["<unk>"],
        ),
        image_token_index=ids["[IMG]"],
        spatial_merge_size=merge,
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    model = Mistral3ForConditionalGeneration(config)
    _finish(model, tokenizer, [ids["</s>"]])
    return model, processor, size


# ------------------------------------------------------------------------------- InternVL

INTERNVL_IMAGE = ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
INTERNVL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def internvl(side: int = 32, patch: int = 8, max_patches: int = 6):
    """InternVL-hf with a Qwen2 language model and tiles of ``side``: 4 tokens a tile."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
        GotOcr2ImageProcessorPil,
    )

    image_only_processors()
    specials = QWEN_SPECIALS[:3] + INTERNVL_IMAGE
    names = ("start_image_token", "end_image_token", "context_image_token", "video_token")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_bpe(specials, qwen=True),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(zip(names, INTERNVL_IMAGE, strict=True)),
        chat_template=INTERNVL_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials}
    images = GotOcr2ImageProcessorPil(
        size={"height": side, "width": side},
        crop_to_patches=False,  # as the hub's checkpoints save it: the processor turns it on
        min_patches=1,
        max_patches=max_patches,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    tokens = (side // patch) ** 2 // 4
    processor = InternVLProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        image_seq_length=tokens,
        chat_template=INTERNVL_TEMPLATE,
    )
    config = InternVLConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": [side, side],
            "patch_size": [patch, patch],
            "initializer_range": 0.2,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "initializer_range": 0.2,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        image_token_id=ids["<IMG_CONTEXT>"],
        image_seq_length=tokens,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    model = InternVLForConditionalGeneration(config)
    _finish(model, tokenizer, [ids["<|im_end|>"]])
    return model, processor


# ------------------------------------------------------------------------------- saving


def build(family: str, folder: Path, seed: int = 0) -> Path:
    """A tiny model of ``family`` with its processor, saved in ``folder`` (returned)."""
    torch.manual_seed(seed)
    info = None
    if family == "llava":
        model, processor = llava()
    elif family == "paligemma":
        model, processor = paligemma()
    elif family in ("qwen2_vl", "qwen2_5_vl"):
        model, processor, size = qwen(family)
        info = size
    elif family in ("qwen3_vl", "qwen3_vl_moe"):
        model, processor, size = qwen3(family)
        info = size
    elif family in ("smolvlm", "idefics3"):
        model, processor = idefics3(family)
    elif family == "gemma3":
        model, processor = gemma3()
    elif family == "mistral3":
        model, processor, size = mistral3()
        info = size
    elif family in ("smolvlm-tiled", "idefics3-tiled"):
        model, processor = idefics3(family.removesuffix("-tiled"), split=True)
    elif family == "internvl":
        model, processor = internvl()
    elif family == "llava_next":
        model, processor = llava_next()
    elif family == "llava_onevision":
        model, processor = llava_onevision()
    else:
        raise ValueError(f"no builder for {family!r}")
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if info is not None:  # the fixed input size prsl should use (a prsl_adapter.json option)
        import json

        (folder / "prsl_adapter.json").write_text(
            json.dumps({"family": "image-text-to-text", "image_size": list(info)})
        )
    return folder
