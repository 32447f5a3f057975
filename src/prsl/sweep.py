"""A grid over loss and attack parameters: each cell a fine-tune + evaluation, resumable.

The grid is a mapping from dotted config keys to value lists, e.g.
``{"loss.params.k": [4, 10], "loss.params.weight": [1e-4, 1e-3]}``; its cartesian product gives
the cells. Every cell trains into ``cells/<id>/model`` and evaluates into ``cells/<id>/eval``.
A rerun finishes just the missing cells: a trained cell is kept when its settings are the ones
given (a half-trained one resumes from its last checkpoint), and a cell whose folder holds
results of other settings is refused by its fine-tune or evaluation, naming the fields. All runs
end up in one ``results.json``, each cell's model named after the cell.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from pydantic import Field

from prsl.config import Strict, set_dotted, validate_config
from prsl.core.errors import InvalidInput, RunConflict
from prsl.core.paths import check_output_dir, slug
from prsl.evaluate import EvalConfig, evaluate
from prsl.results import RESULTS, merge_results
from prsl.train import FinetuneConfig, finetune, finished_run

DONE = "cell_done.json"
_ID_CHARS = 60  # of the readable part of a cell id


class SweepConfig(Strict):
    """A grid of fine-tune + evaluate cells (see ``prsl.sweep``).

    ``grid`` maps dotted keys to value lists: ``loss.params.k: [4, 10]`` (fine-tune fields, an
    optional ``finetune.`` prefix) or ``evaluate.attacks.0.steps: [10, 20]``-style keys under
    ``evaluate.``.
    """

    output_dir: str = "runs/sweep"
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    grid: dict[str, list[Any]] = Field(default_factory=dict)


def cells(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the grid, in a stable order."""
    if not grid:
        return [{}]
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InvalidInput(f"sweep grid entry {key!r} must be a non-empty list of values")
    keys = sorted(grid)
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))
    ]


def cell_id(cell: dict[str, Any]) -> str:
    """Readable and unique: ``loss.name=prsl,loss.params.k=4`` hashed to keep paths short."""
    text = ",".join(f"{k}={cell[k]}" for k in sorted(cell)) or "base"
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{slug(text)[:_ID_CHARS]}-{digest}"


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
    where = f"sweep cell {cell_id(cell)}"
    return validate_config(FinetuneConfig, tune, where), validate_config(EvalConfig, ev, where)


def _marker(cell: dict[str, Any], tune: FinetuneConfig, ev: EvalConfig) -> dict[str, Any]:
    """What a finished cell was computed with; a rerun with anything else redoes its steps."""
    return json.loads(
        json.dumps(
            {"cell": cell, "finetune": tune.settings(), "evaluate": ev.model_dump()}, default=str
        )
    )


def run_sweep(cfg: SweepConfig, *, progress: bool = True, scorer=None) -> dict:
    """Run every unfinished cell, then merge all cells' runs into ``results.json``."""
    out = Path(cfg.output_dir)
    todo = cells(cfg.grid)
    planned = [cell_configs(cfg, c) for c in todo]  # validates every cell before any work
    check_output_dir(out, "output_dir")
    files, annotate, meta = [], {}, {"cells": {}}
    for cell, (tune, ev) in zip(todo, planned, strict=True):
        cid = cell_id(cell)
        done = Path(ev.output_dir) / DONE
        marker = _marker(cell, tune, ev)
        if not (done.is_file() and json.loads(done.read_text()) == marker):
            try:
                if not finished_run(tune):
                    model_dir = Path(tune.train.output_dir)
                    finetune(tune, resume=model_dir.exists(), progress=progress)
                evaluate(ev, progress=progress, scorer=scorer)
            except RunConflict as err:
                folder = Path(cfg.output_dir) / "cells" / cid
                raise RunConflict(
                    f"sweep cell {cid}: {err.problem}",
                    f"give the sweep another output_dir, or delete {folder} to recompute the cell",
                ) from None
            done.write_text(json.dumps(marker))
        path = Path(ev.output_dir) / RESULTS
        files.append(path)
        annotate[path] = {"cell": cell, "model": cid}
        meta["cells"][cid] = cell
    return merge_results(files, out / RESULTS, meta, annotate)
