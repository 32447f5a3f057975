"""The report's figures (PNG, matplotlib): score against ε, against attack iteration, and against
a swept loss parameter (``prsl.k``, ``prsl.weight``, ...), one line per model or per attack.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import fmean

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from prsl.core.paths import slug  # noqa: E402
from prsl.core.pixels import LEVELS  # noqa: E402
from prsl.losses import LOSSES  # noqa: E402
from prsl.results import HEADLINE, RunRecord, grouped  # noqa: E402


def headline_metric(task: str, runs: list[RunRecord]) -> str | None:
    """The metric a task's headline shows: the first of :data:`HEADLINE` the runs have."""
    present = {m for r in runs if r.task == task for m in r.adversarial}
    return next((m for m in HEADLINE[task] if m in present), None)


def plot_headline(runs: list[RunRecord], folder: Path, level: float | None) -> Path | None:
    """The report's first figure: degradation (against the model's clean output) vs ε, one line
    per model with its ``level`` interval as a band, one panel per task x attack."""
    panels = []
    for (task, reference, attack), group in grouped(runs).items():
        metric = headline_metric(task, group)
        if reference == "clean" and metric is not None:
            panels.append((task, attack, metric, group))
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.3 * rows), squeeze=False)
    for ax, (task, attack, metric, group) in zip(axes.flat, panels, strict=False):
        l2 = group[0].norm == "l2"
        scale, axis = (1.0, "ε (L2, pixel units)") if l2 else (LEVELS, f"ε (×1/{LEVELS})")
        for i, label in enumerate(sorted({r.label for r in group})):
            mine = by_eps([r for r in group if r.label == label])
            xs = [0.0] + [eps * scale for eps in mine]
            ys = [0.0] + [fmean(r.degradation[metric] for r in rs) for rs in mine.values()]
            colour = f"C{i % 10}"
            ax.plot(xs, ys, marker="o", color=colour, label=label)
            bands = [[r.interval("degradation", metric) for r in rs] for rs in mine.values()]
            if all(b is not None for seeds in bands for b in seeds):
                # with several seeds, the band spans every seed's interval
                low = [0.0] + [min(b[0] for b in seeds) for seeds in bands]
                high = [0.0] + [max(b[1] for b in seeds) for seeds in bands]
                ax.fill_between(xs, low, high, color=colour, alpha=0.18, linewidth=0)
        ax.set(xlabel=axis, ylabel=f"{metric} degradation", title=f"{task} — {attack}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    bands = f"; bands: {level:.0%} intervals" if level is not None else ""
    if len({r.seed for r in runs}) > 1:
        bands += ", lines: mean over seeds"
    title = f"degradation vs the clean output (lower is more robust{bands})"
    return _finish(fig, axes, title, folder / "headline.png")


def by_eps(runs: list[RunRecord]) -> dict[float, list[RunRecord]]:
    """One model's runs by ε, in order; several per ε when the runs come from several seeds."""
    found: dict[float, list[RunRecord]] = defaultdict(list)
    for run in runs:
        found[run.eps].append(run)
    return dict(sorted(found.items()))


def plot_vs_eps(runs: list[RunRecord], folder: Path) -> list[Path]:
    made = []
    for (task, reference, attack), group in grouped(runs).items():
        if len({r.eps for r in group}) < 2:
            continue
        metrics = [m for m in HEADLINE[task] if m in group[0].adversarial]
        l2 = group[0].norm == "l2"
        scale, axis = (1.0, "ε (L2, pixel units)") if l2 else (LEVELS, f"ε (×1/{LEVELS})")
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
        for ax, metric in zip(axes[0], metrics, strict=True):
            for label in sorted({r.label for r in group}):
                mine = by_eps([r for r in group if r.label == label])
                first = next(iter(mine.values()))
                clean = fmean(r.clean[metric] for r in first)  # mean over seeds, if several
                xs = [0.0] + [eps * scale for eps in mine]
                ys = [fmean(r.adversarial[metric] for r in rs) for rs in mine.values()]
                ax.plot(xs, [clean, *ys], marker="o", label=label)
            ax.set(xlabel=axis, ylabel=metric, title=f"{attack}: {metric}")
            ax.grid(alpha=0.3)
        name = slug(f"eps_{task}_{reference}_{attack}") + ".png"
        made.append(_finish(fig, axes, f"{task}, reference = {reference}", folder / name))
    return made


def plot_vs_iteration(runs: list[RunRecord], folder: Path) -> list[Path]:
    """The headline metric after every attack step, one figure per task, reference and attack,
    a panel per ε (every metric's per-step values are in results.json)."""
    made = []
    curves = [r for r in runs if r.per_step]
    for (task, reference, attack), group in grouped(curves).items():
        metric = headline_metric(task, group)
        if metric is None:
            continue
        epsilons = sorted({r.eps for r in group})
        fig, axes = plt.subplots(
            1, len(epsilons), figsize=(4.2 * len(epsilons), 3.2), squeeze=False
        )
        for ax, eps in zip(axes[0], epsilons, strict=True):
            mine = [r for r in group if r.eps == eps]
            for label in sorted({r.label for r in mine}):
                seeds = [r for r in mine if r.label == label]  # one run per seed
                curves = [[r.clean[metric]] + [s[metric] for s in r.per_step or []] for r in seeds]
                ys = [fmean(values) for values in zip(*curves, strict=True)]
                ax.plot(range(len(ys)), ys, marker=".", label=label)
            ax.set(
                xlabel="attack iteration",
                ylabel=metric,
                title=f"{attack} ε={mine[0].eps_text}",
            )
            ax.grid(alpha=0.3)
        name = slug(f"iter_{task}_{reference}_{attack}") + ".png"
        made.append(_finish(fig, axes, f"{task}, reference = {reference}", folder / name))
    return made


def _finish(fig, axes, title: str, path: Path) -> Path:
    """Legend on the first panel, title, tight layout, PNG; the figure is closed."""
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def swept_parameters(runs: list[RunRecord]) -> list[tuple[str, str]]:
    """(loss, parameter) pairs whose numeric value differs between runs of that loss."""
    values: dict[tuple[str, str], set] = defaultdict(set)
    for run in runs:
        for param, value in run.loss_params.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[(run.loss, param)].add(value)
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def parameter_label(loss: str, param: str) -> str:
    """``prsl.weight: b, the regulariser's weight``, from the loss's own field description."""
    fields = LOSSES[loss].model_fields if loss in LOSSES else {}
    description = fields[param].description if param in fields else None
    meaning = (description or "").split(" (")[0].split(".")[0].strip()
    return f"{loss}.{param}" + (f": {meaning}" if meaning else "")


def plot_vs_parameter(runs: list[RunRecord], folder: Path) -> list[Path]:
    """For each loss parameter a sweep varied (``prsl.k``, ``prsl.weight``, ``drsl.weight``):
    clean and adversarial score against it.

    Left panel: against the ground truth (clean score, and one adversarial line per attack/ε:
    accuracy and robustness together). Right panel: adversarial score against the model's own
    clean output (the paper's robustness measure). Runs sharing a value but differing in other
    swept parameters are averaged, and the title says so. Runs of other losses (CE in a
    CE-vs-PRSL grid) are drawn as dotted horizontal lines for reference.
    """
    made = []
    for loss, param in swept_parameters(runs):
        label = parameter_label(loss, param)
        for task in sorted({r.task for r in runs}):
            group = [r for r in runs if r.task == task]
            metric = next((m for m in HEADLINE[task] if m in group[0].adversarial), None)
            if metric is None:
                continue
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
            averaged = _plot_parameter_panels(axes, group, loss, param, metric)
            values = sorted({r.loss_params[param] for r in group if r.loss == loss})
            for ax, reference in zip(axes, ("ground truth", "clean output"), strict=True):
                ax.set(xlabel=label, ylabel=metric, title=f"{metric} vs {reference}")
                ax.grid(alpha=0.3)
                if all(isinstance(v, int) for v in values):
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                elif values[0] > 0 and values[-1] / values[0] >= 10:
                    ax.set_xscale("log")
            note = " (averaged over the other swept parameters)" if averaged else ""
            title = f"{task}: sensitivity to {label}{note}"
            name = slug(f"param_{task}_{loss}_{param}") + ".png"
            made.append(_finish(fig, axes, title, folder / name))
    return made


def _plot_parameter_panels(axes, runs: list[RunRecord], loss: str, param: str, metric: str) -> bool:
    """Draw both panels; True when several runs had to be averaged into one point."""
    points: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    baselines: dict[tuple, list[float]] = defaultdict(list)
    for run in runs:
        attack = f"{run.attack} ε={run.eps_text}"
        panel = 0 if run.reference == "ground_truth" else 1
        series = [(panel, attack, run.adversarial[metric])]
        if panel == 0:
            series.append((0, "clean", run.clean[metric]))
        for panel, name, value in series:
            if run.loss == loss and param in run.loss_params:
                points[(panel, name)][run.loss_params[param]].append(value)
            else:
                baselines[(panel, f"{name} ({run.loss})")].append(value)
    averaged = False
    names = sorted({name for _, name in points}, key=lambda n: (n != "clean", n))
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}  # same series, same colour
    for (panel, name), by_value in sorted(points.items()):
        xs = sorted(by_value)
        averaged |= any(len(by_value[x]) > 1 for x in xs if name != "clean")
        ys = [fmean(by_value[x]) for x in xs]
        axes[panel].plot(xs, ys, marker="o", color=colours[name], label=name)
    for (panel, name), values in sorted(baselines.items()):
        axes[panel].axhline(fmean(values), linestyle=":", color="grey", label=name)
    return averaged
