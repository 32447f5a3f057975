"""Fine-tuning any supported VLM with any registered loss, from one CPU to many GPUs.

Built on ``accelerate``: the same code runs on CPU, one GPU, or under ``accelerate launch``
(DDP; FSDP / DeepSpeed through accelerate's own config). Data order is a pure function of
(seed, epoch), checkpoints hold model, optimiser, scheduler, RNG and data position, so
``resume=True`` continues exactly where a run stopped and reaches the same weights.

Loss scaling across processes: every process computes its token CE as a sum divided by the
number of counted tokens in the *global* micro-batch (gathered), times the number of processes,
so DDP's gradient averaging yields exactly the single-process mean. The PRSL/DRSL regulariser is a
sum over positions (the authors' form); each process sums over its own positions and the
regulariser's log-softmax spans that process's positions, as it spans one micro-batch under
gradient accumulation.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import get_scheduler

from prsl.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint, set_rng_state
from prsl.config import FinetuneConfig
from prsl.data import read_dataset
from prsl.data.types import Skipped
from prsl.losses import get_loss
from prsl.models import build_adapter
from prsl.samples import Sample, load_batch, training_samples

log = logging.getLogger(__name__)

TRAIN_INFO = "prsl_train.json"


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path
    steps: int
    history: list[dict] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def check_output_dir(output_dir: Path, resume: bool) -> None:
    """Refuse to mix runs: an output directory with checkpoints needs ``resume``."""
    if list_checkpoints(output_dir) and not resume:
        raise FileExistsError(
            f"{output_dir} already holds checkpoints of another run; pass --resume to continue "
            "it, or choose a new output directory"
        )


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch, a pure function of (seed, epoch) so resume can replay it."""
    gen = torch.Generator().manual_seed(seed * 1000003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def step_groups(n: int, micro: int, accum: int, seed: int, epoch: int, skip: int):
    """Yield (epoch, index in epoch, micro-batches of one optimizer step) forever from a position.

    ``skip`` optimizer steps of ``epoch`` are passed over: they were done before a resume.
    """
    while True:
        order = epoch_order(n, seed, epoch)
        batches = [order[i : i + micro] for i in range(0, n, micro)]
        groups = [batches[i : i + accum] for i in range(0, len(batches), accum)]
        for index in range(skip, len(groups)):
            yield epoch, index, groups[index]
        epoch, skip = epoch + 1, 0


def finetune(cfg: FinetuneConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Run the configured fine-tuning; returns where the final model was written."""
    out = Path(cfg.train.output_dir)
    check_output_dir(out, resume)
    criterion = get_loss(cfg.loss.name, **cfg.loss.params)
    if cfg.train.tensorboard:
        _require_tensorboard()
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available()
    )
    world = accelerator.num_processes
    if cfg.train.batch_size % world:
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} must be divisible by the number of "
            f"processes ({world}): it is the global micro-batch, split across processes"
        )
    set_seed(cfg.train.seed)
    split = read_dataset(cfg.data.name, **cfg.data.options)
    adapter = build_adapter(
        cfg.model, split, base_dir=out / "base", accelerator=accelerator, seed=cfg.train.seed
    )
    samples = training_samples(split, adapter.vqa_prompt)
    if not samples:
        raise ValueError(f"dataset {cfg.data.name!r} gave no training samples")

    per_epoch = math.ceil(len(samples) / (cfg.train.batch_size * cfg.train.grad_accum))
    total_steps = cfg.train.max_steps or per_epoch * cfg.train.epochs
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

    step, start_epoch, start_in_epoch = 0, 0, 0
    position = {"step": 0, "epoch": 0, "in_epoch": 0}
    if resume and (ckpts := list_checkpoints(out)):
        state = load_checkpoint(ckpts[-1])
        accelerator.unwrap_model(wrapped).load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        position = state["position"]
        step, start_epoch, start_in_epoch = (position[k] for k in ("step", "epoch", "in_epoch"))
        accelerator.print(f"resuming from {ckpts[-1]} (step {step})")

    logger = _MetricLog(out, accelerator.is_main_process, cfg.train.tensorboard, resume)
    result = TrainResult(out, out / "final", total_steps, skipped=list(split.skipped))
    wrapped.train()
    bar = _progress(progress and accelerator.is_main_process)
    task = bar.add_task("fine-tuning", total=total_steps, completed=step)
    with bar:
        for epoch, step_in_epoch, group in step_groups(
            len(samples),
            cfg.train.batch_size,
            cfg.train.grad_accum,
            cfg.train.seed,
            start_epoch,
            start_in_epoch,
        ):
            if step >= total_steps:
                break
            started = time.perf_counter()
            stats = _optimizer_step(
                cfg, accelerator, adapter, wrapped, criterion, samples, group, result
            )
            if cfg.train.max_grad_norm:
                accelerator.clip_grad_norm_(params, cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            stats |= {
                "step": step,
                "epoch": epoch,
                "lr": scheduler.get_last_lr()[0],
                "tokens_per_s": stats.pop("tokens") / (time.perf_counter() - started),
            }
            result.history.append(stats)
            if step % max(cfg.train.log_every, 1) == 0 or step == total_steps:
                logger.write(stats)
            bar.update(task, completed=step, description=f"loss {stats['loss']:.4f}")
            position = {"step": step, "epoch": epoch, "in_epoch": step_in_epoch + 1}
            if cfg.train.save_every and step % cfg.train.save_every == 0:
                _save(accelerator, wrapped, optimizer, scheduler, out, position)
    _save(accelerator, wrapped, optimizer, scheduler, out, position)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        adapter.set_forward_module(None)
        adapter.save(result.model_dir)
        info = {
            "loss": cfg.loss.name,
            "loss_params": criterion.params,
            "steps": step,
            "config": cfg.model_dump(),
            "skipped": [s.__dict__ for s in result.skipped],
        }
        (result.model_dir / TRAIN_INFO).write_text(json.dumps(info, indent=2))
    logger.close()
    accelerator.end_training()
    return result


def _optimizer_step(cfg, accelerator, adapter, wrapped, criterion, samples, group, result) -> dict:
    """Forward/backward over the micro-batches of one optimizer step; returns averaged stats."""
    totals = {"loss": 0.0, "ce": 0.0, "regularizer": 0.0, "tokens": 0}
    rank, world = accelerator.process_index, accelerator.num_processes
    for i, indices in enumerate(group):
        mine = indices[rank::world] if world > 1 else indices
        batch: list[Sample] = [samples[j] for j in mine]
        pixels, kept, skipped = load_batch(batch, adapter.pixel_size)
        result.skipped.extend(skipped)
        sync = nullcontext() if i == len(group) - 1 else accelerator.no_sync(wrapped)
        with sync, accelerator.autocast():
            if pixels is None:
                continue
            prompts = [s.prompt for s in kept] if kept[0].prompt is not None else None
            logits, labels = adapter.logits_and_labels(
                pixels.to(accelerator.device), [s.text for s in kept], prompts
            )
            terms = criterion.terms(logits, labels)
            local = (labels != -100).sum()
            counted = accelerator.reduce(local.detach().clone(), reduction="sum").clamp(min=1)
            ce_part = terms.ce * local / counted * world
            loss = (ce_part + (terms.loss - terms.ce) * world) / len(group)
            accelerator.backward(loss)
        totals["loss"] += terms.loss.item() / len(group)
        totals["ce"] += terms.ce.item() / len(group)
        totals["regularizer"] += terms.regularizer.item() / len(group)
        totals["tokens"] += int(local) * world
    return totals


def _save(accelerator, wrapped, optimizer, scheduler, out, position: dict) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_checkpoint(
            out,
            position["step"],
            model_state=accelerator.unwrap_model(wrapped).state_dict(),
            optimizer_state=optimizer.state_dict(),
            scheduler_state=scheduler.state_dict(),
            position=position,
        )
    accelerator.wait_for_everyone()


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def _require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "train.tensorboard=true needs the tensorboard package: pip install tensorboard"
        ) from None


class _MetricLog:
    """CSV (always) and TensorBoard (on request) logs of the training curve, main process only."""

    FIELDS = ("step", "epoch", "loss", "ce", "regularizer", "lr", "tokens_per_s")

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, resume: bool) -> None:
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        path = out / "train_log.csv"
        fresh = not (resume and path.exists())
        self.handle = path.open("w" if fresh else "a", newline="")
        self.csv = csv.DictWriter(self.handle, fieldnames=self.FIELDS, extrasaction="ignore")
        if fresh:
            self.csv.writeheader()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))

    def write(self, stats: dict) -> None:
        if not self.enabled:
            return
        self.csv.writerow(stats)
        self.handle.flush()
        log.info("step %(step)d loss %(loss).4f ce %(ce).4f reg %(regularizer).4f", stats)
        if self.writer is not None:
            for key in ("loss", "ce", "regularizer", "lr", "tokens_per_s"):
                self.writer.add_scalar(f"train/{key}", stats[key], stats["step"])

    def close(self) -> None:
        if self.enabled:
            self.handle.close()
            if self.writer is not None:
                self.writer.close()
