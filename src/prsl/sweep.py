"""A grid over loss and attack parameters: each cell a fine-tune + evaluation, resumable.

The grid is a mapping from dotted config keys to value lists, e.g.
``{"loss.params.k": [4, 10], "loss.params.weight": [1e-4, 1e-3]}``; its cartesian product gives
the cells. Every cell trains into ``cells/<id>/model``, evaluates into ``cells/<id>/eval`` and is
marked done only when its results are written, so a rerun after an interruption finishes just
the missing cells (a half-trained cell resumes from its last checkpoint). All runs end up in one
``results.json`` with the cell's parameters in ``loss_params``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from prsl.config import EvalConfig, FinetuneConfig, SweepConfig, set_dotted
from prsl.evaluate import RESULTS, evaluate
from prsl.losses import get_loss
from prsl.train import finetune


def cells(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the grid, in a stable order."""
    if not grid:
        return [{}]
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep grid entry {key!r} must be a non-empty list of values")
    keys = sorted(grid)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))
    ]


def cell_id(cell: dict[str, Any]) -> str:
    """Readable and unique: ``loss.name=prsl,loss.params.k=4`` hashed to keep paths short."""
    text = ",".join(f"{k}={cell[k]}" for k in sorted(cell)) or "base"
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    readable = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:60]
    return f"{readable}-{digest}"


def cell_configs(cfg: SweepConfig, cell: dict[str, Any]) -> tuple[FinetuneConfig, EvalConfig]:
    """Apply a cell's values: keys under ``evaluate.`` go to the evaluation, others to fine-tune."""
    tune = cfg.finetune.model_dump()
    ev = cfg.evaluate.model_dump()
    for key, value in cell.items():
        if key.startswith("evaluate."):
            set_dotted(ev, key.removeprefix("evaluate."), value)
        else:
            set_dotted(tune, key.removeprefix("finetune."), value)
    folder = Path(cfg.output_dir) / "cells" / cell_id(cell)
    tune["train"]["output_dir"] = str(folder / "model")
    ev["output_dir"] = str(folder / "eval")
    ev["models"] = [str(folder / "model" / "final")]
    return FinetuneConfig.model_validate(tune), EvalConfig.model_validate(ev)


def run_sweep(cfg: SweepConfig, *, progress: bool = True, scorer=None) -> dict:
    """Run every unfinished cell, then merge all cells' runs into ``results.json``."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = cells(cfg.grid)
    planned = [cell_configs(cfg, c) for c in todo]  # validates every cell before any work
    for tune, _ in planned:
        get_loss(tune.loss.name, **tune.loss.params)  # a bad loss parameter fails here too
    merged: list[dict] = []
    meta: dict[str, Any] = {"cells": {}}
    for cell, (tune, ev) in zip(todo, planned, strict=True):
        cid = cell_id(cell)
        done_marker = Path(ev.output_dir) / "cell_done.json"
        if not done_marker.exists():
            model_dir = Path(tune.train.output_dir)
            if not (model_dir / "final").exists():
                finetune(tune, resume=model_dir.exists(), progress=progress)
            evaluate(ev, progress=progress, scorer=scorer)
            done_marker.write_text(json.dumps(cell))
        data = json.loads((Path(ev.output_dir) / RESULTS).read_text())
        for run in data["runs"]:
            run["cell"] = cell
            run["model"] = cid
        merged += data["runs"]
        meta["cells"][cid] = cell
        meta.setdefault("evaluation", data["meta"])
    results = {"runs": merged, "meta": meta}
    (out / RESULTS).write_text(json.dumps(results, indent=2))
    return results
