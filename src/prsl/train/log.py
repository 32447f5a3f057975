"""What a fine-tuning run shows and records: the progress bar, console lines, CSV and TensorBoard.

Main process only. A resumed run rewrites the CSV without the steps logged after its last
checkpoint, and TensorBoard purges them, so every step appears once.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Literal

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from prsl.core.errors import MissingDependency

log = logging.getLogger(__name__)

LOG_FILE = "train_log.csv"
TENSORBOARD = "tensorboard"


Unit = Literal["tokens", "images"]
"""What the objective's throughput counts (``tokens_per_s`` in the logs, either way)."""


def describe(stats: dict, unit: Unit = "tokens") -> str:
    """A step's stats in one line, its throughput in the objective's ``unit``."""
    if unit == "images":  # FARE: the loss is the embedding distance, no CE or regulariser
        return f"FARE distance {stats['loss']:.4f} {stats['tokens_per_s']:,.0f} images/s"
    return (
        f"loss {stats['loss']:.4f} (ce {stats['ce']:.4f}, reg {stats['regularizer']:.4g}) "
        f"{stats['tokens_per_s']:,.0f} tok/s"
    )


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise MissingDependency(
            "train.tensorboard=true needs the tensorboard package: pip install tensorboard"
        ) from None


class MetricLog:
    """CSV (always) and TensorBoard (on request) logs of the training curve, main process only.

    A resumed run first drops what the interrupted one logged after its last checkpoint, so each
    step appears once, with the values of the run that the weights come from.
    """

    FIELDS = ("step", "epoch", "loss", "ce", "regularizer", "lr", "tokens_per_s")

    def __init__(
        self,
        out: Path,
        enabled: bool,
        tensorboard: bool,
        start_step: int,
        console: Progress | None = None,
        unit: Unit = "tokens",
    ) -> None:
        self.enabled = enabled
        self.unit = unit
        self.console = console.console if console is not None else None
        self.writer = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        path = out / LOG_FILE
        kept = []
        if start_step and path.exists():
            with path.open(newline="") as handle:
                kept = [
                    row
                    for row in csv.DictReader(handle)
                    if (row.get("step") or "").isdigit() and int(row["step"]) <= start_step
                ]
        self.handle = path.open("w", newline="")
        self.csv = csv.DictWriter(self.handle, fieldnames=self.FIELDS, extrasaction="ignore")
        self.csv.writeheader()
        self.csv.writerows(kept)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the events an interrupted run wrote after its last checkpoint.
            purge = start_step + 1 if start_step else None
            self.writer = SummaryWriter(str(out / TENSORBOARD), purge_step=purge)

    def write(self, stats: dict, total_steps: int) -> None:
        if not self.enabled:
            return
        self.csv.writerow(stats)
        self.handle.flush()
        line = f"step {stats['step']}/{total_steps} {self.describe(stats)} lr {stats['lr']:.3g}"
        if self.console is not None:
            self.console.print(line, highlight=False, markup=False)
        else:
            log.info(line)
        if self.writer is not None:
            for key in ("loss", "ce", "regularizer", "lr", "tokens_per_s"):
                self.writer.add_scalar(f"train/{key}", stats[key], stats["step"])

    def describe(self, stats: dict) -> str:
        return describe(stats, self.unit)

    def close(self) -> None:
        if self.enabled:
            self.handle.close()
            if self.writer is not None:
                self.writer.close()
