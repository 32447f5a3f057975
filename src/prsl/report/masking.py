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
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prsl.report.plots import headline_metric
from prsl.results import HEADLINE, WORST_CASE, RunRecord, degenerate_models, records

STILL_STANDING = 0.5
"""Fraction of the clean score an attack at its largest ε should not leave standing."""


def _clearly(worse: RunRecord, better: RunRecord, metric: str) -> str:
    """' (clearly: the intervals do not overlap)' when ``worse`` degrades beyond ``better``."""
    a = worse.interval("degradation", metric)
    b = better.interval("degradation", metric)
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


def _no_headline(run: RunRecord) -> str:
    return f"no {' / '.join(HEADLINE[run.task])} in its scores"


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


def _is_transfer(run: RunRecord) -> bool:
    return bool(run.transfer_of)


def _is_free(run: RunRecord) -> bool:
    return bool(run.gradient_free) and not run.transfer_of


def _is_white(run: RunRecord) -> bool:
    # a targeted attack aims at its targets, not at the score: what it leaves says nothing; the
    # worst case is the least over every attack, gradient-free and transferred ones included;
    # a cell a cascade cut short scores only the items the attacks before it left standing
    return (
        not run.transfer_of
        and not run.gradient_free
        and not run.targets
        and not run.attack.startswith(WORST_CASE)
        and not run.cascade_skipped
    )


def _where(run: RunRecord) -> str:
    return f"{run.attack} of {run.seeded_label}, {run.task}, ε={run.eps_text}"


def _absent(kind: str, test: Callable[[RunRecord], bool], everything: list[RunRecord]) -> str:
    if any(test(r) for r in everything):
        return f"{kind} only on degenerate models"
    return f"no {kind} in these results"


def masking_checks(
    runs: Iterable[RunRecord | Mapping[str, Any]],
) -> tuple[list[str], list[str]]:
    """(flags, what was checked): a line per sign found, and a line per check that ran or
    could not run, with the true reason (a degenerate model is not checked at all). Runs may
    be given in their JSON form (dicts), which is validated."""
    runs = records(RunRecord, runs, "runs")
    everything = [r for r in runs if r.reference == "clean"]
    degenerate = degenerate_models(runs)
    checked = [
        f"every check: not checked for {label}: it is degenerate ({why})"
        for label, why in degenerate.items()
    ]
    own = [r for r in everything if r.seeded_label not in degenerate]
    flags: list[str] = []
    checked.append(_check_transfers(own, everything, flags))
    checked.append(_check_gradient_free(own, everything, flags))
    checked.append(_check_growth(own, everything, flags))
    return flags, checked


def _check_transfers(own: list[RunRecord], everything: list[RunRecord], flags: list[str]) -> str:
    """A transferred attack that degrades the model more than the white-box one at its ε."""
    by_cell = {(r.seeded_label, r.task, r.attack, r.eps): r for r in own}
    done, skipped = 0, []
    for run in filter(_is_transfer, own):
        metric = headline_metric(run.task, [run])
        base = by_cell.get((run.seeded_label, run.task, run.transfer_of, run.eps))
        if metric is None or base is None:
            why = f"no white-box {run.transfer_of} at that ε" if metric else _no_headline(run)
            skipped.append(f"{_where(run)} ({why})")
            continue
        done += 1
        if run.degradation[metric] > base.degradation[metric]:
            flags.append(
                f"{run.seeded_label}, {run.task}: {run.attack} (transferred) degrades "
                f"{metric} by {run.degradation[metric]:.4g} at ε={run.eps_text}, more "
                f"than {run.transfer_of} on the model itself ({base.degradation[metric]:.4g})"
                f"{_clearly(run, base, metric)}"
            )
    return _check_line(
        "transfer vs white-box",
        f"{done} transferred cell(s) checked" if done else None,
        skipped,
        "no `surrogate` in these results"
        if not any(_is_transfer(r) for r in everything)
        else "transferred cells only on degenerate models",
    )


def _check_gradient_free(
    own: list[RunRecord], everything: list[RunRecord], flags: list[str]
) -> str:
    """A gradient-free attack (Square) that degrades the model more than a gradient-based one."""
    white = list(filter(_is_white, own))
    done, skipped = 0, []
    for run in filter(_is_free, own):
        metric = headline_metric(run.task, [run])
        same = [
            other
            for other in white
            if (other.seeded_label, other.task, other.eps) == (run.seeded_label, run.task, run.eps)
        ]
        if metric is None or not same:
            why = "no gradient-based attack at that ε" if metric else _no_headline(run)
            skipped.append(f"{_where(run)} ({why})")
            continue
        done += 1
        for other in same:
            if run.degradation[metric] > other.degradation[metric]:
                flags.append(
                    f"{run.seeded_label}, {run.task}: {run.attack} (gradient-free) "
                    f"degrades {metric} by {run.degradation[metric]:.4g} at "
                    f"ε={run.eps_text}, more than {other.attack} "
                    f"({other.degradation[metric]:.4g}){_clearly(run, other, metric)}"
                )
    return _check_line(
        "gradient-free vs gradient-based",
        f"{done} Square cell(s) checked" if done else None,
        skipped,
        _absent("Square attack", _is_free, everything),
    )


def _check_growth(own: list[RunRecord], everything: list[RunRecord], flags: list[str]) -> str:
    """A white-box attack that leaves much of the clean score standing at its largest ε."""
    series: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in filter(_is_white, own):
        series[(run.seeded_label, run.task, run.attack)].append(run)
    done, skipped = 0, []
    for (label, task, attack), mine in sorted(series.items()):
        name = f"{attack} of {label}, {task}"
        if len({r.eps for r in mine}) < 2:
            skipped.append(f"{name} (one ε only)")
            continue
        strongest = max(mine, key=lambda r: r.eps)
        metric = headline_metric(task, [strongest])
        if metric is None:
            skipped.append(f"{name} ({_no_headline(strongest)})")
            continue
        clean = strongest.clean[metric]
        if clean <= 0:
            skipped.append(f"{name} (its clean {metric} is {clean:.4g}: nothing to lose)")
            continue
        done += 1
        left = strongest.adversarial[metric] / clean
        if left > STILL_STANDING:
            flags.append(
                f"{label}, {task}: {attack} at its largest ε={strongest.eps_text} leaves "
                f"{left:.0%} of the clean {metric}: the score does not approach 0 as ε grows"
            )
    return _check_line(
        "growth with ε",
        f"{done} white-box attack(s) with several ε checked" if done else None,
        skipped,
        _absent("white-box attack", _is_white, everything),
    )
