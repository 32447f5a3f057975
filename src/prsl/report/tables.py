"""The report's detail tables, from the runs and comparisons of ``results.json``.

The comparison table has one row per model, attack, ε and reference: the headline metric, its
degradation with its interval, and the comparison with the baseline (every cell the report's
answer counts is a row of it). The detailed tables put the models side by side per task,
reference, attack and ε, every metric; a degradation is bold, with ▲ (less than the
baseline's) or ▼ (more), only when the comparison with the baseline says the difference is real.
Nothing is marked for being merely the higher number.
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
    "reference",
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
    """One row per model x attack x ε x reference (x seed): the headline metric, its
    degradation and interval, the comparison with the baseline; with several seeds also the seed
    and the degradation's mean ± sd across seeds. Records may be given in their JSON form
    (dicts), which is validated."""
    runs = records(RunRecord, runs, "runs")
    given = records(Comparison, comparisons, "comparisons")
    compared = {_cell(c, c.reference, c.metric): c for c in given}
    baselines = {(c.baseline, c.task) for c in given}
    spread = seed_spread(runs)
    header = COMPACT_HEADER + (SEED_COLUMNS if spread else [])
    rows = []
    shown: set[tuple] = set()
    order = {"clean": 0, "ground_truth": 1}
    for run in sorted(
        runs,
        key=lambda r: (r.task, r.attack, r.eps, order[r.reference], r.label, r.seed or 0),
    ):
        metric = headline_metric(run.task, [run])
        if metric is None:
            continue
        comparison = compared.get(_cell(run, run.reference, metric))
        row = _compact_row(run, metric, comparison, (run.model, run.task) in baselines)
        if spread:
            group = (run.model, run.task, run.attack, run.eps, run.reference)
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
    outcome = OUTCOME_TEXT[c.outcome] if c else "–"
    return [
        run.task,
        run.attack,
        run.eps_text,
        run.reference,
        run.label,
        metric,
        f"{run.clean[metric]:.4f}",
        f"{run.adversarial[metric]:.4f}",
        f"{run.degradation[metric]:+.4f}",
        _interval_text(run.interval("degradation", metric)),
        versus,
        _interval_text(c.interval) if c else "–",
        f"**{outcome}**" if c and c.outcome != "none" else outcome,
    ]


def _spread_text(across: Spread | None) -> str:
    return f"{across.mean:+.4f} ± {across.sd:.4f} ({across.seeds} seeds)" if across else "–"


MODEL_HEADER = [
    "model",
    "trained with",
    "optimizer steps in all",
    "training seconds, measured",
    "device",
]
TIMING_NOTE = (
    "Training seconds are measured wall-clock time of the optimizer steps (times the processes "
    "that ran them, with the model a run started from included): {count}. A timing on a shared "
    "or loaded machine varies from run to run, and between machines; compare steps for equal "
    "work, and time on one idle machine (`prsl bench train`) for cost."
)
"""Said under the table of models; ``count`` says how many measurements each figure is."""


def model_rows(runs: list[RunRecord]) -> list[list[str]]:
    """One row per model (and seed): how it was trained, its steps and its measured training
    time. Empty when no run carries them."""
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


def table_rows(
    runs: Iterable[RunRecord | Mapping[str, Any]],
    comparisons: Iterable[Comparison | Mapping[str, Any]] = (),
) -> tuple[list[str], list[list[str]]]:
    """Header and rows: ε, metric, then clean / adversarial / Δ per model; a Δ bold with ▲ or ▼
    only where its comparison with the baseline is significant (module docstring). Records may
    be given in their JSON form (dicts), which is validated."""
    runs = records(RunRecord, runs, "runs")
    compared = {
        _cell(c, c.reference, c.metric): c for c in records(Comparison, comparisons, "comparisons")
    }
    models = sorted({r.seeded_label for r in runs})
    header = ["ε", "metric"] + [f"{m} {p}" for m in models for p in ("clean", "adv", "Δ")]
    by = {(r.seeded_label, r.eps): r for r in runs}
    rows = []
    for eps in sorted({r.eps for r in runs}):
        metrics = sorted({m for r in runs if r.eps == eps for m in r.clean})
        for metric in metrics:
            row = [next(r for r in runs if r.eps == eps).eps_text, metric]
            for m in models:
                run = by.get((m, eps))
                if run is None or metric not in run.clean:
                    row += ["–"] * 3
                    continue
                c = compared.get(_cell(run, run.reference, metric))
                row += [
                    f"{run.clean[metric]:.4f}",
                    f"{run.adversarial[metric]:.4f}",
                    _marked(f"{run.degradation[metric]:+.4f}", c),
                ]
            rows.append(row)
    return header, rows


MARKS = {"less": "▲", "more": "▼"}
"""A significant comparison's mark: the model degrades less than the baseline (▲) or more."""


def _marked(text: str, comparison: Comparison | None) -> str:
    if comparison is None or comparison.outcome not in MARKS:
        return text
    return f"**{text} {MARKS[comparison.outcome]}**"
