"""The ``results.json`` format: its schema, reading it back, merging files, grouping its runs.

``prsl evaluate`` writes it, ``prsl report`` reads it, the quickstart and sweeps merge several;
nothing here draws or formats. The format::

    {"runs": [{"model", "loss", "loss_params", "task": "caption"|"vqa", "attack", "eps",
               "steps", "norm", "attack_params", "n_images", "reference": "clean"|"ground_truth",
               "clean": {metric: value}, "adversarial": {...}, "degradation": {...},
               "intervals": {"clean"|"adversarial"|"degradation": {metric: [low, high]}}?,
               "gradient_free": bool?, "transfer_of": white-box attack name?, "seed": int?,
               "train_steps": int?, "train_device_seconds": float?, "train_device": str?,
               "train_started_from": str?, "train_adversarial": {"attack", "fraction", ...}?,
               "per_step": [{metric: value}, ...]?, "degenerate": why?}],
     "comparisons": [{"model", "baseline", "loss", "baseline_loss", "task", "attack", "eps",
                      "norm", "reference", "metric", "n_items", "difference", "interval",
                      "p_value", "outcome": "less"|"more"|"none", "seed"?}]?,
     "gallery": [{"model", "loss", "attack", "eps", "key", "clean", "adversarial",
                  "images": {"clean": path, "adversarial": path}}],
     "meta": {"bootstrap": {"resamples", "level", "seed", "paired", "baseline"}?, ...}}

``steps`` is how many steps (or queries) the attack really took and ``attack_params`` every
parameter as it ran; gallery image paths are relative to the file's folder. ``intervals`` are
paired-bootstrap percentile intervals over the items; a comparison's ``difference`` is the
model's degradation minus the baseline's on the same items (below 0: the model degrades less),
with its interval and two-sided p-value; ``outcome`` is ``less`` or ``more`` when the interval
excludes 0, ``none`` otherwise. ``seed`` is the training seed of a run (and of the comparisons
made within it) when the results of several seeds are merged. ``train_steps`` and
``train_device_seconds`` are what the model's training cost in all: with the prsl-trained model
it started from, named in ``train_started_from``, when there is one (FARE on a CE model).
``degenerate`` is set on every run of a model whose clean outputs say nothing (see
:func:`degenerate_reason`), and says why.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prsl.core.errors import InvalidInput, MissingInput
from prsl.core.pixels import levels_text

RESULTS = "results.json"
RUN_FIELDS: Mapping[str, type | tuple[type, ...]] = {
    "model": str,
    "loss": str,
    "loss_params": dict,
    "task": str,
    "attack": str,
    "eps": (int, float),
    "steps": int,
    "n_images": int,
    "reference": str,
    "clean": dict,
    "adversarial": dict,
    "degradation": dict,
}
OPTIONAL_RUN_FIELDS: Mapping[str, type | tuple[type, ...]] = {
    "norm": str,
    "attack_params": dict,
    "per_step": list,
    "intervals": dict,
    "gradient_free": bool,
    "transfer_of": str,
    "seed": int,
    "train_steps": int,
    "train_device_seconds": (int, float),
    "train_device": str,
    "train_started_from": str,
    "train_adversarial": dict,
    "degenerate": str,
}
COMPARISON_FIELDS: Mapping[str, type | tuple[type, ...]] = {
    "model": str,
    "baseline": str,
    "task": str,
    "attack": str,
    "eps": (int, float),
    "reference": str,
    "metric": str,
    "n_items": int,
    "difference": (int, float),
    "interval": list,
    "p_value": (int, float),
    "outcome": str,
}
OUTCOMES = ("less", "more", "none")
"""A comparison's outcome: the model degrades less than the baseline, more, or no detectable
difference (the interval holds 0)."""
TASKS = ("caption", "vqa")
REFERENCES = ("clean", "ground_truth")
HEADLINE = {"caption": ["CIDEr", "BERTScore", "BLEU-4"], "vqa": ["VQA-acc"]}


def validate_results(data: Any, source: str = "results") -> None:
    """Raise InvalidInput naming the first field that breaks the schema (module docstring)."""
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise InvalidInput(f"{source}: expected an object with a 'runs' list (prsl results.json)")
    if not isinstance(data.get("meta"), dict):
        raise InvalidInput(f"{source}: missing the 'meta' object")
    if not isinstance(data.get("gallery", []), list):
        raise InvalidInput(f"{source}: 'gallery' must be a list")
    for i, run in enumerate(data["runs"]):
        _validate_run(run, f"{source}: runs[{i}]")
    if not isinstance(data.get("comparisons", []), list):
        raise InvalidInput(f"{source}: 'comparisons' must be a list")
    for i, comparison in enumerate(data.get("comparisons", [])):
        _validate_comparison(comparison, f"{source}: comparisons[{i}]")


def _check_fields(value: Any, fields: Mapping[str, Any], where: str) -> None:
    """An object holding every one of ``fields``, each of its type (a bool is no number)."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} is not an object")
    for name, kind in fields.items():
        if name not in value:
            raise InvalidInput(f"{where} lacks field {name!r}")
        if not isinstance(value[name], kind) or isinstance(value[name], bool):
            raise InvalidInput(f"{where}.{name} has the wrong type")


def _validate_comparison(comparison: Any, where: str) -> None:
    _check_fields(comparison, COMPARISON_FIELDS, where)
    if comparison["outcome"] not in OUTCOMES:
        raise InvalidInput(f"{where}.outcome must be one of {', '.join(OUTCOMES)}")
    bounds = comparison["interval"]
    if len(bounds) != 2 or not all(_finite(b) for b in bounds) or bounds[0] > bounds[1]:
        raise InvalidInput(f"{where}.interval must be [low, high] with low <= high")


def _validate_run(run: Any, where: str) -> None:
    _check_fields(run, RUN_FIELDS, where)
    for name, kind in OPTIONAL_RUN_FIELDS.items():
        if name in run and not isinstance(run[name], kind):
            raise InvalidInput(f"{where}.{name} has the wrong type")
    if run["task"] not in TASKS:
        raise InvalidInput(f"{where}.task must be 'caption' or 'vqa'")
    if run["reference"] not in REFERENCES:
        raise InvalidInput(f"{where}.reference must be 'clean' or 'ground_truth'")
    for part in ("clean", "adversarial", "degradation"):
        bad = [k for k, v in run[part].items() if not _finite(v)]
        if bad:
            raise InvalidInput(f"{where}.{part}[{bad[0]!r}] is not a finite number")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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


def read_results(path: Path) -> dict[str, Any]:
    """One results file (or a run folder's ``results.json``), validated; its gallery's image
    paths made absolute."""
    path = results_file(path)
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not a prsl results file (not text)") from None
    except json.JSONDecodeError as err:
        raise InvalidInput(f"{path} is not a prsl results file (not valid JSON: {err})") from None
    validate_results(data, str(path))
    for row in data.get("gallery", []):
        row["images"] = {k: str(path.parent / v) for k, v in row["images"].items()}
    return data


RUN_IDENTITY = ("model", "task", "attack", "eps", "reference", "seed")
"""What names one row of a report's tables: two runs with these equal cannot be shown apart.
``seed`` (the training seed, when results of several are merged) may be absent."""


@dataclass(frozen=True)
class LoadedResults:
    """What a report reads from one or more results files."""

    runs: list[dict]
    comparisons: list[dict]
    gallery: list[dict]
    meta: dict


def load_results(paths: list[Path]) -> LoadedResults:
    """Runs and comparisons from every file (validated), their gallery rows, the first meta.

    Two files holding the same (model, task, attack, ε, reference) are refused: one table cell
    would silently show only one of them.
    """
    runs, comparisons, gallery, meta = [], [], [], {}
    seen: dict[tuple, Path] = {}
    for path in map(results_file, paths):
        data = read_results(path)
        for run in data["runs"]:
            identity = tuple(run.get(k) for k in RUN_IDENTITY)
            if seen.setdefault(identity, path) != path:
                model, task, attack, eps, reference, _ = identity
                raise InvalidInput(
                    f"{seen[identity]} and {path} both hold model {model!r} under {attack} at "
                    f"ε={eps_text(eps, run.get('norm', 'linf'))} ({task}, reference {reference}):"
                    " report them separately, or evaluate the models into one output_dir"
                )
        runs += data["runs"]
        comparisons += data.get("comparisons", [])
        gallery += data.get("gallery", [])
        meta = meta or data["meta"]
    return LoadedResults(runs, comparisons, gallery, meta)


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Validate and write atomically (a reader never sees half a file)."""
    validate_results(results, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(partial, path)


def merge_results(
    files: list[Path],
    target: Path,
    meta: dict[str, Any],
    annotate: Mapping[Path, dict[str, Any]] | None = None,
    comparisons: list[dict] | None = None,
) -> dict[str, Any]:
    """One results file holding every run and gallery row of several, their metas kept.

    ``annotate[file]`` holds fields set on each run and gallery row of that file (a sweep names
    each cell's model after the cell); gallery paths are rebased onto ``target``'s folder.
    ``comparisons`` are added to the files' own (a sweep's comparisons between its cells).
    """
    runs, gallery, sources = [], [], {}
    comparisons = list(comparisons or [])
    for path in files:
        data = read_results(path)
        extra = (annotate or {}).get(path, {})
        runs += [run | extra for run in data["runs"]]
        seed = {"seed": extra["seed"]} if "seed" in extra else {}
        comparisons += [comparison | seed for comparison in data.get("comparisons", [])]
        for row in data.get("gallery", []):
            images = {k: os.path.relpath(v, target.parent) for k, v in row["images"].items()}
            kept = {k: v for k, v in extra.items() if k in row or k == "seed"}
            gallery.append(row | kept | {"images": images})
        sources[os.path.relpath(path.parent, target.parent)] = data["meta"]
    skipped = [s for source in sources.values() for s in source.get("skipped", [])]
    looked_at = sum(source.get("items", {}).get("looked_at", 0) for source in sources.values())
    items = {"looked_at": looked_at, "skipped": len(skipped)}
    merged_meta = {"items": items, "skipped": skipped, **_shared(sources), **meta}
    merged_meta["sources"] = sources
    merged = {"runs": runs, "comparisons": comparisons, "gallery": gallery, "meta": merged_meta}
    write_results(target, merged)
    return merged


SHARED_META = ("bootstrap", "bertscore_model", "vqa_protocol", "attack_target")
"""Meta fields a merged file carries at its top when every source that has them agrees (the
bootstrap's baseline and seed, which differ per evaluation, aside)."""


def _shared(sources: Mapping[str, dict]) -> dict[str, Any]:
    def comparable(key: str, value: Any) -> Any:
        if key != "bootstrap":
            return value
        return {k: v for k, v in value.items() if k not in ("baseline", "seed")}

    shared = {}
    for key in SHARED_META:
        values = [m[key] for m in sources.values() if m.get(key) is not None]
        if values and all(comparable(key, v) == comparable(key, values[0]) for v in values):
            shared[key] = comparable(key, values[0])
    return shared


DEGENERATE_SHARE = 0.9
"""A model is degenerate when this share of its clean outputs or more are one text (or empty)."""


def degenerate_reason(clean_outputs: Sequence[str]) -> str | None:
    """Why a model's clean outputs leave an attack nothing to measure, or None.

    Degenerate means, on the items evaluated: at least :data:`DEGENERATE_SHARE` of the clean
    outputs are empty, or are one and the same text (a collapsed model answering "a green a
    green" to every image). :func:`floor_reason` adds the other sign, read from the scores.
    """
    texts = [" ".join(text.split()) for text in clean_outputs]
    if len(texts) < 2:
        return None
    text, count = Counter(texts).most_common(1)[0]
    if count < DEGENERATE_SHARE * len(texts):
        return None
    if not text:
        return f"{count} of {len(texts)} clean outputs are empty"
    shown = text if len(text) <= 40 else text[:39] + "…"
    return f'{count} of {len(texts)} clean outputs are the same text ("{shown}")'


def floor_reason(run: dict) -> str | None:
    """For a run scored against the model's own clean output: its clean headline score at the
    metric's floor (0), which no working model reaches against itself (CIDEr is 0 when every
    output shares every n-gram, one text for every image)."""
    if run["reference"] != "clean":
        return None
    metric = next((m for m in HEADLINE[run["task"]] if m in run["clean"]), None)
    if metric is None or run["clean"][metric] > 0:
        return None
    return f"its clean {metric} against its own output is {run['clean'][metric]:.4g}"


def degenerate_models(runs: list[dict]) -> dict[str, str]:
    """Each degenerate model (:func:`seeded_label`) with why: the ``degenerate`` its runs
    carry, or for results written before that field, the floor score of its runs."""
    found: dict[str, str] = {}
    for run in runs:
        reason = run.get("degenerate") or floor_reason(run)
        if reason:
            found.setdefault(seeded_label(run), reason)
    return found


def degenerate_text(label: str, reason: str) -> str:
    """The warning a degenerate model gets, in the log and first in its report."""
    return (
        f"{label} is degenerate ({reason}): an attack has nothing to move, so its scores under "
        "attack and its comparisons say nothing about robustness; check its training"
    )


def eps_text(eps: float, norm: str = "linf") -> str:
    """ε the way budgets are quoted: grey levels for L∞ (``8/255``, :func:`levels_text`), the
    norm itself for L2."""
    if norm == "l2":
        return f"{eps:.3g} (L2)"
    return levels_text(eps)


def run_eps_text(run: dict) -> str:
    return eps_text(run["eps"], run.get("norm", "linf"))


def model_label(run: dict) -> str:
    return f"{run['model']} ({run['loss']})"


def seeded_label(run: dict) -> str:
    """:func:`model_label` with the training seed, when the run records one: what tells one
    row of a table from another when results of several seeds are merged."""
    return model_label(run) + (f" seed {run['seed']}" if "seed" in run else "")


def grouped(runs: list[dict]) -> dict[tuple, list[dict]]:
    """Runs by (task, reference, attack), in a stable order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["task"], run["reference"], run["attack"])].append(run)
    return dict(sorted(groups.items()))
