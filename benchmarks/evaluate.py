"""Evaluation at scale: peak memory against the dataset's size, and items/s across processes.

Run: ``python benchmarks/evaluate.py`` (CPU, a few minutes). What a user runs is what is timed:
``prsl evaluate`` as a subprocess, on a synthetic captioning set written as parquet and read
through the ``hf`` reader, with the tiny captioner, clean + FGSM, BLEU-1 and CIDEr.

- **Memory**: the peak resident set (the kernel's ``VmHWM``, written by the process as it
  exits) of one process evaluating ``--small`` vs ``--large`` images. Evaluation streams the
  items in batches and never holds every image (or every adversarial image) at once, so the
  two peaks should be within ~10 % of each other, while decoding every image up front would
  add ``large × side² × 3`` bytes.
- **Throughput**: items/s of 1 process vs 2 processes under ``accelerate launch`` (gloo on CPU,
  one intra-op thread each), and of 1 process with 2 threads (torch's default on this machine).
  Each figure is the slope between a run on ``--small`` and one on ``--large`` images, so the
  start-up (imports, model load, scoring's fixed cost) cancels out.

Every run writes into a fresh folder. The first run on each file has ``datasets`` convert the
parquet to arrow (once; later runs read the cached copy): its peak is reported on its own line,
and the timed runs read the prepared cache. Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from prsl.data import read_dataset
from prsl.models import build_tiny_captioner


def smooth_image(rng: np.random.Generator, side: int) -> Image.Image:
    """Low-frequency colour noise: decoded it weighs side² × 3 bytes like any photo, encoded as
    PNG much less (so the parquet file, which ``datasets`` memory-maps, stays small)."""
    coarse = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC)


def write_parquet(path: Path, n: int, side: int) -> None:
    import datasets

    rng = np.random.default_rng(0)
    texts = [ex.references for ex in read_dataset("shapes", n=min(n, 500), seed=1).examples]
    table = datasets.Dataset.from_dict(
        {
            "image": [smooth_image(rng, side) for _ in range(n)],
            "caption": [list(texts[i % len(texts)]) for i in range(n)],
            "img_id": [f"img{i:05d}" for i in range(n)],
        }
    ).cast_column("image", datasets.Image())
    table.to_parquet(str(path))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# `python -m prsl.cli ...` that writes its own memory peaks when it exits: the kernel's
# high-water mark of its resident set since exec (VmHWM), and the largest anonymous part of it,
# sampled every 10 ms (RssAnon: what the process allocated, as opposed to pages of files it
# memory-maps, such as the arrow copy of the dataset, which the kernel reclaims under pressure).
# wait4's ru_maxrss would also count this benchmark's own memory, which the child had at fork.
PEAK_REPORTING = """
import atexit, os, runpy, sys, threading, time

def status(field):
    with open("/proc/self/status") as handle:
        return int(next(line for line in handle if line.startswith(field)).split()[1])

anonymous = [0]

def sample():
    while True:
        anonymous[0] = max(anonymous[0], status("RssAnon:"))
        time.sleep(0.01)

def report():
    anonymous[0] = max(anonymous[0], status("RssAnon:"))
    with open(os.environ["PRSL_BENCH_PEAK_FILE"], "w") as handle:
        handle.write(f"{status('VmHWM:')} {anonymous[0]}")

threading.Thread(target=sample, daemon=True).start()
atexit.register(report)
sys.argv[0] = "prsl"
runpy.run_module("prsl.cli", run_name="__main__")
"""


def command(processes: int, config: Path, out: Path) -> list[str]:
    prsl = ["-m", "prsl.cli", "evaluate", "--config", str(config), "--set", f"output_dir={out}"]
    if processes == 1:
        return [sys.executable, "-c", PEAK_REPORTING, *prsl[2:]]
    return [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"),
        *("--num_processes", str(processes), "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no"),
        *("--main_process_port", str(free_port())),
        *prsl,
    ]


Peaks = tuple[float, float] | None
"""Peak resident set and peak anonymous memory, MiB (one process only)."""


def run(processes: int, threads: int, config: Path, out: Path, cache: Path) -> tuple[float, Peaks]:
    """(wall seconds, memory peaks) of one ``prsl evaluate``."""
    peak_file = out.with_suffix(".peak")
    env = os.environ | {
        "PRSL_BENCH_PEAK_FILE": str(peak_file),
        "OMP_NUM_THREADS": str(threads),
        "CUDA_VISIBLE_DEVICES": "",
        "HF_DATASETS_CACHE": str(cache),
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }
    start = time.perf_counter()
    child = subprocess.Popen(
        command(processes, config, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = child.communicate()
    wall = time.perf_counter() - start
    if child.returncode != 0:
        sys.exit(f"prsl evaluate failed:\n{output.decode(errors='replace')[-12000:]}")
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert runs, "no results"
    if processes > 1:  # the launcher's workers report nothing
        return wall, None
    total, anonymous = (int(kib) / 1024 for kib in peak_file.read_text().split())
    return wall, (total, anonymous)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=2000)
    parser.add_argument("--side", type=int, default=384, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=8, help="max new tokens per caption")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="prsl-bench-eval-"))
    texts = [t for ex in read_dataset("shapes", n=40, seed=0).examples for t in ex.references]
    model = root / "tiny"
    build_tiny_captioner(texts, hidden=32, layers=2, seed=0).save(model)
    configs = {}
    for n in (args.small, args.large):
        data = root / f"images{n}.parquet"
        write_parquet(data, n, args.side)
        config = root / f"eval{n}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "models": [str(model)],
                    "data": {"name": "hf", "options": {"path": str(data), "preset": "flickr30k"}},
                    "attacks": [{"name": "fgsm", "eps": ["4/255"]}],
                    "n_images": n,
                    "batch_size": args.batch,
                    "max_new_tokens": args.tokens,
                    "metrics": ["BLEU-1", "CIDEr"],
                    "gallery": 2,
                }
            )
        )
        configs[n] = (config, data.stat().st_size / 2**20)

    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}; {args.side}x{args.side} images, batch {args.batch}, "
        f"{args.tokens} new tokens, clean + FGSM"
    )
    setups = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2)]
    setups.append(("2 processes, 1 thread each", 2, 1))
    # The first run on a parquet file has `datasets` convert it to arrow, once (cached, like a
    # download); its peak is shown on its own, and every timed run reads the prepared cache.
    first = {
        n: run(1, 1, config, root / f"first{n}", root / f"cache{n}")
        for n, (config, _) in configs.items()
    }
    figures: dict[str, dict[int, list[tuple[float, Peaks]]]] = {}
    counter = 0
    for _ in range(args.repeats):
        for label, processes, threads in setups:  # interleaved: a busy phase hits every setup
            for n, (config, _) in configs.items():
                counter += 1
                out, cache = root / f"out{counter}", root / f"cache{n}"
                figures.setdefault(label, {}).setdefault(n, []).append(
                    run(processes, threads, config, out, cache)
                )

    def median(values: list[float]) -> float:
        return float(np.median(values))

    def peaks(samples: list[tuple[float, Peaks]]) -> str:
        if samples[0][1] is None:
            return " | "
        return " | ".join(f"{median([s[1][i] for s in samples]):.0f}" for i in (0, 1))

    print("\n| setup | images | parquet MiB | wall s | peak RSS MiB | peak anonymous MiB |")
    print("|---|---|---|---|---|---|")
    for n, sample in first.items():
        size, wall = configs[n][1], sample[0]
        print(f"| first run (converts) | {n} | {size:.1f} | {wall:.1f} | {peaks([sample])} |")
    for label, by_n in figures.items():
        for n, samples in by_n.items():
            wall = median([s[0] for s in samples])
            print(f"| {label} | {n} | {configs[n][1]:.1f} | {wall:.1f} | {peaks(samples)} |")

    base = figures[setups[0][0]]
    small, large = ([s[1] for s in base[n]] for n in (args.small, args.large))
    total = median([p[0] for p in large]) / median([p[0] for p in small])
    anonymous = median([p[1] for p in large]) / median([p[1] for p in small])
    held = args.large * args.side**2 * 3 / 2**20
    print(
        f"\nmemory, 1 process, {args.large} vs {args.small} images: {anonymous:.3f}x the anonymous "
        f"peak, {total:.3f}x the resident peak (which counts the pages of the memory-mapped arrow "
        f"file read so far); decoding every image up front would add {held:.0f} MiB"
    )
    print("\n| setup | items/s (slope) | x 1 process, 1 thread |")
    print("|---|---|---|")
    rates = {}
    for label, by_n in figures.items():
        seconds = median([s[0] for s in by_n[args.large]]) - median(
            [s[0] for s in by_n[args.small]]
        )
        rates[label] = (args.large - args.small) / seconds
    for label, rate in rates.items():
        print(f"| {label} | {rate:.1f} | {rate / rates[setups[0][0]]:.2f} |")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
