"""Adapter families by name, and loading any saved model or hub id into the right adapter.

One code path for a hub id and a local directory: both go through ``from_pretrained``. The
family comes from the config's ``model_type`` unless given, so a directory written by
``adapter.save`` or by plain ``save_pretrained`` loads the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig

from prsl.models.blip2 import Blip2Adapter
from prsl.models.hf import ADAPTER_INFO, HFAdapter
from prsl.models.ved import VisionEncoderDecoderAdapter

ADAPTER_FAMILIES: dict[str, type[HFAdapter]] = {
    VisionEncoderDecoderAdapter.family: VisionEncoderDecoderAdapter,
    Blip2Adapter.family: Blip2Adapter,
}
MODEL_TYPE_FAMILIES = {"vision-encoder-decoder": "vision-encoder-decoder", "blip-2": "blip2"}
"""Hugging Face ``config.model_type`` -> adapter family."""


def adapter_class(family: str) -> type[HFAdapter]:
    """The adapter class registered under ``family``."""
    try:
        return ADAPTER_FAMILIES[family]
    except KeyError:
        valid = ", ".join(sorted(ADAPTER_FAMILIES))
        raise ValueError(f"unknown model family {family!r}; valid families: {valid}") from None


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(
            f"dtype must be a floating torch dtype such as 'float32', 'bfloat16' or 'float16', "
            f"got {dtype!r}"
        )
    return resolved


def _load_error(source: str, err: Exception) -> OSError:
    return OSError(
        f"could not load model {source!r}: it is not a local directory, and loading it as a "
        f"Hugging Face hub id failed (no network, a wrong id, or a gated model?). Give the path "
        f"of a saved model directory, or check the id and your connection. Cause: {err}"
    )


def detect_family(source: str, trust_remote_code: bool = False) -> str:
    """The adapter family of a hub id or directory, from its config's ``model_type``."""
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    family = MODEL_TYPE_FAMILIES.get(config.model_type)
    if family is None:
        supported = ", ".join(sorted(MODEL_TYPE_FAMILIES))
        raise ValueError(
            f"{source!r} is a {config.model_type!r} model; supported model types: {supported} "
            f"(pass family= to force an adapter)"
        )
    return family


def load_adapter(
    dir_or_hub_id: str | Path,
    family: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
) -> HFAdapter:
    """Load a saved adapter directory or a hub id (e.g. ``nlpconnect/vit-gpt2-image-captioning``).

    ``dtype`` is a torch dtype or its name; ``device`` where the model is moved after loading.
    A directory written by ``adapter.save`` also restores its VQA prompt template.
    """
    source = str(dir_or_hub_id)
    cls = adapter_class(family) if family is not None else None
    dtype = _resolve_dtype(dtype)
    local = Path(source).expanduser()
    vqa_template = None
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"{local} holds no config.json, so it is not a saved model; point to a directory "
                f"written by adapter.save() or save_pretrained()"
            )
        source = str(local)
        if (local / ADAPTER_INFO).is_file():
            vqa_template = json.loads((local / ADAPTER_INFO).read_text()).get("vqa_template")
    try:
        if cls is None:
            cls = adapter_class(detect_family(source, trust_remote_code))
        return cls.from_pretrained(
            source,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            vqa_template=vqa_template,
        )
    except OSError as err:
        if local.is_dir():
            raise
        raise _load_error(source, err) from err
