"""The ``results.json`` format: its records, reading it back, merging files, grouping its runs.

``prsl evaluate`` writes it, ``prsl report`` reads it, the quickstart and sweeps merge several;
nothing here draws or formats. Every record is a pydantic model, written once and validated on
load (:func:`read_results`); its JSON form is :meth:`Results.as_json`::

    {"format": 2,
     "runs": [{"model", "loss", "loss_params", "task": "caption"|"vqa", "attack", "eps",
               "steps", "norm", "attack_params", "n_images", "reference": "clean"|"ground_truth",
               "clean": {metric: value}, "adversarial": {...}, "degradation": {...},
               "intervals": {"clean"|"adversarial"|"degradation": {metric: [low, high]}}?,
               "gradient_free": bool?, "transfer_of": white-box attack name?, "seed": int?,
               "cell": {grid key: value}?, "train_steps": int?, "train_device_seconds": float?,
               "train_device": str?, "train_started_from": str?,
               "train_adversarial": {"attack", "fraction", ...}?,
               "per_step": [{metric: value}, ...]?, "degenerate": why?, "unchanged": int?,
               "attack_reference"?, "targets"?, "ensemble": {"over", "runs", "chosen_by",
               "wins"}?, "target_success": {"match", "rate", "interval"?, "pairs", "succeeded",
               "already", "per_target"}?, "iterations": {"criterion", "keywords"?,
               "max_steps", "pairs", "succeeded", "censored", "already", "first_success",
               "quartiles"}?}],
     "comparisons": [{"model", "baseline", "loss", "baseline_loss", "task", "attack", "eps",
                      "norm", "reference", "metric", "n_items", "difference", "interval",
                      "p_value", "outcome": "less"|"more"|"none", "seed"?}]?,
     "gallery": [{"model", "loss", "attack", "eps", "norm"?, "key", "clean", "adversarial",
                  "images": {"clean": path, "adversarial": path}, "seed"?}],
     "meta": {"bootstrap": {"resamples", "level", "seed", "paired", "baseline"}?, ...}}

``format`` is :data:`FORMAT`; a file without it was written by an older prsl (format 1, the
same records unversioned), read when its records validate. ``steps`` is how many steps (or
queries) the attack really took and ``attack_params`` every parameter as it ran; gallery image
paths are relative to the file's folder. ``intervals`` are paired-bootstrap percentile intervals
over the items; a comparison's ``difference`` is the model's degradation minus the baseline's on
the same items (below 0: the model degrades less), with its interval and two-sided p-value;
``outcome`` is ``less`` or ``more`` when the interval excludes 0, ``none`` otherwise. ``seed`` is
the training seed of a run (and of the comparisons made within it) when the results of several
seeds are merged; ``cell`` the sweep cell a run comes from. ``train_steps`` and
``train_device_seconds`` are what the model's training cost in all: with the prsl-trained model
it started from, named in ``train_started_from``, when there is one (FARE on a CE model).
``degenerate`` is set on every run of a model whose clean outputs say nothing (see
:func:`degenerate_reason`), and says why. ``unchanged`` is how many of the run's items kept their
clean output under attack (:func:`same_output`): an attack that changes almost nothing measures
almost nothing. ``ensemble`` (a cell that ran its attack once per reference or target and kept
each item's lowest-scoring run), ``target_success`` and ``iterations`` are described on their
records (:class:`Ensemble`, :class:`TargetSuccess`, :class:`IterationsToSuccess`); a run carries
them on both of its references' rows. ``meta`` is open: what the report reads of it is typed
(:class:`Meta`), the rest kept as written.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from prsl.core.errors import InvalidInput, MissingInput
from prsl.core.pixels import levels_text

RESULTS = "results.json"
FORMAT = 2
"""The version :meth:`Results.as_json` writes; a file without one is format 1 (see the module
docstring)."""
OUTCOMES = ("less", "more", "none")
"""A comparison's outcome: the model degrades less than the baseline, more, or no detectable
difference (the interval holds 0)."""
TASKS = ("caption", "vqa")
REFERENCES = ("clean", "ground_truth")
WORST_CASE = "worst-case"
"""The attack name of the per-item worst case over an evaluation grid's attacks at one ε (an
evaluation's ``worst_case``); no attack may be labelled so."""

HEADLINE = {"caption": ["CIDEr", "BERTScore", "BLEU-4"], "vqa": ["VQA-acc"]}


def _number(value: Any) -> int | float:
    """A finite int or float, kept as given (a bool is no number; a numpy float becomes one)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PydanticCustomError("not_finite", "is not a finite number")
    return value if isinstance(value, int) else float(value)


def _rule(ok: bool, message: str) -> None:
    """Refuse a value that has the right type but breaks the format, saying how."""
    if not ok:
        raise PydanticCustomError("results_rule", message)


Number = Annotated[int | float, PlainValidator(_number)]
Scores = dict[str, Number]
"""Metric name -> value."""
Bounds = list[Number]
"""An interval, ``[low, high]``."""


def eps_text(eps: float, norm: str = "linf") -> str:
    """ε the way budgets are quoted: grey levels for L∞ (``8/255``, :func:`levels_text`), the
    norm itself for L2."""
    if norm == "l2":
        return f"{eps:.3g} (L2)"
    return levels_text(eps)


class Record(BaseModel):
    """One record of ``results.json``: every field known and typed, not changed once made."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    def as_json(self) -> dict[str, Any]:
        """The record as ``results.json`` holds it: its absent (None) fields left out, a None
        within a field (a parameter left unset) kept."""
        return {k: v for k, v in self.model_dump(mode="json").items() if v is not None}

    def updated(self, **changes: Any) -> Any:
        """A new record with ``changes`` applied, validated like any other."""
        return type(self).model_validate(self.model_dump() | changes)


class AdversarialTraining(BaseModel):
    """How the model was trained adversarially (``train.adversarial`` as it ran): the attack by
    name, its other settings kept as written."""

    model_config = ConfigDict(extra="allow", frozen=True, ser_json_inf_nan="constants")

    attack: StrictStr


class Ensemble(Record):
    """A cell that ran its attack several times per item (``each_ground_truth`` or targets)
    and kept, per item, the run whose output scored lowest against the ground truth."""

    over: Literal["each_ground_truth", "targets"]
    runs: StrictInt
    """Attack runs made, over every item (items may have different numbers of references)."""
    chosen_by: StrictStr
    """The metric, against the ground truth, the lowest-scoring run was kept by."""
    wins: dict[str, StrictInt]
    """How many items kept each run: ``reference 1``, ``reference 2``... or each target."""


class TargetSuccess(Record):
    """A targeted attack's success over its (item, target) pairs: the target in the output
    (``contains``, case-insensitive) or, for VQA, equal to it once both are normalised
    (``exact``). ``interval``: paired bootstrap over the items, an item's pairs kept together.
    ``already``: of the successful pairs, those whose clean output held the target too (no
    attack needed)."""

    match: Literal["contains", "exact"]
    rate: Number
    interval: Bounds | None = None
    pairs: StrictInt
    succeeded: StrictInt
    already: StrictInt
    per_target: dict[str, Number]


class IterationsToSuccess(Record):
    """Steps until an attack first succeeds, over its (item, run) pairs, from the outputs
    recorded after every step: the output ``changed`` from the clean one, the ``keywords``
    the clean output held all ``vanished``, or the ``target_appeared``.

    Pairs that never succeed within ``max_steps`` are ``censored``, not counted as
    ``max_steps``; pairs already successful on the clean image (a target it already says,
    keywords it never said) are ``already`` and left out. ``quartiles`` are the 25th, 50th and
    75th percentiles in steps, censored pairs counted as later than any step: the smallest step
    by which that share of the pairs had succeeded, None when it never was."""

    criterion: Literal["changed", "keywords_vanished", "target_appeared"]
    keywords: list[StrictStr] | None = None
    max_steps: StrictInt
    pairs: StrictInt
    succeeded: StrictInt
    censored: StrictInt
    already: StrictInt
    first_success: list[StrictInt]
    """How many pairs first succeed after step 1, 2, ... ``max_steps``."""
    quartiles: list[StrictInt | None]

    @property
    def share(self) -> float | None:
        """The share of the pairs that succeeded within ``max_steps``."""
        return self.succeeded / self.pairs if self.pairs else None


class RunRecord(Record):
    """One run: a model under one attack at one ε, scored against one reference."""

    model: StrictStr
    loss: StrictStr
    loss_params: dict[str, Any]
    train_steps: StrictInt | None = None
    train_device_seconds: Number | None = None
    train_device: StrictStr | None = None
    train_started_from: StrictStr | None = None
    train_adversarial: AdversarialTraining | None = None
    vision_tower: StrictStr | None = None
    """The vision tower swapped into the model for this evaluation (its resolved path); None:
    the model's own."""
    vision_tower_fingerprint: StrictStr | None = None
    """That tower's files' fingerprint (name, size, modification time of each)."""
    task: StrictStr
    attack: StrictStr
    eps: Number
    steps: StrictInt
    norm: StrictStr | None = None
    attack_params: dict[str, Any] | None = None
    n_images: StrictInt
    reference: StrictStr
    gradient_free: StrictBool | None = None
    transfer_of: StrictStr | None = None
    clean: Scores
    adversarial: Scores
    degradation: Scores
    per_step: list[Scores] | None = None
    degenerate: StrictStr | None = None
    unchanged: StrictInt | None = None
    intervals: dict[str, dict[str, Bounds]] | None = None
    cell: dict[str, Any] | None = None
    seed: StrictInt | None = None
    attack_reference: StrictStr | None = None
    """What the untargeted attack aimed at when its spec said (else ``meta.attack_target``)."""
    targets: list[StrictStr] | None = None
    ensemble: Ensemble | None = None
    target_success: TargetSuccess | None = None
    iterations: IterationsToSuccess | None = None
    cascade_skipped: StrictInt | None = None
    """Items of this attack the cascade skipped (``worst_case.stop_below``): they were already
    at or below the threshold; ``n_images`` counts only those it ran on, which every score of
    the row is over."""

    @field_validator("task")
    @classmethod
    def _task(cls, task: str) -> str:
        _rule(task in TASKS, "must be 'caption' or 'vqa'")
        return task

    @field_validator("reference")
    @classmethod
    def _reference(cls, reference: str) -> str:
        _rule(reference in REFERENCES, "must be 'clean' or 'ground_truth'")
        return reference

    @property
    def label(self) -> str:
        """How the model is shown: ``name (loss)``."""
        return f"{self.model} ({self.loss})"

    @property
    def seeded_label(self) -> str:
        """:attr:`label` with the training seed, when the run records one: what tells one row of
        a table from another when results of several seeds are merged."""
        return self.label + (f" seed {self.seed}" if self.seed is not None else "")

    @property
    def eps_text(self) -> str:
        return eps_text(self.eps, self.norm or "linf")

    @property
    def identity(self) -> tuple:
        """What names one row of a report's tables (:data:`RUN_IDENTITY`)."""
        return tuple(getattr(self, name) for name in RUN_IDENTITY)

    def interval(self, part: str, metric: str) -> list[float] | None:
        """The interval of ``part`` (clean, adversarial, degradation) on ``metric``, if any."""
        return (self.intervals or {}).get(part, {}).get(metric)


RUN_IDENTITY = ("model", "task", "attack", "eps", "reference", "seed")
"""What names one row of a report's tables: two runs with these equal cannot be shown apart.
``seed`` (the training seed, when results of several are merged) may be absent."""


class Comparison(Record):
    """A model against the baseline in one cell (task, attack, ε, reference) on one metric."""

    model: StrictStr
    baseline: StrictStr
    loss: StrictStr
    baseline_loss: StrictStr
    task: StrictStr
    attack: StrictStr
    eps: Number
    norm: StrictStr | None = None
    reference: StrictStr
    metric: StrictStr
    n_items: StrictInt
    difference: Number
    interval: Bounds
    p_value: Number
    outcome: StrictStr
    seed: StrictInt | None = None

    @field_validator("outcome")
    @classmethod
    def _outcome(cls, outcome: str) -> str:
        _rule(outcome in OUTCOMES, f"must be one of {', '.join(OUTCOMES)}")
        return outcome

    @field_validator("interval")
    @classmethod
    def _interval(cls, bounds: list[float]) -> list[float]:
        _rule(len(bounds) == 2 and bounds[0] <= bounds[1], "must be [low, high] with low <= high")
        return bounds

    @property
    def pair(self) -> str:
        """``model (loss) vs baseline (loss)``."""
        return f"{self.model} ({self.loss}) vs {self.baseline} ({self.baseline_loss})"


class GalleryImages(Record):
    """A gallery pair's image files: relative to the results file on disk, absolute once read."""

    clean: StrictStr
    adversarial: StrictStr


class GalleryEntry(Record):
    """One image under one attack and ε: a model's clean and adversarial output and images."""

    model: StrictStr
    loss: StrictStr
    attack: StrictStr
    eps: Number
    norm: StrictStr | None = None
    key: StrictStr
    clean: StrictStr
    adversarial: StrictStr
    images: GalleryImages
    seed: StrictInt | None = None

    @property
    def eps_text(self) -> str:
        return eps_text(self.eps, self.norm or "linf")


class _Open(BaseModel):
    """A part of ``meta``: what the report reads typed, any other field kept as written."""

    model_config = ConfigDict(extra="allow", frozen=True, ser_json_inf_nan="constants")

    def as_json(self) -> dict[str, Any]:
        """As given: every field that was set, None included."""
        return self.model_dump(mode="json", exclude_unset=True)


class Bootstrap(_Open):
    """How the intervals and comparisons were drawn."""

    resamples: int | None = None
    level: float | None = None
    seed: int | None = None
    paired: bool | None = None
    baseline: str | None = None


class Items(_Open):
    """How many items the reader looked at, and how many of them it skipped."""

    looked_at: int = 0
    skipped: int = 0


class SkippedItem(_Open):
    """An item left out, and why."""

    path: str
    reason: str
    key: str | None = None


class Meta(_Open):
    """``meta``: how the results were made. Open: evaluations, sweeps and the quickstart each
    add their own fields; the ones the report reads are typed."""

    prsl_version: str | None = None
    bootstrap: Bootstrap | None = None
    vqa_protocol: str | None = None
    bertscore_model: str | None = None
    seed: int | None = None
    items: Items | None = None
    skipped: list[SkippedItem] | None = None
    sources: dict[str, Meta] | None = None


class Results(BaseModel):
    """A whole ``results.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[2] = FORMAT
    runs: list[RunRecord]
    comparisons: list[Comparison] = []
    gallery: list[GalleryEntry] = []
    meta: Meta

    def as_json(self) -> dict[str, Any]:
        """What ``results.json`` holds."""
        return {
            "format": self.format,
            "runs": [run.as_json() for run in self.runs],
            "comparisons": [comparison.as_json() for comparison in self.comparisons],
            "gallery": [row.as_json() for row in self.gallery],
            "meta": self.meta.as_json(),
        }

    @property
    def level(self) -> float | None:
        """The intervals' coverage, when the results have intervals."""
        return self.meta.bootstrap.level if self.meta.bootstrap is not None else None

    def with_gallery_under(self, folder: Path) -> Results:
        """The gallery's image paths (relative to ``folder``) made absolute."""
        gallery = [
            row.updated(images={k: str(folder / v) for k, v in row.images.model_dump().items()})
            for row in self.gallery
        ]
        return self.model_copy(update={"gallery": gallery})


_FIELDS = {
    name
    for kind in (
        RunRecord,
        Ensemble,
        TargetSuccess,
        IterationsToSuccess,
        Comparison,
        GalleryEntry,
        GalleryImages,
        Bootstrap,
        Items,
        SkippedItem,
        Meta,
        Results,
    )
    for name in kind.model_fields
}


def _where(loc: Sequence[int | str]) -> str:
    """``runs[0].clean['CIDEr']``: fields after a dot, list places and dict keys in brackets."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in _FIELDS:
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _problem(err: ValidationError, within: tuple[int | str, ...] = ()) -> str:
    """The first problem pydantic found, in one short clause (its place in the file: ``within``
    and then where in the record); how many more there are."""
    errors = err.errors()
    first = errors[0]
    loc = (*within, *first["loc"])
    where, kind = _where(loc), first["type"]
    if kind == "missing":
        said = f"{_where(loc[:-1]) or 'the file'} lacks field {loc[-1]!r}"
    elif kind == "extra_forbidden":
        parent = _where(loc[:-1])
        said = f"{parent + '.' if parent else ''}{loc[-1]} is not a field of prsl results"
    elif kind in ("not_finite", "results_rule"):
        said = f"{where} {first['msg']}"
    else:
        said = f"{where} has the wrong type ({first['msg'].split(' [')[0]})"
    more = len(errors) - 1
    return said + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


R = TypeVar("R", bound=BaseModel)


def records(kind: type[R], given: Iterable[R | Mapping[str, Any]], what: str) -> list[R]:
    """``given`` as ``kind`` records: records kept, their JSON form (dicts) validated."""
    found = []
    for i, item in enumerate(given):
        try:
            found.append(item if isinstance(item, kind) else kind.model_validate(item))
        except ValidationError as err:
            raise InvalidInput(_problem(err, (what, i))) from None
    return found


def validate_results(data: Any, source: str = "results") -> Results:
    """The results ``data`` holds (the JSON form), or InvalidInput in one line naming ``source``
    and the first field that breaks the format (module docstring)."""
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise InvalidInput(f"{source}: expected an object with a 'runs' list (prsl results.json)")
    version = data.get("format")
    if version is not None and version != FORMAT:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT
        raise InvalidInput(
            f"{source}: written by a newer prsl (results format {version}); this one reads "
            f"formats 1 to {FORMAT}: upgrade prsl to read it"
            if newer
            else f"{source}: unknown results format {version!r} (prsl writes 1 to {FORMAT})"
        )
    if not isinstance(data.get("meta"), dict):
        raise InvalidInput(f"{source}: missing the 'meta' object")
    try:
        return Results.model_validate(data)
    except ValidationError as err:
        if version is None:
            raise InvalidInput(
                f"{source}: not readable as results written by prsl before format {FORMAT} (it "
                f"has no 'format' field): {_problem(err)}; if prsl wrote it, rerun `prsl "
                "evaluate` on its output_dir to rewrite it"
            ) from None
        raise InvalidInput(f"{source}: {_problem(err)}") from None


def results_file(path: Path) -> Path:
    """The results file ``path`` names: the file itself, or a run folder's ``results.json``."""
    path = Path(path)
    if path.is_dir():
        if (path / RESULTS).is_file():
            return path / RESULTS
        raise MissingInput(
            f"{path} is a folder without a {RESULTS}: pass a {RESULTS} file, or the output_dir "
            "of `prsl evaluate` or `prsl sweep`"
        )
    if not path.is_file():
        raise MissingInput(f"results file {path} does not exist")
    return path


def read_results(path: Path) -> Results:
    """One results file (or a run folder's ``results.json``), validated; its gallery's image
    paths made absolute."""
    path = results_file(path)
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not a prsl results file (not text)") from None
    except json.JSONDecodeError as err:
        raise InvalidInput(f"{path} is not a prsl results file (not valid JSON: {err})") from None
    return validate_results(data, str(path)).with_gallery_under(path.parent)


def load_results(paths: list[Path]) -> Results:
    """Runs and comparisons from every file (validated), their gallery rows, the first meta.

    Two files holding the same (model, task, attack, ε, reference) are refused: one table cell
    would silently show only one of them.
    """
    runs: list[RunRecord] = []
    comparisons: list[Comparison] = []
    gallery: list[GalleryEntry] = []
    metas: list[Meta] = []
    seen: dict[tuple, Path] = {}
    for path in map(results_file, paths):
        results = read_results(path)
        for run in results.runs:
            if seen.setdefault(run.identity, path) != path:
                raise InvalidInput(
                    f"{seen[run.identity]} and {path} both hold model {run.model!r} under "
                    f"{run.attack} at ε={run.eps_text} ({run.task}, reference {run.reference}):"
                    " report them separately, or evaluate the models into one output_dir"
                )
        runs += results.runs
        comparisons += results.comparisons
        gallery += results.gallery
        metas.append(results.meta)
    first = next((meta for meta in metas if meta.as_json()), Meta())
    return Results(runs=runs, comparisons=comparisons, gallery=gallery, meta=first)


def write_results(path: Path, results: Results) -> None:
    """Write atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(results.as_json(), indent=2) + "\n")
    os.replace(partial, path)


def merge_results(
    files: list[Path],
    target: Path,
    meta: dict[str, Any],
    annotate: Mapping[Path, dict[str, Any]] | None = None,
    comparisons: Iterable[Comparison | Mapping[str, Any]] = (),
) -> Results:
    """One results file holding every run and gallery row of several, their metas kept.

    ``annotate[file]`` holds fields set on each run and gallery row of that file (a sweep names
    each cell's model after the cell); gallery paths are rebased onto ``target``'s folder.
    ``comparisons`` are added to the files' own (a sweep's comparisons between its cells).
    """
    runs: list[RunRecord] = []
    gallery: list[GalleryEntry] = []
    compared = records(Comparison, comparisons, "comparisons")
    sources: dict[str, Meta] = {}
    for path in files:
        results = read_results(path)
        extra = (annotate or {}).get(path, {})
        runs += [run.updated(**extra) for run in results.runs]
        seed = {"seed": extra["seed"]} if "seed" in extra else {}
        compared += [comparison.updated(**seed) for comparison in results.comparisons]
        kept = {k: v for k, v in extra.items() if k in GalleryEntry.model_fields}
        for row in results.gallery:
            images = {
                k: os.path.relpath(v, target.parent) for k, v in row.images.model_dump().items()
            }
            gallery.append(row.updated(**kept, images=images))
        sources[os.path.relpath(path.parent, target.parent)] = results.meta
    skipped = [s for source in sources.values() for s in source.skipped or []]
    looked_at = sum(source.items.looked_at for source in sources.values() if source.items)
    items = {"looked_at": looked_at, "skipped": len(skipped)}
    merged_meta = {"items": items, "skipped": skipped, **_shared(sources), **meta}
    merged_meta["sources"] = sources
    merged = Results(
        runs=runs, comparisons=compared, gallery=gallery, meta=Meta.model_validate(merged_meta)
    )
    write_results(target, merged)
    return merged


SHARED_META = ("bootstrap", "bertscore_model", "vqa_protocol", "attack_target")
"""Meta fields a merged file carries at its top when every source that has them agrees (the
bootstrap's baseline and seed, which differ per evaluation, aside)."""


def _shared(sources: Mapping[str, Meta]) -> dict[str, Any]:
    def comparable(value: Any) -> Any:
        if isinstance(value, Bootstrap):
            return value.model_dump(exclude_unset=True, exclude={"baseline", "seed"})
        return value

    shared = {}
    for key in SHARED_META:
        values = [
            comparable(v) for m in sources.values() if (v := getattr(m, key, None)) is not None
        ]
        if values and all(v == values[0] for v in values):
            shared[key] = values[0]
    return shared


DEGENERATE_SHARE = 0.9
"""A model is degenerate when this share of its clean outputs or more are one text (or empty)."""
DEGENERATE_MIN_ITEMS = 5
"""Fewer items than this judge no model degenerate: two equal outputs of two prove little, and
CIDEr is 0 on a single item whatever it says (its document frequencies leave no weight)."""


def degenerate_reason(clean_outputs: Sequence[str]) -> str | None:
    """Why a model's clean outputs leave an attack nothing to measure, or None.

    Degenerate means, on the items evaluated: at least :data:`DEGENERATE_SHARE` of the clean
    outputs are empty, or are one and the same text (a collapsed model answering "a green a
    green" to every image). :func:`floor_reason` adds the other sign, read from the scores.
    """
    texts = [" ".join(text.split()) for text in clean_outputs]
    if len(texts) < DEGENERATE_MIN_ITEMS:
        return None
    text, count = Counter(texts).most_common(1)[0]
    if count < DEGENERATE_SHARE * len(texts):
        return None
    if not text:
        return f"{count} of {len(texts)} clean outputs are empty"
    shown = text if len(text) <= 40 else text[:39] + "…"
    return f'{count} of {len(texts)} clean outputs are the same text ("{shown}")'


def floor_reason(run: RunRecord) -> str | None:
    """For a run scored against the model's own clean output: its clean headline score at the
    metric's floor (0), which no working model reaches against itself (CIDEr is 0 when every
    output shares every n-gram, one text for every image)."""
    if run.reference != "clean" or run.n_images < DEGENERATE_MIN_ITEMS:
        return None
    metric = next((m for m in HEADLINE[run.task] if m in run.clean), None)
    if metric is None or run.clean[metric] > 0:
        return None
    return f"its clean {metric} against its own output is {run.clean[metric]:.4g}"


def same_output(clean: str, adversarial: str) -> bool:
    """Whether an attack left an item's output as it was: the two texts equal up to whitespace
    (VQA answers are compared as the protocol normalises them, by the caller)."""
    return " ".join(clean.split()) == " ".join(adversarial.split())


def degenerate_models(runs: Iterable[RunRecord]) -> dict[str, str]:
    """Each degenerate model (:attr:`RunRecord.seeded_label`) with why: the ``degenerate`` its
    runs carry, or for results written before that field, the floor score of its runs."""
    found: dict[str, str] = {}
    for run in runs:
        reason = run.degenerate or floor_reason(run)
        if reason:
            found.setdefault(run.seeded_label, reason)
    return found


def degenerate_text(label: str, reason: str) -> str:
    """The warning a degenerate model gets, in the log and first in its report."""
    return (
        f"{label} is degenerate ({reason}): an attack has nothing to move, so its scores under "
        "attack and its comparisons say nothing about robustness; check its training"
    )


def grouped(runs: Iterable[RunRecord]) -> dict[tuple, list[RunRecord]]:
    """Runs by (task, reference, attack), in a stable order."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[(run.task, run.reference, run.attack)].append(run)
    return dict(sorted(groups.items()))
