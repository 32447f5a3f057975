"""``prsl attack``: write adversarial images to disk as 8-bit PNGs with their captions.

The attack runs with ``quantize="uint8"`` so what is saved is exactly what was attacked: a PNG
round trip changes nothing, and the saved files can be fed to any other model (transfer).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from prsl.config import EvalConfig
from prsl.data import read_dataset
from prsl.evaluate import attack_eps, attack_loss, craft
from prsl.models import load_adapter
from prsl.samples import evaluation_samples, load_batch


def attack_to_files(cfg: EvalConfig, model: str, out: Path) -> int:
    """Attack ``cfg.n_images`` items with the first attack and ε; returns how many were written."""
    if not cfg.attacks:
        raise ValueError("no attack configured: set attacks in the config")
    spec = cfg.attacks[0].model_copy(
        update={"params": {**cfg.attacks[0].params, "quantize": "uint8"}}
    )
    eps = attack_eps(spec)[0]
    adapter = load_adapter(model)
    split = read_dataset(cfg.data.name, **cfg.data.options)
    samples = evaluation_samples(split, adapter.vqa_prompt)[: cfg.n_images]
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    with (out / "captions.jsonl").open("w") as sink:
        for start in range(0, len(samples), cfg.batch_size):
            pixels, kept, _ = load_batch(
                samples[start : start + cfg.batch_size], adapter.pixel_size
            )
            if pixels is None:
                continue
            pixels = pixels.to(adapter.device)
            prompts = [s.prompt for s in kept] if kept[0].prompt is not None else None
            with torch.no_grad():
                clean = adapter.generate(pixels, prompts, max_new_tokens=cfg.max_new_tokens)
            loss_fn = attack_loss(cfg, adapter, clean, kept, prompts)
            adv, _ = craft(spec, eps, pixels, loss_fn, cfg.seed)
            with torch.no_grad():
                adversarial = adapter.generate(adv, prompts, max_new_tokens=cfg.max_new_tokens)
            for i, sample in enumerate(kept):
                name = "".join(c if c.isalnum() or c in "-_." else "-" for c in sample.key)
                array = (adv[i] * 255).round().byte().permute(1, 2, 0).cpu().numpy()
                Image.fromarray(array).save(out / f"{name}.png")
                record = {
                    "file": f"{name}.png",
                    "key": sample.key,
                    "clean": clean[i],
                    "adversarial": adversarial[i],
                    "attack": spec.name,
                    "eps": eps,
                }
                sink.write(json.dumps(record) + "\n")
                written += 1
    return written
