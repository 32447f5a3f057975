"""The cascade's cost: an evaluation with ``worst_case.stop_below`` against the same one without.

Run: ``python benchmarks/cascade.py`` (CPU, a few minutes). The model is the test suite's shapes
captioner (``tests/shapes_training.py``: the tiny captioner trained 200 Adam steps), saved once;
the grid follows RobustVLM's ensemble in shape (several attacks at each ε, the last one starting
from the worst image so far): BIM, PGD and APGD with ``--steps`` steps each, then APGD again
from the worst case, at ε = 2/255 and 4/255, on ``--items`` shapes images, batch 16, CIDEr
against the ground truth. Each repeat runs both evaluations in a fresh folder with a fresh
Scorer (its JVMs started inside the timing, as a user's run starts them), the order alternating
between repeats; the figure is the median wall time of each, their ratio, and how many of the
(attack, ε, item) cells the cascade skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from prsl.config import DataConfig
from prsl.evaluate import EvalConfig, evaluate
from prsl.metrics import Scorer
from shapes_training import train_shapes_captioner  # noqa: E402  the suite's model


def grid(steps: int) -> list[dict]:
    eps = ["2/255", "4/255"]
    return [
        {"name": "bim", "eps": eps, "steps": steps},
        {"name": "pgd", "eps": eps, "steps": steps},
        {"name": "apgd", "eps": eps, "steps": steps},
        {"name": "apgd", "label": "apgd-from-worst", "eps": eps, "steps": steps,
         "start": "worst_case"},
    ]  # fmt: skip


def timed(model: Path, out: Path, args, stop_below: float | None) -> tuple[float, int, dict]:
    cfg = EvalConfig(
        models=[str(model)],
        data=DataConfig(name="shapes", options={"n": args.items, "seed": 7}),
        attacks=grid(args.steps),
        output_dir=str(out),
        n_images=args.items,
        batch_size=16,
        max_new_tokens=8,
        metrics=["CIDEr"],
        gallery=0,
        bootstrap={"resamples": 0},
        worst_case={"metric": "CIDEr", "stop_below": stop_below},
    )
    begin = time.perf_counter()
    with Scorer() as scorer:
        results = evaluate(cfg, progress=False, scorer=scorer)
    seconds = time.perf_counter() - begin
    skipped = results["meta"]["worst_case"]["skipped"] or []
    worst = {
        r["eps"]: r["adversarial"]["CIDEr"]
        for r in results["runs"]
        if r["attack"] == "worst-case" and r["reference"] == "ground_truth"
    }
    return seconds, sum(s["skipped"] for s in skipped), worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--stop-below", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "captioner"
        train_shapes_captioner().save(model)
        times: dict[str, list[float]] = {"all": [], "cascade": []}
        found = {}
        for repeat in range(args.repeats):
            order = ["all", "cascade"] if repeat % 2 == 0 else ["cascade", "all"]
            for name in order:
                stop = args.stop_below if name == "cascade" else None
                out = Path(tmp) / f"{name}-{repeat}"
                seconds, skipped, worst = timed(model, out, args, stop)
                times[name].append(seconds)
                found[name] = {"skipped": skipped, "worst_case_cider": worst}
    cells = args.items * len(grid(args.steps)) * 2
    every, cascade = statistics.median(times["all"]), statistics.median(times["cascade"])
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                "torch": torch.__version__,
                "threads": args.threads,
                "date": time.strftime("%Y-%m-%d"),
                "items": args.items,
                "steps": args.steps,
                "stop_below": args.stop_below,
                "item_attacks": cells,
                "skipped": found["cascade"]["skipped"],
                "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
                "median_s": {"all": round(every, 2), "cascade": round(cascade, 2)},
                "ratio": round(cascade / every, 3),
                "worst_case_cider": found,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
