"""Training throughput: target tokens/s of full training steps with PRSL, DRSL and CE.

Run: ``python benchmarks/train.py --threads 1`` (the quickstart's tiny captioner on CPU) or
``python benchmarks/train.py --arch vit-gpt2`` (the paper's captioner architecture, ViT-base/16 +
GPT-2 small with V = 50257, random weights, CUDA + bf16 autocast when available). Goal: PRSL at
least 0.95x the tokens/s of CE on the same model.

One training step is what ``prsl finetune`` does per optimizer step, minus image decoding (the
pixels are made once, up front): tokenise the captions, forward, the loss's terms, backward,
gradient clipping at 1.0, AdamW (foreach), zero the gradients. Every loss trains the same model
on the same batches, in the same process: a warm-up, then ``--repeats`` rounds that each time
``--steps`` steps of every loss in turn (interleaved, so a busy phase of a shared machine does
not land on one loss only). tokens/s counts target tokens (labels that are not ignored), as the
training log does; the figure is the median over rounds, "spread" is (max - min) / median.
On CUDA the peak memory of a step is reported too.

Loss settings: the tiny model uses the quickstart's (PRSL K = 4, b = 1e-3), ViT-GPT2 the
paper's (K = 10, b = 1e-5). PRSL runs through ``backend="auto"``: the fused Triton kernel on
CUDA when triton is installed, the torch reference otherwise; on CUDA the reference is timed
as a row of its own.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext

import torch
from transformers import (
    GPT2Config,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessorPil,
)

from prsl.data.images import to_pixels
from prsl.data.shapes import make_shapes_captions
from prsl.losses import counted_tokens, get_loss
from prsl.losses.prsl import triton_unavailable_reason
from prsl.models import VisionEncoderDecoderAdapter, build_tiny_captioner, build_word_tokenizer
from prsl.models.tiny import BOS, EOS, PAD
from prsl.quickstart import PRSL_PARAMS
from prsl.train.adversarial import adversarial_mix
from prsl.train.config import AdversarialConfig

PAPER_PRSL = {"k": 10, "start": 0, "weight": 1e-5}


# ----------------------------------------------------------------------------- models
def vit_gpt2_random(texts: list[str]) -> VisionEncoderDecoderAdapter:
    """ViT-base/16 (224 px) + GPT-2 small with cross-attention, random weights, no download.

    The decoder keeps GPT-2's full output layer (V = 50257), which is what the loss works on;
    the word-level tokenizer over ``texts`` uses the first few dozen ids only, its special
    tokens among them, so bos/eos/pad/decoder-start all lie inside the vocabulary.
    """
    tokenizer = build_word_tokenizer(texts)
    bos, eos, pad = (tokenizer.convert_tokens_to_ids(t) for t in (BOS, EOS, PAD))
    decoder = GPT2Config(add_cross_attention=True, bos_token_id=bos, eos_token_id=eos)
    decoder.pad_token_id = pad
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(), decoder)
    config.decoder_start_token_id, config.bos_token_id = bos, bos
    config.eos_token_id, config.pad_token_id = eos, pad
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=config)
    generation = model.generation_config
    generation.decoder_start_token_id, generation.bos_token_id = bos, bos
    generation.eos_token_id, generation.pad_token_id = eos, pad
    processor = ViTImageProcessorPil(
        size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return VisionEncoderDecoderAdapter(model, tokenizer, processor)


def loss_table(arch: str, device: str) -> dict[str, tuple[str, dict]]:
    """Row name -> (registered loss, its parameters); adversarial rows are added by
    :func:`adversarial_table`."""
    prsl = PAPER_PRSL if arch == "vit-gpt2" else {**PRSL_PARAMS}
    label = f"PRSL (K={prsl['k']}, b={prsl['weight']:g})"
    table = {"CE": ("ce", {})}
    probe = torch.zeros(1, 64, device=device, dtype=torch.bfloat16)
    if device.startswith("cuda") and triton_unavailable_reason(probe, prsl["k"], 0) is None:
        table[f"{label}, fused kernel"] = ("prsl", {**prsl, "backend": "triton"})
        table[f"{label}, torch reference"] = ("prsl", {**prsl, "backend": "torch"})
    else:
        table[label] = ("prsl", {**prsl, "backend": "torch"})
    table["DRSL (b=1e-6)"] = ("drsl", {"weight": 1e-6})
    return table


def adversarial_table(steps: list[int]) -> dict[str, AdversarialConfig]:
    """Row name -> adversarial fine-tuning with CE: PGD-n at ε = 8/255 on every image, the
    setting whose cost ``prsl finetune`` users weigh (about n + 1 forward/backward passes)."""
    return {
        f"CE-AT (PGD-{n}, 8/255)": AdversarialConfig(attack="pgd", eps=8 / 255, steps=n)
        for n in steps
    }


# ----------------------------------------------------------------------------- timing
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Trainer:
    """One model and optimiser; ``step(criterion, pixels, texts)`` is one training step."""

    def __init__(self, adapter, device: str, autocast_dtype: torch.dtype | None, lr: float):
        self.adapter = adapter
        self.device = device
        self.autocast_dtype = autocast_dtype
        adapter.model.to(device).train()
        self.params = [p for p in adapter.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, foreach=True)

    def step(self, criterion, pixels: torch.Tensor, texts: list[str], adversarial=None) -> int:
        """Returns the number of target tokens trained on (a device sync, as in training);
        with ``adversarial`` the images are first crafted as ``prsl finetune`` crafts them."""
        autocast = (
            torch.autocast(torch.device(self.device).type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        if adversarial is not None:
            with autocast:
                pixels, _ = adversarial_mix(self.adapter, pixels, texts, None, adversarial, 0)
        with autocast:
            logits, labels = self.adapter.logits_and_labels(pixels, texts)
            terms = criterion.terms(logits, labels)
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return int(counted_tokens(labels))


def make_batches(adapter, n_batches: int, batch: int, device: str):
    """``n_batches`` (pixels, captions) batches of shapes images, one caption per image."""
    split = make_shapes_captions(n_batches * batch, seed=0)
    pixels = to_pixels([ex.image for ex in split.examples], adapter.pixel_size).to(device)
    texts = [ex.references[i % len(ex.references)] for i, ex in enumerate(split.examples)]
    return [
        (pixels[i * batch : (i + 1) * batch], texts[i * batch : (i + 1) * batch])
        for i in range(n_batches)
    ]


def run(trainer: Trainer, table: dict, batches, args, attacked: dict | None = None) -> list[dict]:
    criteria = {name: (get_loss(loss, **params), None) for name, (loss, params) in table.items()}
    criteria |= {name: (get_loss("ce"), cfg) for name, cfg in (attacked or {}).items()}
    table = {**table, **dict.fromkeys(attacked or {})}
    for criterion, adversarial in criteria.values():  # warm-up: kernels, allocator, autotuning
        for i in range(args.warmup):
            trainer.step(criterion, *batches[i % len(batches)], adversarial)
    rates: dict[str, list[float]] = {name: [] for name in table}
    peaks: dict[str, int] = {}
    tokens = 0
    for _ in range(args.repeats):
        for name, (criterion, adversarial) in criteria.items():
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            sync(args.device)
            start = time.perf_counter()
            tokens = sum(
                trainer.step(criterion, *batches[i % len(batches)], adversarial)
                for i in range(args.steps)
            )
            sync(args.device)
            rates[name].append(tokens / (time.perf_counter() - start))
            if args.device.startswith("cuda"):
                peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated())
    base = statistics.median(rates["CE"])
    rows = []
    for name in table:
        median = statistics.median(rates[name])
        row = {
            "loss": name,
            "tokens_per_s": round(median, 1),
            "vs_ce": round(median / base, 4),
            "spread": round((max(rates[name]) - min(rates[name])) / median, 3),
            "tokens_per_step": round(tokens / args.steps, 1),
        }
        if name in peaks:
            row["peak_gib"] = round(peaks[name] / 2**30, 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    memory = "peak_gib" in rows[0]
    lines = [
        "| loss | tokens/s | × CE |" + (" peak GiB |" if memory else ""),
        "|---|---|---|" + ("---|" if memory else ""),
    ]
    for r in rows:
        rate = r["tokens_per_s"]
        shown = f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"
        line = f"| {r['loss']} | {shown} | {r['vs_ce']:.3f} |"
        lines.append(line + (f" {r['peak_gib']:.2f} |" if memory else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", choices=["tiny", "vit-gpt2"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="autocast dtype (weights stay fp32); default: bfloat16 on CUDA, else float32",
    )
    parser.add_argument("--batch", type=int, default=None, help="default: 16 tiny, 32 vit-gpt2")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per loss and round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per loss")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--adversarial",
        type=int,
        nargs="*",
        default=[1, 2, 4],
        help="PGD steps of the CE-AT rows (none: no adversarial rows)",
    )
    args = parser.parse_args()
    if min(args.steps, args.repeats) < 1 or args.warmup < 0:
        parser.error("--steps and --repeats must be >= 1, --warmup >= 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    dtype_name = args.dtype or ("bfloat16" if cuda else "float32")
    autocast_dtype = torch.bfloat16 if dtype_name == "bfloat16" else None
    batch = args.batch or (32 if args.arch == "vit-gpt2" else 16)

    texts = [ref for ex in make_shapes_captions(300, seed=0).examples for ref in ex.references]
    if args.arch == "vit-gpt2":
        adapter = vit_gpt2_random(texts)
    else:
        adapter = build_tiny_captioner(texts, seed=0)
    trainer = Trainer(adapter, args.device, autocast_dtype, args.lr)
    batches = make_batches(adapter, max(args.steps, args.warmup, 1), batch, args.device)
    table = loss_table(args.arch, args.device)
    rows = run(trainer, table, batches, args, adversarial_table(args.adversarial))

    device = torch.cuda.get_device_name() if cuda else platform.machine()
    params = sum(p.numel() for p in adapter.model.parameters()) / 1e6
    vocab = adapter.model.config.decoder.vocab_size
    print(
        f"\n{args.arch} ({params:.1f} M parameters, V = {vocab}, autocast {dtype_name}) on "
        f"{args.device} ({device}), torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads; batch {batch}, median of {args.repeats} interleaved rounds of {args.steps} "
        "steps per loss"
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
