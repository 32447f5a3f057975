"""The ``results.json`` format (DESIGN.md §5): its schema, reading it, and grouping its runs.

Shared by the report's tables and its plots; nothing here draws or formats.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

RUN_FIELDS = {
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
HEADLINE = {"caption": ["CIDEr", "BERTScore", "BLEU-4"], "vqa": ["VQA-acc"]}


def validate_results(data: Any, source: str = "results") -> None:
    """Raise ValueError naming the first field that breaks the DESIGN.md §5 schema."""
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"{source}: expected an object with a 'runs' list (prsl results.json)")
    if not isinstance(data.get("meta"), dict):
        raise ValueError(f"{source}: missing the 'meta' object")
    for i, run in enumerate(data["runs"]):
        if not isinstance(run, dict):
            raise ValueError(f"{source}: runs[{i}] is not an object")
        for name, kind in RUN_FIELDS.items():
            if name not in run:
                raise ValueError(f"{source}: runs[{i}] lacks field {name!r}")
            if not isinstance(run[name], kind) or isinstance(run[name], bool):
                raise ValueError(f"{source}: runs[{i}].{name} has the wrong type")
        if run["task"] not in ("caption", "vqa"):
            raise ValueError(f"{source}: runs[{i}].task must be 'caption' or 'vqa'")
        if run["reference"] not in ("clean", "ground_truth"):
            raise ValueError(f"{source}: runs[{i}].reference must be 'clean' or 'ground_truth'")
        for part in ("clean", "adversarial", "degradation"):
            bad = [
                k
                for k, v in run[part].items()
                if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v)
            ]
            if bad:
                raise ValueError(f"{source}: runs[{i}].{part}[{bad[0]!r}] is not a finite number")


def load_results(paths: list[Path]) -> tuple[list[dict], list[dict], dict]:
    """Runs from every file (validated), their gallery rows, and the first file's meta."""
    runs, gallery, meta = [], [], {}
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"results file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        validate_results(data, str(path))
        runs += data["runs"]
        meta = meta or data["meta"]
        predictions = path.parent / "predictions.jsonl"
        if predictions.exists():
            for line in predictions.read_text().splitlines():
                row = json.loads(line) if line.strip() else {}
                if "gallery" in row:
                    row["gallery"] = {k: str(path.parent / v) for k, v in row["gallery"].items()}
                    gallery.append(row)
    return runs, gallery, meta


def model_label(run: dict) -> str:
    return f"{run['model']} ({run['loss']})"


def grouped(runs: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["task"], run["reference"], run["attack"])].append(run)
    return dict(sorted(groups.items()))
