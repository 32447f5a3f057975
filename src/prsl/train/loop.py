"""Fine-tuning any supported VLM with any registered loss, from one CPU to many GPUs.

Built on ``accelerate``: the same code runs on CPU, one GPU, or under ``accelerate launch``
(DDP; FSDP / DeepSpeed through accelerate's own config). Data order is a pure function of
(seed, epoch), checkpoints hold model, optimiser, scheduler, RNG and data position, so
``resume=True`` continues exactly where a run stopped and reaches the same weights.

Each optimizer step reads its micro-batches and hands them to the run's objective
(:mod:`prsl.train.objectives`: the loss on the target tokens, adversarially mixed or not, or
FARE's), which owns their forward and backward, the scaling across processes and the step's
stats; then the gradient is clipped and the optimizer steps.

Logs (main process): a progress bar with the loss, CE, regulariser and throughput; a console line
every ``log_every`` steps; ``train_log.csv``; TensorBoard scalars with ``train.tensorboard``.
Logged values are averaged over processes; throughput counts the target tokens (FARE: the
images) of all of them.
"""

from __future__ import annotations

import logging
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from transformers import get_scheduler

from prsl.core.errors import Interrupted, InvalidInput, RunConflict
from prsl.core.lock import LOCK_FILE, hold
from prsl.core.paths import check_output_dir
from prsl.data import (
    DatasetSplit,
    Sample,
    Skipped,
    batch_prompts,
    dropped_summary,
    load_batch,
    read_dataset,
    require_usable,
    skip_summary,
    training_samples,
    unique_skips,
)
from prsl.models import HFAdapter, LabelPadding, check_vision_tower
from prsl.provenance import (
    TRAIN_INFO,
    Compute,
    TrainingRecord,
    check_settings,
    differences,
    read_settings,
    read_training_record,
    write_settings,
    write_training_record,
)
from prsl.provenance.models import FINAL, tower_fingerprint
from prsl.provenance.settings import SETTINGS, check_owner
from prsl.train.checkpoint import (
    CHECKPOINT_PATTERN,
    checkpoint_step,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from prsl.train.config import RESUMABLE_CHANGES, FinetuneConfig
from prsl.train.fare import FARE, check_fare
from prsl.train.interrupt import EXIT_CODES, StopRequests
from prsl.train.log import LOG_FILE, TENSORBOARD, MetricLog, progress_bar, require_tensorboard
from prsl.train.objectives import (
    MicroBatch,
    Objective,
    Stats,
    build_objective,
    prepare_objective,
)
from prsl.train.schedule import step_groups, steps_per_epoch
from prsl.train.start_model import BASE, build_adapter

log = logging.getLogger(__name__)

COMMAND = "finetune"
OWN_FILES = frozenset({BASE, FINAL, SETTINGS, LOG_FILE, TENSORBOARD})


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path
    steps: int
    history: list[dict] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass
class Position:
    """Where the run stands: optimizer steps done, the epoch and step within it, and the wall
    seconds its steps took so far and those seconds times the processes that ran them (both
    summed over resumed parts, which may have run on other numbers of processes: the compute
    the model cost)."""

    step: int = 0
    epoch: int = 0
    in_epoch: int = 0
    seconds: float = 0.0
    device_seconds: float = 0.0


@dataclass
class Session:
    """What the optimizer steps of one run work with."""

    cfg: FinetuneConfig
    out: Path
    accelerator: Accelerator
    adapter: HFAdapter
    wrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    samples: list[Sample]
    total_steps: int
    params: list[torch.nn.Parameter]
    objective: Objective
    """What the steps minimise: the loss on the tokens (adversarially or not), or FARE's."""
    skipped: dict[str, Skipped] = field(default_factory=dict)
    started: StartedFrom | None = None
    """The prsl-trained model the run starts from, if any: its cost counts in the run's."""


def finetune(
    cfg: FinetuneConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    wait: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Run the configured fine-tuning; returns where the final model was written.

    ``resume`` continues the run in ``train.output_dir`` from its last checkpoint;
    ``overwrite`` discards the run there instead. The run holds the folder's lock
    (:mod:`prsl.core.lock`): another run writing it is refused, or awaited with ``wait``.
    Ctrl-C or SIGTERM saves the finished steps and raises :class:`Interrupted` saying so
    (:mod:`prsl.train.interrupt`).
    """
    out = Path(cfg.train.output_dir)
    if resume and overwrite:
        raise InvalidInput(
            "--resume continues the run in train.output_dir and --overwrite discards it: "
            "pass one of them"
        )
    if cfg.train.tensorboard:
        require_tensorboard()
    check_budget(cfg)
    split = read_training_data(cfg)
    accelerator = make_accelerator(cfg)
    if cfg.train.fare is not None:
        check_fare(cfg.model, accelerator.distributed_type)
    if cfg.model.vision_tower is not None:
        check_vision_tower(
            cfg.model.name_or_path,
            cfg.model.vision_tower,
            cfg.model.family,
            cfg.model.trust_remote_code,
        )
    check_output_dir(out, "train.output_dir")
    with hold(out, "train.output_dir", wait=wait, state=accelerator):
        # Ctrl-C while waiting for the folder is not this run's: only once it is held
        try:
            return train_in_folder(cfg, out, split, accelerator, resume, overwrite, progress)
        except Interrupted:
            raise
        except KeyboardInterrupt as err:  # before the steps, or a second signal during them
            raise interrupted_outside_steps(out, getattr(err, "code", 130)) from None


def train_in_folder(
    cfg: FinetuneConfig,
    out: Path,
    split: DatasetSplit,
    accelerator: Accelerator,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> TrainResult:
    """The run proper, its folder held."""
    check_owner(out, COMMAND)  # before --overwrite discards anything
    if overwrite and accelerator.is_main_process:
        discard_run(out)
    accelerator.wait_for_everyone()
    resuming = claim_output_dir(out, cfg, resume, accelerator)
    set_seed(cfg.train.seed)
    session = start_session(cfg, out, split, accelerator)
    position = restore(session) if resuming else Position()
    result = TrainResult(out, out / FINAL, session.total_steps)

    # a signal during the steps stops the run at a checkpoint; one while the last checkpoint and
    # the final model are written waits for them: the run then ends complete
    with StopRequests(accelerator) as stops:
        position = train_until_done(
            session, position, result, resumed=resuming, progress=progress, stops=stops
        )
        result.skipped = unique_skips([*split.skipped, *session.skipped.values()])
        accelerator.wait_for_everyone()
        finished_before = resuming and not result.history and result.model_dir.is_dir()
        if accelerator.is_main_process and not finished_before:
            save_final_model(session, position, result)
    if accelerator.is_main_process:
        report_skips(split, result)
    # every process waits for the main one's final save before the process group goes away:
    # a peer that tore it down mid-save could leave the main process hanging at exit
    accelerator.wait_for_everyone()
    # The DDP model goes first, while the process group lives on: freed after it, its reducer
    # held the group's last reference, and the group's destructor (joining its gloo threads
    # with the GIL held, one of them waiting for the GIL) hung the process at exit.
    del session
    accelerator.free_memory()
    accelerator.end_training()
    return result


def interrupted_outside_steps(out: Path, code: int) -> Interrupted:
    """What a run stopped before its steps began, or at once by a second signal, kept: the
    checkpoints on disk, if any."""
    kept = list_checkpoints(out)
    if not kept:
        return Interrupted(
            "stopped before any checkpoint was written: nothing of this run is kept",
            "run the same command again to start over",
            code,
        )
    step = checkpoint_step(kept[-1])
    return Interrupted(
        f"stopped; the last checkpoint in {out} is at step {step} (any later step is lost)",
        "run the same command with --resume to continue from it",
        code,
    )


def discard_run(out: Path) -> None:
    """Remove what an earlier fine-tuning run wrote into ``out`` (and nothing else)."""
    if not out.is_dir():
        return
    for entry in out.iterdir():
        if entry.name == LOCK_FILE or not _ours(entry.name):
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_budget(cfg: FinetuneConfig) -> None:
    """Refuse a compute budget that the model the run starts from has spent already."""
    budget = cfg.train.max_device_seconds
    if budget is None:
        return
    start = started_from(cfg.model.name_or_path)
    if cfg.train.scheduler != "constant":
        log.warning(
            "train.max_device_seconds may stop the run partway through its %s LR schedule, "
            "which spans train.max_steps / epochs; scheduler: constant avoids that",
            cfg.train.scheduler,
        )
    if start is not None and start.device_seconds >= budget:
        raise InvalidInput(
            f"train.max_device_seconds {budget:g} is spent before the first step: the model it "
            f"starts from cost {start.device_seconds:g} device-seconds; raise the budget above "
            "that"
        )


def report_skips(split: DatasetSplit, result: TrainResult) -> None:
    """Each item left out, once, on the console (the training record lists them)."""
    record = result.model_dir / TRAIN_INFO
    total = len(split.examples) + len(split.skipped)
    if result.skipped:
        log.warning("fine-tuning: %s (listed in %s)", skip_summary(result.skipped, total), record)
    if split.dropped:
        log.warning("fine-tuning: %s", dropped_summary(split.dropped))


def finished_run(cfg: FinetuneConfig) -> bool:
    """Whether ``cfg.train.output_dir`` holds the final model of a run with exactly ``cfg``'s
    settings, so that calling :func:`finetune` again would only repeat it."""
    out = Path(cfg.train.output_dir)
    record = read_settings(out)
    if not (out / FINAL).is_dir() or record is None or record.get("command") != COMMAND:
        return False
    return not differences(record.get("settings", {}), cfg.settings(), may_change=RESUMABLE_CHANGES)


# ------------------------------------------------------------------------------- the steps


def read_training_data(cfg: FinetuneConfig) -> DatasetSplit:
    """The dataset, refused when it leaves nothing to train on (before any folder is made)."""
    split = read_dataset(cfg.data.name, **cfg.data.options)
    require_usable(split, cfg.data.name, "to train on")
    return split


def claim_output_dir(
    out: Path, cfg: FinetuneConfig, resume: bool, accelerator: Accelerator
) -> bool:
    """Whether this run resumes the one in ``out``; refuses to mix two runs in one folder.

    A folder with checkpoints or a final model needs ``resume``, and then the settings it was
    started with (fields in ``RESUMABLE_CHANGES`` aside). A folder with nothing to resume is
    taken over: a tiny model's base built from other settings is rebuilt.
    """
    has_run = bool(list_checkpoints(out)) or (out / FINAL).is_dir()
    if out.is_dir() and not has_run and any(not _ours(entry.name) for entry in out.iterdir()):
        raise RunConflict(
            f"train.output_dir {out} holds other files, not a prsl fine-tuning run",
            "choose a new or empty folder",
        )
    if has_run:
        check_previous_run(out, cfg, resume, accelerator)
        return bool(list_checkpoints(out))
    if resume and accelerator.is_main_process:
        log.warning("no checkpoint in %s: starting fresh", out)
    record = read_settings(out)
    same = record is not None and not differences(record.get("settings", {}), cfg.settings())
    if not same and accelerator.is_main_process:
        shutil.rmtree(out / BASE, ignore_errors=True)
    accelerator.wait_for_everyone()
    return False


DISCARD = "pass --overwrite to discard it, or choose another train.output_dir"


def check_previous_run(
    out: Path, cfg: FinetuneConfig, resume: bool, accelerator: Accelerator
) -> None:
    """Refuse to go on with the run in ``out`` unless it is this one and ``resume`` asks to,
    advising what fits: ``--resume`` for this run interrupted, ``--overwrite`` (or another
    folder) for a finished run or one with other settings."""
    record = read_settings(out)
    checkpoints = list_checkpoints(out)
    finished = (out / FINAL).is_dir()
    if record is None:
        if not resume:
            raise RunConflict(
                f"{out} holds a fine-tuning run without a settings record (an older prsl wrote it)",
                "pass --resume to continue it unchecked, --overwrite to discard it, or choose "
                "another train.output_dir",
            )
        if accelerator.is_main_process:
            log.warning(
                "%s has no settings record (an older prsl wrote it): resuming unchecked", out
            )
        return
    check_settings(
        out, COMMAND, cfg.settings(), has_results=True, may_change=RESUMABLE_CHANGES, fix=DISCARD
    )
    if resume:
        return
    if finished:
        raise RunConflict(
            f"{out} holds a finished run with these settings (its model: {out / FINAL})",
            f"use that model, or {DISCARD.replace('discard it', 'train it again')}",
        )
    step = checkpoint_step(checkpoints[-1])
    raise RunConflict(
        f"{out} holds this run, interrupted at its checkpoint of step {step}",
        "pass --resume to continue it, --overwrite to start over, or choose another "
        "train.output_dir",
    )


def start_session(
    cfg: FinetuneConfig, out: Path, split: DatasetSplit, accelerator: Accelerator
) -> Session:
    """The model (prepared by accelerate), its samples, the optimiser and the LR schedule."""
    adapter = build_adapter(
        cfg.model,
        split,
        base_dir=out / BASE,
        accelerator=accelerator,
        seed=cfg.train.seed,
        choose_trainable=cfg.train.fare is None,
    )
    samples = training_samples(split, adapter.vqa_prompt)
    if cfg.data.pad_labels == "eos":  # the authors' recipe: padded positions count
        adapter.label_padding = LabelPadding(eos=True, length=cfg.data.pad_length)
    if accelerator.is_main_process:
        write_settings(out, COMMAND, cfg.settings())
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch(
        len(samples), cfg.train.batch_size, cfg.train.grad_accum
    )
    # FARE: the frozen original encoder, taken before the trainable parameters are collected
    reference = prepare_objective(cfg, adapter)
    params = [p for p in adapter.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, foreach=True
    )
    scheduler = get_scheduler(
        cfg.train.scheduler,
        optimizer,
        num_warmup_steps=cfg.train.warmup_steps,
        num_training_steps=total_steps,
    )
    wrapped, optimizer, scheduler = accelerator.prepare(adapter.model, optimizer, scheduler)
    adapter.set_forward_module(wrapped)
    objective = build_objective(cfg, accelerator, adapter, wrapped, params, reference)
    return Session(
        cfg,
        out,
        accelerator,
        adapter,
        wrapped,
        optimizer,
        scheduler,
        samples,
        total_steps,
        params,
        objective,
        started=started_from(cfg.model.name_or_path),
    )


def train_until_done(
    session: Session,
    position: Position,
    result: TrainResult,
    *,
    resumed: bool,
    progress: bool,
    stops: StopRequests,
) -> Position:
    """Optimizer steps from ``position`` to the last, logged, checkpointed every ``save_every``
    steps and at the end; returns the final position. A signal noted by ``stops`` ends the run
    after the step under way, at a checkpoint (:func:`stopped_by_signal`)."""
    cfg, accelerator = session.cfg, session.accelerator
    bar = progress_bar(progress and accelerator.is_main_process)
    logger = MetricLog(
        session.out,
        accelerator.is_main_process,
        cfg.train.tensorboard,
        position.step,
        bar if progress else None,
        unit=session.objective.unit,
    )
    saved = position.step if resumed else None
    session.wrapped.train()
    task = bar.add_task("fine-tuning", total=session.total_steps, completed=position.step)
    try:
        with bar:
            for epoch, step_in_epoch, group in remaining_steps(session, position):
                if position.step >= session.total_steps:
                    break
                if spent(session, position):  # a resumed run whose budget was spent before
                    budget_spent(session, position)
                    break
                started = time.perf_counter()
                stats = optimizer_step(session, group, position.step)
                if stats is None:  # not a step: nothing moved, and it is neither counted nor logged
                    position = replace(position, epoch=epoch, in_epoch=step_in_epoch + 1)
                    if accelerator.is_main_process:
                        log.warning("a batch held no readable image: no optimizer step was taken")
                    continue
                position, took = step_taken(session, position, epoch, step_in_epoch, started)
                stopping = spent(session, position)
                stats = log_step(session, result, logger, stats, position, epoch, took, stopping)
                bar.update(task, completed=position.step, description=logger.describe(stats))
                if cfg.train.save_every and position.step % cfg.train.save_every == 0:
                    save(session, position)
                    saved = position.step
                if stopping:
                    budget_spent(session, position)
                    bar.update(task, total=position.step)  # done: no time left to estimate
                    break
                signum = stops.signal()
                # the steps so far are saved as save_every would save them; after the last step
                # the run ends complete instead (the signal waits for the final model)
                if signum is not None and position.step < session.total_steps:
                    raise stopped_by_signal(session, position, saved, signum)
        if saved != position.step:
            save(session, position)
    finally:
        logger.close()
    return position


def remaining_steps(session: Session, position: Position) -> Iterator[tuple[int, int, list]]:
    """(epoch, step within it, the step's micro-batches) from ``position`` on."""
    train = session.cfg.train
    return step_groups(
        len(session.samples),
        train.batch_size,
        train.grad_accum,
        train.seed,
        position.epoch,
        position.in_epoch,
    )


def spent(session: Session, at: Position) -> bool:
    """Whether the model's device-seconds at ``at`` reach ``train.max_device_seconds``."""
    budget = session.cfg.train.max_device_seconds
    base = session.started.device_seconds if session.started else 0.0
    return budget is not None and base + at.device_seconds >= budget


def budget_spent(session: Session, at: Position) -> None:
    session.accelerator.print(
        f"stopping at step {at.step}: the budget of {session.cfg.train.max_device_seconds:g} "
        "device-seconds is spent (train.max_device_seconds)"
    )


def step_taken(
    session: Session, position: Position, epoch: int, step_in_epoch: int, started: float
) -> tuple[Position, float]:
    """The position after the step begun at ``started`` (``time.perf_counter``) in ``epoch``,
    and the seconds it took."""
    accelerator, world = session.accelerator, session.accelerator.num_processes
    took = time.perf_counter() - started
    if session.cfg.train.max_device_seconds is not None and world > 1:
        # one clock for all, so all stop together
        took = float(accelerator.reduce(torch.tensor(took, device=accelerator.device), "max"))
    after = Position(
        position.step + 1,
        epoch,
        step_in_epoch + 1,
        position.seconds + took,
        position.device_seconds + took * world,
    )
    return after, took


def log_step(
    session: Session,
    result: TrainResult,
    logger: MetricLog,
    stats: dict[str, Any],
    position: Position,
    epoch: int,
    took: float,
    stopping: bool,
) -> dict[str, Any]:
    """The step's stats with its position, learning rate and throughput (in the objective's
    unit), kept in the history and logged every ``log_every`` steps and at the last."""
    count = stats.pop("count")
    stats |= {
        "step": position.step,
        "epoch": epoch,
        "lr": session.scheduler.get_last_lr()[0],
        "tokens_per_s": count / took,
    }
    result.history.append(stats)
    last = position.step == session.total_steps or stopping
    if position.step % session.cfg.train.log_every == 0 or last:
        logger.write(stats, session.total_steps)
    return stats


def stopped_by_signal(
    session: Session, position: Position, saved: int | None, signum: int
) -> Interrupted:
    """Save the finished steps (unless the last checkpoint holds them) and say what was kept."""
    code, name = EXIT_CODES[signum], signal.Signals(signum).name
    step, total = position.step, session.total_steps
    if step == 0:
        return Interrupted(
            f"{name}: stopped before the first optimizer step: nothing was trained",
            "run the same command again",
            code,
        )
    if saved != step:
        try:
            save(session, position)
        except Exception as err:  # say what is lost, not the traceback of a failed save
            lost = step - (saved or 0)
            since = f"since the checkpoint of step {saved}" if saved else "of this run"
            fix = (
                "run the same command with --resume to continue from that checkpoint"
                if saved
                else "run the same command again to start over"
            )
            return Interrupted(
                f"{name}: stopped at step {step} of {total}, but its checkpoint could not be "
                f"written ({err}): the {lost} step(s) {since} are lost",
                fix,
                code,
            )
    return Interrupted(
        f"{name}: stopped at step {step} of {total}; a checkpoint of it is in {session.out}",
        "run the same command with --resume to continue",
        code,
    )


def _ours(name: str) -> bool:
    """Whether a file or folder of an output directory is one a fine-tuning run writes."""
    return (
        name in OWN_FILES
        or name == LOCK_FILE
        or bool(CHECKPOINT_PATTERN.match(name))
        or name.endswith(".partial")
    )


def make_accelerator(cfg: FinetuneConfig) -> Accelerator:
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        cpu=not torch.cuda.is_available(),
        # Each global micro-batch is split across the processes (below), so there is one
        # scheduler step per optimizer step. Without this, accelerate steps a prepared scheduler
        # once per process and the schedule runs num_processes times too fast.
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    world = accelerator.num_processes
    if cfg.train.batch_size % world:
        raise InvalidInput(
            f"train.batch_size={cfg.train.batch_size} must be divisible by the number of "
            f"processes ({world}): it is the global micro-batch, split across processes"
        )
    return accelerator


def restore(session: Session) -> Position:
    """Load the newest checkpoint into model, optimiser, scheduler and RNG."""
    newest = list_checkpoints(session.out)[-1]
    state = load_checkpoint(newest)
    model = session.accelerator.unwrap_model(session.wrapped)
    loaded = model.load_state_dict(state["model"], strict=False)
    if loaded.missing_keys or loaded.unexpected_keys:
        raise RunConflict(
            f"{newest} does not fit the configured model (missing {loaded.missing_keys[:5]}, "
            f"unexpected {loaded.unexpected_keys[:5]}); was it written by a run with another "
            "model?"
        )
    session.optimizer.load_state_dict(state["optimizer"])
    session.scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    # older checkpoints: no seconds (then none), no device-seconds (then as if on this many
    # processes)
    saved = {"seconds": 0.0} | state["position"]
    saved.setdefault("device_seconds", saved["seconds"] * session.accelerator.num_processes)
    position = Position(**saved)
    session.accelerator.print(f"resuming from {newest} (step {position.step})")
    return position


def optimizer_step(
    session: Session, group: list[list[int]], step: int = 0
) -> dict[str, Any] | None:
    """One optimizer step: the objective's forward and backward over the step's micro-batches,
    clip, step; returns the step's stats (:meth:`Stats.averaged`, over every process), or None
    when no image of the step could be read (then nothing is done)."""
    objective = session.objective
    stats = Stats()
    for index in range(len(group)):
        batch = micro_batch(session, group, index, step)
        if batch is None:  # nothing readable, and no other process waits for this one
            continue
        stats += objective.micro_step(batch)
    stats = objective.reduce(stats)
    if stats.count == 0:  # every image of the step unreadable, on every process (count is global)
        session.optimizer.zero_grad(set_to_none=True)
        return None
    if session.cfg.train.max_grad_norm:
        session.accelerator.clip_grad_norm_(session.params, session.cfg.train.max_grad_norm)
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    return stats.averaged(len(group))


def micro_batch(
    session: Session, group: list[list[int]], index: int, step: int
) -> MicroBatch | None:
    """This process's share of the step's micro-batch ``index``, its images read (an unreadable
    one is warned about once and left out); None when none could be read in a single process."""
    accelerator, adapter = session.accelerator, session.adapter
    rank, world = accelerator.process_index, accelerator.num_processes
    indices = group[index]
    mine = indices[rank::world] if world > 1 else indices
    batch = [session.samples[j] for j in mine]
    pixels, kept, skipped = load_batch(batch, adapter.pixel_size, adapter.prepare_images)
    for item in skipped:
        if session.skipped.setdefault(item.identity, item) is item:
            log.warning("skipping unreadable image %s: %s", item.path, item.reason)
    weight = 1.0
    if pixels is None:
        if world == 1:
            return None
        # Nothing readable here (or the micro-batch ran out before this process): every
        # process must still join the gradient all-reduce and the token count, or the others
        # wait forever. A forward on blank images, weighted 0, does that and changes nothing.
        kept = batch or [session.samples[indices[0]]]
        pixels = torch.zeros(len(kept), 3, *adapter.pixel_size)
        weight = 0.0
    return MicroBatch(
        pixels=pixels.to(accelerator.device),
        texts=[s.text for s in kept],
        prompts=batch_prompts(kept),
        weight=weight,
        step=step,
        index=index,
        of=len(group),
        first_item=mine[0] if mine else indices[0],
    )


def save(session: Session, position: Position) -> None:
    """A checkpoint of the run at ``position`` (main process; the others wait)."""
    accelerator = session.accelerator
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_checkpoint(
            session.out,
            position.step,
            model_state=accelerator.unwrap_model(session.wrapped).state_dict(),
            optimizer_state=session.optimizer.state_dict(),
            scheduler_state=session.scheduler.state_dict(),
            position=asdict(position),
        )
    accelerator.wait_for_everyone()


class StartedFrom(NamedTuple):
    """The prsl-trained model a run starts from: its name, device-seconds and optimizer steps
    in all."""

    name: str
    device_seconds: float
    steps: int


def started_from(name_or_path: str) -> StartedFrom | None:
    """The prsl-trained model a run starts from, if it is one with a compute record."""
    folder = Path(name_or_path)
    start = read_training_record(folder) if folder.is_dir() else None
    if start is None or start.compute is None:
        return None
    seconds, steps = start.compute.in_all(start.steps)
    name = folder.parent.name if folder.name == FINAL else folder.name
    return StartedFrom(name, seconds, steps)


def device_name(device: torch.device) -> str:
    """``cpu``, or the accelerator's model (``cuda: NVIDIA H200``): what a second means."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def swapped_tower(tower: str | None) -> dict[str, str]:
    """What the training record says of the vision tower swapped in: where it came from."""
    if tower is None:
        return {}
    return {
        "vision_tower": str(Path(tower).expanduser().resolve()),
        "vision_tower_fingerprint": tower_fingerprint(tower),
    }


def save_final_model(session: Session, position: Position, result: TrainResult) -> None:
    """The trained model in ``final/``, with the record of how it was trained beside it."""
    cfg = session.cfg
    session.adapter.set_forward_module(None)
    session.adapter.save(result.model_dir)
    accelerator = session.accelerator
    fare = cfg.train.fare
    own = position.device_seconds
    start = session.started
    record = TrainingRecord(
        loss=FARE if fare else cfg.loss.name,
        loss_params=fare.model_dump() if fare else cfg.loss.params.recorded(),
        steps=position.step,
        processes=accelerator.num_processes,
        compute=Compute(
            seconds=round(position.seconds, 3),
            device=device_name(accelerator.device),
            device_seconds=round(own, 3),
            total_device_seconds=round(own + start.device_seconds, 3) if start else None,
            total_steps=position.step + start.steps if start else None,
            started_from=start.name if start else None,
        ),
        adversarial=cfg.train.adversarial.model_dump() if cfg.train.adversarial else None,
        **swapped_tower(cfg.model.vision_tower),
        config=cfg.model_dump(),
        skipped=[s.as_dict() for s in result.skipped],
    )
    write_training_record(result.model_dir, record)
