"""Checks for gradient masking: the usual signs that a model looks robust without being robust.

A loss change can make the gradients an attack follows useless (flat, noisy, or pointing the
wrong way) without making the model harder to fool. Three signs of that are checked, per model,
task and attack, on the headline metric against the model's own clean output:

- a **transfer** attack (the same attack crafted on another model) degrades the model more than
  the white-box attack on the model itself, at the same ε;
- a **gradient-free** attack (Square) degrades it more than a gradient-based one at the same ε;
- a white-box attack does not drive the score towards 0 as ε grows: at its largest ε, more than
  :data:`STILL_STANDING` of the clean score is left.

"Clearly" is said when the two intervals do not overlap. None of this proves robustness; a flag
says where to look before trusting a white-box number.
"""

from __future__ import annotations

from collections import defaultdict

from prsl.report.plots import headline_metric
from prsl.results import run_eps_text, seeded_label

STILL_STANDING = 0.5
"""Fraction of the clean score an attack at its largest ε should not leave standing."""


def _clearly(worse: dict, better: dict, metric: str) -> str:
    """' (clearly: the intervals do not overlap)' when ``worse`` degrades beyond ``better``."""
    a = worse.get("intervals", {}).get("degradation", {}).get(metric)
    b = better.get("intervals", {}).get("degradation", {}).get(metric)
    if a is not None and b is not None and a[0] > b[1]:
        return " (clearly: the intervals do not overlap)"
    return " (within the intervals' overlap)" if a is not None and b is not None else ""


def masking_checks(runs: list[dict]) -> tuple[list[str], list[str]]:
    """(flags, what was checked): a line per sign found, and a line per check that ran or
    could not run."""
    own = [r for r in runs if r["reference"] == "clean"]
    flags: list[str] = []
    checked: list[str] = []
    by_cell = {(seeded_label(r), r["task"], r["attack"], r["eps"]): r for r in own}
    transfers = [r for r in own if r.get("transfer_of")]
    free = [r for r in own if r.get("gradient_free") and not r.get("transfer_of")]
    white = [r for r in own if not r.get("transfer_of") and not r.get("gradient_free")]

    for run in transfers:
        metric = headline_metric(run["task"], [run])
        base = by_cell.get((seeded_label(run), run["task"], run["transfer_of"], run["eps"]))
        if metric is None or base is None:
            continue
        if run["degradation"][metric] > base["degradation"][metric]:
            flags.append(
                f"{seeded_label(run)}, {run['task']}: {run['attack']} (transferred) degrades "
                f"{metric} by {run['degradation'][metric]:.4g} at ε={run_eps_text(run)}, more "
                f"than {run['transfer_of']} on the model itself ({base['degradation'][metric]:.4g})"
                f"{_clearly(run, base, metric)}"
            )
    checked.append(
        f"transfer vs white-box: {len(transfers)} transferred cell(s) checked"
        if transfers
        else "transfer vs white-box: not checked (no `surrogate` in these results)"
    )

    for run in free:
        metric = headline_metric(run["task"], [run])
        if metric is None:
            continue
        for other in white:
            same = (seeded_label(other), other["task"], other["eps"]) == (
                seeded_label(run),
                run["task"],
                run["eps"],
            )
            if same and run["degradation"][metric] > other["degradation"][metric]:
                flags.append(
                    f"{seeded_label(run)}, {run['task']}: {run['attack']} (gradient-free) "
                    f"degrades {metric} by {run['degradation'][metric]:.4g} at "
                    f"ε={run_eps_text(run)}, more than {other['attack']} "
                    f"({other['degradation'][metric]:.4g}){_clearly(run, other, metric)}"
                )
    checked.append(
        f"gradient-free vs gradient-based: {len(free)} Square cell(s) checked"
        if free
        else "gradient-free vs gradient-based: not checked (no Square attack in these results)"
    )

    series: dict[tuple, list[dict]] = defaultdict(list)
    for run in white:
        series[(seeded_label(run), run["task"], run["attack"])].append(run)
    grown = 0
    for (label, task, attack), mine in sorted(series.items()):
        if len({r["eps"] for r in mine}) < 2:
            continue
        strongest = max(mine, key=lambda r: r["eps"])
        metric = headline_metric(task, [strongest])
        clean = strongest["clean"].get(metric) if metric else None
        if not clean:  # nothing to lose (a model with one output for every image, say)
            continue
        grown += 1
        left = strongest["adversarial"][metric] / clean
        if left > STILL_STANDING:
            flags.append(
                f"{label}, {task}: {attack} at its largest ε={run_eps_text(strongest)} leaves "
                f"{left:.0%} of the clean {metric}: the score does not approach 0 as ε grows"
            )
    checked.append(
        f"growth with ε: {grown} white-box attack(s) with several ε checked"
        if grown
        else "growth with ε: not checked (no white-box attack at several ε)"
    )
    return flags, checked
