"""Adversarial images on disk: the report's gallery pairs, and ``prsl attack``'s image set.

``prsl attack`` runs the first attack of the config with ``quantize="uint8"``, so what is saved
is exactly what was attacked: a PNG round trip changes nothing, and the files can be fed to any
other model (transfer). The images are at the model's input size, the size the attack ran at.
Each is named after its item key (``gray.png`` is saved as ``gray.png``). ``metadata.csv``
makes the folder a dataset: ``datasets.load_dataset("imagefolder", data_dir=...)`` reads it
with every reference, both outputs and the attack as columns, and so does prsl's
``imagefolder`` reader (transfer to another model). ``captions.jsonl`` is the run's ledger: a
rerun with the same settings adds what is missing, one with other settings is refused
(``overwrite=True`` starts over).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from prsl.core.errors import InvalidInput
from prsl.core.lock import hold
from prsl.core.paths import check_output_dir, slug
from prsl.data import batch_prompts, evaluation_samples, load_batch, save_image
from prsl.evaluate.config import EvalConfig
from prsl.evaluate.crafting import attack_texts, craft, generate, instructed
from prsl.evaluate.grid import Cell
from prsl.evaluate.items import SkipTally, read_evaluation_data
from prsl.evaluate.ledger import drop_torn_tail, read_predictions
from prsl.evaluate.processes import finish, processes
from prsl.models import load_adapter
from prsl.provenance import check_settings, model_refs, write_settings
from prsl.provenance.items import item_digests
from prsl.provenance.models import describe
from prsl.provenance.settings import SETTINGS

GALLERY = "gallery"
CAPTIONS = "captions.jsonl"
CAPTION_SHARDS = "captions*.jsonl"
METADATA = "metadata.csv"
METADATA_COLUMNS = (
    "file_name",
    "text",
    "references",
    "question",
    "clean",
    "adversarial",
    "key",
    "attack",
    "eps",
    "attack_params",
)
COMMAND = "attack"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_name(key: str) -> str:
    """A file name for an item key: its own name when it already is an image's, else key.png."""
    name = slug(key)
    return name if name.lower().endswith(_IMAGE_SUFFIXES) else f"{name}.png"


def save_pair(out: Path, stem: str, clean: torch.Tensor, adversarial: torch.Tensor) -> dict:
    """Clean and adversarial image of one item into ``out/gallery``; paths relative to ``out``."""
    folder = out / GALLERY
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, image, suffix in (("clean", clean, "clean"), ("adversarial", adversarial, "adv")):
        file = folder / f"{slug(stem)}_{suffix}.png"
        save_image(image, file)
        paths[part] = str(file.relative_to(out))
    return paths


def caption_shard(out: Path, rank: int) -> Path:
    return out / (CAPTIONS if rank == 0 else f"captions.{rank}.jsonl")


def caption_rows(out: Path) -> dict[str, dict]:
    """Every process's records, by item key."""
    rows: dict[str, dict] = {}
    for path in sorted(out.glob(CAPTION_SHARDS)):
        for row in read_predictions(path):
            if "key" in row:
                rows.setdefault(row["key"], row)
    return rows


def attack_to_files(
    cfg: EvalConfig, model: str, out: Path, *, overwrite: bool = False, wait: bool = False
) -> int | None:
    """Attack ``cfg.n_images`` items with the first attack and ε; returns how many images the
    folder holds for them. Under ``accelerate launch`` every process takes every ``world``-th
    batch; the first then writes ``metadata.csv`` and returns the count (the others None).
    The run holds the lock of ``out`` (:mod:`prsl.core.lock`); ``wait`` waits for another."""
    state = processes()
    spec = cfg.attacks[0]
    attack = spec.attacks[0].replace(quantize="uint8")
    cell = Cell(spec.result_name, attack.eps, attack)
    (ref,) = model_refs([model])
    split = read_evaluation_data(cfg)
    settings = {
        "items": item_digests(evaluation_samples(split, str)[: cfg.n_images]),
        "model": {ref.location: describe(ref)},
        "data": cfg.data.model_dump(),
        "attack": cell.recorded(),
        **cfg.precision(),
        "attack_target": cfg.attack_target,
        "max_new_tokens": cfg.max_new_tokens,
        "caption_prompt": cfg.caption_prompt,
        "seed": cfg.seed,
    }
    check_output_dir(out, "--out")
    with hold(out, "--out", wait=wait, state=state):
        if overwrite and state.is_main_process:
            discard_images(out)
        state.wait_for_everyone()
        done = caption_rows(out)
        fix = "choose another --out, or pass --overwrite to replace its images"
        check_settings(out, COMMAND, settings, has_results=bool(done), fix=fix)
        adapter = instructed(
            load_adapter(ref.given, device=state.device, dtype=cfg.dtype), cfg, ref
        )
        samples = evaluation_samples(split, adapter.vqa_prompt)[: cfg.n_images]
        names = [image_name(s.key) for s in samples]
        if len(set(names)) != len(names):
            raise InvalidInput(
                f"two items of dataset {cfg.data.name!r} map to one file name in {out}"
            )
        if state.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            write_settings(out, COMMAND, settings)
        state.wait_for_everyone()  # every process has checked the old record before it changes
        shard = caption_shard(out, state.process_index)
        drop_torn_tail(shard)
        skips = SkipTally(split.skipped)
        with shard.open("a") as sink:
            for index, start in enumerate(range(0, len(samples), cfg.batch_size)):
                if index % state.num_processes != state.process_index:
                    continue
                todo = [s for s in samples[start : start + cfg.batch_size] if s.key not in done]
                pixels, kept, skipped = load_batch(todo, adapter.pixel_size, adapter.prepare_images)
                skips.add(skipped)
                if pixels is None:
                    continue
                prompts = batch_prompts(kept)
                clean = generate(adapter, pixels, prompts, cfg.max_new_tokens)
                texts = attack_texts(cfg.attack_target, clean, kept)
                adv, _ = craft(cell, pixels, adapter, texts, prompts, cfg.seed)
                adversarial = generate(adapter, adv, prompts, cfg.max_new_tokens)
                for i, sample in enumerate(kept):
                    name = image_name(sample.key)
                    save_image(adv[i], out / name)
                    record = {
                        "file": name,
                        "key": sample.key,
                        "clean": clean[i],
                        "adversarial": adversarial[i],
                        "references": list(sample.references),
                        "question": sample.question,
                        "attack": cell.name,
                        "eps": cell.eps,
                        "attack_params": attack.recorded(),
                    }
                    sink.write(json.dumps(record) + "\n")
                sink.flush()
        state.wait_for_everyone()
        written = None
        if state.is_main_process:
            done = caption_rows(out)
            write_metadata(out, [done[s.key] for s in samples if s.key in done])
            written = sum(s.key in done for s in samples)
    finish(state)
    return written


def discard_images(out: Path) -> None:
    """Remove the images and records an earlier ``prsl attack`` wrote into ``out``."""
    for row in caption_rows(out).values():
        if isinstance(row.get("file"), str) and Path(row["file"]).name == row["file"]:
            (out / row["file"]).unlink(missing_ok=True)
    for path in [*out.glob(CAPTION_SHARDS), out / SETTINGS, out / METADATA]:
        path.unlink(missing_ok=True)


def write_metadata(out: Path, rows: list[dict]) -> Path:
    """``metadata.csv`` beside the images: what ``datasets`` reads as an image folder
    (``load_dataset("imagefolder", data_dir=out)``) and prsl's ``imagefolder`` reader too, with
    every reference, both outputs and the attack as columns."""
    path = out / METADATA
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(METADATA_COLUMNS)
        for row in rows:
            writer.writerow(
                [
                    row["file"],
                    row["references"][0] if row["references"] else "",
                    json.dumps(row["references"]),
                    row.get("question") or "",
                    row["clean"],
                    row["adversarial"],
                    row["key"],
                    row["attack"],
                    row["eps"],
                    json.dumps(row["attack_params"]),
                ]
            )
    return path
