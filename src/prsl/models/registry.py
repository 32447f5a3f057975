"""Adapter families by name, and loading any saved model or hub id into the right adapter.

One code path for a hub id and a local directory: both go through ``from_pretrained``. The
family comes from the config's ``model_type`` unless given, so a directory written by
``adapter.save`` or by plain ``save_pretrained`` loads the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig

from prsl.core.errors import InvalidInput, MissingInput
from prsl.models.blip2 import Blip2Adapter
from prsl.models.hf import ADAPTER_INFO, HFAdapter
from prsl.models.image_text import ImageTextAdapter
from prsl.models.pixels import check_separable_vision, pipeline_for, supported_model_types
from prsl.models.towers import (
    check_swappable,
    check_tower_path,
    check_width_and_patch,
    saved_shape,
    swappable_model_types,
)
from prsl.models.ved import VisionEncoderDecoderAdapter

ADAPTER_FAMILIES: dict[str, type[HFAdapter]] = {
    VisionEncoderDecoderAdapter.family: VisionEncoderDecoderAdapter,
    Blip2Adapter.family: Blip2Adapter,
    ImageTextAdapter.family: ImageTextAdapter,
}
DYNAMIC_TILING = frozenset({"llava_next_video", "mllama"})
"""Architectures that tile each image into a grid chosen from its size and have no pixel pipeline
yet (LLaVA-NeXT and OneVision have one: a fixed canvas size fixes their grid)."""
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
"""What a saved model folder holds its weights in."""
MODEL_TYPE_FAMILIES = {
    "vision-encoder-decoder": VisionEncoderDecoderAdapter.family,
    "blip-2": Blip2Adapter.family,
    **dict.fromkeys(supported_model_types(), ImageTextAdapter.family),
}
"""Hugging Face ``config.model_type`` -> adapter family."""


def adapter_class(family: str) -> type[HFAdapter]:
    """The adapter class registered under ``family``."""
    try:
        return ADAPTER_FAMILIES[family]
    except KeyError:
        valid = ", ".join(sorted(ADAPTER_FAMILIES))
        raise InvalidInput(f"unknown model family {family!r}; valid families: {valid}") from None


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise InvalidInput(
            f"dtype must be a floating torch dtype such as 'float32', 'bfloat16' or 'float16', "
            f"got {dtype!r}"
        )
    return resolved


_CAUSE_SHOWN = 300  # characters of the loader's own message kept in ours


def _cause(err: Exception) -> str:
    """The loader's own message on one line, cut to a readable length."""
    cause = " ".join(str(err).split()) or type(err).__name__
    return cause if len(cause) <= _CAUSE_SHOWN else cause[: _CAUSE_SHOWN - 3] + "..."


def _load_error(source: str, err: Exception) -> MissingInput:
    cause = _cause(err)
    return MissingInput(
        f"could not load model {source!r}: it is not a local directory, and loading it as a "
        f"Hugging Face hub id failed (no network, a wrong id, or a gated model?). Give the path "
        f"of a saved model directory, or check the id and your connection. Cause: {cause}"
    )


def detect_family(source: str, trust_remote_code: bool = False) -> str:
    """The adapter family of a hub id or directory, from its config's ``model_type``."""
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    family = MODEL_TYPE_FAMILIES.get(config.model_type)
    supported = ", ".join(sorted(MODEL_TYPE_FAMILIES))
    if config.model_type in DYNAMIC_TILING:
        raise InvalidInput(
            f"{source!r} is a {config.model_type!r} model, which tiles each image into a grid "
            f"chosen from its size, and prsl has no pipeline for its tiles yet. Supported model "
            f"types: {supported}; to add this one, subclass prsl.models.tiling.TilingPipeline "
            "(see the README's 'Tiled inputs')"
        )
    if family is None:
        raise InvalidInput(
            f"{source!r} is a {config.model_type!r} model; supported model types: {supported}. "
            "An image-text-to-text model needs a pixel pipeline: subclass "
            "prsl.models.pixels.PixelPipeline and write its model_inputs (see the README's "
            "'Bring your own VLM')"
        )
    return family


def _config_source(dir_or_hub_id: str | Path) -> tuple[str, Path | None]:
    """(what ``from_pretrained`` is given, the local directory or None for a hub id)."""
    source = str(dir_or_hub_id)
    local = Path(source).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise MissingInput(
                f"{local} holds no config.json, so it is not a saved model; point to a directory "
                f"written by adapter.save() or save_pretrained()"
            )
        return str(local), local
    if local.exists():
        raise InvalidInput(f"model {source!r} is a file; give a model directory or a hub id")
    if _looks_like_a_path(source):
        raise MissingInput(f"model folder {source} does not exist")
    return source, None


def _looks_like_a_path(source: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else can only be a local path."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source


def check_model_source(
    dir_or_hub_id: str | Path, family: str | None = None, trust_remote_code: bool = False
) -> str:
    """The adapter family of a model directory or hub id, from its config alone (no weights).

    A missing directory, an unreachable hub id or an unsupported model type fails here, with
    the fix, before any model is loaded.
    """
    if family is not None:
        adapter_class(family)
    source, local = _config_source(dir_or_hub_id)
    if family is not None:
        return family
    try:
        family = detect_family(source, trust_remote_code)
    except (OSError, ValueError) as err:
        if isinstance(err, InvalidInput):
            raise
        if local is not None:
            raise InvalidInput(f"model folder {local} cannot be read: {_cause(err)}") from None
        raise _load_error(source, err) from None
    if local is not None and not any(next(local.glob(p), None) for p in WEIGHT_FILES):
        raise MissingInput(f"model folder {local} holds no weights ({', '.join(WEIGHT_FILES)})")
    return family


def check_vision_encoder(
    dir_or_hub_id: str | Path, family: str | None = None, trust_remote_code: bool = False
) -> None:
    """Refuse, from the config alone, a model whose vision encoder prsl cannot separate (what
    FARE fine-tunes): before its weights are loaded."""
    family = check_model_source(dir_or_hub_id, family, trust_remote_code)
    if family == ImageTextAdapter.family:
        source, _ = _config_source(dir_or_hub_id)
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        check_separable_vision(config.model_type)


def check_vision_tower(
    dir_or_hub_id: str | Path,
    tower: str | Path,
    family: str | None = None,
    trust_remote_code: bool = False,
) -> None:
    """Refuse, from the configs and file headers alone, a vision tower that cannot swap into
    this model: another family, a tower holding its projector (Qwen-VL), a missing file, or
    another width or patch size. Before the model's weights are loaded."""
    family = check_model_source(dir_or_hub_id, family, trust_remote_code)
    path = check_tower_path(tower)
    if family != ImageTextAdapter.family:
        raise InvalidInput(
            f"vision_tower swaps the CLIP / SigLIP tower of an image-text-to-text VLM "
            f"({', '.join(swappable_model_types())}); {dir_or_hub_id} is a "
            f"{family} model"
        )
    source, _ = _config_source(dir_or_hub_id)
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    check_swappable(config.model_type)
    shape = saved_shape(path)
    if shape is not None:
        check_width_and_patch(str(path), shape, config.vision_config, config.model_type)


def _saved_options(local: Path | None) -> dict:
    """The adapter options ``adapter.save`` wrote beside a model (prompts, input size), if any."""
    if local is None or not (local / ADAPTER_INFO).is_file():
        return {}
    options = json.loads((local / ADAPTER_INFO).read_text())
    options.pop("family", None)
    return options


def model_prompts(
    dir_or_hub_id: str | Path, family: str | None = None, trust_remote_code: bool = False
) -> dict[str, str]:
    """The prompts a model takes once loaded, read without its weights: ``vqa_template``, and
    ``caption_prompt`` for a chat VLM; those saved beside it, else its architecture's own."""
    family = check_model_source(dir_or_hub_id, family, trust_remote_code)
    source, local = _config_source(dir_or_hub_id)
    cls = adapter_class(family)
    prompts = {"vqa_template": cls.default_vqa_template}
    if cls is ImageTextAdapter:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        kind = pipeline_for(config.model_type)
        prompts = {"caption_prompt": kind.caption_prompt, "vqa_template": kind.vqa_template}
    saved = _saved_options(local)
    return {name: saved.get(name) or default for name, default in prompts.items()}


def pixel_revision(dir_or_hub_id: str | Path, trust_remote_code: bool = False) -> str | None:
    """The revision of a model's pixel pipeline (``PixelPipeline.revision``), from its config
    alone; None for a model without one (or whose config cannot be read: that fails later, with
    its own message)."""
    try:
        source, _ = _config_source(dir_or_hub_id)
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):  # MissingInput and InvalidInput among them
        return None
    if config.model_type not in supported_model_types():
        return None
    return pipeline_for(config.model_type).revision


ADAPTER_OPTIONS = ("vqa_template", "caption_prompt", "image_size")
"""What ``load_adapter`` may set over a model's saved options."""


def load_adapter(
    dir_or_hub_id: str | Path,
    family: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    device_map: str | None = None,
    vision_tower: str | Path | None = None,
    **adapter_options: Any,
) -> HFAdapter:
    """Load a saved adapter directory or a hub id (e.g. ``nlpconnect/vit-gpt2-image-captioning``).

    ``dtype`` is a torch dtype or its name; ``device`` where the model is moved after loading,
    or ``device_map="auto"`` to spread a model too large for one GPU over all of them.
    A directory written by ``adapter.save`` also restores its VQA prompt template.
    ``vision_tower``: a separately saved tower whose weights replace the model's own
    (:mod:`prsl.models.towers`). ``adapter_options`` (``vqa_template``, and for a chat VLM
    ``caption_prompt`` and ``image_size``) replace those saved beside the model.
    """
    unknown = sorted(set(adapter_options) - set(ADAPTER_OPTIONS))
    if unknown:
        raise InvalidInput(
            f"load_adapter takes no option {unknown[0]!r}; the adapter's options are "
            f"{', '.join(ADAPTER_OPTIONS)}"
        )
    dtype = _resolve_dtype(dtype)
    if vision_tower is not None:
        check_vision_tower(dir_or_hub_id, vision_tower, family, trust_remote_code)
    cls = adapter_class(check_model_source(dir_or_hub_id, family, trust_remote_code))
    source, local = _config_source(dir_or_hub_id)
    options = _saved_options(local) | adapter_options
    try:
        adapter = cls.from_pretrained(
            source,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            device_map=device_map,
            **options,
        )
    except (OSError, SafetensorError) as err:
        if local is not None:
            raise InvalidInput(
                f"could not load model folder {local} (damaged or incomplete files?): {_cause(err)}"
            ) from None
        raise _load_error(source, err) from err
    if vision_tower is not None:
        assert isinstance(adapter, ImageTextAdapter)  # check_vision_tower refused the others
        adapter.swap_vision_tower(vision_tower)
    return adapter
