"""open_clip's ViT in Hugging Face CLIP's layout: a robust CLIP encoder saved by open_clip, read
into the ``CLIPVisionModel`` of a VLM.

RobustVLM's FARE and TeCoA encoders are the state dict of open_clip's ``model.visual`` (a ViT-L/14
fine-tuned from OpenAI's CLIP): ``conv1.weight``, ``class_embedding``, ``positional_embedding``,
``ln_pre``, ``transformer.resblocks.N.{ln_1, attn, ln_2, mlp}``, ``ln_post``, ``proj``. A whole
open_clip CLIP model's state dict holds the same keys under ``visual.`` (its text tower is left
out). The mapping is transformers' own open_clip conversion: each block's packed attention
projection ``in_proj_weight`` (3D x D, query rows first, then key, then value) splits into
``q_proj``, ``k_proj``, ``v_proj``; ``c_fc`` / ``c_proj`` are ``fc1`` / ``fc2``. ``proj`` (the
image-text projection) is dropped: no VLM reads it, its projector takes the tower's hidden
states.
"""

from __future__ import annotations

import re

import torch

from prsl.core.errors import InvalidInput

OPEN_CLIP_MARK = "conv1.weight"
"""A key only open_clip's (and OpenAI CLIP's) visual tower has: its patch convolution."""
WHOLE_MODEL = "visual."
"""The prefix of the visual tower's keys in a whole open_clip CLIP model."""
_TOP_LEVEL = {
    "conv1.weight": "embeddings.patch_embedding.weight",
    "class_embedding": "embeddings.class_embedding",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_pre.weight": "pre_layrnorm.weight",  # sic: transformers' CLIP spells it so
    "ln_pre.bias": "pre_layrnorm.bias",
    "ln_post.weight": "post_layernorm.weight",
    "ln_post.bias": "post_layernorm.bias",
}
_DROPPED = {"proj"}
_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
_IN_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_PACKED = re.compile(r"attn\.in_proj_(weight|bias)")
_SHOWN = 3


def is_open_clip(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is open_clip's visual tower, alone or inside a whole CLIP model."""
    return OPEN_CLIP_MARK in state or WHOLE_MODEL + OPEN_CLIP_MARK in state


def open_clip_to_hf(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The visual tower of an open_clip state dict as a ``CLIPVisionModel`` state dict.

    A key the mapping does not know (layer scale, a attention pool, ...: open_clip variants
    transformers' CLIP cannot compute) is refused, naming it: silently leaving it out would
    give another model.
    """
    if WHOLE_MODEL + OPEN_CLIP_MARK in state:
        state = {k[len(WHOLE_MODEL) :]: v for k, v in state.items() if k.startswith(WHOLE_MODEL)}
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key in _DROPPED:
            continue
        if key in _TOP_LEVEL:
            converted[_TOP_LEVEL[key]] = value
            continue
        block = _BLOCK.fullmatch(key)
        mapped = _block_entries(block.group(2), value) if block else None
        if mapped is None:
            unknown.append(key)
            continue
        prefix = f"encoder.layers.{block.group(1)}."
        converted |= {prefix + name: tensor for name, tensor in mapped.items()}
    if unknown:
        shown = ", ".join(sorted(unknown)[:_SHOWN])
        more = f" and {len(unknown) - _SHOWN} more" if len(unknown) > _SHOWN else ""
        raise InvalidInput(
            f"vision tower {source} is an open_clip state dict with keys Hugging Face's CLIP "
            f"has no place for ({shown}{more}): only plain ViT towers (OpenAI / open_clip "
            "ViT-B, ViT-L, ...) convert; save it as a CLIPVisionModel folder instead"
        )
    return converted


def _block_entries(name: str, value: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """A residual block's entry under Hugging Face's names (None: no such entry in CLIP)."""
    packed = _PACKED.fullmatch(name)
    if packed:
        kind = packed.group(1)
        query, key, value_part = value.chunk(3, dim=0)
        return {
            f"self_attn.q_proj.{kind}": query,
            f"self_attn.k_proj.{kind}": key,
            f"self_attn.v_proj.{kind}": value_part,
        }
    module, _, kind = name.rpartition(".")
    if module in _IN_BLOCK and kind in ("weight", "bias"):
        return {f"{_IN_BLOCK[module]}.{kind}": value}
    return None
