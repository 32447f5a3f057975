"""The tiny from-scratch captioner: tiny ViT + tiny GPT-2 with a word-level vocabulary.

It is what the embedded default trains and what the tests exercise: the same
``VisionEncoderDecoderModel`` class as the paper's ViT-GPT2, small enough to train on a laptop
CPU in minutes. The vocabulary is built from the training texts, so the special ids
([PAD]=0, [UNK]=1, [BOS]=2, [EOS]=3) lie inside it; GPT-2's default ids (50256) would not.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    PreTrainedTokenizerFast,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessorPil,
)

from prsl.core.errors import InvalidInput
from prsl.models.ved import VisionEncoderDecoderAdapter

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
MAX_POSITIONS = 128
"""Decoder positions: a caption, or a VQA prompt and its answer, is a few dozen words at most."""


def build_word_tokenizer(
    texts: list[str], extra_special_tokens: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    """A lower-cased word-level tokenizer over every word of ``texts``.

    Ids are deterministic: the special tokens first, then words by decreasing count, ties in
    alphabetical order. Punctuation splits into its own tokens (Whitespace pre-tokenizer).
    """
    if not texts:
        raise InvalidInput("texts must hold at least one string to build a vocabulary from")
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        special_tokens=[*SPECIAL_TOKENS, *extra_special_tokens], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        extra_special_tokens=list(extra_special_tokens),
    )


def _check_sizes(image_size: int, patch_size: int, hidden: int, layers: int, heads: int) -> None:
    values = {
        "image_size": image_size,
        "patch_size": patch_size,
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
    }
    for name, value in values.items():
        if value < 1:
            raise InvalidInput(f"{name} must be >= 1, got {value}")
    if image_size % patch_size:
        raise InvalidInput(
            f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})"
        )
    if hidden % heads:
        raise InvalidInput(f"hidden ({hidden}) must be a multiple of heads ({heads})")


def _tiny_config(
    vocab_size: int,
    ids: dict[str, int],
    image_size: int,
    patch_size: int,
    hidden: int,
    layers: int,
    heads: int,
) -> VisionEncoderDecoderConfig:
    """A ViT encoder and a GPT-2 decoder with cross-attention, the special ids set."""
    encoder = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
    )
    decoder = GPT2Config(
        vocab_size=vocab_size,
        n_positions=MAX_POSITIONS,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        add_cross_attention=True,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    _set_special_ids(config, ids)
    return config


def _set_special_ids(config, ids: dict[str, int]) -> None:
    """The decoder-start, BOS, EOS and pad ids of a model config or generation config."""
    config.decoder_start_token_id = ids[BOS]
    config.bos_token_id = ids[BOS]
    config.eos_token_id = ids[EOS]
    config.pad_token_id = ids[PAD]


def build_tiny_captioner(
    texts: list[str],
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
) -> VisionEncoderDecoderAdapter:
    """A randomly initialised ViT + GPT-2 captioner whose vocabulary covers ``texts``.

    Deterministic for a seed, without touching the caller's random state. The image processor
    normalises with mean = std = 0.5, as ViT checkpoints do.
    """
    _check_sizes(image_size, patch_size, hidden, layers, heads)
    tokenizer = build_word_tokenizer(texts)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = _tiny_config(len(tokenizer), ids, image_size, patch_size, hidden, layers, heads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VisionEncoderDecoderModel(config=config)
    _set_special_ids(model.generation_config, ids)
    model.eval()
    processor = ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return VisionEncoderDecoderAdapter(model, tokenizer, processor)
