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

from pydantic import Field, model_validator

from prsl.config import Strict, set_dotted, validate_config
from prsl.core.errors import Interrupted, InvalidInput, RunConflict
from prsl.core.lock import hold
from prsl.core.paths import check_output_dir, slug
from prsl.evaluate import EvalConfig
from prsl.evaluate.uncertainty import Resamples, compare, read_scored
from prsl.results import RESULTS, merge_results
from prsl.train import FinetuneConfig

DONE = "cell_done.json"
SEED_KEY = "train.seed"
_ID_CHARS = 60  # of the readable part of a cell id


class SweepConfig(Strict):
    """A grid of fine-tune + evaluate cells (see ``prsl.sweep``).

    ``grid`` maps dotted keys to value lists: ``loss.params.k: [4, 10]`` (fine-tune fields, an
    optional ``finetune.`` prefix) or ``evaluate.attacks.0.steps: [10, 20]``-style keys under
    ``evaluate.``. ``seeds``: train (and evaluate) every cell once per seed, ``train.seed`` set
    to it. ``baseline``: the cell every other is compared with, by the values that pick it out
    (``{loss.name: ce}``); default the first cell trained with CE. Cells are compared seed by
    seed on the same items (paired bootstrap), and the report gathers the seeds.
    """

    output_dir: str = "runs/sweep"
    """Where the cells (``cells/<id>/model``, ``cells/<id>/eval``), ``results.json`` and
    the report are written."""
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    """The fine-tuning config every cell starts from (as ``prsl finetune`` takes it)."""
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    """The evaluation config every cell starts from (as ``prsl evaluate`` takes it; its
    ``models`` and ``output_dir`` are set per cell)."""
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """Dotted keys to value lists, e.g. ``loss.params.k: [4, 10]`` (fine-tune fields) or
    ``evaluate.attacks.0.steps: [10, 20]``; the cells are their cartesian product."""
    seeds: list[int] | None = Field(None, min_length=1)
    """Train and evaluate every cell once per seed (``train.seed``); None: once."""
    baseline: dict[str, Any] | None = None
    """The cell every other is compared with, by its grid values (``{loss.name: ce}``);
    None: the first cell trained with CE."""

    @model_validator(mode="after")
    def _seeds_are_not_also_a_grid_key(self) -> SweepConfig:
        if self.evaluate.baseline is not None:
            raise ValueError(
                "evaluate.baseline compares models within one evaluation, and each sweep cell "
                "evaluates one model: name the baseline cell with the sweep's `baseline:` "
                "(e.g. baseline: {loss.name: ce})"
            )
        if self.seeds is not None and {SEED_KEY, f"finetune.{SEED_KEY}"} & set(self.grid):
            raise ValueError(f"give the seeds once: as seeds, or as the grid key {SEED_KEY}")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat a value: {self.seeds}")
        return self


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


def _short(value: Any) -> str:
    """A grid value as a name: a loss or attack mapping as ``prsl(k=4,weight=0.001)``."""
    if isinstance(value, dict):
        inner = {
            **value.get("params", {}),
            **{k: v for k, v in value.items() if k not in ("name", "params")},
        }
        body = ",".join(f"{k}={_short(v)}" for k, v in sorted(inner.items()))
        name = str(value.get("name", ""))
        return f"{name}({body})" if body else name or "{}"
    return str(value)


def cell_id(cell: dict[str, Any]) -> str:
    """Readable and unique: ``loss.params.k=4,loss.params.weight=0.001`` hashed to keep paths
    short; a training seed is kept at the end, past the cut, so seeds tell apart on disk."""
    seed = cell.get(SEED_KEY)
    keys = sorted(k for k in cell if k != SEED_KEY)
    text = ",".join(f"{k}={_short(cell[k])}" for k in keys) or "base"
    digest = hashlib.sha1(
        ",".join(f"{k}={cell[k]}" for k in sorted(cell)).encode() or b"base"
    ).hexdigest()[:8]
    tail = f"-seed{seed}" if seed is not None else ""
    return f"{slug(text)[:_ID_CHARS].rstrip('-')}{tail}-{digest}"


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


# The training and evaluation stacks (torch models, transformers, accelerate) are imported when a
# cell first runs: validating a SweepConfig, or a mistake in it, needs neither.
def finetune(cfg: FinetuneConfig, **options: Any) -> Any:
    """:func:`prsl.train.finetune`."""
    from prsl.train import finetune as run

    return run(cfg, **options)


def finished_run(cfg: FinetuneConfig) -> Any:
    """:func:`prsl.train.finished_run`."""
    from prsl.train import finished_run as finished

    return finished(cfg)


def evaluate(cfg: EvalConfig, **options: Any) -> Any:
    """:func:`prsl.evaluate.evaluate`."""
    from prsl.evaluate import evaluate as run

    return run(cfg, **options)


def run_sweep(cfg: SweepConfig, *, progress: bool = True, scorer=None, wait: bool = False) -> dict:
    """Run every unfinished cell (per seed), compare the cells with the baseline cell, then
    merge everything into ``results.json``. The sweep holds the lock of its ``output_dir``, and
    each cell's fine-tune and evaluation the lock of their folders (:mod:`prsl.core.lock`);
    ``wait`` waits for another run holding one of them instead of refusing."""
    out = Path(cfg.output_dir)
    todo = [(cell, seed) for cell in cells(cfg.grid) for seed in cfg.seeds or [None]]
    planned = [cell_configs(cfg, seeded(cell, seed)) for cell, seed in todo]  # validates all
    baseline = baseline_cell(cfg, [cell for cell, _ in todo], [tune for tune, _ in planned])
    check_output_dir(out, "output_dir")
    with hold(out, "output_dir", wait=wait):
        return run_cells(cfg, todo, planned, baseline, progress, scorer, wait)


def run_cells(
    cfg: SweepConfig,
    todo: list[tuple[dict[str, Any], int | None]],
    planned: list[tuple[FinetuneConfig, EvalConfig]],
    baseline: dict[str, Any] | None,
    progress: bool,
    scorer,
    wait: bool,
) -> dict:
    """Every cell not done yet, then the comparisons and the merged results."""
    out = Path(cfg.output_dir)
    files, annotate, meta = [], {}, {"cells": {}}
    for (cell, seed), (tune, ev) in zip(todo, planned, strict=True):
        cid = cell_id(seeded(cell, seed))
        done = Path(ev.output_dir) / DONE
        marker = _marker(seeded(cell, seed), tune, ev)
        if not (done.is_file() and json.loads(done.read_text()) == marker):
            try:
                if not finished_run(tune):
                    model_dir = Path(tune.train.output_dir)
                    finetune(tune, resume=model_dir.exists(), progress=progress, wait=wait)
                evaluate(ev, progress=progress, scorer=scorer, wait=wait)
            except RunConflict as err:
                folder = Path(cfg.output_dir) / "cells" / cid
                raise RunConflict(
                    f"sweep cell {cid}: {err.problem}",
                    f"give the sweep another output_dir, or delete {folder} to recompute the cell",
                ) from None
            except Interrupted as err:  # the cell's own advice (--resume) is not the sweep's
                raise Interrupted(
                    f"sweep cell {cid}: {err.kept}",
                    "run the same sweep again to resume",
                    err.code,
                ) from None
            done.write_text(json.dumps(marker))
        path = Path(ev.output_dir) / RESULTS
        files.append(path)
        # the model is named after the cell, the same in every seed, so seeds gather
        annotate[path] = {"cell": cell, "model": cell_id(cell)} | (
            {"seed": seed} if seed is not None else {}
        )
        meta["cells"][cell_id(cell)] = cell
    compared = compare_cells(cfg, todo, planned, baseline)
    if baseline is not None:
        meta["baseline"] = cell_id(baseline)
    return merge_results(files, out / RESULTS, meta, annotate, compared).as_json()


def seeded(cell: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """The cell with its training seed, when the sweep has seeds."""
    return cell if seed is None else cell | {SEED_KEY: seed}


def baseline_cell(
    cfg: SweepConfig, grid_cells: list[dict[str, Any]], tunes: list[FinetuneConfig]
) -> dict[str, Any] | None:
    """The cell the others are compared with: the one ``cfg.baseline`` picks out, else the
    first trained with CE; None when there is none (or only one cell)."""
    distinct = list({cell_id(c): c for c in grid_cells}.values())
    if cfg.baseline is not None:
        chosen = [c for c in distinct if all(c.get(k) == v for k, v in cfg.baseline.items())]
        if len(chosen) != 1:
            found = "no cell" if not chosen else f"{len(chosen)} cells"
            raise InvalidInput(
                f"sweep baseline {cfg.baseline} picks out {found}; give grid keys and values "
                f"that pick out exactly one of the cells: {'; '.join(map(str, distinct))}"
            )
        return chosen[0]
    if len(distinct) < 2:
        return None
    by_id = {cell_id(c): tune for c, tune in zip(grid_cells, tunes, strict=True)}
    return next((c for c in distinct if by_id[cell_id(c)].loss.name == "ce"), None)


def compare_cells(
    cfg: SweepConfig,
    todo: list[tuple[dict[str, Any], int | None]],
    planned: list[tuple[FinetuneConfig, EvalConfig]],
    baseline: dict[str, Any] | None,
) -> list[dict]:
    """Every cell against the baseline cell of the same seed, on the items both evaluated."""
    if baseline is None:
        return []
    boot = cfg.evaluate.bootstrap
    if boot.resamples == 0:
        return []
    found = []

    def evaluated_with(cell: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in cell.items() if k.startswith("evaluate.")}

    for seed in cfg.seeds or [None]:
        scored, base = [], None
        for (cell, cell_seed), (_, ev) in zip(todo, planned, strict=True):
            # a cell evaluated otherwise than the baseline (other attack settings) would mix
            # the attack's effect into the loss's: it is not compared
            if cell_seed != seed or evaluated_with(cell) != evaluated_with(baseline):
                continue
            runs = read_scored(Path(ev.output_dir), cell_id(cell))
            scored += runs
            if cell_id(cell) == cell_id(baseline) and runs:
                base = runs[0].model
        seed_value = cfg.evaluate.seed if boot.seed is None else boot.seed
        resamples = Resamples(boot, seed_value)
        tag = {"seed": seed} if seed is not None else {}
        found += [c | tag for c in compare(scored, base, resamples)]
    return found
