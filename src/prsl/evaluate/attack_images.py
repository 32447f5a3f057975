"""``prsl attack``: adversarial images on disk, an image set to feed any other model.

``prsl attack`` runs the first attack of the config with ``quantize="uint8"``, so what is saved
is exactly what was attacked: a PNG round trip changes nothing, and the files can be fed to any
other model (transfer). The images are at the model's input size, the size the attack ran at.
Each is named after its item key (``gray.png`` is saved as ``gray.png``). ``metadata.csv``
makes the folder a dataset: ``datasets.load_dataset("imagefolder", data_dir=...)`` reads it
with every reference, both outputs and the attack as columns, and so does prsl's
``imagefolder`` reader (transfer to another model). ``captions.jsonl`` is the run's ledger: a
rerun with the same settings adds what is missing, one with other settings is refused
(``overwrite=True`` starts over). The folder, its lock and settings record, and the split of the
items between the processes of a launch are those of ``evaluate``
(:mod:`prsl.evaluate.folder`, :mod:`prsl.evaluate.shards`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState

from prsl.core.errors import InvalidInput
from prsl.core.paths import slug
from prsl.data import (
    DatasetSplit,
    Sample,
    batch_prompts,
    evaluation_samples,
    load_batch,
    save_image,
)
from prsl.evaluate.aims import cell_aims, reference_of
from prsl.evaluate.config import EACH_GROUND_TRUTH, EvalConfig
from prsl.evaluate.crafting import craft, generate, instructed, used_prompts
from prsl.evaluate.folder import OutputFolder, generation_settings
from prsl.evaluate.grid import Cell, spec_aims
from prsl.evaluate.items import SkipTally, read_evaluation_data
from prsl.evaluate.processes import processes
from prsl.evaluate.shards import ShardFiles, assigned_batches, drop_torn_tail
from prsl.models import VLMAdapter, load_adapter
from prsl.provenance import ModelRef, model_refs
from prsl.provenance.items import item_digests
from prsl.provenance.models import model_identity
from prsl.provenance.settings import SETTINGS

CAPTION_SHARDS = ShardFiles("captions")
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
FIX = "choose another --out, or pass --overwrite to replace its images"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_name(key: str) -> str:
    """A file name for an item key: its own name when it already is an image's, else key.png."""
    name = slug(key)
    return name if name.lower().endswith(_IMAGE_SUFFIXES) else f"{name}.png"


def caption_rows(out: Path) -> dict[str, dict]:
    """Every process's records, by item key."""
    rows: dict[str, dict] = {}
    for row in CAPTION_SHARDS.rows(out):
        if "key" in row:
            rows.setdefault(row["key"], row)
    return rows


@dataclass(frozen=True)
class AttackJob:
    """What every batch of ``prsl attack`` shares."""

    cfg: EvalConfig
    cell: Cell
    adapter: VLMAdapter
    out: Path
    skips: SkipTally


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
    cell = Cell(spec.result_name, attack.eps, attack, None, *spec_aims(spec))
    if len(cell.targets) > 1 or reference_of(cell, cfg.attack_target) == EACH_GROUND_TRUTH:
        raise InvalidInput(
            f"prsl attack saves one image per item, and attack {cell.name!r} runs once per "
            "target or reference: give it one target, or reference clean or ground_truth"
        )
    (ref,) = model_refs([model])
    split = read_evaluation_data(cfg)
    settings = attack_settings(cfg, ref, split, cell)
    folder = OutputFolder(out, "--out", COMMAND, settings, discard_images, FIX)
    with folder.held(state, wait=wait):
        done = folder.resume(state, lambda: caption_rows(out), overwrite=overwrite)
        adapter = instructed(
            load_adapter(ref.given, device=state.device, dtype=cfg.dtype), cfg, ref
        )
        samples = evaluation_samples(split, adapter.vqa_prompt)[: cfg.n_images]
        check_image_names(samples, cfg, out)
        if state.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            folder.record()
        state.wait_for_everyone()  # every process has checked the old record before it changes
        job = AttackJob(cfg, cell, adapter, out, SkipTally(split.skipped))
        attack_share(job, samples, done, state)
        state.wait_for_everyone()
        written = None
        if state.is_main_process:
            done = caption_rows(out)
            write_metadata(out, [done[s.key] for s in samples if s.key in done])
            written = sum(s.key in done for s in samples)
    return written


def attack_settings(cfg: EvalConfig, ref: ModelRef, split: DatasetSplit, cell: Cell) -> dict:
    """What the images and records of ``prsl attack`` depend on."""
    return {
        "items": item_digests(evaluation_samples(split, str)[: cfg.n_images]),
        "model": {ref.location: {**model_identity(ref), "prompts": used_prompts(cfg, ref)}},
        "attack": cell.recorded(),
        **generation_settings(cfg),
    }


def check_image_names(samples: list[Sample], cfg: EvalConfig, out: Path) -> None:
    names = [image_name(s.key) for s in samples]
    if len(set(names)) != len(names):
        raise InvalidInput(f"two items of dataset {cfg.data.name!r} map to one file name in {out}")


def attack_share(
    job: AttackJob, samples: list[Sample], done: dict[str, dict], state: PartialState
) -> None:
    """This process's batches: attack the items not done yet, save their images and append
    their records to this process's ``captions`` file."""
    shard = CAPTION_SHARDS.path(job.out, state.process_index)
    drop_torn_tail(shard)
    rank, world = state.process_index, state.num_processes
    with shard.open("a") as sink:
        for batch, mine in assigned_batches(samples, job.cfg.batch_size, rank, world):
            if not mine:
                continue
            for record in attack_batch(job, [s for s in batch if s.key not in done]):
                sink.write(json.dumps(record) + "\n")
            sink.flush()


def attack_batch(job: AttackJob, todo: list[Sample]) -> list[dict]:
    """Attack one batch, save each adversarial image; returns their records."""
    cfg, adapter, cell = job.cfg, job.adapter, job.cell
    pixels, kept, skipped = load_batch(todo, adapter.pixel_size, adapter.prepare_images)
    job.skips.add(skipped)
    if pixels is None:
        return []
    prompts = batch_prompts(kept)
    clean = generate(adapter, pixels, prompts, cfg.max_new_tokens)
    (aim,) = cell_aims(cell, cfg.attack_target, clean, kept, cfg.vqa_protocol)
    adv, _ = craft(cell, pixels, adapter, aim.texts, prompts, cfg.seed, targeted=aim.targeted)
    adversarial = generate(adapter, adv, prompts, cfg.max_new_tokens)
    records = []
    for i, sample in enumerate(kept):
        name = image_name(sample.key)
        save_image(adv[i], job.out / name)
        records.append(
            {
                "file": name,
                "key": sample.key,
                "clean": clean[i],
                "adversarial": adversarial[i],
                "references": list(sample.references),
                "question": sample.question,
                "attack": cell.name,
                "eps": cell.eps,
                "attack_params": cell.attack.recorded(),
            }
        )
    return records


def discard_images(out: Path) -> None:
    """Remove the images and records an earlier ``prsl attack`` wrote into ``out``."""
    for row in caption_rows(out).values():
        if isinstance(row.get("file"), str) and Path(row["file"]).name == row["file"]:
            (out / row["file"]).unlink(missing_ok=True)
    CAPTION_SHARDS.discard(out)
    for path in [out / SETTINGS, out / METADATA]:
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
