"""The cascade's cost: an evaluation with ``worst_case.stop_below`` against the same one without.

Run: ``python benchmarks/cascade.py`` (CPU, a few minutes). The model is the test suite's shapes
captioner (``tests/shapes_training.py``: the tiny captioner trained 200 Adam steps), saved once;
the grid follows RobustVLM's ensemble in shape (several attacks at each ε, the last one starting
from the worst image so far): BIM, PGD and APGD with ``--steps`` steps each, then APGD again
from the worst case, at ε = 2/255 and 4/255, on ``--items`` shapes images, ``--batch-size`` per
batch (16), CIDEr against the ground truth. Without ``stop_below`` (every attack on every
item) the run still judges outputs during the run, for the ``start: worst_case`` attack.

Each repeat runs both evaluations in a fresh folder with a fresh Scorer (its JVMs started inside
the timing, as a user's run starts them), the order alternating between repeats. Per run: wall
time, CPU time (this process and its reaped children, the JVMs; steadier than wall time on a
shared machine) and where the wall time went (crafting the attacks, generating outputs, judging
them during the run, the rest: loading, scoring the results, writing). The figures are medians
over repeats, the cascade's against every attack's in the same repeats, and how many of the
(attack, ε, item) cells the cascade skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import prsl.evaluate.loop as loop
from prsl.config import DataConfig
from prsl.evaluate import EvalConfig, evaluate
from prsl.evaluate.cascade import Judge
from prsl.metrics import Scorer
from prsl.metrics.coco import ptb_tokenize
from prsl.metrics.ptb import PTBProcess
from shapes_training import train_shapes_captioner  # noqa: E402  the suite's model

PARTS = {"craft": (loop, "craft"), "generate": (loop, "generate"), "judge": (Judge, "scores")}
PARTS["generate_steps"] = (loop, "generate_steps")


def grid(steps: int) -> list[dict]:
    eps = ["2/255", "4/255"]
    return [
        {"name": "bim", "eps": eps, "steps": steps},
        {"name": "pgd", "eps": eps, "steps": steps},
        {"name": "apgd", "eps": eps, "steps": steps},
        {"name": "apgd", "label": "apgd-from-worst", "eps": eps, "steps": steps,
         "start": "worst_case"},
    ]  # fmt: skip


@contextmanager
def timers(spent: dict[str, float], calls: dict[str, int]):
    """Wall time spent in each of :data:`PARTS` while the block runs."""

    def timed(name: str, real: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - begin
                calls[name] += 1

        return wrapper

    saved = {name: getattr(owner, attr) for name, (owner, attr) in PARTS.items()}
    try:
        for name, (owner, attr) in PARTS.items():
            setattr(owner, attr, timed(name, saved[name]))
        yield
    finally:
        for name, (owner, attr) in PARTS.items():
            setattr(owner, attr, saved[name])


def cpu_seconds() -> float:
    """User and system time of this process and of its children that have ended."""
    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in used)


def timed(model: Path, out: Path, args, stop_below: float | None) -> dict:
    cfg = EvalConfig(
        models=[str(model)],
        data=DataConfig(name="shapes", options={"n": args.items, "seed": 7}),
        attacks=grid(args.steps),
        output_dir=str(out),
        n_images=args.items,
        batch_size=args.batch_size,
        max_new_tokens=8,
        metrics=["CIDEr"],
        gallery=0,
        bootstrap={"resamples": 0},
        worst_case={"metric": "CIDEr", "stop_below": stop_below},
    )
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    begin, cpu = time.perf_counter(), cpu_seconds()
    with timers(spent, calls), Scorer() as scorer:
        results = evaluate(cfg, progress=False, scorer=scorer)
    seconds, cpu = time.perf_counter() - begin, cpu_seconds() - cpu
    spent["generate"] += spent.pop("generate_steps", 0.0)
    spent["rest"] = seconds - sum(spent.values())
    skipped = results["meta"]["worst_case"]["skipped"] or []
    worst = {
        r["eps"]: r["adversarial"]["CIDEr"]
        for r in results["runs"]
        if r["attack"] == "worst-case" and r["reference"] == "ground_truth"
    }
    return {
        "wall": seconds,
        "cpu": cpu,
        "parts": dict(spent),
        "judge_calls": calls["judge"],
        "skipped": sum(s["skipped"] for s in skipped),
        "worst_case_cider": worst,
    }


def median(runs: list[dict], field: Callable[[dict], float]) -> float:
    return statistics.median(field(r) for r in runs)


def summary(runs: dict[str, list[dict]]) -> dict:
    """Medians and spreads of each arm, and the cascade's ratios to every attack."""
    found: dict = {}
    for name, arm in runs.items():
        found[name] = {
            "wall_s": [round(r["wall"], 2) for r in arm],
            "cpu_s": [round(r["cpu"], 2) for r in arm],
            "median_wall_s": round(median(arm, lambda r: r["wall"]), 2),
            "median_cpu_s": round(median(arm, lambda r: r["cpu"]), 2),
            "median_parts_s": {
                part: round(median(arm, lambda r, p=part: r["parts"].get(p, 0.0)), 2)
                for part in ("craft", "generate", "judge", "rest")
            },
            "judge_calls": arm[0]["judge_calls"],
            "skipped": arm[0]["skipped"],
            "worst_case_cider": arm[0]["worst_case_cider"],
        }
    for measure in ("wall", "cpu"):
        key = f"median_{measure}_s"
        found[f"ratio_{measure}"] = round(found["cascade"][key] / found["all"][key], 3)
    # per repeat: each cascade run against the every-attack run next to it
    pairs = zip(runs["cascade"], runs["all"], strict=True)
    found["ratio_wall_per_repeat"] = [round(c["wall"] / a["wall"], 3) for c, a in pairs]
    return found


def judging(sizes: list[int], repeats: int) -> dict:
    """One judge call's cost against the corpus's size: 16 new outputs scored with CIDEr among
    ``n`` items of 5 references, by scoring the whole corpus (padded with empty candidates) and
    by :meth:`Scorer.cider_items`; and tokenising 16 new texts with a JVM started for the call
    and with the Scorer's kept one. Medians over ``repeats``, in seconds."""
    words = ["a", "the", "red", "blue", "green", "circle", "square", "on", "left", "right"]
    rng = random.Random(0)

    def caption() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(5, 12))) + "."

    found: dict = {}
    with Scorer() as scorer:
        for n in sizes:
            refs = [[caption() for _ in range(5)] for _ in range(n)]
            among = scorer.cider_among(refs)
            whole, part = [], []
            for _ in range(repeats):
                outputs = [caption() for _ in range(16)]
                padded = outputs + [""] * (n - 16)
                begin = time.perf_counter()
                scorer.score_items([(padded, refs)], ["CIDEr"])
                whole.append(time.perf_counter() - begin)
                begin = time.perf_counter()
                scorer.cider_items(among, [(list(range(16)), outputs)])
                part.append(time.perf_counter() - begin)
            found[n] = {
                "whole_corpus_s": statistics.median(whole),
                "cider_items_s": statistics.median(part),
            }
    started, kept, process = [], [], PTBProcess()
    process.tokenize(["a warm-up request starts the kept JVM"])
    for _ in range(repeats):
        begin = time.perf_counter()
        ptb_tokenize([caption() for _ in range(16)])  # a JVM for this call
        started.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        ptb_tokenize([caption() for _ in range(16)], process)
        kept.append(time.perf_counter() - begin)
    process.close()
    found["tokenize_16"] = {
        "jvm_per_call_s": statistics.median(started),
        "kept_jvm_s": statistics.median(kept),
    }
    return json.loads(json.dumps(found), parse_float=lambda x: round(float(x), 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--stop-below", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="images per attack batch: the smaller, the more of an attack's cost is per item "
        "(as on a large VLM), which is what a skip saves",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--judging",
        type=int,
        nargs="*",
        help="instead: one judge call's cost at these corpus sizes (e.g. 500 5000)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.judging:
        print(json.dumps(judging(args.judging, args.repeats), indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "captioner"
        train_shapes_captioner().save(model)
        runs: dict[str, list[dict]] = {"all": [], "cascade": []}
        for repeat in range(args.repeats):
            order = ["all", "cascade"] if repeat % 2 == 0 else ["cascade", "all"]
            for name in order:
                stop = args.stop_below if name == "cascade" else None
                runs[name].append(timed(model, Path(tmp) / f"{name}-{repeat}", args, stop))
    head = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d"),
        "items": args.items,
        "steps": args.steps,
        "stop_below": args.stop_below,
        "batch_size": args.batch_size,
        "item_attacks": args.items * len(grid(args.steps)) * 2,
    }
    print(json.dumps(head | summary(runs), indent=1))


if __name__ == "__main__":
    main()
