"""The report's tables, from the runs and comparisons of ``results.json``.

The compact table has one row per model, attack and ε: the headline metric against the model's
clean output, its degradation with its interval, and the comparison with the baseline. The
detailed tables put the models side by side per task, reference, attack and ε, every metric,
with the better value marked (the mark says which number is higher, not that the difference is
real: the comparisons say that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prsl.report.plots import headline_metric
from prsl.report.seeds import Spread, seed_spread
from prsl.results import Comparison, RunRecord, records


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


def compact_table(
    runs: Iterable[RunRecord | Mapping[str, Any]],
    comparisons: Iterable[Comparison | Mapping[str, Any]],
) -> tuple[list[str], list[list[str]]]:
    """One row per model x attack x ε (x seed) against the model's clean output: the headline
    metric, its degradation and interval, the comparison with the baseline; with several seeds
    also the seed and the degradation's mean ± sd across seeds. Records may be given in their
    JSON form (dicts), which is validated."""
    runs = records(RunRecord, runs, "runs")
    given = records(Comparison, comparisons, "comparisons")
    compared = {_cell(c, c.reference, c.metric): c for c in given}
    baselines = {(c.baseline, c.task) for c in given}
    spread = seed_spread(runs)
    header = COMPACT_HEADER + (SEED_COLUMNS if spread else [])
    rows = []
    shown: set[tuple] = set()
    own = [r for r in runs if r.reference == "clean"]
    for run in sorted(own, key=lambda r: (r.task, r.attack, r.eps, r.label, r.seed or 0)):
        metric = headline_metric(run.task, [run])
        if metric is None:
            continue
        comparison = compared.get(_cell(run, "clean", metric))
        row = _compact_row(run, metric, comparison, (run.model, run.task) in baselines)
        if spread:
            group = (run.model, run.task, run.attack, run.eps, "clean")
            # once per group of seeds, on its first row: the same figure on every row reads as
            # a per-seed value
            text = "" if group in shown else _spread_text(spread.get(group))
            row += [str(run.seed if run.seed is not None else "–"), text]
            shown.add(group)
        rows.append(row)
    return header, rows


def _cell(record: RunRecord | Comparison, reference: str, metric: str) -> tuple:
    return (record.model, record.task, record.attack, record.eps, reference, metric, record.seed)


def _compact_row(run: RunRecord, metric: str, c: Comparison | None, is_baseline: bool) -> list[str]:
    """A run's headline numbers and its comparison with the baseline, if any."""
    if c is not None:
        versus = f"{c.difference:+.4f} vs {c.baseline}"
    else:
        versus = "baseline" if is_baseline else "–"
    return [
        run.task,
        run.attack,
        run.eps_text,
        run.label,
        metric,
        f"{run.clean[metric]:.4f}",
        f"{run.adversarial[metric]:.4f}",
        f"{run.degradation[metric]:+.4f}",
        _interval_text(run.interval("degradation", metric)),
        versus,
        _interval_text(c.interval) if c else "–",
        OUTCOME_TEXT[c.outcome] if c else "–",
    ]


def _spread_text(across: Spread | None) -> str:
    return f"{across.mean:+.4f} ± {across.sd:.4f} ({across.seeds} seeds)" if across else "–"


MODEL_HEADER = [
    "model",
    "trained with",
    "optimizer steps in all",
    "device-seconds in all",
    "device",
]


def model_rows(runs: list[RunRecord]) -> list[list[str]]:
    """One row per model (and seed): how it was trained and what that cost, so models can be
    compared at equal steps and at equal compute. Empty when no run carries the cost."""
    seen: dict[tuple, RunRecord] = {}
    for run in runs:
        seen.setdefault((run.label, run.seed), run)
    if not any(run.train_steps is not None for run in seen.values()):
        return []
    rows = []
    for (label, seed), run in sorted(seen.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
        seconds = run.train_device_seconds
        adversarial = run.train_adversarial
        recipe = run.loss + (f" + {adversarial.attack} AT" if adversarial else "")
        if run.train_started_from:  # its steps and seconds include that model's
            recipe += f", from {run.train_started_from}"
        rows.append(
            [
                label + (f" (seed {seed})" if seed is not None else ""),
                recipe,
                str(run.train_steps if run.train_steps is not None else "–"),
                f"{seconds:.1f}" if seconds is not None else "–",
                run.train_device or "–",
            ]
        )
    return rows


def _once_per_cell(runs: list[RunRecord], field: str) -> list[RunRecord]:
    """One run per model, task, attack and ε (and seed) that carries ``field``: both
    references' rows of a cell carry the same value."""
    seen: dict[tuple, RunRecord] = {}
    for run in runs:
        if getattr(run, field) is not None:
            seen.setdefault((run.task, run.attack, run.eps, run.seeded_label), run)
    return [seen[key] for key in sorted(seen, key=lambda k: (k[0], k[1], k[2], k[3]))]


TARGETED_HEADER = [
    "task",
    "attack",
    "ε",
    "model",
    "targets",
    "success",
    "interval",
    "pairs (item × target)",
    "of them already on clean",
]


def targeted_rows(runs: Iterable[RunRecord | Mapping[str, Any]]) -> list[list[str]]:
    """One row per targeted cell: its success rate over (item, target) pairs with its
    interval, each target's own rate, and how many successes needed no attack."""
    rows = []
    for run in _once_per_cell(records(RunRecord, runs, "runs"), "target_success"):
        success = run.target_success
        assert success is not None
        targets = "; ".join(f"{t!r} {rate:.0%}" for t, rate in success.per_target.items())
        rows.append(
            [
                run.task,
                run.attack,
                run.eps_text,
                run.seeded_label,
                targets,
                f"{success.rate:.1%} ({success.match})",
                _rate_interval(success.interval),
                str(success.pairs),
                str(success.already),
            ]
        )
    return rows


def _rate_interval(bounds: list[float] | None) -> str:
    return f"[{bounds[0]:.1%}, {bounds[1]:.1%}]" if bounds else "–"


ITERATIONS_HEADER = [
    "task",
    "attack",
    "ε",
    "model",
    "success means",
    "succeeded",
    "median steps",
    "quartiles",
    "censored",
    "left out",
]
_CRITERIA = {
    "changed": "output changed",
    "keywords_vanished": "keywords gone",
    "target_appeared": "target appeared",
}


def iteration_rows(runs: Iterable[RunRecord | Mapping[str, Any]]) -> list[list[str]]:
    """One row per cell that recorded every step: how many steps its attack needed until
    success (median and quartiles; "> N" where that share never succeeded within its N
    steps), the share that did, and the pairs censored (never) or left out (already)."""
    rows = []
    for run in _once_per_cell(records(RunRecord, runs, "runs"), "iterations"):
        found = run.iterations
        assert found is not None
        q1, median, q3 = (
            str(q) if q is not None else f"> {found.max_steps}" for q in found.quartiles
        )
        share = found.share
        means = _CRITERIA[found.criterion]
        if found.keywords:
            means += f" ({', '.join(found.keywords)})"
        rows.append(
            [
                run.task,
                run.attack,
                run.eps_text,
                run.seeded_label,
                means,
                f"{found.succeeded} of {found.pairs}"
                + (f" ({share:.0%})" if share is not None else ""),
                median,
                f"{q1} – {q3}",
                str(found.censored),
                str(found.already),
            ]
        )
    return rows


OUTCOME_TEXT = {
    "less": "degrades less",
    "more": "degrades more",
    "none": "no detectable difference",
}


def table_rows(runs: Iterable[RunRecord | Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: ε, metric, then clean / adversarial / Δ per model; a best that one model
    alone holds marked **. Runs may be given in their JSON form (dicts), which is validated."""
    runs = records(RunRecord, runs, "runs")
    models = sorted({r.seeded_label for r in runs})
    header = ["ε", "metric"] + [f"{m} {p}" for m in models for p in ("clean", "adv", "Δ")]
    by = {(r.seeded_label, r.eps): r for r in runs}
    rows = []
    for eps in sorted({r.eps for r in runs}):
        metrics = sorted({m for r in runs if r.eps == eps for m in r.clean})
        for metric in metrics:
            cells = {m: by.get((m, eps)) for m in models}
            present = [c for c in cells.values() if c is not None]
            advs = [c.adversarial[metric] for c in present]
            degs = [c.degradation[metric] for c in present]
            best_adv, best_deg = max(advs), min(degs)
            # a best shared by several models marks none: an exact tie is not a winner
            adv_unique, deg_unique = advs.count(best_adv) == 1, degs.count(best_deg) == 1
            row = [present[0].eps_text, metric]
            for m in models:
                run = cells[m]
                if run is None:
                    row += ["–"] * 3
                    continue
                adv, deg = run.adversarial[metric], run.degradation[metric]
                mark = len(present) > 1
                row += [
                    f"{run.clean[metric]:.4f}",
                    _bold(f"{adv:.4f}", mark and adv_unique and adv == best_adv),
                    _bold(f"{deg:+.4f}", mark and deg_unique and deg == best_deg),
                ]
            rows.append(row)
    return header, rows


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text
