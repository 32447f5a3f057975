"""The report's tables and its one-paragraph verdict, from the runs of ``results.json``.

Tables put the models (CE, PRSL, ...) side by side per task, reference, attack and ε, with the
better value marked; the summary states plainly whether PRSL degraded less than CE on this
data, in how many cells, and never more than that.
"""

from __future__ import annotations

from collections import defaultdict

from prsl.results import model_label, run_eps_text


def comparisons(runs: list[dict]) -> list[dict]:
    """CE vs PRSL cells: same task, reference, attack, ε, metric; lower degradation wins."""
    cells: dict[tuple, dict[str, float]] = defaultdict(dict)
    for run in runs:
        for metric, value in run["degradation"].items():
            cells[(run["task"], run["reference"], run["attack"], run["eps"], metric)][
                run["loss"]
            ] = value
    return [
        {"cell": cell, "ce": losses["ce"], "prsl": losses["prsl"]}
        for cell, losses in cells.items()
        if "ce" in losses and "prsl" in losses
    ]


def summary_lines(runs: list[dict]) -> list[str]:
    found = comparisons(runs)
    if not found:
        return ["No CE/PRSL pair in these results: nothing to compare."]
    lines = []
    for reference in ("clean", "ground_truth"):
        cells = [c for c in found if c["cell"][1] == reference]
        if not cells:
            continue
        wins = sum(c["prsl"] < c["ce"] for c in cells)
        ties = sum(c["prsl"] == c["ce"] for c in cells)
        verdict = (
            "PRSL degraded less than CE in most cells"
            if wins > len(cells) / 2
            else "PRSL did NOT degrade less than CE in most cells"
        )
        lines.append(
            f"Reference = {reference}: {verdict} ({wins} of {len(cells)} task/attack/ε/metric "
            f"cells lower, {ties} equal)."
        )
    return lines


def table_rows(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: ε, metric, then clean / adversarial / Δ per model; best marked **."""
    models = sorted({model_label(r) for r in runs})
    header = ["ε", "metric"] + [f"{m} {p}" for m in models for p in ("clean", "adv", "Δ")]
    by = {(model_label(r), r["eps"]): r for r in runs}
    rows = []
    for eps in sorted({r["eps"] for r in runs}):
        metrics = sorted({m for r in runs if r["eps"] == eps for m in r["clean"]})
        for metric in metrics:
            cells = {m: by.get((m, eps)) for m in models}
            present = [c for c in cells.values() if c is not None]
            best_adv = max(c["adversarial"][metric] for c in present)
            best_deg = min(c["degradation"][metric] for c in present)
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
                    _bold(f"{adv:.4f}", mark and adv == best_adv),
                    _bold(f"{deg:+.4f}", mark and deg == best_deg),
                ]
            rows.append(row)
    return header, rows


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text
