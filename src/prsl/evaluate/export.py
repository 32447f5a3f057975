"""Adversarial images on disk: the report's gallery pairs, and ``prsl attack``'s image set.

``prsl attack`` runs the first attack of the config with ``quantize="uint8"``, so what is saved
is exactly what was attacked: a PNG round trip changes nothing, and the files can be fed to any
other model (transfer). The images are at the model's input size, the size the attack ran at.
Each is named after its item key (``gray.png`` is saved as ``gray.png``), and ``captions.jsonl``
holds one line per image with its clean and adversarial output; a rerun with the same settings
adds what is missing, one with other settings is refused (``overwrite=True`` starts over).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from prsl.core.errors import InvalidInput
from prsl.core.paths import check_output_dir, slug
from prsl.data import batch_prompts, evaluation_samples, load_batch, save_image
from prsl.evaluate.config import EvalConfig
from prsl.evaluate.crafting import attack_texts, craft, generate, instructed
from prsl.evaluate.grid import Cell
from prsl.evaluate.items import SkipTally, read_evaluation_data
from prsl.evaluate.ledger import drop_torn_tail, read_predictions
from prsl.models import load_adapter
from prsl.provenance import check_settings, model_refs, write_settings
from prsl.provenance.items import item_digests
from prsl.provenance.models import describe
from prsl.provenance.settings import SETTINGS

GALLERY = "gallery"
CAPTIONS = "captions.jsonl"
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


def attack_to_files(cfg: EvalConfig, model: str, out: Path, *, overwrite: bool = False) -> int:
    """Attack ``cfg.n_images`` items with the first attack and ε; returns how many files the
    folder holds."""
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
        "attack_target": cfg.attack_target,
        "max_new_tokens": cfg.max_new_tokens,
        "caption_prompt": cfg.caption_prompt,
        "seed": cfg.seed,
    }
    check_output_dir(out, "--out")
    captions = out / CAPTIONS
    if overwrite:  # the images this command wrote, then its records
        for row in read_predictions(captions):
            if isinstance(row.get("file"), str) and Path(row["file"]).name == row["file"]:
                (out / row["file"]).unlink(missing_ok=True)
        for name in (CAPTIONS, SETTINGS):
            (out / name).unlink(missing_ok=True)
    done = {row["key"]: row for row in read_predictions(captions) if "key" in row}
    fix = "choose another --out, or pass --overwrite to replace its images"
    check_settings(out, COMMAND, settings, has_results=bool(done), fix=fix)
    adapter = instructed(load_adapter(ref.given), cfg, ref)
    samples = evaluation_samples(split, adapter.vqa_prompt)[: cfg.n_images]
    names = [image_name(s.key) for s in samples]
    if len(set(names)) != len(names):
        raise InvalidInput(f"two items of dataset {cfg.data.name!r} map to one file name in {out}")
    out.mkdir(parents=True, exist_ok=True)
    write_settings(out, COMMAND, settings)
    drop_torn_tail(captions)
    skips = SkipTally(split.skipped)
    with captions.open("a") as sink:
        for start in range(0, len(samples), cfg.batch_size):
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
                    "attack": cell.name,
                    "eps": cell.eps,
                    "attack_params": attack.recorded(),
                }
                sink.write(json.dumps(record) + "\n")
                done[sample.key] = record
            sink.flush()
    return sum(s.key in done for s in samples)
