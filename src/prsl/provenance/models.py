"""What identifies a model in a run, and what fine-tuning wrote beside it.

A model is named on the command line by a directory or a hub id. Results key it by its
*location* (the resolved directory, or the hub id) and show it under a *display name*: the
shortest tail of its path that no other model of the run shares (``run/final`` shows as
``run``; ``a/run/final`` and ``b/run/final`` as ``a/run`` and ``b/run``), so two folders with the
same name can never be mixed up. Its *fingerprint* changes when its files are rewritten, so a
model retrained in place is not taken for the one evaluated before.

A model may come with a separately saved vision tower swapped in (``vision_tower``): it is then
another model, located at both paths and shown as ``llava+fare.pt``, and the tower's files are
fingerprinted like a model's, so a tower rewritten in place is not taken for the old one.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from prsl.core.errors import InvalidInput
from prsl.core.paths import ADAPTER_INFO

TRAIN_INFO = "prsl_train.json"
PREPROCESSING = (ADAPTER_INFO, "preprocessor_config.json", "processor_config.json")
"""Files beside the weights that change what the model is given: prsl's adapter options
(prompts, input size or canvas) and the processor's settings."""
"""Written by ``prsl finetune`` into the saved model: the loss, its parameters, the run."""
PRETRAINED = "pretrained"
"""The loss of a model prsl did not fine-tune."""
FINAL = "final"
"""The folder ``prsl finetune`` saves the finished model in, inside its output directory."""
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


class Compute(BaseModel):
    """What a fine-tune cost: wall seconds of its optimizer steps (over every resumed part),
    the device they ran on, and seconds × processes (device-seconds, to compare runs)."""

    seconds: float
    device: str
    device_seconds: float
    total_device_seconds: float | None = None
    """With the compute of the prsl-trained model this run started from (FARE on a CE model,
    say): what the model cost in all."""
    total_steps: int | None = None
    """With the optimizer steps of that model: the steps in all."""
    started_from: str | None = None
    """The name of that model (its folder), when there is one."""

    def in_all(self, steps: int) -> tuple[float, int]:
        """(device-seconds, optimizer steps) in all, given this run's own steps."""
        seconds = (
            self.device_seconds if self.total_device_seconds is None else self.total_device_seconds
        )
        return seconds, steps if self.total_steps is None else self.total_steps


class TrainingRecord(BaseModel):
    """``prsl_train.json``: how a saved model was fine-tuned."""

    model_config = ConfigDict(extra="allow")

    loss: str
    loss_params: dict[str, Any]
    steps: int
    processes: int = 1
    compute: Compute | None = None
    """None in records written before prsl measured it."""
    adversarial: dict[str, Any] | None = None
    """The adversarial fine-tuning setting (``train.adversarial``), as it ran; None: none."""
    vision_tower: str | None = None
    """The separately saved vision tower the run swapped into its model before training (the
    saved model holds it), as a resolved path; None: the model's own."""
    vision_tower_fingerprint: str | None = None
    """That tower's files' fingerprint when the run started."""
    config: dict[str, Any] = {}
    skipped: list[dict[str, Any]] = []


def write_training_record(model_dir: Path, record: TrainingRecord) -> None:
    (Path(model_dir) / TRAIN_INFO).write_text(record.model_dump_json(indent=2) + "\n")


def read_training_record(model_dir: str | Path) -> TrainingRecord | None:
    """The record beside a saved model, or None for a model prsl did not fine-tune."""
    path = Path(model_dir) / TRAIN_INFO
    if not path.is_file():
        return None
    try:
        return TrainingRecord.model_validate_json(path.read_text())
    except ValueError as err:
        raise InvalidInput(f"{path} is not a prsl training record ({err})") from None


@dataclass(frozen=True)
class ModelRef:
    """A model of a run: as given, where it is, how it is shown, what it was trained with."""

    given: str
    location: str
    name: str
    fingerprint: str
    loss: str = PRETRAINED
    loss_params: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    """What its fine-tune cost, from the record: ``train_steps`` and ``train_device_seconds``
    (in all: with the model it started from, named in ``train_started_from``), ``train_device``;
    empty for a model prsl did not fine-tune (or an older record)."""
    vision_tower: str | None = None
    """The resolved path of the vision tower swapped into the model; None: its own."""
    vision_tower_fingerprint: str | None = None
    """That tower's :func:`tower_fingerprint`."""

    @property
    def tag(self) -> str:
        """Six hex digits of the location, for file names display names alone could share."""
        return hashlib.sha1(self.location.encode()).hexdigest()[:6]


def _location(given: str) -> tuple[str, Path | None]:
    path = Path(given).expanduser()
    if path.exists():
        return str(path.resolve()), path.resolve()
    return given, None


def fingerprint(location: str, directory: Path | None) -> str:
    """A short hash of a model directory's config, training record, preprocessing settings and
    weight files (name, size, modification time): it changes whenever the model is saved again,
    or its input size, canvas or processor is edited in place. ``hub:<id>`` for a hub id."""
    if directory is None:
        return f"hub:{location}"
    digest = hashlib.sha1()
    for name in ("config.json", TRAIN_INFO, *PREPROCESSING):
        file = directory / name
        if file.is_file():
            digest.update(name.encode() + file.read_bytes())
    for pattern in _WEIGHTS:
        for file in sorted(directory.glob(pattern)):
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


MISSING_TOWER = "missing"
"""The fingerprint of a tower path that holds nothing (a settings record still compares)."""


def tower_fingerprint(path: str | Path) -> str:
    """A short hash of a vision tower's files (a folder's config and weights, or one state-dict
    file: name, size, modification time): it changes whenever the tower is saved again."""
    tower = Path(path).expanduser()
    if tower.is_dir():
        return fingerprint(str(tower), tower)
    if not tower.is_file():
        return MISSING_TOWER
    stat = tower.stat()
    entry = f"{tower.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    return hashlib.sha1(entry).hexdigest()[:16]


TOWER_JOIN = " with vision tower "
"""Between a model's location and its swapped-in tower's, in the location of the pair."""


def _tails(location: str) -> list[str]:
    """Path components, last first, with the ``final`` folder of a fine-tuning run left out."""
    parts = [p for p in Path(location).parts if p not in ("/", "")]
    if len(parts) > 1 and parts[-1] == FINAL:
        parts = parts[:-1]
    return parts


def display_names(locations: list[str]) -> list[str]:
    """For each location the shortest path tail no other location shares."""
    tails = [_tails(loc) for loc in locations]
    depth = [1] * len(locations)
    while True:
        names = ["/".join(t[-d:]) for t, d in zip(tails, depth, strict=True)]
        counts = Counter(names)
        clash = [i for i, n in enumerate(names) if counts[n] > 1]
        growing = [i for i in clash if depth[i] < len(tails[i])]
        if not growing:  # tails exhausted (``run`` and ``run/final``): show whole locations
            return [locations[i] if i in clash else n for i, n in enumerate(names)]
        for i in growing:
            depth[i] += 1


def _shown(locations: list[str]) -> dict[str, str]:
    """Each distinct location's display name."""
    distinct = list(dict.fromkeys(locations))
    return dict(zip(distinct, display_names(distinct), strict=True))


def model_refs(given: list[str], towers: list[str | None] | None = None) -> list[ModelRef]:
    """The models of a run, each with a unique display name; the same model twice is an error.
    ``towers``: per model, a vision tower swapped into it (None: its own)."""
    towers = towers or [None] * len(given)
    located = [_location(g) for g in given]
    tower_at = [_location(t)[0] if t is not None else None for t in towers]
    locations = [
        loc if tower is None else loc + TOWER_JOIN + tower
        for (loc, _), tower in zip(located, tower_at, strict=True)
    ]
    repeated = [loc for loc, n in Counter(locations).items() if n > 1]
    if repeated:
        raise InvalidInput(f"model {repeated[0]} is given twice: name each model once")
    names = _shown([loc for loc, _ in located])
    tower_names = _shown([t for t in tower_at if t is not None])
    refs = []
    for text, (base, directory), location, tower in zip(
        given, located, locations, tower_at, strict=True
    ):
        record = read_training_record(directory) if directory is not None else None
        refs.append(
            ModelRef(
                text,
                location,
                names[base] if tower is None else f"{names[base]}+{tower_names[tower]}",
                fingerprint(base, directory),
                record.loss if record else PRETRAINED,
                record.loss_params if record else {},
                training_cost(record),
                tower,
                tower_fingerprint(tower) if tower is not None else None,
            )
        )
    return refs


def training_cost(record: TrainingRecord | None) -> dict[str, Any]:
    """The fields a results run gets from a model's training record, to compare models at equal
    steps and at equal compute."""
    if record is None:
        return {}
    cost: dict[str, Any] = {"train_steps": record.steps}
    if record.compute is not None:
        seconds, steps = record.compute.in_all(record.steps)
        cost |= {"train_steps": steps, "train_device_seconds": seconds}
        cost["train_device"] = record.compute.device
        if record.compute.started_from is not None:
            cost["train_started_from"] = record.compute.started_from
    if record.adversarial is not None:
        cost["train_adversarial"] = record.adversarial
    return cost


def model_identity(ref: ModelRef) -> dict[str, Any]:
    """What a settings record keeps of a model: enough to see that it changed (the swapped-in
    tower's fingerprint too, when there is one), and the revision of its pixel pipeline where
    prsl changed how its images are preprocessed (a SmolVLM folder evaluated before image
    splitting followed its processor is then refused, not resumed)."""
    from prsl.models.registry import pixel_revision  # loads transformers: only when recording

    identity = {"fingerprint": ref.fingerprint, "loss": ref.loss, "loss_params": ref.loss_params}
    if ref.vision_tower is not None:
        identity["vision_tower_fingerprint"] = ref.vision_tower_fingerprint
    revision = pixel_revision(ref.location if Path(ref.location).is_dir() else ref.given)
    return identity if revision is None else {**identity, "pixels": revision}
