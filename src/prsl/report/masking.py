"""Checks for gradient masking: the usual signs that a model looks robust without being robust.

A loss change can make the gradients an attack follows useless (flat, noisy, or pointing the
wrong way) without making the model harder to fool. Three signs of that are checked, per model,
task and attack, on the headline metric against the model's own clean output:

- a **transfer** attack (the same attack crafted on another model) degrades the model more than
  the white-box attack on the model itself, at the same ε;
- a **gradient-free** attack (Square) degrades it more than a gradient-based one at the same ε;
- a white-box attack does not drive the score towards 0 as ε grows: at its largest ε, more than
  :data:`STILL_STANDING` of the clean score is left.

A degenerate model (:func:`prsl.results.degenerate_reason`: one output for every image, say)
is not checked at all: an attack has nothing to move, so no sign would mean anything. Every
check that does not run says why. "Clearly" is said when the two intervals do not overlap. None
of this proves robustness; a flag says where to look before trusting a white-box number.
"""

from __future__ import annotations

from collections import defaultdict

from prsl.report.plots import headline_metric
from prsl.results import HEADLINE, degenerate_models, run_eps_text, seeded_label

STILL_STANDING = 0.5
"""Fraction of the clean score an attack at its largest ε should not leave standing."""


def _clearly(worse: dict, better: dict, metric: str) -> str:
    """' (clearly: the intervals do not overlap)' when ``worse`` degrades beyond ``better``."""
    a = worse.get("intervals", {}).get("degradation", {}).get(metric)
    b = better.get("intervals", {}).get("degradation", {}).get(metric)
    if a is not None and b is not None and a[0] > b[1]:
        return " (clearly: the intervals do not overlap)"
    return " (within the intervals' overlap)" if a is not None and b is not None else ""


def masking_summary(flags: list[str], checked: list[str]) -> str | None:
    """The line that stands for no flag: none found in what was checked, or nothing checked at
    all (every model degenerate, one ε only...), which is no evidence either way. None when
    there are flags."""
    if flags:
        return None
    if all(line.split(": ", 1)[-1].startswith("not checked") for line in checked):
        return "No check could run (why is said below): nothing is known about masking."
    return "No sign of masking found in the cells checked."


def _no_headline(run: dict) -> str:
    return f"no {' / '.join(HEADLINE[run['task']])} in its scores"


def _not_checked(found: list[str], shown: int = 3) -> str:
    more = len(found) - shown
    return "; ".join(found[:shown]) + (f"; +{more} more" if more > 0 else "")


def _check_line(name: str, checked: str | None, skipped: list[str], absent: str) -> str:
    """One check's line: how many cells it checked, and each cell it could not check with why
    (``absent`` when there was nothing of its kind at all)."""
    if checked is None and not skipped:
        return f"{name}: not checked ({absent})"
    if not skipped:
        return f"{name}: {checked}"
    return f"{name}: {checked + '; ' if checked else ''}not checked: {_not_checked(skipped)}"


def masking_checks(runs: list[dict]) -> tuple[list[str], list[str]]:
    """(flags, what was checked): a line per sign found, and a line per check that ran or
    could not run, with the true reason (a degenerate model is not checked at all)."""
    everything = [r for r in runs if r["reference"] == "clean"]
    degenerate = degenerate_models(runs)
    checked = [
        f"every check: not checked for {label}: it is degenerate ({why})"
        for label, why in degenerate.items()
    ]
    own = [r for r in everything if seeded_label(r) not in degenerate]
    flags: list[str] = []
    by_cell = {(seeded_label(r), r["task"], r["attack"], r["eps"]): r for r in own}
    transfers = [r for r in own if r.get("transfer_of")]
    free = [r for r in own if r.get("gradient_free") and not r.get("transfer_of")]
    white = [r for r in own if not r.get("transfer_of") and not r.get("gradient_free")]

    def where(run: dict) -> str:
        return f"{run['attack']} of {seeded_label(run)}, {run['task']}, ε={run_eps_text(run)}"

    def absent(kind: str, test) -> str:
        if any(test(r) for r in everything):
            return f"{kind} only on degenerate models"
        return f"no {kind} in these results"

    done, skipped = 0, []
    for run in transfers:
        metric = headline_metric(run["task"], [run])
        base = by_cell.get((seeded_label(run), run["task"], run["transfer_of"], run["eps"]))
        if metric is None or base is None:
            why = f"no white-box {run['transfer_of']} at that ε" if metric else _no_headline(run)
            skipped.append(f"{where(run)} ({why})")
            continue
        done += 1
        if run["degradation"][metric] > base["degradation"][metric]:
            flags.append(
                f"{seeded_label(run)}, {run['task']}: {run['attack']} (transferred) degrades "
                f"{metric} by {run['degradation'][metric]:.4g} at ε={run_eps_text(run)}, more "
                f"than {run['transfer_of']} on the model itself ({base['degradation'][metric]:.4g})"
                f"{_clearly(run, base, metric)}"
            )
    checked.append(
        _check_line(
            "transfer vs white-box",
            f"{done} transferred cell(s) checked" if done else None,
            skipped,
            "no `surrogate` in these results"
            if not any(r.get("transfer_of") for r in everything)
            else "transferred cells only on degenerate models",
        )
    )

    done, skipped = 0, []
    for run in free:
        metric = headline_metric(run["task"], [run])
        same = [
            other
            for other in white
            if (seeded_label(other), other["task"], other["eps"])
            == (seeded_label(run), run["task"], run["eps"])
        ]
        if metric is None or not same:
            why = "no gradient-based attack at that ε" if metric else _no_headline(run)
            skipped.append(f"{where(run)} ({why})")
            continue
        done += 1
        for other in same:
            if run["degradation"][metric] > other["degradation"][metric]:
                flags.append(
                    f"{seeded_label(run)}, {run['task']}: {run['attack']} (gradient-free) "
                    f"degrades {metric} by {run['degradation'][metric]:.4g} at "
                    f"ε={run_eps_text(run)}, more than {other['attack']} "
                    f"({other['degradation'][metric]:.4g}){_clearly(run, other, metric)}"
                )
    checked.append(
        _check_line(
            "gradient-free vs gradient-based",
            f"{done} Square cell(s) checked" if done else None,
            skipped,
            absent(
                "Square attack",
                lambda r: r.get("gradient_free") and not r.get("transfer_of"),
            ),
        )
    )

    series: dict[tuple, list[dict]] = defaultdict(list)
    for run in white:
        series[(seeded_label(run), run["task"], run["attack"])].append(run)
    done, skipped = 0, []
    for (label, task, attack), mine in sorted(series.items()):
        name = f"{attack} of {label}, {task}"
        if len({r["eps"] for r in mine}) < 2:
            skipped.append(f"{name} (one ε only)")
            continue
        strongest = max(mine, key=lambda r: r["eps"])
        metric = headline_metric(task, [strongest])
        if metric is None:
            skipped.append(f"{name} ({_no_headline(strongest)})")
            continue
        clean = strongest["clean"][metric]
        if clean <= 0:
            skipped.append(f"{name} (its clean {metric} is {clean:.4g}: nothing to lose)")
            continue
        done += 1
        left = strongest["adversarial"][metric] / clean
        if left > STILL_STANDING:
            flags.append(
                f"{label}, {task}: {attack} at its largest ε={run_eps_text(strongest)} leaves "
                f"{left:.0%} of the clean {metric}: the score does not approach 0 as ε grows"
            )
    checked.append(
        _check_line(
            "growth with ε",
            f"{done} white-box attack(s) with several ε checked" if done else None,
            skipped,
            absent(
                "white-box attack",
                lambda r: not r.get("transfer_of") and not r.get("gradient_free"),
            ),
        )
    )
    return flags, checked
