"""Measure the statistics that the suite's thresholds on tiny trained models rest on, under
several float environments (CPU kernels and thread counts), so a threshold holds on any x86 CPU.

A tiny model trained for seconds is a draw: another seed, another SIMD width or another thread
count gives another model. The suite asserts such outcomes with margins, and this script is how
those margins were measured:

    .venv/bin/python tests/calibration.py captioner --seeds 0 1 2 3 4 5
    .venv/bin/python tests/calibration.py adversarial --seeds 0 1 2 3

Each study runs once per environment in :data:`ENVIRONMENTS` (a child process each) and prints
one JSON line per (environment, seed), then the minimum and maximum of every figure over all of
them. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Each environment pins the SIMD level of ATen, MKL and oneDNN together: an AVX-512 machine then
# computes as an AVX2-only or a pre-AVX machine would, and threads change reduction orders.
ENVIRONMENTS: dict[str, dict[str, str]] = {
    "native-1": {"PRSL_TEST_THREADS": "1"},
    "native-2": {"PRSL_TEST_THREADS": "2"},
    "avx2-1": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "PRSL_TEST_THREADS": "1",
    },
    "default-1": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "PRSL_TEST_THREADS": "1",
    },
}


def captioner_study(seed: int) -> dict[str, float]:
    """What test_attacks_captioner and test_models_training assert, for one model seed."""
    import torch

    import test_attacks_captioner as t
    from near_ties import decisive
    from prsl.attacks import CW, bim, craft_on_surrogate, untargeted_loss
    from prsl.data.images import to_pixels
    from prsl.data.shapes import make_shapes_captions
    from shapes_training import (
        CAPTIONER_EXAMPLES,
        corpus_bleu,
        tiny_captioner_for,
        train_shapes_captioner,
    )
    from test_models_training import scores

    train = make_shapes_captions(CAPTIONER_EXAMPLES, seed=0).examples
    held_out = make_shapes_captions(48, seed=1000).examples
    untrained = tiny_captioner_for(train, seed=seed)
    pixels = to_pixels([ex.image for ex in held_out], untrained.pixel_size)
    references = [ex.references for ex in held_out]
    before = scores(untrained, pixels, references)
    adapter = train_shapes_captioner(seed)
    after = scores(adapter, pixels, references)
    pixels = pixels[: t.HELD_OUT]  # the attack tests' held-out images: the first 32 of these
    clean = adapter.generate(pixels, max_new_tokens=t.MAX_NEW_TOKENS)
    loss_fn = untargeted_loss(adapter, clean)
    adversarial = bim(pixels, loss_fn, eps=t.EPS, alpha=t.ALPHA, steps=t.STEPS)
    attacked = adapter.generate(adversarial, max_new_tokens=t.MAX_NEW_TOKENS)
    gen = torch.Generator().manual_seed(1)
    signs = torch.randint(0, 2, pixels.shape, generator=gen).float() * 2 - 1
    noisy = adapter.generate((pixels + t.EPS * signs).clamp(0, 1), max_new_tokens=16)
    with torch.no_grad():
        loss_before, loss_after = loss_fn(pixels), loss_fn(adversarial)
    cw = craft_on_surrogate(
        CW(eps=1.0, steps=10, search_steps=3, lr=0.05, c=1.0), pixels[:8], adapter, clean[:8]
    )
    cw_captions = adapter.generate(cw, max_new_tokens=t.MAX_NEW_TOKENS)
    short = adapter.generate(pixels, max_new_tokens=3)
    return {
        "token_acc_gain": after["token_acc"] - before["token_acc"],
        "bleu_before": before["bleu"],
        "bleu_after": after["bleu"],
        "bleu_over_wrong_image": after["bleu"] - after["bleu_wrong_image"],
        "distinct_clean": len(set(clean)),
        "bim_changed": t.changed_fraction(attacked, clean),
        "noise_changed": t.changed_fraction(noisy, clean),
        "bim_bleu2": corpus_bleu(attacked, [(c,) for c in clean]),
        "noise_bleu2": corpus_bleu(noisy, [(c,) for c in clean]),
        "loss_ratio": (loss_after.mean() / loss_before.mean()).item(),
        "loss_higher": (loss_after > loss_before).float().mean().item(),
        "delta_over_eps": ((adversarial - pixels).abs().mean() / t.EPS).item(),
        "cw_changed": t.changed_fraction(cw_captions, clean[:8]),
        "decisive_clean": sum(decisive(adapter, pixels, clean)) / len(clean),
        "decisive_adversarial": sum(decisive(adapter, adversarial, clean)) / len(clean),
        "decisive_short": sum(decisive(adapter, adversarial, short, with_end=False)) / len(short),
    }


def adversarial_study(seed: int) -> dict[str, float]:
    """What test_train_adversarial's CE-AT vs CE claim rests on, for one training seed."""
    import test_train_adversarial as t

    with tempfile.TemporaryDirectory() as folder:
        (row,) = t.study(Path(folder), [seed])
    return {k: v for k, v in row.items() if k != "seed"}


STUDIES = {"captioner": captioner_study, "adversarial": adversarial_study}


def child(study: str, seeds: list[int]) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("PRSL_TEST_THREADS", "1")))
    for seed in seeds:
        print(json.dumps({"seed": seed, **STUDIES[study](seed)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=list(STUDIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--envs", nargs="+", default=list(ENVIRONMENTS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.study, args.seeds)
        return
    rows = []
    for name in args.envs:
        env = {**os.environ, "OMP_NUM_THREADS": ENVIRONMENTS[name]["PRSL_TEST_THREADS"]}
        env.update(ENVIRONMENTS[name])
        command = [sys.executable, __file__, args.study, "--child", "--seeds"]
        done = subprocess.run(
            [*command, *map(str, args.seeds)], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                row = {"env": name, **json.loads(line)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    for key in [k for k in rows[0] if k not in ("env", "seed")]:
        values = [row[key] for row in rows]
        print(f"{key:24s} min {min(values):8.3f}  max {max(values):8.3f}")


if __name__ == "__main__":
    main()
