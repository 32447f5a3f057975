"""Forward+backward time and peak memory of CE, PRSL and DRSL, as ratios to torch's CE.

Run: ``python benchmarks/losses.py`` (CPU, plus CUDA when present). Each (loss, N, dtype) cell is
timed in the same process (median of repeats after a warm-up); peak memory is measured on CUDA
with ``max_memory_allocated`` and on CPU as the growth of the resident set's high-water mark
during one forward+backward (Linux only).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from prsl.losses import get_loss

VOCAB = 50257


def ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


def losses() -> dict:
    return {
        "torch CE": ce,
        "PRSL (k=10)": get_loss("prsl", k=10, weight=1e-5),
        "DRSL": get_loss("drsl", weight=1e-6),
        "LS-CE (0.1)": get_loss("ls", smoothing=0.1),
    }


def make_inputs(n: int, dtype: torch.dtype, device: str):
    gen = torch.Generator(device="cpu").manual_seed(0)
    # Built in place, in the target dtype: no temporary raises the peak before the measurement.
    logits = torch.randn(n, VOCAB, generator=gen, dtype=dtype).mul_(2).to(device)
    labels = torch.randint(0, VOCAB, (n,), generator=gen).to(device)
    labels[::7] = -100
    return logits.requires_grad_(), labels


def step(fn, logits, labels) -> None:
    logits.grad = None
    fn(logits, labels).backward()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, logits, labels, device: str, repeats: int) -> float:
    step(fn, logits, labels)
    samples = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        step(fn, logits, labels)
        sync(device)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_mib(fn, logits: torch.Tensor, labels: torch.Tensor, device: str) -> float:
    """Extra peak memory of one forward+backward beyond what is already held, in MiB.

    CPU: the kernel's resident-set high-water mark (VmHWM), reset first through
    /proc/self/clear_refs (Linux), so earlier cells cannot mask a smaller peak.
    """
    logits.grad = None
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(fn, logits, labels)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    base = _proc_status_kib("VmRSS")
    step(fn, logits, labels)
    return (_proc_status_kib("VmHWM") - base) / 1024


def run(device: str, sizes: list[int], dtypes: list[str], repeats: int) -> list[dict]:
    rows = []
    for dtype in dtypes:
        for n in sizes:
            logits, labels = make_inputs(n, getattr(torch, dtype), device)
            cells = {}
            for name, fn in losses().items():
                cells[name] = (
                    time_ms(fn, logits, labels, device, repeats),
                    peak_mib(fn, logits, labels, device),
                )
            base_t, base_m = cells["torch CE"]
            for name, (t, m) in cells.items():
                rows.append(
                    {
                        "device": device,
                        "dtype": dtype,
                        "N": n,
                        "loss": name,
                        "ms": round(t, 2),
                        "time_ratio": round(t / base_t, 2),
                        "peak_MiB": round(m, 1),
                        "mem_ratio": round(m / base_m, 2) if base_m > 0 else None,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| device | dtype | N | loss | fwd+bwd ms | × CE time | peak MiB | × CE memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['device']} | {r['dtype']} | {r['N']} | {r['loss']} | {r['ms']} | "
            f"{r['time_ratio']} | {r['peak_MiB']} | {r['mem_ratio']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        rows += run(device, args.sizes, args.dtypes, args.repeats)
    print(f"\n{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(markdown(rows))


if __name__ == "__main__":
    main()
