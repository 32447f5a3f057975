"""Fine-tuning any supported VLM with any registered loss, from one CPU to many GPUs.

Built on ``accelerate``: the same code runs on CPU, one GPU, or under ``accelerate launch``
(DDP; FSDP / DeepSpeed through accelerate's own config). Data order is a pure function of
(seed, epoch), checkpoints hold model, optimiser, scheduler, RNG and data position, so
``resume=True`` continues exactly where a run stopped and reaches the same weights.

Loss scaling across processes: every process computes its token CE as a sum divided by the
number of counted tokens in the *global* micro-batch (gathered), times the number of processes,
so DDP's gradient averaging yields exactly the single-process mean. Label-smoothed CE is a mean
as a whole and is scaled the same way. The PRSL/DRSL regulariser is a sum over positions (the
authors' form); each process sums over its own positions and the regulariser's log-softmax spans
that process's positions, as it spans one micro-batch under gradient accumulation.

Logs (main process): a progress bar with the loss, CE, regulariser and throughput; a console line
every ``log_every`` steps; ``train_log.csv``; TensorBoard scalars with ``train.tensorboard``.
Logged values are averaged over processes; throughput counts the target tokens of all of them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from transformers import get_scheduler

from prsl.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint, set_rng_state
from prsl.config import FinetuneConfig
from prsl.data import read_dataset
from prsl.data.types import Skipped
from prsl.initial_model import TINY, build_adapter
from prsl.losses import get_loss
from prsl.models.registry import adapter_class
from prsl.models.ved import VisionEncoderDecoderAdapter
from prsl.samples import Sample, load_batch, training_samples
from prsl.train_log import MetricLog, describe, progress_bar, require_tensorboard

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


def check_model_config(cfg: FinetuneConfig) -> None:
    """Fail on a model family that does not exist (or does not fit the tiny model) up front."""
    family = cfg.model.family
    if family is None:
        return
    adapter_class(family)
    if cfg.model.name_or_path == TINY and family != VisionEncoderDecoderAdapter.family:
        raise ValueError(
            f"model.family={family!r} does not fit model.name_or_path='tiny', which is a "
            f"{VisionEncoderDecoderAdapter.family!r} model; leave family unset"
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
    check_model_config(cfg)
    if cfg.train.tensorboard:
        require_tensorboard()
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
        loaded = accelerator.unwrap_model(wrapped).load_state_dict(state["model"], strict=False)
        if loaded.missing_keys or loaded.unexpected_keys:
            raise ValueError(
                f"{ckpts[-1]} does not fit the configured model (missing "
                f"{loaded.missing_keys[:5]}, unexpected {loaded.unexpected_keys[:5]}); was it "
                "written by a run with another model?"
            )
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        position = state["position"]
        step, start_epoch, start_in_epoch = (position[k] for k in ("step", "epoch", "in_epoch"))
        accelerator.print(f"resuming from {ckpts[-1]} (step {step})")

    bar = progress_bar(progress and accelerator.is_main_process)
    logger = MetricLog(
        out, accelerator.is_main_process, cfg.train.tensorboard, step, bar if progress else None
    )
    result = TrainResult(out, out / "final", total_steps, skipped=list(split.skipped))
    saved = step if resume and step else None
    wrapped.train()
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
                logger.write(stats, total_steps)
            bar.update(task, completed=step, description=describe(stats))
            position = {"step": step, "epoch": epoch, "in_epoch": step_in_epoch + 1}
            if cfg.train.save_every and step % cfg.train.save_every == 0:
                _save(accelerator, wrapped, optimizer, scheduler, out, position)
                saved = step
    if saved != step:
        _save(accelerator, wrapped, optimizer, scheduler, out, position)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        adapter.set_forward_module(None)
        adapter.save(result.model_dir)
        info = {
            "loss": cfg.loss.name,
            "loss_params": criterion.params,
            "steps": step,
            "processes": accelerator.num_processes,
            "config": cfg.model_dump(),
            "skipped": [s.__dict__ for s in result.skipped],
        }
        (result.model_dir / TRAIN_INFO).write_text(json.dumps(info, indent=2))
    logger.close()
    accelerator.end_training()
    return result


def _optimizer_step(cfg, accelerator, adapter, wrapped, criterion, samples, group, result) -> dict:
    """Forward/backward over the micro-batches of one optimizer step; returns averaged stats.

    The stats are those of the objective the gradient follows, over all processes: CE (and a
    mean-type loss) over every counted token, the regulariser summed over the processes.
    """
    parts = torch.zeros(3, dtype=torch.float64)  # this process's part of loss, CE, regulariser
    tokens = 0
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
            everywhere = accelerator.reduce(local.detach().clone(), reduction="sum")
            share = local / everywhere.clamp(min=1)  # of the micro-batch's counted tokens
            loss, ce = criterion.rescaled(terms, share), terms.ce * share
            regularizer = terms.regularizer
            if criterion.mean_over_tokens:  # label smoothing's part is a per-token mean too
                regularizer = regularizer * share
            # DDP averages gradients over processes: scale up by their number.
            accelerator.backward(loss * world / len(group))
        parts += torch.stack([loss, ce, regularizer]).detach().double().cpu()
        tokens += int(everywhere)
    if world > 1:
        parts = accelerator.reduce(parts.to(accelerator.device), reduction="sum").cpu()
    loss, ce, regularizer = (parts / len(group)).tolist()
    return {"loss": loss, "ce": ce, "regularizer": regularizer, "tokens": tokens}


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
