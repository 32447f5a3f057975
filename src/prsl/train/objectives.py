"""What an optimizer step minimises: one objective per kind of fine-tuning.

The loop (:func:`prsl.train.loop.optimizer_step`) reads each micro-batch of a step, hands it to
the run's objective, and steps the optimizer once the step's micro-batches are done. The
objective owns the rest: the forward and backward of each micro-batch, its scaling across
processes, what the step's statistics add up to and how they (and, where DDP does not, the
gradients) are reduced over the processes, and the unit its throughput counts.

- :class:`TokenLoss`: the configured loss on the target tokens (CE, PRSL, ...). Every process
  computes its CE as a sum divided by the number of counted tokens in the *global* micro-batch
  (gathered), times the number of processes, so DDP's gradient averaging yields exactly the
  single-process mean; the step averages its micro-batches. Label-smoothed CE is a mean as a
  whole and is scaled the same way. The PRSL/DRSL regulariser is a sum over positions (the
  authors' form); each process sums over its own positions and the regulariser's log-softmax
  spans that process's positions, as it spans one micro-batch under gradient accumulation.
- :class:`AdversarialTokenLoss`: the same loss on a micro-batch whose images are partly replaced
  by adversarial ones first (:mod:`prsl.train.adversarial`).
- :class:`FareObjective`: FARE's embedding distance on the vision encoder alone
  (:mod:`prsl.train.fare`), averaged over the step's images on every process, its gradients
  summed over the processes by the objective itself (the encoder runs outside DDP).

Statistics: each process sums its part of (loss, CE, regulariser) over its micro-batches; the
reduction sums them over processes, and the step divides by its micro-batches. ``count`` is the
step's tokens (or images) over every process: 0 when no image of the step could be read.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from accelerate import Accelerator
from torch import nn

from prsl.losses import TermsLoss, counted_tokens, token_share
from prsl.models import HFAdapter
from prsl.train.adversarial import adversarial_mix, mixing_seed
from prsl.train.config import AdversarialConfig, FareConfig, FinetuneConfig
from prsl.train.fare import fare_distances, fare_seed, prepare_fare, sum_gradients
from prsl.train.log import Unit


@dataclass
class MicroBatch:
    """One process's share of one micro-batch of a step, its images on the device."""

    pixels: torch.Tensor
    texts: list[str]
    prompts: list[str] | None
    weight: float
    """1, or 0 for blank stand-in images (a process with nothing readable still takes part in
    the step's collective operations, weighted 0: it changes nothing)."""
    step: int
    """The optimizer steps done before this one (the random draws follow it)."""
    index: int
    """Which micro-batch of the step this is."""
    of: int
    """How many micro-batches the step has."""
    first_item: int
    """The index of the first sample of this share (of the micro-batch, when it has none)."""

    @property
    def last(self) -> bool:
        return self.index == self.of - 1


@dataclass
class Stats:
    """What micro-batches add up to: this process's part of (loss, CE, regulariser) summed
    over them, and the tokens (or images) they held on every process."""

    parts: torch.Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    count: int = 0

    def __iadd__(self, other: Stats) -> Stats:
        self.parts += other.parts
        self.count += other.count
        return self

    def averaged(self, micro_batches: int) -> dict[str, float | int]:
        """The step's statistics: each part averaged over its micro-batches; ``count``."""
        loss, ce, regularizer = (self.parts / micro_batches).tolist()
        return {"loss": loss, "ce": ce, "regularizer": regularizer, "count": self.count}


class Objective:
    """The base of the objectives (see the module docstring)."""

    unit: ClassVar[Unit] = "tokens"
    """What ``Stats.count`` and the logged throughput count."""

    def __init__(self, accelerator: Accelerator, adapter: HFAdapter) -> None:
        self.accelerator = accelerator
        self.adapter = adapter

    def micro_step(self, batch: MicroBatch) -> Stats:
        """Forward and backward of one micro-batch: its gradient accumulates, scaled for the
        step's mean; returns its statistics."""
        raise NotImplementedError

    def reduce(self, stats: Stats) -> Stats:
        """The step's statistics summed over the processes (after its last micro-batch)."""
        if self.accelerator.num_processes == 1:
            return stats
        device = self.accelerator.device
        parts = self.accelerator.reduce(stats.parts.to(device), reduction="sum").cpu()
        return Stats(parts, stats.count)


class TokenLoss(Objective):
    """The configured loss on the target tokens (see the module docstring)."""

    def __init__(
        self,
        accelerator: Accelerator,
        adapter: HFAdapter,
        wrapped: nn.Module,
        criterion: TermsLoss,
    ) -> None:
        super().__init__(accelerator, adapter)
        self.wrapped = wrapped
        self.criterion = criterion

    def inputs(self, batch: MicroBatch) -> torch.Tensor:
        """The images the loss trains on."""
        return batch.pixels

    def micro_step(self, batch: MicroBatch) -> Stats:
        accelerator, world = self.accelerator, self.accelerator.num_processes
        pixels = self.inputs(batch)
        # DDP all-reduces the gradients once, after the step's last micro-batch
        sync = nullcontext() if batch.last else accelerator.no_sync(self.wrapped)
        with sync, accelerator.autocast():
            logits, labels = self.adapter.logits_and_labels(pixels, batch.texts, batch.prompts)
            terms = self.criterion.terms(logits, labels)
            local = counted_tokens(labels) * int(batch.weight)
            everywhere = accelerator.reduce(local.detach().clone(), reduction="sum")
            scaled = self.criterion.rescaled(terms, token_share(local, everywhere))
            # DDP averages gradients over processes: scale up by their number.
            accelerator.backward(scaled.loss * (batch.weight * world / batch.of))
        parts = torch.stack(list(scaled)).detach().double().cpu() * batch.weight
        return Stats(parts, int(everywhere))


class AdversarialTokenLoss(TokenLoss):
    """The token loss on a micro-batch whose images are partly adversarial, crafted against
    the model as it is now (:func:`prsl.train.adversarial.adversarial_mix`)."""

    def __init__(
        self,
        accelerator: Accelerator,
        adapter: HFAdapter,
        wrapped: nn.Module,
        criterion: TermsLoss,
        cfg: AdversarialConfig,
        seed: int,
    ) -> None:
        super().__init__(accelerator, adapter, wrapped, criterion)
        self.cfg = cfg
        self.seed = seed

    def inputs(self, batch: MicroBatch) -> torch.Tensor:
        if not batch.weight:  # blank stand-in images: nothing to attack
            return batch.pixels
        rank = self.accelerator.process_index
        seed = mixing_seed(self.seed, batch.step, batch.index, rank)
        with self.accelerator.autocast():
            pixels, _ = adversarial_mix(
                self.adapter, batch.pixels, batch.texts, batch.prompts, self.cfg, seed
            )
        return pixels


class FareObjective(Objective):
    """FARE's embedding distance on the vision encoder (see the module docstring)."""

    unit: ClassVar[Unit] = "images"

    def __init__(
        self,
        accelerator: Accelerator,
        adapter: HFAdapter,
        reference: nn.Module,
        cfg: FareConfig,
        seed: int,
        params: list[nn.Parameter],
    ) -> None:
        super().__init__(accelerator, adapter)
        self.reference = reference
        self.cfg = cfg
        self.seed = seed
        self.params = params

    def micro_step(self, batch: MicroBatch) -> Stats:
        accelerator = self.accelerator
        seed = fare_seed(self.seed, batch.step, batch.first_item)
        draws = torch.Generator(device=batch.pixels.device).manual_seed(seed)
        with accelerator.autocast():
            distances = fare_distances(self.adapter, self.reference, batch.pixels, self.cfg, draws)
        local = torch.tensor(len(batch.texts) * batch.weight, device=accelerator.device)
        world = accelerator.num_processes
        everywhere = accelerator.reduce(local.clone(), reduction="sum") if world > 1 else local
        share = distances.sum() * batch.weight / everywhere  # of the mean over every process
        accelerator.backward(share / batch.of)
        parts = torch.tensor([share.item(), 0.0, 0.0], dtype=torch.float64)
        return Stats(parts, int(everywhere))  # images: FARE has no target tokens

    def reduce(self, stats: Stats) -> Stats:
        reduced = super().reduce(stats)
        if self.accelerator.num_processes > 1:  # the encoder ran outside DDP: sum its gradients
            sum_gradients(self.params)
        return reduced


def prepare_objective(cfg: FinetuneConfig, adapter: HFAdapter) -> nn.Module | None:
    """Before the optimiser is made: FARE trains the vision encoder only, towards a frozen
    copy of it taken here (before any checkpoint is restored: the original, also when
    resuming); returns that copy, or None for the other objectives."""
    return prepare_fare(adapter) if cfg.train.fare is not None else None


def build_objective(
    cfg: FinetuneConfig,
    accelerator: Accelerator,
    adapter: HFAdapter,
    wrapped: nn.Module,
    params: list[nn.Parameter],
    reference: nn.Module | None,
) -> Objective:
    """The run's objective, once the model is prepared (``reference``: from
    :func:`prepare_objective`)."""
    train = cfg.train
    if train.fare is not None:
        assert reference is not None, "prepare_objective makes FARE's reference"
        return FareObjective(accelerator, adapter, reference, train.fare, train.seed, params)
    criterion = TermsLoss(cfg.loss.params)
    if train.adversarial is not None:
        return AdversarialTokenLoss(
            accelerator, adapter, wrapped, criterion, train.adversarial, train.seed
        )
    return TokenLoss(accelerator, adapter, wrapped, criterion)
