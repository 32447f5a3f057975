"""The report's tables, from the runs and comparisons of ``results.json``.

The compact table has one row per model, attack and ε: the headline metric against the model's
clean output, its degradation with its interval, and the comparison with the baseline. The
detailed tables put the models side by side per task, reference, attack and ε, every metric,
with the better value marked (the mark says which number is higher, not that the difference is
real: the comparisons say that).
"""

from __future__ import annotations

from prsl.report.plots import headline_metric
from prsl.report.seeds import seed_spread
from prsl.results import model_label, run_eps_text, seeded_label


def _interval_text(bounds: list[float] | None) -> str:
    return f"[{bounds[0]:+.4f}, {bounds[1]:+.4f}]" if bounds else "–"


COMPACT_HEADER = [
    "task",
    "attack",
    "ε",
    "model",
    "metric",
    "clean",
    "adversarial",
    "Δ",
    "Δ interval",
    "vs baseline",
    "difference interval",
    "outcome",
]
SEED_COLUMNS = ["seed", "Δ across seeds"]
"""Added to the compact table when the results come from several training seeds."""


def compact_table(runs: list[dict], comparisons: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per model x attack x ε (x seed) against the model's clean output: the headline
    metric, its degradation and interval, the comparison with the baseline; with several seeds
    also the seed and the degradation's mean ± sd across seeds."""
    compared = {
        (
            c["model"],
            c["task"],
            c["attack"],
            c["eps"],
            c["reference"],
            c["metric"],
            c.get("seed"),
        ): c
        for c in comparisons
    }
    baselines = {(c["baseline"], c["task"]) for c in comparisons}
    spread = seed_spread(runs)
    header = COMPACT_HEADER + (SEED_COLUMNS if spread else [])
    rows = []
    shown: set[tuple] = set()
    own = [r for r in runs if r["reference"] == "clean"]
    order = lambda r: (r["task"], r["attack"], r["eps"], model_label(r), r.get("seed", 0))  # noqa: E731
    for run in sorted(own, key=order):
        metric = headline_metric(run["task"], [run])
        if metric is None:
            continue
        bounds = run.get("intervals", {}).get("degradation", {}).get(metric)
        key = (run["model"], run["task"], run["attack"], run["eps"], "clean", metric)
        c = compared.get((*key, run.get("seed")))
        if c is not None:
            versus = f"{c['difference']:+.4f} vs {c['baseline']}"
        else:
            versus = "baseline" if (run["model"], run["task"]) in baselines else "–"
        row = [
            run["task"],
            run["attack"],
            run_eps_text(run),
            model_label(run),
            metric,
            f"{run['clean'][metric]:.4f}",
            f"{run['adversarial'][metric]:.4f}",
            f"{run['degradation'][metric]:+.4f}",
            _interval_text(bounds),
            versus,
            _interval_text(c["interval"]) if c else "–",
            OUTCOME_TEXT[c["outcome"]] if c else "–",
        ]
        if spread:
            group = (run["model"], run["task"], run["attack"], run["eps"], "clean")
            across = spread.get(group)
            text = f"{across.mean:+.4f} ± {across.sd:.4f} ({across.seeds} seeds)" if across else "–"
            # once per group of seeds, on its first row: the same figure on every row reads as
            # a per-seed value
            row += [str(run.get("seed", "–")), "" if group in shown else text]
            shown.add(group)
        rows.append(row)
    return header, rows


MODEL_HEADER = [
    "model",
    "trained with",
    "optimizer steps in all",
    "device-seconds in all",
    "device",
]


def model_rows(runs: list[dict]) -> list[list[str]]:
    """One row per model (and seed): how it was trained and what that cost, so models can be
    compared at equal steps and at equal compute. Empty when no run carries the cost."""
    seen: dict[tuple, dict] = {}
    for run in runs:
        seen.setdefault((model_label(run), run.get("seed")), run)
    if not any("train_steps" in run for run in seen.values()):
        return []
    rows = []
    for (label, seed), run in sorted(seen.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
        seconds = run.get("train_device_seconds")
        adversarial = run.get("train_adversarial")
        recipe = run["loss"] + (f" + {adversarial['attack']} AT" if adversarial else "")
        if run.get("train_started_from"):  # its steps and seconds include that model's
            recipe += f", from {run['train_started_from']}"
        rows.append(
            [
                label + (f" (seed {seed})" if seed is not None else ""),
                recipe,
                str(run.get("train_steps", "–")),
                f"{seconds:.1f}" if seconds is not None else "–",
                run.get("train_device", "–"),
            ]
        )
    return rows


OUTCOME_TEXT = {
    "less": "degrades less",
    "more": "degrades more",
    "none": "no detectable difference",
}


def table_rows(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: ε, metric, then clean / adversarial / Δ per model; a best that one model
    alone holds marked **."""
    models = sorted({seeded_label(r) for r in runs})
    header = ["ε", "metric"] + [f"{m} {p}" for m in models for p in ("clean", "adv", "Δ")]
    by = {(seeded_label(r), r["eps"]): r for r in runs}
    rows = []
    for eps in sorted({r["eps"] for r in runs}):
        metrics = sorted({m for r in runs if r["eps"] == eps for m in r["clean"]})
        for metric in metrics:
            cells = {m: by.get((m, eps)) for m in models}
            present = [c for c in cells.values() if c is not None]
            advs = [c["adversarial"][metric] for c in present]
            degs = [c["degradation"][metric] for c in present]
            best_adv, best_deg = max(advs), min(degs)
            # a best shared by several models marks none: an exact tie is not a winner
            adv_unique, deg_unique = advs.count(best_adv) == 1, degs.count(best_deg) == 1
            row = [run_eps_text(present[0]), metric]
            for m in models:
                run = cells[m]
                if run is None:
                    row += ["–"] * 3
                    continue
                adv, deg = run["adversarial"][metric], run["degradation"][metric]
                mark = len(present) > 1
                row += [
                    f"{run['clean'][metric]:.4f}",
                    _bold(f"{adv:.4f}", mark and adv_unique and adv == best_adv),
                    _bold(f"{deg:+.4f}", mark and deg_unique and deg == best_deg),
                ]
            rows.append(row)
    return header, rows


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text
