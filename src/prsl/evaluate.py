"""Robustness evaluation: generate on clean and adversarial images, score, compute degradation.

For every model x attack x ε the loop generates the clean output, attacks the images
(untargeted, on the model's own clean output — the paper's protocol — or on the ground truth),
generates again, and appends one line per item to ``predictions.jsonl`` as it goes. A rerun
skips every (model, attack, ε, item) already in that file, so an interrupted run resumes where it
stopped. Scores are computed at the end from the predictions file alone, against two references:
the model's clean output (how far the attack moves the answer) and the ground truth.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import prsl
from prsl.attacks import attack_parameters, get_attack, parse_eps, untargeted_loss
from prsl.config import AttackSpec, EvalConfig
from prsl.data import read_dataset
from prsl.data.types import Skipped
from prsl.metrics import Scorer
from prsl.models import load_adapter
from prsl.models.base import VLMAdapter
from prsl.samples import Sample, evaluation_samples, load_batch
from prsl.train import TRAIN_INFO

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
RESULTS = "results.json"
CAPTION_METRICS = [
    "BLEU-1",
    "BLEU-2",
    "BLEU-3",
    "BLEU-4",
    "METEOR",
    "ROUGE-L",
    "CIDEr",
    "BERTScore",
]
VQA_METRICS = ["VQA-acc"]


@dataclass(frozen=True, order=True)
class RunKey:
    """Identifies one (model, attack, ε) cell of the grid."""

    model: str
    attack: str
    eps: float


@dataclass
class ModelInfo:
    name: str
    path: str
    loss: str
    loss_params: dict[str, Any]


def model_info(path: str) -> ModelInfo:
    """Name and training loss of a model directory (``pretrained`` when prsl did not train it)."""
    info_file = Path(path) / TRAIN_INFO
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        loss, params = info["loss"], info["loss_params"]
    else:
        loss, params = "pretrained", {}
    name = Path(path).name if Path(path).exists() else path
    if name == "final":
        name = Path(path).parent.name
    return ModelInfo(name, path, loss, params)


def read_predictions(path: Path) -> list[dict]:
    """Rows written so far; a line cut off by a crash mid-write is dropped (and redone)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("ignoring an incomplete line in %s (interrupted write)", path)
    return rows


@dataclass
class Ledger:
    """What ``predictions.jsonl`` holds: finished (model, attack, ε, item) cells, and how many
    gallery pairs each (model, attack, ε) has, so a rerun skips the first and tops up the
    second without listing the gallery folder for every row."""

    done: set[tuple] = field(default_factory=set)
    pairs: Counter = field(default_factory=Counter)

    def record(self, row: dict) -> None:
        self.done.add((row["model"], row["attack"], row["eps"], row["key"]))
        if "gallery" in row:
            self.pairs[(row["model"], row["attack"], row["eps"])] += 1

    def finished(self, model: str, attack: str, eps: float, key: str) -> bool:
        return (model, attack, eps, key) in self.done

    def wants_pair(self, model: str, attack: str, eps: float, limit: int) -> bool:
        return self.pairs[(model, attack, eps)] < limit


def drop_torn_tail(path: Path) -> None:
    """Cut a last line left without its newline by a kill mid-write, before appending.

    Appending after it would glue the next row onto the fragment and lose that row too.
    """
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        log.warning("dropping an incomplete last line of %s (interrupted write)", path)
        with path.open("r+b") as handle:
            handle.truncate(keep)


def attack_eps(spec: AttackSpec) -> list[float]:
    return [parse_eps(e) for e in spec.eps]


def _batches(items: list[Sample], size: int) -> Iterator[list[Sample]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def craft(spec: AttackSpec, eps: float, pixels: torch.Tensor, loss_fn, seed: int):
    """Adversarial pixels and, when the spec asks, the images after every step.

    The spec's ``steps``, ``alpha`` (default ε/4, or ε for one step), ``norm`` and a generator
    seeded with ``seed`` go to every attack that takes them, so ``steps`` in the results is what
    ran.
    """
    accepted = set(attack_parameters(spec.name))
    params = dict(spec.params)
    if "steps" in accepted:
        params["steps"] = spec.steps
    if "alpha" in accepted:
        params["alpha"] = (
            parse_eps(spec.alpha)
            if spec.alpha is not None
            else (eps / 4 if spec.steps > 1 else eps)
        )
    if "norm" in accepted:
        params["norm"] = spec.norm
    if "generator" in accepted:
        params["generator"] = torch.Generator(device=pixels.device).manual_seed(seed)
    if spec.record_every_step:
        params["record_every_step"] = True
    attack = get_attack(spec.name, eps=eps, **params)
    result = attack(pixels, loss_fn)
    if spec.record_every_step:
        return result.final, result.steps
    return result, None


@dataclass(frozen=True)
class Cell:
    """One (attack, ε) of the grid and where it is crafted: on the evaluated model itself
    (white-box, ``surrogate`` None) or on the surrogate (transfer)."""

    name: str
    spec: AttackSpec
    eps: float
    surrogate: ModelInfo | None = None


def grid_cells(cfg: EvalConfig, surrogate: ModelInfo | None) -> list[Cell]:
    """Every cell, with duplicate result names rejected before any work."""
    cells = [Cell(spec.result_name, spec, eps) for spec in cfg.attacks for eps in attack_eps(spec)]
    if surrogate is not None:
        cells += [Cell(f"{c.name}@{surrogate.name}", c.spec, c.eps, surrogate) for c in list(cells)]
    seen: set[tuple[str, float]] = set()
    for cell in cells:
        if (cell.name, cell.eps) in seen:
            raise ValueError(
                f"two attacks are named {cell.name!r} at ε={cell.eps:.5g}: give one of them a "
                "distinct `label` in the config"
            )
        seen.add((cell.name, cell.eps))
    return cells


def evaluate(cfg: EvalConfig, *, progress: bool = True, scorer: Scorer | None = None) -> dict:
    """Run (or resume) the evaluation grid and write ``results.json``; returns its content."""
    if not cfg.models:
        raise ValueError("no model to evaluate: give at least one model directory or hub id")
    for spec in cfg.attacks:
        get_attack(spec.name)  # unknown attack names fail before any work
    surrogate_info = model_info(cfg.surrogate) if cfg.surrogate else None
    cells = grid_cells(cfg, surrogate_info)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = read_dataset(cfg.data.name, **cfg.data.options)
    skipped: list[Skipped] = list(split.skipped)
    pred_path = out / PREDICTIONS
    drop_torn_tail(pred_path)
    ledger = Ledger()
    for row in read_predictions(pred_path):
        ledger.record(row)
    infos = [model_info(m) for m in cfg.models]
    surrogate = load_adapter(surrogate_info.path) if surrogate_info else None
    with pred_path.open("a") as sink, _progress(progress) as bar:
        for info in infos:
            adapter = load_adapter(info.path)
            if surrogate is not None and surrogate.pixel_size != adapter.pixel_size:
                raise ValueError(
                    f"surrogate {surrogate_info.name} takes {surrogate.pixel_size} images but "
                    f"{info.name} takes {adapter.pixel_size}: transfer needs the same size"
                )
            samples = evaluation_samples(split, adapter.vqa_prompt)[: cfg.n_images]
            task = bar.add_task(f"{info.name}", total=len(samples))
            for batch in _batches(samples, cfg.batch_size):
                todo = [
                    c
                    for c in cells
                    if not all(ledger.finished(info.name, c.name, c.eps, s.key) for s in batch)
                ]
                if todo:
                    models = Models(info, adapter, surrogate)
                    skipped += _evaluate_batch(cfg, models, batch, todo, ledger, sink, out)
                bar.advance(task, len(batch))
    results = score_predictions(cfg, split.task, infos, read_predictions(pred_path), scorer)
    results["meta"]["skipped"] = [s.__dict__ for s in skipped]
    if surrogate_info is not None:
        results["meta"]["surrogate"] = surrogate_info.path
    (out / RESULTS).write_text(json.dumps(results, indent=2))
    return results


@dataclass
class Models:
    """The evaluated model (name, loss, adapter) and the optional transfer surrogate."""

    info: ModelInfo
    adapter: VLMAdapter
    surrogate: VLMAdapter | None


def _evaluate_batch(cfg, models: Models, batch, todo: list[Cell], ledger, sink, out) -> list:
    adapter, info = models.adapter, models.info
    pixels, kept, skipped = load_batch(batch, adapter.pixel_size)
    if pixels is None:
        return skipped
    pixels = pixels.to(adapter.device)
    prompts = [s.prompt for s in kept] if kept[0].prompt is not None else None
    gen = {"max_new_tokens": cfg.max_new_tokens}
    with torch.no_grad():
        clean = adapter.generate(pixels, prompts, **gen)
    loss_fns = {False: attack_loss(cfg, adapter, clean, kept, prompts)}  # keyed by transfer
    for cell in todo:
        transfer = cell.surrogate is not None
        crafter = models.surrogate if transfer else adapter
        if transfer and True not in loss_fns:
            with torch.no_grad():
                own = crafter.generate(pixels.to(crafter.device), prompts, **gen)
            loss_fns[True] = attack_loss(cfg, crafter, own, kept, prompts)
        adv, steps = craft(
            cell.spec, cell.eps, pixels.to(crafter.device), loss_fns[transfer], cfg.seed
        )
        adv = adv.to(adapter.device)
        with torch.no_grad():
            adversarial = adapter.generate(adv, prompts, **gen)
            per_step = (
                [adapter.generate(x.to(adapter.device), prompts, **gen) for x in steps]
                if steps
                else None
            )
        for i, sample in enumerate(kept):
            if ledger.finished(info.name, cell.name, cell.eps, sample.key):
                continue
            row = {
                "model": info.name,
                "loss": info.loss,
                "attack": cell.name,
                "eps": cell.eps,
                "steps": cell.spec.steps,
                "key": sample.key,
                "question": sample.question,
                "references": list(sample.references),
                "clean": clean[i],
                "adversarial": adversarial[i],
                "linf": float((adv[i] - pixels[i]).abs().max()),
            }
            if per_step:
                row["per_step"] = [captions[i] for captions in per_step]
            if ledger.wants_pair(info.name, cell.name, cell.eps, cfg.gallery):
                row["gallery"] = _save_pair(
                    out, info.name, cell.name, cell.eps, sample.key, pixels[i], adv[i]
                )
            sink.write(json.dumps(row) + "\n")
            ledger.record(row)
        sink.flush()
    return skipped


def attack_loss(cfg: EvalConfig, crafter: VLMAdapter, own_clean, kept, prompts):
    """The untargeted loss on ``crafter``: CE of its own clean output, or of the ground truth."""
    targets = own_clean if cfg.attack_target == "clean" else [s.text for s in kept]
    return untargeted_loss(crafter, targets, prompts)


def _save_pair(out: Path, model, attack, eps, key, clean: torch.Tensor, adv: torch.Tensor):
    from PIL import Image

    folder = out / "gallery"
    folder.mkdir(exist_ok=True)
    stem = _slug(f"{model}_{attack}_{eps:.5f}_{key}")
    paths = {}
    for name, image in (("clean", clean), ("adversarial", adv)):
        array = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        file = folder / f"{stem}_{'adv' if name == 'adversarial' else name}.png"
        Image.fromarray(array).save(file)
        paths[name] = str(file.relative_to(out))
    return paths


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def score_predictions(
    cfg: EvalConfig, task: str, infos: list[ModelInfo], rows: list[dict], scorer: Scorer | None
) -> dict:
    """Aggregate predictions into the ``results.json`` structure of DESIGN.md §5."""
    metrics = cfg.metrics or (VQA_METRICS if task == "vqa" else CAPTION_METRICS)
    by_key: dict[RunKey, list[dict]] = defaultdict(list)
    for row in rows:
        by_key[RunKey(row["model"], row["attack"], row["eps"])].append(row)
    losses = {i.name: (i.loss, i.loss_params) for i in infos}
    runs, corpora = [], []  # each run names the corpora it needs; one batched scoring pass
    for key, items in sorted(by_key.items()):
        if key.model not in losses:
            continue
        items.sort(key=lambda r: r["key"])
        references = {
            "clean": [_self_reference(r["clean"], task) for r in items],
            "ground_truth": [r["references"] for r in items],
        }
        n_steps = len(items[0].get("per_step", []))
        for reference, refs in references.items():
            outputs = [
                [r["clean"] for r in items],
                [r["adversarial"] for r in items],
                *([r["per_step"][t] for r in items] for t in range(n_steps)),
            ]
            first = len(corpora)
            corpora += [(candidates, refs) for candidates in outputs]
            runs.append(
                {
                    "model": key.model,
                    "loss": losses[key.model][0],
                    "loss_params": losses[key.model][1],
                    "task": task,
                    "attack": key.attack,
                    "eps": key.eps,
                    "steps": items[0]["steps"],
                    "n_images": len(items),
                    "reference": reference,
                    "_corpora": range(first, len(corpora)),
                }
            )
    # A Scorer made here is closed (its METEOR JVM stopped) once scored; a caller's stays open.
    with Scorer() if scorer is None else nullcontext(scorer) as active:
        scores = active.score_many(corpora, metrics) if corpora else []
        bertscore = active.bertscore_description()
    for run in runs:
        clean, adversarial, *per_step = (scores[i] for i in run.pop("_corpora"))
        run["clean"], run["adversarial"] = clean, adversarial
        run["degradation"] = {m: clean[m] - adversarial[m] for m in clean}
        if per_step:
            run["per_step"] = per_step
    return {
        "runs": runs,
        "meta": {
            "prsl_version": prsl.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "attack_target": cfg.attack_target,
            "seed": cfg.seed,
            "bertscore_model": bertscore,
            "models": {i.name: i.path for i in infos},
            "dataset": cfg.data.model_dump(),
        },
    }


def _self_reference(clean: str, task: str) -> list[str]:
    """The clean output as the reference; for VQA ten copies, so soft accuracy is exact match."""
    return [clean] * (10 if task == "vqa" else 1)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
    )
