"""Training checkpoints in safetensors + JSON: model, optimiser, scheduler, RNG, data position.

No pickle anywhere: tensors go to safetensors files, everything else to JSON, so a checkpoint
from an untrusted source cannot run code when loaded. Each checkpoint is written to a temporary
directory and renamed into place only once complete, so a run killed mid-write leaves the
previous checkpoint untouched and usable.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def _split_tensors(tree: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested structure by a reference, collecting the tensors."""
    if isinstance(tree, torch.Tensor):
        key = prefix or "root"
        tensors[key] = tree.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(tree, dict):
        return {
            str(k): _split_tensors(v, f"{prefix}.{k}" if prefix else str(k), tensors)
            for k, v in tree.items()
        } | ({"__int_keys__": True} if tree and all(isinstance(k, int) for k in tree) else {})
    if isinstance(tree, list | tuple):
        items = [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(tree)]
        return {"__tuple__": items} if isinstance(tree, tuple) else items
    return tree


def _join_tensors(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__tuple__" in tree:
            return tuple(_join_tensors(v, tensors) for v in tree["__tuple__"])
        int_keys = tree.get("__int_keys__", False)
        return {
            (int(k) if int_keys else k): _join_tensors(v, tensors)
            for k, v in tree.items()
            if k != "__int_keys__"
        }
    if isinstance(tree, list):
        return [_join_tensors(v, tensors) for v in tree]
    return tree


def save_state_dict(state: dict[str, Any], directory: Path, name: str) -> None:
    """Any nested state dict (optimiser, scheduler) as ``name.safetensors`` + ``name.json``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split_tensors(state, "", tensors)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(skeleton))


def load_state_dict(directory: Path, name: str) -> dict[str, Any]:
    tensors = load_file(str(directory / f"{name}.safetensors"))
    return _join_tensors(json.loads((directory / f"{name}.json").read_text()), tensors)


def _numpy_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": _numpy_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    keys = np_state[1].numpy().astype(np.uint32)
    np.random.set_state((np_state[0], keys, *np_state[2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: Path,
    step: int,
    *,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler_state: dict[str, Any],
    position: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``checkpoint-{step}`` atomically and keep only the newest ``keep`` checkpoints."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the checkpoint just written), got {keep}")
    final = output_dir / f"checkpoint-{step}"
    partial = output_dir / f".checkpoint-{step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # Tied weights (GPT-2's wte/lm_head) share memory, which safetensors refuses: clone them.
    save_file(
        {k: v.detach().to("cpu", copy=True) for k, v in model_state.items()},
        str(partial / "model.safetensors"),
    )
    save_state_dict(optimizer_state, partial, "optimizer")
    save_state_dict(scheduler_state, partial, "scheduler")
    save_state_dict(rng_state(), partial, "rng")
    (partial / "position.json").write_text(json.dumps(position))
    for item in partial.iterdir():
        with open(item, "rb") as handle:
            os.fsync(handle.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (partial writes are never listed)."""
    if not output_dir.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if path.is_dir() and (match := CHECKPOINT_PATTERN.match(path.name))
    ]
    return [path for _, path in sorted(found)]


def checkpoint_step(path: Path) -> int:
    """The optimizer steps done at a checkpoint, from its folder's name."""
    match = CHECKPOINT_PATTERN.match(path.name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint folder")
    return int(match.group(1))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Everything ``save_checkpoint`` wrote, as tensors and plain Python values."""
    return {
        "model": load_file(str(path / "model.safetensors")),
        "optimizer": load_state_dict(path, "optimizer"),
        "scheduler": load_state_dict(path, "scheduler"),
        "rng": load_state_dict(path, "rng"),
        "position": json.loads((path / "position.json").read_text()),
    }
