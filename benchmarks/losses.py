"""Forward+backward time and peak memory of CE, PRSL and DRSL, as ratios to torch's CE.

Run: ``python benchmarks/losses.py`` (CPU, plus CUDA when present); a quick smoke run:
``python benchmarks/losses.py --devices cpu --sizes 64 --repeats 1``. Each (loss, N, dtype) cell
is timed in the same process (median of repeats after a warm-up); peak memory is measured on CUDA
with ``max_memory_allocated`` and on CPU as the growth of the resident set's high-water mark
during one forward+backward (Linux only).

PRSL is timed through the torch reference (``backend="torch"``) and, on CUDA with triton, through
the fused kernel (``backend="triton"``) and its in-place mode, which overwrites the logits with
their gradient: the logits are restored before each of its runs, outside the timed region.

The bandwidth floor is the least time any loss can take: it reads the logits once and writes
their gradient once (2 * N * V * bytes per element; labels and per-row statistics ignored) at the
device's peak bandwidth, taken as that of a large device-to-device copy (measured here, or
``--bandwidth-gbs``). An exact PRSL re-reads the logits in its backward, so its own floor is 1.5x.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from prsl.core import IGNORE_INDEX
from prsl.losses import get_loss
from prsl.losses.prsl import triton_unavailable_reason

VOCAB = 50257
K = 10
DEFAULT_SIZES = {"cpu": [1024, 4096], "cuda": [1024, 4096, 16384]}


class Loss(NamedTuple):
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    overwrites_logits: bool = False


def ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


prsl_in_place = get_loss("prsl", k=K, weight=1e-5, backend="triton", inplace=True)


def losses(fused: bool) -> dict[str, Loss]:
    table = {
        "torch CE": Loss(ce),
        f"PRSL (k={K}), torch": Loss(get_loss("prsl", k=K, weight=1e-5, backend="torch")),
    }
    if fused:
        table[f"PRSL (k={K}), fused"] = Loss(get_loss("prsl", k=K, weight=1e-5, backend="triton"))
        table[f"PRSL (k={K}), fused in place"] = Loss(prsl_in_place, overwrites_logits=True)
    table["DRSL"] = Loss(get_loss("drsl", weight=1e-6))
    table["LS-CE (0.1)"] = Loss(get_loss("ls", smoothing=0.1))
    return table


def make_inputs(n: int, dtype: torch.dtype, device: str):
    gen = torch.Generator(device=device).manual_seed(0)
    # Built in place, in the target dtype: no temporary raises the peak before the measurement.
    logits = torch.randn(n, VOCAB, generator=gen, dtype=dtype, device=device).mul_(2)
    labels = torch.randint(0, VOCAB, (n,), generator=gen, device=device)
    labels[::7] = IGNORE_INDEX
    return logits.requires_grad_(), labels


def prepare(loss: Loss, logits: torch.Tensor, pristine: torch.Tensor | None) -> None:
    """Untimed: drop the last gradient; a loss that overwrites its input gets the logits back."""
    logits.grad = None
    if loss.overwrites_logits:
        with torch.no_grad():
            logits.copy_(pristine)


def step(loss: Loss, logits: torch.Tensor, labels: torch.Tensor) -> None:
    loss.fn(logits, labels).backward()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(loss: Loss, logits, labels, pristine, device: str, repeats: int) -> float:
    prepare(loss, logits, pristine)
    step(loss, logits, labels)
    samples = []
    for _ in range(repeats):
        prepare(loss, logits, pristine)
        sync(device)
        t0 = time.perf_counter()
        step(loss, logits, labels)
        sync(device)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_mib(loss: Loss, logits, labels, pristine, device: str) -> float:
    """Extra peak memory of one forward+backward beyond what is already held, in MiB.

    CPU: the kernel's resident-set high-water mark (VmHWM), reset first through
    /proc/self/clear_refs (Linux), so earlier cells cannot mask a smaller peak.
    """
    prepare(loss, logits, pristine)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(loss, logits, labels)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    base = _proc_status_kib("VmRSS")
    step(loss, logits, labels)
    return (_proc_status_kib("VmHWM") - base) / 1024


def copy_bandwidth(device: str, repeats: int = 5) -> float:
    """Bytes per second of a 1 GiB (CPU: 256 MiB) copy, counting the read and the write."""
    src = torch.empty(2**30 if device == "cuda" else 2**28, dtype=torch.uint8, device=device)
    src.fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    samples = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        samples.append(time.perf_counter() - t0)
    return 2 * src.numel() / min(samples)


def floor_ms(n: int, dtype: torch.dtype, bandwidth: float) -> float:
    """Read the logits once and write their gradient once, at ``bandwidth`` bytes/s."""
    return 2 * n * VOCAB * dtype.itemsize / bandwidth * 1e3


def run(device: str, sizes: list[int], dtypes: list[str], repeats: int, bandwidth: float):
    rows = []
    for dtype in dtypes:
        for n in sizes:
            logits, labels = make_inputs(n, getattr(torch, dtype), device)
            reason = triton_unavailable_reason(logits, K, 0)
            if device == "cuda" and reason is not None:
                print(f"# fused PRSL not timed: {reason}", flush=True)
            table = losses(fused=device == "cuda" and reason is None)
            in_place = any(loss.overwrites_logits for loss in table.values())
            pristine = logits.detach().clone() if in_place else None
            cells = {}
            for name, loss in table.items():
                cells[name] = (
                    time_ms(loss, logits, labels, pristine, device, repeats),
                    peak_mib(loss, logits, labels, pristine, device),
                )
            cells["bandwidth floor"] = (floor_ms(n, logits.dtype, bandwidth), None)
            base_t, base_m = cells["torch CE"]
            for name, (t, m) in cells.items():
                rows.append(
                    {
                        "device": device,
                        "dtype": dtype,
                        "N": n,
                        "loss": name,
                        "ms": round(t, 3),
                        "time_ratio": round(t / base_t, 2),
                        "peak_MiB": None if m is None else round(m, 1),
                        "mem_ratio": round(m / base_m, 2) if m is not None and base_m > 0 else None,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
            del logits, labels, pristine
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=None)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help=f"N per device, default {DEFAULT_SIZES}"
    )
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--bandwidth-gbs",
        type=float,
        default=None,
        help="peak bandwidth for the floor, GB/s (default: measured with a large copy)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows, notes = [], []
    for device in devices:
        if args.bandwidth_gbs is not None:
            bandwidth, how = args.bandwidth_gbs * 1e9, "given"
        else:
            bandwidth, how = copy_bandwidth(device), "measured, large copy"
        notes.append(f"{device}: floor at {bandwidth / 1e9:.0f} GB/s ({how})")
        rows += run(
            device, args.sizes or DEFAULT_SIZES[device], args.dtypes, args.repeats, bandwidth
        )
    print(f"\n{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        print(torch.cuda.get_device_name())
    print("bandwidth floor = (read logits + write gradient) / peak bandwidth; " + "; ".join(notes))
    print(markdown(rows))


if __name__ == "__main__":
    main()
