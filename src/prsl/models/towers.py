"""A vision tower saved on its own, swapped into an image-text-to-text VLM (``vision_tower``).

What robust-VLM work runs: LLaVA with a FARE or TeCoA CLIP encoder in place of its own. The
tower is read from a Hugging Face folder (``CLIPVisionModel`` / ``SiglipVisionModel``, or a whole
``CLIPModel`` / ``SiglipModel``, as ``save_pretrained`` writes them) or from one state-dict file
(``.safetensors``; ``.pt`` / ``.pth`` / ``.bin`` read with ``torch.load(weights_only=True)``),
in Hugging Face's layout or open_clip's (:mod:`prsl.models.open_clip`). Its weights replace the
VLM's tower weights in place: the model keeps its class and its config, so everything downstream
(the projector, FARE, LoRA, ``save_pretrained``) sees the model it always sees.

The tower must have the VLM tower's architecture: the same width and patch size (refused in one
line naming both otherwise), layers, heads and activation (a folder's config says them; a bare
state dict's shapes say all but heads and activation, which are taken to be the VLM's). Only the
resolution may differ: the patch position embeddings are then resized bicubically on their grid
(a 224 tower's 16x16 into a 336 model's 24x24), the class token's embedding kept, exactly as
transformers' ``interpolate_pos_encoding`` does for a larger input.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from prsl.core.errors import InvalidInput, MissingInput
from prsl.models.open_clip import OPEN_CLIP_MARK, WHOLE_MODEL, is_open_clip, open_clip_to_hf
from prsl.models.pixels import pipeline_for, supported_model_types

TOWER_FILES = (".safetensors", ".pt", ".pth", ".bin")
"""The suffixes of a state-dict file a tower may be given as."""
TOWER_MODEL_TYPES = ("clip_vision_model", "clip", "siglip_vision_model", "siglip")
"""The ``model_type`` of a tower folder: a CLIP / SigLIP vision model, or a whole one."""
HF_PREFIX = "vision_model."
"""Where a whole CLIP / SigLIP model (or a tower saved by an older transformers) keeps it."""
PATCHES = "embeddings.patch_embedding.weight"
POSITIONS = "embeddings.position_embedding.weight"
CLASS_TOKEN = "embeddings.class_embedding"
OPTIONAL = ("head.",)
"""Tower parts no VLM reads (SigLIP's pooling head): left out when the VLM's tower has none."""
ARCHITECTURE = ("num_attention_heads", "hidden_act", "layer_norm_eps", "num_channels")
"""Config fields a folder's tower must share with the VLM's (shapes cannot show them)."""
_LAYER = re.compile(r"encoder\.layers\.(\d+)\.")
_SHOWN = 3


@dataclass(frozen=True)
class Tower:
    """A saved tower: its weights in the layout of transformers' vision transformers
    (``embeddings.*``, ``encoder.layers.N.*``, ...), and its config when a folder gave one."""

    state: dict[str, torch.Tensor]
    config: Any | None
    source: str


def check_tower_path(path: str | Path) -> Path:
    """The tower's path, refused in one line when it cannot be a tower (before any loading)."""
    tower = Path(path).expanduser()
    if tower.is_dir():
        if not (tower / "config.json").is_file():
            raise MissingInput(
                f"vision tower folder {tower} holds no config.json: give a folder written by "
                "CLIPVisionModel/SiglipVisionModel.save_pretrained, or a state-dict file"
            )
        return tower
    if not tower.exists():
        raise MissingInput(f"vision tower {tower} does not exist")
    if tower.suffix not in TOWER_FILES:
        raise InvalidInput(
            f"vision tower {tower} is neither a model folder nor a state dict "
            f"({', '.join(TOWER_FILES)})"
        )
    return tower


def swappable_model_types() -> list[str]:
    """The model types whose vision tower is a CLIP / SigLIP ViT that ends where the projector
    starts: a saved tower swaps in."""
    return [
        t
        for t in supported_model_types()
        if pipeline_for(t).separable_vision and pipeline_for(t).foreign_tower is None
    ]


def check_swappable(model_type: str) -> None:
    """Refuse a swap into an architecture whose projector sits inside its vision tower, or
    whose tower is no CLIP / SigLIP ViT (Pixtral, InternViT), naming the ones that take one."""
    kind = pipeline_for(model_type)
    if not kind.separable_vision:
        raise InvalidInput(
            f"vision_tower replaces a vision tower that ends where the projector starts, and "
            f"{model_type}'s projector sits inside its tower (a swap would drop it); towers swap "
            f"into: {', '.join(swappable_model_types())}"
        )
    if kind.foreign_tower is not None:
        raise InvalidInput(
            f"vision_tower swaps in a CLIP / SigLIP tower, and {model_type}'s vision tower is "
            f"{kind.foreign_tower}; towers swap into: {', '.join(swappable_model_types())}"
        )


def saved_shape(tower: Path) -> tuple[int, int] | None:
    """(width, patch size) of a tower from its config or file header alone (None: a pickle,
    which only loading can tell), for refusing a misfit before the VLM is loaded."""
    if tower.is_dir():
        config = _folder_config(tower)
        return int(config.hidden_size), int(config.patch_size)
    if tower.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(tower), framework="pt") as handle:
        keys = set(handle.keys())
        name = next(
            (
                k
                for k in (
                    OPEN_CLIP_MARK,
                    WHOLE_MODEL + OPEN_CLIP_MARK,
                    PATCHES,
                    HF_PREFIX + PATCHES,
                )
                if k in keys
            ),
            None,
        )
        if name is None:
            return None
        shape = handle.get_slice(name).get_shape()
    return int(shape[0]), int(shape[-1])


def check_width_and_patch(
    source: str, shape: tuple[int, int], config: Any, model_type: str
) -> None:
    """Refuse a tower whose width or patch size differs from the VLM tower's, naming both."""
    width, patch = shape
    what = f"this {model_type} model's vision tower"
    if width != config.hidden_size:
        raise InvalidInput(
            f"vision tower {source} has width {width} but {what} has width "
            f"{config.hidden_size}: a tower swaps in only at the same hidden size"
        )
    if patch != config.patch_size:
        raise InvalidInput(
            f"vision tower {source} has patch size {patch} but {what} has "
            f"{config.patch_size}: a tower swaps in only with the same patches"
        )


def read_tower(path: str | Path) -> Tower:
    """The tower at ``path`` (a folder or a state-dict file), on the CPU."""
    tower = check_tower_path(path)
    if tower.is_dir():
        return _read_folder(tower)
    if tower.suffix == ".safetensors":
        state = load_file(str(tower))
    else:
        state = _unwrapped(torch.load(tower, map_location="cpu", weights_only=True), tower)
    if is_open_clip(state):
        return Tower(open_clip_to_hf(state, str(tower)), None, str(tower))
    if any(key.startswith(HF_PREFIX) for key in state):
        state = {k[len(HF_PREFIX) :]: v for k, v in state.items() if k.startswith(HF_PREFIX)}
    return Tower(state, None, str(tower))


def _folder_config(folder: Path) -> Any:
    """The vision config of a tower folder, refused when the folder holds something else."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as err:
        raise InvalidInput(f"vision tower folder {folder} cannot be read: {err}") from None
    if config.model_type not in TOWER_MODEL_TYPES:
        raise InvalidInput(
            f"vision tower folder {folder} holds a {config.model_type!r} model, not a vision "
            f"tower ({', '.join(TOWER_MODEL_TYPES)})"
        )
    return getattr(config, "vision_config", config)


def _read_folder(folder: Path) -> Tower:
    from transformers import AutoModel  # transformers renames older checkpoints' keys on load

    _folder_config(folder)
    try:
        model = AutoModel.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as err:
        raise InvalidInput(f"vision tower folder {folder} cannot be loaded: {err}") from None
    vision = getattr(model, "vision_model", model)  # a whole CLIPModel / SiglipModel
    config = getattr(model.config, "vision_config", model.config)
    return Tower(dict(vision.state_dict()), config, str(folder))


def _unwrapped(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a ``torch.load`` result, also when a training script wrapped it."""
    if isinstance(loaded, dict):
        for wrapper in ("vision_encoder_state_dict", "state_dict"):
            if isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise InvalidInput(f"vision tower {path} does not hold a state dict of tensors")
    return loaded


def resize_positions(weight: torch.Tensor, leading: int, grid: int) -> torch.Tensor:
    """Position embeddings (``leading`` class-token rows, then a square grid of patches) for a
    ``grid`` x ``grid`` patch grid: the patch rows resized bicubically as an image with D
    channels (no corner alignment), the leading rows kept."""
    head, patches = weight[:leading], weight[leading:]
    side = math.isqrt(patches.shape[0])
    image = patches.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    resized = nn.functional.interpolate(
        image, size=(grid, grid), mode="bicubic", align_corners=False
    )
    rows = resized.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(weight.dtype)
    return torch.cat([head, rows])


def _layers(keys: Any) -> int:
    return len({int(match.group(1)) for key in keys if (match := _LAYER.match(key))})


def fitted_state(
    tower: Tower, target: dict[str, torch.Tensor], config: Any, model_type: str
) -> dict[str, torch.Tensor]:
    """The tower's weights as the VLM tower's ``target`` state dict takes them, position
    embeddings resized to its grid; anything that does not fit is refused in one line."""
    state = dict(tower.state)
    state.pop("embeddings.position_ids", None)  # a buffer older checkpoints saved
    what = f"this {model_type} model's vision tower"
    if PATCHES not in state or POSITIONS not in state:
        raise InvalidInput(f"vision tower {tower.source} is not a ViT: it holds no {PATCHES}")
    shape = (state[PATCHES].shape[0], state[PATCHES].shape[-1])
    check_width_and_patch(tower.source, shape, config, model_type)
    _check_architecture(tower, state, target, config, what)
    for prefix in OPTIONAL:
        if not any(key.startswith(prefix) for key in target):
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    state[POSITIONS] = _positions(tower, state, target, what)
    _check_keys(tower, state, target, what)
    return state


def _check_architecture(
    tower: Tower, state: dict[str, Any], target: dict[str, Any], config: Any, what: str
) -> None:
    if (CLASS_TOKEN in state) != (CLASS_TOKEN in target):
        kinds = {True: "a class token (CLIP-style)", False: "no class token (SigLIP-style)"}
        raise InvalidInput(
            f"vision tower {tower.source} has {kinds[CLASS_TOKEN in state]} but {what} has "
            f"{kinds[CLASS_TOKEN in target]}: give a tower of the model's own kind"
        )
    ours, theirs = _layers(state), _layers(target)
    if ours != theirs:
        raise InvalidInput(f"vision tower {tower.source} has {ours} layers but {what} has {theirs}")
    if tower.config is None:
        return
    for name in ARCHITECTURE:
        mine, wanted = getattr(tower.config, name, None), getattr(config, name, None)
        if mine is not None and wanted is not None and mine != wanted:
            raise InvalidInput(
                f"vision tower {tower.source} has {name} {mine!r} but {what} has {wanted!r}: "
                "it would compute other features in this model than on its own"
            )


def _positions(
    tower: Tower, state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str
) -> torch.Tensor:
    """The tower's position embeddings on the VLM tower's grid (resized when they differ)."""
    leading = int(CLASS_TOKEN in target)
    weight, wanted = state[POSITIONS], target[POSITIONS]
    side, grid = math.isqrt(weight.shape[0] - leading), math.isqrt(wanted.shape[0] - leading)
    if side * side != weight.shape[0] - leading or grid * grid != wanted.shape[0] - leading:
        raise InvalidInput(
            f"vision tower {tower.source} has {weight.shape[0]} positions and {what} "
            f"{wanted.shape[0]}: only square patch grids are resized"
        )
    return weight if side == grid else resize_positions(weight, leading, grid)


def _check_keys(
    tower: Tower, state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str
) -> None:
    missing = sorted(set(target) - set(state))
    extra = sorted(set(state) - set(target))
    if missing or extra:
        named = [f"no {key}" for key in missing[:_SHOWN]]
        named += [f"an extra {key}" for key in extra[:_SHOWN]]
        listed = ", ".join(named)
        raise InvalidInput(
            f"vision tower {tower.source} does not fit {what}: it has {listed}"
            + (" ..." if len(missing) > _SHOWN or len(extra) > _SHOWN else "")
        )
    for key, value in state.items():
        if value.shape != target[key].shape:
            raise InvalidInput(
                f"vision tower {tower.source} does not fit {what}: {key} is "
                f"{tuple(value.shape)} there and {tuple(target[key].shape)} here"
            )


def swap_weights(module: nn.Module, tower: Tower, config: Any, model_type: str) -> None:
    """Load the tower's weights into the VLM's tower ``module`` (cast to its dtype, on its
    device), every weight replaced."""
    target = module.state_dict()
    state = fitted_state(tower, target, config, model_type)
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
