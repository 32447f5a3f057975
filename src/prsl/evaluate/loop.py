"""Robustness evaluation: generate on clean and adversarial images, score, compute degradation.

For every model x attack x ε the loop generates the clean output, attacks the images
(untargeted, on the model's own clean output, the paper's protocol, or on the ground truth; or
once per reference or per target, :mod:`prsl.evaluate.aims`), generates again, and appends one
row per item to ``predictions.jsonl`` as it goes. A rerun
with the same settings skips every (model, attack, ε, item) already there, so an interrupted run
resumes where it stopped; one with other settings is refused, naming the fields (see
:mod:`prsl.provenance.settings`), and so is one whose items changed on disk (an edited caption,
a replaced image). Scores come at the end from the predictions file alone.

What a rerun may change without a conflict: models and attacks may be added or left out
(``models`` and ``cells`` grow), and ``n_images``, ``batch_size``, ``metrics`` and ``gallery``
are free, because the results are always computed from the rows of the current models, cells
and first ``n_images`` items. Anything the rows depend on (data, attack parameters and an
attack's ``reference`` or ``targets``, ``max_new_tokens``, ``attack_target``, ``seed``, a
model's files) must stay the same; ``keywords`` are free.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prsl.core.errors import InvalidInput
from prsl.core.pixels import levels_text
from prsl.data import (
    DatasetSplit,
    Sample,
    Skipped,
    batch_prompts,
    dropped_summary,
    evaluation_samples,
    load_batch,
    skip_summary,
    unique_skips,
)
from prsl.evaluate.aims import Aim, cell_aims, check_references, runs_several
from prsl.evaluate.cascade import Judge, Judged, WorstSoFar
from prsl.evaluate.config import START_WORST, EvalConfig, model_path, model_tower
from prsl.evaluate.crafting import (
    STEP_BATCHES,
    craft,
    generate,
    generate_steps,
    instructed,
    used_prompts,
)
from prsl.evaluate.ensemble import choose_runs, selection_metric
from prsl.evaluate.folder import OutputFolder, generation_settings
from prsl.evaluate.gallery import GALLERY, gallery_rows, save_pair
from prsl.evaluate.grid import Cell, grid_cells
from prsl.evaluate.items import SkipTally, read_evaluation_data
from prsl.evaluate.ledger import (
    PREDICTION_SHARDS,
    PREDICTIONS,
    AttackRun,
    Ledger,
    Prediction,
    RunKey,
    ShardWatch,
)
from prsl.evaluate.outcomes import add_outcomes
from prsl.evaluate.processes import processes
from prsl.evaluate.scoring import results_meta, score_predictions
from prsl.evaluate.shards import assigned_batches
from prsl.evaluate.uncertainty import (
    ITEM_SCORES,
    Resamples,
    add_intervals,
    choose_baseline,
    compare,
    write_item_scores,
)
from prsl.metrics import CAPTION_METRICS, VQA_METRICS, Scorer
from prsl.metrics.statistics import CORPUS_METRICS
from prsl.models import VLMAdapter, check_model_source, check_vision_tower, load_adapter
from prsl.provenance import ModelRef, model_refs
from prsl.provenance.items import item_digests
from prsl.provenance.models import model_identity
from prsl.provenance.settings import SETTINGS, read_settings
from prsl.results import (
    RESULTS,
    Meta,
    Results,
    degenerate_models,
    degenerate_text,
    write_results,
)

log = logging.getLogger(__name__)

COMMAND = "evaluate"
GROWING = ("cells", "models", "items")
"""Sections of the settings record a rerun may add to or leave entries out of."""
OWN_FILES = (PREDICTIONS, RESULTS, SETTINGS, ITEM_SCORES)
FIX = (
    "rerun with those settings to resume, choose another output_dir, or pass --overwrite to "
    "discard them"
)


def evaluate(
    cfg: EvalConfig,
    *,
    progress: bool = True,
    scorer: Scorer | None = None,
    overwrite: bool = False,
    wait: bool = False,
) -> dict:
    """Run (or resume) the evaluation grid and write ``results.json``; returns its content.

    Under ``accelerate launch`` every process takes every ``world``-th batch and appends to its
    own shard; the first process then scores all of them and writes the results (the others
    return ``{}``). ``overwrite=True`` discards the results already in ``output_dir`` instead of
    refusing a rerun with other settings. The run holds the lock of ``output_dir`` (see
    :mod:`prsl.core.lock`): another run writing it is refused, or awaited with ``wait=True``.
    """
    state = processes()
    out = Path(cfg.output_dir)
    models, surrogate = resolve_models(cfg)
    if cfg.device_map is not None and state.num_processes > 1:
        raise InvalidInput(
            "device_map='auto' spreads one model over this process's GPUs: run it without "
            "accelerate launch (or drop device_map to run one model per process)"
        )
    baseline = choose_baseline(models, cfg.baseline)  # a wrong name fails before any work
    cells = grid_cells(cfg.attacks, surrogate)
    split = read_evaluation_data(cfg)
    check_references(cfg, split)
    if cfg.worst_case is not None:  # the metric must be one this task computes
        cfg.worst_case.metric_for(split.task, task_metrics(cfg, split.task), cfg.judged_in_run)
    every = [*models, *([surrogate] if surrogate is not None else [])]
    prompts = {ref.location: used_prompts(cfg, ref) for ref in every}
    settings = evaluation_settings(cfg, models, surrogate, cells, split, prompts)
    folder = OutputFolder(out, "output_dir", COMMAND, settings, discard_results, FIX, GROWING)
    run = Run(cfg, state, models, surrogate, cells, split, baseline, prompts)
    with folder.held(state, wait=wait):
        results = run_in_folder(run, folder, scorer, overwrite=overwrite, progress=progress)
    return results


def run_in_folder(
    run: Run, folder: OutputFolder, scorer: Scorer | None, *, overwrite: bool, progress: bool
) -> dict:
    """The evaluation proper, its folder held: resume or start, run the grid, score."""
    state = run.state
    earlier = recorded_cells(folder.path) - set(folder.settings.get("cells", {}))
    ledger = folder.resume(
        state,
        lambda: Ledger.read(folder.path, state.process_index),
        overwrite=overwrite,
        has_results=lambda found: bool(found.rows),
    )
    ledger.before_first_write = folder.record
    if earlier and not overwrite and state.is_main_process:
        shown = ", ".join(sorted(earlier)[:3]) + (
            f", +{len(earlier) - 3} more" if len(earlier) > 3 else ""
        )
        log.warning(
            "evaluation: %s also holds predictions of %d cell(s) this run does not ask for (%s): "
            "they are kept, and results.json holds this run's cells only",
            folder.path,
            len(earlier),
            shown,
        )
    skips = SkipTally(run.split.skipped)
    own = Scorer() if scorer is None and run.cfg.judged_in_run else None
    try:  # one Scorer judges during the run and scores at the end: its JVM and caches stay
        keys = run_grid(run, ledger, skips, progress, scorer or own)
        state.wait_for_everyone()
        skipped = unique_skips(
            [Skipped(**s) for s in gather_object([s.as_dict() for s in skips.values()])]
        )
        if not state.is_main_process:
            return {}
        return score_and_write(run, keys, skipped, scorer or own).as_json()
    finally:
        if own is not None:
            own.close()


def recorded_cells(folder: Path) -> set[str]:
    """The cells (attack and ε) whose predictions the folder's record describes."""
    record = read_settings(folder) or {}
    cells = record.get("settings", {}).get("cells", {}) if record.get("command") == COMMAND else {}
    return set(cells) if isinstance(cells, dict) else set()


@dataclass(frozen=True)
class Run:
    """One evaluation, as every step of it sees it."""

    cfg: EvalConfig
    state: PartialState
    models: list[ModelRef]
    surrogate: ModelRef | None
    cells: list[Cell]
    split: DatasetSplit
    baseline: ModelRef | None
    prompts: dict[str, dict[str, str]]
    """Each model's prompts, by location (``used_prompts``)."""


def score_and_write(
    run: Run, keys: set[str], skipped: list[Skipped], scorer: Scorer | None
) -> Results:
    """Score every shard's predictions of this run and write ``results.json`` (one process)."""
    cfg, models, cells, split = run.cfg, run.models, run.cells, run.split
    out = Path(cfg.output_dir)
    rows = Ledger.read(out).selected({m.location for m in models}, cells, keys)
    chosen_by = selection_metric(cfg.metrics, split.task, cfg.worst_case)
    # A Scorer made here is closed (its JVMs stopped) once scored; a caller's stays open.
    with Scorer() if scorer is None else nullcontext(scorer) as active:
        rows = choose_runs(rows, active, chosen_by, cfg.vqa_protocol)
        scored, bertscore = score_predictions(
            rows,
            task=split.task,
            models=models,
            cells=cells,
            metrics=cfg.metrics,
            scorer=active,
            vqa_protocol=cfg.vqa_protocol,
            worst_case=cfg.worst_case,
        )
    comparisons: list[dict] = []
    boot = cfg.bootstrap
    resamples = None
    if boot.resamples > 0 and scored:
        resamples = Resamples(boot, cfg.seed if boot.seed is None else boot.seed)
        add_intervals(scored, resamples)
        comparisons = compare(scored, run.baseline, resamples)
    add_outcomes(
        scored,
        rows,
        cells,
        keywords=cfg.keywords,
        protocol=cfg.vqa_protocol,
        metric=chosen_by,
        resamples=resamples,
    )
    write_item_scores(out / ITEM_SCORES, scored)
    results = Results(
        runs=[scored_run.record for scored_run in scored],
        comparisons=comparisons,
        gallery=gallery_rows(rows, models, cells),
        meta=evaluation_meta(run, bertscore, skipped, cascade_skips(run, rows)),
    )
    write_results(out / RESULTS, results)
    warn_of(run, results, skipped)
    return results


def cascade_skips(run: Run, rows: list[Prediction]) -> list[dict] | None:
    """Per model and cell, how many items the cascade skipped (None without a cascade); each
    count is logged."""
    wc = run.cfg.worst_case
    if wc is None or wc.stop_below is None:
        return None
    names = {m.location: m.name for m in run.models}
    metric = wc.metric_for(run.split.task, task_metrics(run.cfg, run.split.task), False)
    counts = Counter((r.model_path, r.attack, r.eps) for r in rows if not r.attacked)
    found = []
    for model in run.models:
        for cell in run.cells:
            n = counts[(model.location, cell.name, cell.eps)]
            found.append(
                {"model": names[model.location], "attack": cell.name, "eps": cell.eps, "skipped": n}
            )
            if n:
                log.info(
                    "evaluation: %s, %s at ε=%s: the cascade skipped %d item(s) already at or "
                    "below %s=%g",
                    model.name,
                    cell.name,
                    levels_text(cell.eps),
                    n,
                    metric,
                    wc.stop_below,
                )
    return found


def evaluation_meta(
    run: Run, bertscore: str, skipped: list[Skipped], cascade: list[dict] | None = None
) -> Meta:
    """The ``meta`` of an evaluation's ``results.json``: how it was run, on which items."""
    cfg, split, boot, surrogate = run.cfg, run.split, run.cfg.bootstrap, run.surrogate
    worst = {}
    if cfg.worst_case is not None:
        metric = cfg.worst_case.metric_for(split.task, task_metrics(cfg, split.task), False)
        worst = {"worst_case": cfg.worst_case.model_dump() | {"metric": metric, "skipped": cascade}}
    return results_meta(
        **worst,
        bootstrap={
            "resamples": boot.resamples,
            "level": boot.level,
            "seed": cfg.seed if boot.seed is None else boot.seed,
            "paired": True,
            "baseline": run.baseline.name if run.baseline is not None else None,
        },
        attack_target=cfg.attack_target,
        **cfg.precision(),
        vqa_protocol=cfg.vqa_protocol if split.task == "vqa" else None,
        seed=cfg.seed,
        bertscore_model=bertscore,
        models={m.name: m.location for m in run.models},
        prompts={m.name: run.prompts[m.location] for m in run.models},
        dataset=cfg.data.model_dump(),
        surrogate=surrogate.location if surrogate is not None else None,
        processes=run.state.num_processes,
        items={"looked_at": looked_at(split), "skipped": len(skipped)},
        skipped=[s.as_dict() for s in skipped],
        dropped_references=[s.as_dict() for s in split.dropped],
    )


def looked_at(split: DatasetSplit) -> int:
    """How many items the reader looked at: those it kept and those it skipped."""
    return len(split.examples) + len(split.skipped)


def warn_of(run: Run, results: Results, skipped: list[Skipped]) -> None:
    """Log what a reader of the results must know: degenerate models, items left out."""
    cfg, split, out = run.cfg, run.split, Path(run.cfg.output_dir) / RESULTS
    for label, reason in degenerate_models(results.runs).items():
        log.warning("evaluation: %s", degenerate_text(label, reason))
    seen = looked_at(split)
    if skipped:
        log.warning("evaluation: %s (listed in %s)", skip_summary(skipped, seen), out)
    if split.dropped:
        log.warning("evaluation: %s (listed in %s)", dropped_summary(split.dropped), out)
    usable = seen - len(skipped)  # what the reader kept, less the images that failed to decode
    if usable < cfg.n_images:
        log.warning(
            "evaluation: n_images=%d, but %d of the %d item(s) looked at are usable: evaluated "
            "those",
            cfg.n_images,
            usable,
            seen,
        )


def run_grid(
    run: Run, ledger: Ledger, skips: SkipTally, progress: bool, scorer: Scorer | None
) -> set[str]:
    """This process's share of the grid: every ``world``-th batch of every model; returns the
    item keys of the run. The first process shows the whole run's progress. ``scorer`` judges
    outputs during the run (a cascade; see :mod:`prsl.evaluate.cascade`)."""
    cfg, state, models, surrogate, cells = run.cfg, run.state, run.models, run.surrogate, run.cells
    rank, world, device = state.process_index, state.num_processes, state.device
    out = Path(cfg.output_dir)
    keys: set[str] = set()
    bar = _progress(progress and state.is_main_process)  # started with the first model
    others = ShardWatch(out, rank)
    with ledger.appending():
        crafter = None
        if surrogate is not None:
            crafter = instructed(load_model(surrogate, cfg, device), cfg, surrogate)
        try:
            for model in models:
                adapter = instructed(load_model(model, cfg, device), cfg, model)
                check_transfer_size(model, adapter, surrogate, crafter)
                samples = evaluation_samples(run.split, adapter.vqa_prompt)
                keys |= {s.key for s in samples}
                job = ModelJob(cfg, model, adapter, crafter, cells, ledger, skips, out, rank == 0)
                job.judge = judge(run, samples, scorer)
                if not bar.live.is_started:
                    bar.start()
                task = bar.add_task(model.name, total=len(samples))
                for batch, mine in assigned_batches(samples, cfg.batch_size, rank, world):
                    if mine and ledger.unfinished(model.location, cells, batch):
                        evaluate_batch(job, batch)
                    done = ledger.count(model.location) + others.update()[model.location]
                    bar.update(task, completed=min(len(samples), done / len(cells)))
                bar.update(task, completed=len(samples))
        finally:
            bar.stop()
    return keys


def judge(run: Run, samples: list[Sample], scorer: Scorer | None) -> Judge | None:
    """What scores a model's outputs during the run, when the run needs it."""
    cfg, task = run.cfg, run.split.task
    if cfg.worst_case is None or not cfg.judged_in_run or scorer is None:
        return None
    metric = cfg.worst_case.metric_for(task, task_metrics(cfg, task), judged_in_run=True)
    resolved = cfg.worst_case.model_copy(update={"metric": metric})
    return Judge(resolved, scorer, task, cfg.vqa_protocol, samples)


def task_metrics(cfg: EvalConfig, task: str) -> list[str]:
    """The metrics the results of ``task`` hold."""
    return list(cfg.metrics or (VQA_METRICS if task == "vqa" else CAPTION_METRICS))


def load_model(model: ModelRef, cfg: EvalConfig, device) -> VLMAdapter:
    """The model on this process's device, or spread over the GPUs with ``device_map``, with
    its vision tower swapped in when it names one."""
    tower = model.vision_tower
    if cfg.device_map is not None:
        return load_adapter(
            model.given, device_map=cfg.device_map, dtype=cfg.dtype, vision_tower=tower
        )
    return load_adapter(model.given, device=device, dtype=cfg.dtype, vision_tower=tower)


# ------------------------------------------------------------------------------- the steps


def resolve_models(cfg: EvalConfig) -> tuple[list[ModelRef], ModelRef | None]:
    """The evaluated models and the surrogate, each checked to exist and to be supported."""
    if not cfg.models:
        raise InvalidInput("no model to evaluate: give at least one model directory or hub id")
    given = [*cfg.models, *([cfg.surrogate] if cfg.surrogate else [])]
    refs = model_refs([model_path(g) for g in given], [model_tower(g) for g in given])
    for ref in refs:
        check_model_source(ref.given)
        if ref.vision_tower is not None:
            check_vision_tower(ref.given, ref.vision_tower)
    if cfg.surrogate:
        return refs[:-1], refs[-1]
    return refs, None


def evaluation_settings(
    cfg: EvalConfig,
    models: list[ModelRef],
    surrogate: ModelRef | None,
    cells: list[Cell],
    split: DatasetSplit,
    prompts: dict[str, dict[str, str]],
) -> dict:
    """What the rows of ``predictions.jsonl`` depend on (see the module docstring)."""

    def identity(ref: ModelRef) -> dict:
        return {**model_identity(ref), "prompts": prompts[ref.location]}

    return {
        "items": item_digests(evaluation_samples(split, str)),
        **generation_settings(cfg),
        "surrogate": identity(surrogate) if surrogate is not None else None,
        "cells": {cell.key: cell.recorded() for cell in cells},
        "models": {ref.location: identity(ref) for ref in models},
        **cascade_settings(cfg, split),
    }


def cascade_settings(cfg: EvalConfig, split: DatasetSplit) -> dict:
    """What the skipped rows of a cascade depend on (nothing without one, so the records of
    other runs still match): the judge's metric, reference and threshold, and for a metric
    whose item scores depend on the corpus (CIDEr) the number of items it was judged among."""
    wc = cfg.worst_case
    if wc is None or wc.stop_below is None:
        return {}
    metric = wc.metric_for(split.task, task_metrics(cfg, split.task), judged_in_run=True)
    corpus = {"items": len(split.examples)} if metric in CORPUS_METRICS else {}
    judged = {"metric": metric, "reference": wc.reference, "stop_below": wc.stop_below}
    return {"cascade": judged | corpus}


def discard_results(out: Path) -> None:
    """Remove what an earlier evaluation wrote into ``out`` (and nothing else)."""
    for name in OWN_FILES:
        (out / name).unlink(missing_ok=True)
    PREDICTION_SHARDS.discard(out)
    shutil.rmtree(out / GALLERY, ignore_errors=True)


def check_transfer_size(
    model: ModelRef, adapter: VLMAdapter, surrogate: ModelRef | None, crafter: VLMAdapter | None
) -> None:
    if crafter is not None and surrogate is not None and crafter.pixel_size != adapter.pixel_size:
        raise InvalidInput(
            f"surrogate {surrogate.name} takes {crafter.pixel_size} images but {model.name} "
            f"takes {adapter.pixel_size}: transfer needs the same size"
        )


@dataclass
class ModelJob:
    """What the batches of one evaluated model share."""

    cfg: EvalConfig
    model: ModelRef
    adapter: VLMAdapter
    surrogate: VLMAdapter | None
    cells: list[Cell]
    ledger: Ledger
    skips: SkipTally
    out: Path
    keeps_gallery: bool = True
    """Only the first process saves gallery pairs, so their number stays as asked."""
    judge: Judge | None = None
    """Scores outputs during the run: set for a cascade or a ``start: worst_case`` cell."""


@dataclass
class Outputs:
    """One run of a cell's attack on (part of) a batch: its items' places in the batch, their
    images and outputs."""

    items: list[int]
    aims: list[str]
    clean_pixels: torch.Tensor
    adversarial_pixels: torch.Tensor
    adversarial: list[str]
    per_step: list[list[str]] | None

    def run(self, i: int) -> AttackRun | None:
        """Item ``i`` of the batch in this run (None when the run left it out)."""
        if i not in self.items:
            return None
        at = self.items.index(i)
        return AttackRun(
            aim=self.aims[at],
            adversarial=self.adversarial[at],
            linf=float((self.adversarial_pixels[at] - self.clean_pixels[at]).abs().max()),
            per_step=[texts[at] for texts in self.per_step] if self.per_step else None,
        )


@dataclass
class BatchWork:
    """One batch's clean images, prompts and outputs, and what its attacks push away from."""

    pixels: torch.Tensor
    samples: list[Sample]
    prompts: list[str] | None
    clean: list[str]
    own: dict[bool, list[str]]
    """Keyed by transfer: the evaluated model's, or the surrogate's, clean outputs."""


def evaluate_batch(job: ModelJob, batch: list[Sample]) -> None:
    """Generate clean, craft every unfinished cell, generate adversarial, append the rows."""
    pixels, kept, skipped = load_batch(batch, job.adapter.pixel_size, job.adapter.prepare_images)
    job.skips.add(skipped)
    todo = job.ledger.unfinished(job.model.location, job.cells, kept)
    if pixels is None or not todo:
        return
    cfg = job.cfg
    pixels = pixels.to(job.adapter.device)
    prompts = batch_prompts(kept)
    clean = generate(job.adapter, pixels, prompts, cfg.max_new_tokens)
    work = BatchWork(pixels, kept, prompts, clean, {False: clean})
    if job.judge is None:
        for cell in todo:
            run_cell(job, work, cell, list(range(len(kept))))
        return
    worst = WorstSoFar(job.cells, job.judge)
    for cell in job.cells:  # every cell: a finished one's outputs still count for the rest
        cascade_cell(job, work, cell, worst, todo)


def run_cell(
    job: ModelJob,
    work: BatchWork,
    cell: Cell,
    chosen: list[int],
    start: torch.Tensor | None = None,
) -> list[Outputs]:
    """Craft the cell on the ``chosen`` items of the batch (once per aim: several for targets
    or ``each_ground_truth``), generate, append their rows; the runs' outputs, their items
    counted among ``chosen``."""
    cfg = job.cfg
    crafter = job.surrogate if cell.transfer else job.adapter
    assert crafter is not None
    if cell.transfer not in work.own:  # the surrogate attacks its own clean output
        work.own[True] = generate(crafter, work.pixels, work.prompts, cfg.max_new_tokens)
    samples = [work.samples[i] for i in chosen]
    own = [work.own[cell.transfer][i] for i in chosen]
    aims = cell_aims(cell, cfg.attack_target, own, samples, cfg.vqa_protocol)
    pixels = work.pixels if len(chosen) == len(work.samples) else work.pixels[chosen]
    prompts = None if work.prompts is None else [work.prompts[i] for i in chosen]
    runs = [run_aim(job, cell, crafter, pixels, prompts, aim, start) for aim in aims]
    job.ledger.append(cell_rows(job, cell, samples, [work.clean[i] for i in chosen], runs))
    return runs


def run_aim(
    job: ModelJob,
    cell: Cell,
    crafter: VLMAdapter,
    pixels: torch.Tensor,
    prompts: list[str] | None,
    aim: Aim,
    start: torch.Tensor | None = None,
) -> Outputs:
    """One run of the cell's attack on the items of ``aim`` (from ``start``, its images for
    every item of ``pixels``, when given), and the outputs it gives."""
    cfg = job.cfg
    whole = len(aim.items) == pixels.shape[0]
    part = pixels if whole else pixels[aim.items]
    begin = None if start is None else (start if whole else start[aim.items])
    asked = None if prompts is None else [prompts[i] for i in aim.items]
    adv, steps = craft(
        cell, part, crafter, aim.texts, asked, cfg.seed, targeted=aim.targeted, start=begin
    )
    adv = adv.to(job.adapter.device)
    adversarial = generate(job.adapter, adv, asked, cfg.max_new_tokens)
    per_step = None
    if steps:
        per_call = cfg.step_batch_size or STEP_BATCHES * cfg.batch_size
        moved = [x.to(adv.device) for x in steps]
        per_step = generate_steps(
            job.adapter, moved, (adv, adversarial), asked, cfg.max_new_tokens, per_call
        )
    return Outputs(aim.items, aim.texts, part, adv, adversarial, per_step)


def cascade_cell(
    job: ModelJob, work: BatchWork, cell: Cell, worst: WorstSoFar, todo: list[Cell]
) -> None:
    """One cell of a cascade: items already at or below ``stop_below`` in its group get a
    skipped row; the others are attacked (from their worst image so far for ``start:
    worst_case``) unless the ledger holds their rows, and their outputs (every run's) are
    judged."""
    assert job.judge is not None
    key = RunKey(job.model.location, cell.name, cell.eps)
    keys = [s.key for s in work.samples]
    active, skipped = [], []
    for i, item in enumerate(keys):
        after = worst.stopped(cell, item)
        if after is None:
            active.append(i)
        elif not job.ledger.finished(key, item):
            skipped.append(skipped_row(job, cell, work.samples[i], work.clean[i], after))
    job.ledger.append(skipped)
    if not active:
        return
    found = [job.ledger.row(key, keys[i]) for i in active]
    images = worst.keeps_images(cell, todo)
    if all(row is not None for row in found) and not images:  # finished: judge what it wrote
        done = [(i, row) for i, row in zip(active, found, strict=True) if row and row.attacked]
        note_written(worst, cell, work, done)
        return
    chosen = [keys[i] for i in active]
    start = worst.start(cell, chosen, work.pixels[active]) if cell.start == START_WORST else None
    runs = run_cell(job, work, cell, active, start)  # a resumed start crafts its sources again
    for outputs in runs:
        at = [active[i] for i in outputs.items]
        kept = outputs.adversarial_pixels if images else None
        samples = [work.samples[i] for i in at]
        clean = [work.clean[i] for i in at]
        worst.note(Judged(cell, samples, clean, outputs.adversarial, kept))


def note_written(
    worst: WorstSoFar, cell: Cell, work: BatchWork, done: list[tuple[int, Prediction]]
) -> None:
    """Judge the outputs a finished cell wrote: every run of a row that holds several."""
    outputs = [
        [r.adversarial for r in row.runs] if row.runs else [row.adversarial] for _, row in done
    ]
    for r in range(max((len(o) for o in outputs), default=0)):
        having = [(i, o[r]) for (i, _), o in zip(done, outputs, strict=True) if len(o) > r]
        samples = [work.samples[i] for i, _ in having]
        clean = [work.clean[i] for i, _ in having]
        worst.note(Judged(cell, samples, clean, [text for _, text in having], None))


def skipped_row(job: ModelJob, cell: Cell, sample: Sample, clean: str, after: str) -> Prediction:
    """The row of an item the cascade skipped: its clean output, no adversarial one."""
    return Prediction(
        **item_fields(job, cell, sample, clean),
        steps=0,
        adversarial="",
        linf=0.0,
        skipped_after=after,
    )


def item_fields(job: ModelJob, cell: Cell, sample: Sample, clean: str) -> dict:
    """What every row of an item under a cell says, attacked or skipped."""
    return {
        "model": job.model.name,
        "model_path": job.model.location,
        "loss": job.model.loss,
        "attack": cell.name,
        "eps": cell.eps,
        "key": sample.key,
        "question": sample.question,
        "references": list(sample.references),
        "clean": clean,
    }


def cell_rows(
    job: ModelJob, cell: Cell, kept: list[Sample], clean: list[str], runs: list[Outputs]
) -> list[Prediction]:
    """The rows of the batch's unfinished items under ``cell``, with their gallery pairs."""
    key = RunKey(job.model.location, cell.name, cell.eps)
    several = runs_several(cell, job.cfg.attack_target)
    rows: list[Prediction] = []
    for i, sample in enumerate(kept):
        if job.ledger.finished(key, sample.key):
            continue
        found = [(outputs, run) for outputs in runs if (run := outputs.run(i)) is not None]
        pairs = sum(r.gallery is not None for r in rows)
        if job.keeps_gallery and job.ledger.wants_pair(key, job.cfg.gallery - pairs):
            stem = f"{job.model.name}-{job.model.tag}_{cell.key}_{sample.key}"
            for r, (outputs, run) in enumerate(found):
                at = outputs.items.index(i)
                pair = outputs.clean_pixels[at], outputs.adversarial_pixels[at]
                run.gallery = save_pair(job.out, stem + (f"_run{r}" if several else ""), *pair)
        item_runs = [run for _, run in found]
        rows.append(prediction(job, cell, sample, clean[i], item_runs, several))
    return rows


def prediction(
    job: ModelJob, cell: Cell, sample: Sample, clean: str, runs: list[AttackRun], several: bool
) -> Prediction:
    """The row of one item: its first run's output, and with ``several`` every run."""
    first = runs[0]
    return Prediction(
        **item_fields(job, cell, sample, clean),
        steps=cell.attack.iterations,
        adversarial=first.adversarial,
        linf=first.linf,
        per_step=first.per_step,
        gallery=first.gallery,
        runs=runs if several else None,
    )


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
    )
