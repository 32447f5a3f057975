"""Attack throughput: BIM-10 one image at a time (the authors' loop) vs batched, in images/s.

Run: ``python benchmarks/attacks.py --threads 1`` (the tiny captioner, briefly trained, on CPU;
on a shared 2-core machine two threads ran 10-40× slower and erratically) or
``python benchmarks/attacks.py --arch vit-gpt2`` (ViT-base + GPT-2 with random weights built
from the default configs, CUDA + bf16 when available). Every protocol attacks the same images
with the paper's ViT-GPT2 BIM setting (10 steps, untargeted on the clean caption, α = 0.005,
ε = 0.25 in pixel units) in the same process, after a warm-up; images/s is the median over
``--repeats`` rounds that each run every protocol once (interleaved, so a busy phase of a shared
machine does not land on one protocol only; "spread" in the JSON lines is (max - min) / median):

- ``per-image``: the authors' loop: one image at a time, its clean caption, then a caption
  after every step (11 generations per image);
- ``per-image + JPEG``: the same, with a JPEG save/reload (in memory) after every step, as the
  authors did;
- ``batched, generate every step``: ``--batch`` images at a time, still 11 generations;
- ``batched, generate every step, steps together``: the same outputs, with the images of
  several steps in one ``generate`` call (``STEP_BATCHES`` batches per call, as ``prsl
  evaluate`` does; the last step is the final images and reuses their outputs);
- ``batched``: ``--batch`` images at a time, the clean and the final caption only.

"changed" is the share of images whose final caption differs from the clean one (a sanity
check that every protocol attacked; with random weights it is informative only as such).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    PreTrainedTokenizerFast,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessorPil,
)

from prsl.attacks import AttackResult, attack_mode, paper_attack, untargeted_loss
from prsl.data.images import to_pixels
from prsl.data.shapes import make_shapes_captions
from prsl.evaluate.crafting import STEP_BATCHES, generate_steps
from prsl.models import VisionEncoderDecoderAdapter, build_tiny_captioner

END = "<|endoftext|>"


# ----------------------------------------------------------------------------- models
def vit_gpt2(device: str, dtype: torch.dtype) -> VisionEncoderDecoderAdapter:
    """The paper's captioner architecture with random weights (no hub access needed).

    ``ViTConfig()`` is ViT-base/16 at 224 px, ``GPT2Config()`` is GPT-2 small (V = 50257). The
    tokenizer is word-level over the whole vocabulary ("w0" ... "w50255" plus the end token at
    50256, GPT-2's id), so every generated id decodes to one word and re-encodes to itself:
    the clean captions the attack targets are as long as what the model generated.
    """
    decoder = GPT2Config(add_cross_attention=True)
    end = decoder.eos_token_id  # 50256 = vocab_size - 1: inside the vocabulary
    vocab = {f"w{i}": i for i in range(decoder.vocab_size) if i != end}
    vocab[END] = end
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token=END))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, bos_token=END, eos_token=END, pad_token=END, unk_token=END
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(), decoder)
    for holder in (config, config.decoder):
        holder.decoder_start_token_id = holder.bos_token_id = end
        holder.eos_token_id = holder.pad_token_id = end
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config=config)
    generation = model.generation_config
    generation.decoder_start_token_id = generation.bos_token_id = end
    generation.eos_token_id = generation.pad_token_id = end
    model.to(device=device, dtype=dtype).eval()
    processor = ViTImageProcessorPil(
        size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return VisionEncoderDecoderAdapter(model, tokenizer, processor)


def tiny(device: str, dtype: torch.dtype, train_steps: int) -> VisionEncoderDecoderAdapter:
    """The tiny captioner, trained for ``train_steps`` Adam steps on shapes (0: random)."""
    train = make_shapes_captions(300, seed=0).examples
    pairs = [(i, ref) for i, ex in enumerate(train) for ref in ex.references]
    adapter = build_tiny_captioner([ref for _, ref in pairs], seed=0)
    pixels = to_pixels([ex.image for ex in train], adapter.pixel_size)
    optimizer = torch.optim.Adam(adapter.model.parameters(), lr=2e-3)
    order = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    adapter.model.train()
    for _ in range(train_steps):
        batch = torch.randint(len(pairs), (32,), generator=order).tolist()
        loss = adapter.loss(pixels[[pairs[j][0] for j in batch]], [pairs[j][1] for j in batch])
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
    adapter.model.to(device=device, dtype=dtype).eval()
    adapter.model.zero_grad(set_to_none=True)
    return adapter


# ----------------------------------------------------------------------------- protocols
def attack_chunk(
    adapter: VisionEncoderDecoderAdapter,
    images: torch.Tensor,
    *,
    every_step: bool,
    jpeg_quality: int | None,
    max_new_tokens: int,
    mode_per_call: bool = False,
    steps_together: bool = False,
    rebuild_batch: bool = False,
    **gen_kwargs,
) -> tuple[list[str], list[str]]:
    """BIM-10 on one chunk of images; returns (clean captions, final captions).

    With ``every_step`` the iterate after each step is captioned too (the authors logged the
    caption at every iteration); the last of those is the final caption.
    """
    clean = adapter.generate(images, max_new_tokens=max_new_tokens, **gen_kwargs)
    attack = paper_attack("vit-gpt2", record_every_step=every_step, jpeg_quality=jpeg_quality)
    loss = untargeted_loss(adapter, clean)
    if rebuild_batch:  # prsl before it kept the teacher-forcing batch on the device
        cached = loss

        def loss(pixels):
            adapter._batch_cache.clear()
            return cached(pixels)

    # the model's attack state entered once for the attack (as prsl's crafting does), or, with
    # ``mode_per_call``, on every loss call (prsl before it entered it once)
    with nullcontext() if mode_per_call else attack_mode(adapter):
        result = attack(images, loss)
    if isinstance(result, AttackResult) and steps_together:  # as prsl evaluate does
        final = adapter.generate(result.final, max_new_tokens=max_new_tokens, **gen_kwargs)
        per_call = STEP_BATCHES * images.shape[0]
        generate_steps(adapter, result.steps, (result.final, final), None, max_new_tokens, per_call)
        return clean, final
    if isinstance(result, AttackResult):
        final = [
            adapter.generate(step, max_new_tokens=max_new_tokens, **gen_kwargs)
            for step in result.steps
        ]
        return clean, final[-1]
    return clean, adapter.generate(result, max_new_tokens=max_new_tokens, **gen_kwargs)


Protocol = Callable[[torch.Tensor], tuple[list[str], list[str]]]


def protocols(
    adapter, batch: int, jpeg_quality: int | None, max_new_tokens: int, static_cache: bool = False
) -> dict:
    """name -> (chunk size, function of a chunk of images)."""

    def make(every_step: bool, quality: int | None, **options) -> Protocol:
        return lambda images: attack_chunk(
            adapter,
            images,
            every_step=every_step,
            jpeg_quality=quality,
            max_new_tokens=max_new_tokens,
            **options,
        )

    table = {"per-image": (1, make(True, None))}
    if jpeg_quality is not None:
        table[f"per-image + JPEG q{jpeg_quality}"] = (1, make(True, jpeg_quality))
    table[f"batched ({batch}), generate every step"] = (batch, make(True, None))
    table[f"batched ({batch}), generate every step, steps together"] = (
        batch,
        make(True, None, steps_together=True),
    )
    table[f"batched ({batch})"] = (batch, make(False, None))
    table[f"batched ({batch}), attack state set on every loss call"] = (
        batch,
        make(False, None, mode_per_call=True),
    )
    table[f"batched ({batch}), batch rebuilt on every loss call"] = (
        batch,
        make(False, None, rebuild_batch=True),
    )
    if static_cache:
        table[f"batched ({batch}), static KV cache"] = (
            batch,
            make(False, None, cache_implementation="static"),
        )
    return table


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_pass(fn: Protocol, chunk: int, images: torch.Tensor, device: str) -> tuple[float, float]:
    """(seconds, share of changed captions) of one pass of ``fn`` over all ``images``."""
    sync(device)
    start = time.perf_counter()
    changed = 0
    for first in range(0, images.shape[0], chunk):
        clean, final = fn(images[first : first + chunk])
        changed += sum(a != b for a, b in zip(clean, final, strict=True))
    sync(device)
    return time.perf_counter() - start, changed / images.shape[0]


def run(
    table: dict, images: torch.Tensor, device: str, repeats: int, per_image: int | None = None
) -> list[dict]:
    """Median images/s of each protocol over ``repeats`` rounds, protocols interleaved.

    Interleaving (every protocol once per round) spreads slow phases of a shared machine over
    all protocols instead of charging them to whichever ran then.
    """
    for chunk, fn in table.values():
        fn(images[:chunk])  # warm-up: kernels, allocator, generation caches
    seconds: dict[str, list[float]] = {name: [] for name in table}
    changed: dict[str, float] = {}
    timed = {
        name: images[:per_image] if chunk == 1 else images for name, (chunk, _) in table.items()
    }
    for _ in range(repeats):
        for name, (chunk, fn) in table.items():
            elapsed, changed[name] = time_pass(fn, chunk, timed[name], device)
            seconds[name].append(elapsed)
    rows = []
    for name in table:
        median = statistics.median(seconds[name])
        rows.append(
            {
                "protocol": name,
                "images_per_s": round(timed[name].shape[0] / median, 4),
                "seconds": round(median, 4),
                "spread": round((max(seconds[name]) - min(seconds[name])) / median, 3),
                "changed": round(changed[name], 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict], baseline: str, jpeg: str | None) -> str:
    base = next(r["images_per_s"] for r in rows if r["protocol"] == baseline)
    jpeg_base = next((r["images_per_s"] for r in rows if r["protocol"] == jpeg), None)
    header = "| protocol | images/s | × per-image |"
    rule = "|---|---|---|"
    if jpeg_base is not None:
        header += " × per-image + JPEG |"
        rule += "---|"
    lines = [header + " changed |", rule + "---|"]
    for r in rows:
        line = f"| {r['protocol']} | {r['images_per_s']:.3g} | {r['images_per_s'] / base:.3g} |"
        if jpeg_base is not None:
            line += f" {r['images_per_s'] / jpeg_base:.3g} |"
        lines.append(line + f" {r['changed']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", choices=["tiny", "vit-gpt2"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="default: bfloat16 for vit-gpt2 on CUDA, else float32",
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--jpeg-quality", type=int, default=75, help="Pillow's default quality")
    parser.add_argument("--no-jpeg", action="store_true", help="skip the per-image + JPEG row")
    parser.add_argument("--train-steps", type=int, default=100, help="tiny model only")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--per-image-images",
        type=int,
        default=None,
        help="time the one-image-at-a-time protocols on the first N images only (a rate: "
        "images/s stays comparable; default all)",
    )
    parser.add_argument(
        "--static-cache", action="store_true", help="also time generation with a static KV cache"
    )
    args = parser.parse_args()
    if min(args.batch, args.images, args.repeats) < 1:
        parser.error("--batch, --images and --repeats must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype_name = args.dtype or (
        "bfloat16" if args.arch == "vit-gpt2" and args.device.startswith("cuda") else "float32"
    )
    dtype = getattr(torch, dtype_name)

    if args.arch == "vit-gpt2":
        adapter = vit_gpt2(args.device, dtype)
    else:
        adapter = tiny(args.device, dtype, args.train_steps)
    held_out = make_shapes_captions(args.images, seed=1000).examples
    images = to_pixels([ex.image for ex in held_out], adapter.pixel_size).to(args.device)

    jpeg_quality = None if args.no_jpeg else args.jpeg_quality
    table = protocols(
        adapter, args.batch, jpeg_quality, args.max_new_tokens, static_cache=args.static_cache
    )
    rows = run(table, images, args.device, args.repeats, args.per_image_images)

    names = list(table)
    jpeg_name = names[1] if jpeg_quality is not None else None
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine()
    params = sum(p.numel() for p in adapter.model.parameters()) / 1e6
    print(
        f"\n{args.arch} ({params:.1f} M parameters, {dtype_name}) on {args.device} ({device}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} images, "
        f"{args.max_new_tokens} new tokens, median of {args.repeats} interleaved rounds"
    )
    print(markdown(rows, names[0], jpeg_name))


if __name__ == "__main__":
    main()
