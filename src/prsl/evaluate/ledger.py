"""``predictions.jsonl``: one line per (model, attack, ε, item), appended as the run goes.

The file is the evaluation's ledger. A rerun reads it (tolerating a last line torn by a kill),
skips every cell already in it and appends the rest, so an interrupted run resumes where it
stopped; scores are computed from it alone. Rows are keyed by :class:`RunKey` and the item key,
where the model is its *location* (resolved directory or hub id), never a folder name that two
models could share.

Under ``accelerate launch`` each process appends to a shard of its own
(``predictions.jsonl`` for the first, ``predictions.<rank>.jsonl`` for the others; see
:mod:`prsl.evaluate.shards`) and every process reads them all, so a run resumed with another
number of processes skips what any of them finished.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from prsl.data import Sample
from prsl.evaluate.grid import Cell
from prsl.evaluate.shards import ShardFiles, drop_torn_tail

PREDICTION_SHARDS = ShardFiles("predictions")
PREDICTIONS = PREDICTION_SHARDS.first


def shard_path(out: Path, rank: int) -> Path:
    """The predictions file process ``rank`` appends to."""
    return PREDICTION_SHARDS.path(out, rank)


def shard_paths(out: Path) -> list[Path]:
    """Every predictions shard in ``out``, the first process's first."""
    return PREDICTION_SHARDS.paths(out)


@dataclass(frozen=True, order=True)
class RunKey:
    """One (model, attack, ε) cell of the grid; ``model`` is the model's location."""

    model: str
    attack: str
    eps: float


@dataclass
class AttackRun:
    """One of several runs of a cell's attack on an item (targets, ``each_ground_truth``): the
    text it aimed at and what it produced."""

    aim: str
    adversarial: str
    linf: float
    per_step: list[str] | None = None
    gallery: dict[str, str] | None = None


@dataclass
class Prediction:
    """One row: the clean and adversarial output of one model for one item under one cell.

    A cell that runs its attack several times per item keeps every run in ``runs``; its
    ``adversarial``, ``linf``, ``per_step`` and ``gallery`` are then those of the first run
    until the results choose the run with the lowest score (``chosen``, never written; see
    :mod:`prsl.evaluate.ensemble`)."""

    model: str  # display name when written
    model_path: str  # location: what the row is keyed by
    loss: str
    attack: str
    eps: float
    steps: int
    key: str
    question: str | None
    references: list[str]
    clean: str
    adversarial: str
    linf: float
    per_step: list[str] | None = None
    gallery: dict[str, str] | None = None
    runs: list[AttackRun] | None = None
    chosen: int | None = None
    skipped_after: str | None = None
    """Set on a row the cascade skipped (``worst_case.stop_below``): the attack after which the
    item's score was at or below the threshold. Such a row holds the clean output and no
    adversarial one (``adversarial`` is empty and is never scored)."""

    @property
    def attacked(self) -> bool:
        """The cell ran on the item (the row is not a cascade skip)."""
        return self.skipped_after is None

    @property
    def run_key(self) -> RunKey:
        return RunKey(self.model_path, self.attack, self.eps)

    def as_json(self) -> str:
        row = {k: v for k, v in asdict(self).items() if v is not None or k == "question"}
        if self.runs is not None:
            row["runs"] = [{k: v for k, v in run.items() if v is not None} for run in row["runs"]]
        return json.dumps(row)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Prediction | None:
        """A row of the file, or None for one this version cannot key (an older format)."""
        if "model_path" not in row:
            return None
        names = cls.__dataclass_fields__
        fields = {k: v for k, v in row.items() if k in names}
        if fields.get("runs") is not None:
            fields["runs"] = [AttackRun(**run) for run in fields["runs"]]
        return cls(**fields)


@dataclass
class Ledger:
    """What ``predictions.jsonl`` holds, and the handle new rows are appended through.

    Besides the finished cells it counts the gallery pairs of each (model, attack, ε), so a
    rerun tops them up without listing the gallery folder.
    """

    path: Path
    rows: list[Prediction] = field(default_factory=list)
    done: dict[tuple[RunKey, str], Prediction] = field(default_factory=dict)
    pairs: Counter = field(default_factory=Counter)
    per_model: Counter = field(default_factory=Counter)
    before_first_write: Callable[[], None] | None = None
    """Called once, before the first row is written (records the run's settings)."""
    _sink: IO[str] | None = None

    @classmethod
    def read(cls, out: Path, rank: int = 0) -> Ledger:
        """Every shard's rows; appends go to process ``rank``'s shard."""
        ledger = cls(shard_path(out, rank))
        for row in PREDICTION_SHARDS.rows(out):
            prediction = Prediction.from_row(row)
            if prediction is not None:
                ledger._note(prediction)
        return ledger

    def _note(self, row: Prediction) -> None:
        if (row.run_key, row.key) in self.done:  # a row twice (two runs wrote one folder):
            return  # the first counts, so the results count each item once
        self.rows.append(row)
        self.done[(row.run_key, row.key)] = row
        self.per_model[row.model_path] += 1
        if row.gallery is not None:
            self.pairs[row.run_key] += 1

    def count(self, model: str) -> int:
        """Rows of one model (a location) in the ledger."""
        return self.per_model[model]

    def finished(self, key: RunKey, item: str) -> bool:
        return (key, item) in self.done

    def row(self, key: RunKey, item: str) -> Prediction | None:
        """The row of a cell and item, when the ledger holds one."""
        return self.done.get((key, item))

    def skips(self) -> Counter:
        """Items the cascade skipped, per (attack, ε) cell name pair, over every model."""
        return Counter((r.attack, r.eps) for r in self.rows if not r.attacked)

    def unfinished(self, model: str, cells: list[Cell], samples: Iterable[Sample]) -> list[Cell]:
        """The cells some of ``samples`` still lack for ``model`` (a location)."""
        items = [s.key for s in samples]
        return [
            c
            for c in cells
            if not all(self.finished(RunKey(model, c.name, c.eps), i) for i in items)
        ]

    def wants_pair(self, key: RunKey, limit: int) -> bool:
        return self.pairs[key] < limit

    @contextmanager
    def appending(self) -> Iterator[Ledger]:
        """Let the block append; the file (and its folder) is opened at the first row, so a run
        that stops before producing one leaves nothing behind."""
        try:
            yield self
        finally:
            if self._sink is not None:
                self._sink.close()
                self._sink = None

    def append(self, rows: list[Prediction]) -> None:
        if not rows:
            return
        if self._sink is None:
            if self.before_first_write is not None:
                self.before_first_write()
                self.before_first_write = None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            drop_torn_tail(self.path)
            self._sink = self.path.open("a")
        for row in rows:
            self._sink.write(row.as_json() + "\n")
            self._note(row)
        self._sink.flush()

    def selected(self, models: set[str], cells: list[Cell], items: set[str]) -> list[Prediction]:
        """The rows of these models, cells and items: what the results are computed from."""
        wanted = {(c.name, c.eps) for c in cells}
        return [
            r
            for r in self.rows
            if r.model_path in models and (r.attack, r.eps) in wanted and r.key in items
        ]


class ShardWatch:
    """Counts the rows the other processes append to their shards, for one global progress bar
    (a line still being written is counted once it is whole)."""

    def __init__(self, out: Path, rank: int) -> None:
        self.out, self.own = out, shard_path(out, rank)
        # rows already there are in every process's ledger; count what comes after
        self.offsets: dict[Path, int] = {path: path.stat().st_size for path in shard_paths(out)}
        self.rows: Counter = Counter()

    def update(self) -> Counter:
        """Rows per model location seen so far in the other shards."""
        for path in shard_paths(self.out):
            if path == self.own:
                continue
            start = self.offsets.get(path, 0)
            with path.open("rb") as handle:
                handle.seek(start)
                data = handle.read()
            whole = data[: data.rfind(b"\n") + 1]
            self.offsets[path] = start + len(whole)
            for line in whole.splitlines():
                try:
                    self.rows[json.loads(line).get("model_path")] += 1
                except json.JSONDecodeError:
                    continue
        return self.rows
