"""Turn ``results.json`` files into ``report.md`` and a self-contained ``report.html``.

The report answers first. Its first line is one sentence computed from the comparisons
(:mod:`prsl.report.answer`); then what limits it (degenerate models, the number of items, a
caveat when they are few, attacks that barely change any output: :mod:`prsl.report.caveats`);
then the field's table (:mod:`prsl.report.field`: rows models, columns clean and each ε, per
task and reference); then the figures (:mod:`prsl.report.plots`, the headline first); then the
details: the answer per model pair (:mod:`prsl.report.verdict`), the comparison table, the
models and their measured training time, the notes, the detailed tables (collapsible in HTML),
the gradient-masking checks (:mod:`prsl.report.masking`); and a gallery per task, one row per
item, attack and ε (sorted by item), each model's clean and adversarial output side by side.
Every PNG is embedded in the HTML, so the file can be mailed on its own.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path

from prsl.data import Skipped, skip_summary
from prsl.report.answer import answer, rules_line
from prsl.report.caveats import cascade_line, few_items_line, items_line, uninformative_line
from prsl.report.field import LEGEND, field_tables
from prsl.report.masking import masking_checks, masking_summary
from prsl.report.plots import plot_headline, plot_vs_eps, plot_vs_iteration, plot_vs_parameter
from prsl.report.seeds import seed_count
from prsl.report.tables import (
    ITERATIONS_HEADER,
    MODEL_HEADER,
    TARGETED_HEADER,
    TIMING_NOTE,
    compact_table,
    iteration_rows,
    model_rows,
    table_rows,
    targeted_rows,
)
from prsl.report.verdict import verdict_lines
from prsl.results import (
    GalleryEntry,
    Meta,
    Results,
    RunRecord,
    degenerate_models,
    degenerate_text,
    grouped,
    load_results,
)


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class GalleryRow:
    """One image under one attack and ε: each model's adversarial image and both outputs."""

    title: str
    clean_image: Path
    outputs: list[GalleryEntry]


@dataclass(frozen=True)
class Report:
    """Everything the report says, in the order it says it; the writers only format it."""

    title: str
    answer: str
    degenerate: list[str]
    lead: list[str]
    scores: list[Table]
    legend: str
    plots: list[Path]
    verdict: list[str]
    compact: Table
    models: Table
    attack_success: list[Table]
    """Targeted success rates and iterations to success (tables without rows are not shown)."""
    notes: list[str]
    detailed: list[Table]
    masking_flags: list[str]
    masking_checked: list[str]
    gallery: dict[str, list[GalleryRow]]


def write_report(
    result_files: list[Path], out: Path, title: str = "prsl robustness report"
) -> dict:
    """Write report.md, report.html and plots/ into ``out``; returns their paths, and the
    answer (the report's first line) under ``answer``."""
    loaded = load_results(result_files)
    out.mkdir(parents=True, exist_ok=True)
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    report = _compose(title, loaded, plots_dir)
    (out / "report.md").write_text(_markdown(report, out))
    (out / "report.html").write_text(_html(report))
    return {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "plots": report.plots,
        "answer": report.answer,
    }


def _compose(title: str, loaded: Results, plots_dir: Path) -> Report:
    runs, meta, level = loaded.runs, loaded.meta, loaded.level
    detailed = [
        Table(f"{task} — {attack} — reference: {reference}", *table_rows(group, loaded.comparisons))
        for (task, reference, attack), group in grouped(runs).items()
    ]
    flags, checked = masking_checks(runs)
    headline = plot_headline(runs, plots_dir, level)
    lead = [items_line(runs), few_items_line(runs, loaded.comparisons, level)]
    lead += [uninformative_line(runs), cascade_line(runs)]
    interval = f"{level:.0%}" if level is not None else "bootstrap"
    return Report(
        title=title,
        answer=answer(loaded),
        degenerate=[degenerate_text(m, why) for m, why in degenerate_models(runs).items()],
        lead=[line for line in lead if line],
        scores=[Table(t.title, t.header, t.rows) for t in field_tables(runs, loaded.comparisons)],
        legend=LEGEND.format(level=interval),
        plots=([headline] if headline else [])
        + plot_vs_eps(runs, plots_dir)
        + plot_vs_iteration(runs, plots_dir)
        + plot_vs_parameter(runs, plots_dir),
        verdict=[line for line in (rules_line(loaded),) if line]
        + verdict_lines(loaded.comparisons, runs, level),
        compact=Table(
            "Comparisons with the baseline (headline metric)",
            *compact_table(runs, loaded.comparisons),
        ),
        models=Table("Models and their training", MODEL_HEADER, model_rows(runs)),
        attack_success=[
            Table("Targeted attacks: success rate", TARGETED_HEADER, targeted_rows(runs)),
            Table("Iterations to success", ITERATIONS_HEADER, iteration_rows(runs)),
        ],
        notes=_notes(meta, runs),
        detailed=detailed,
        masking_flags=flags,
        masking_checked=checked,
        gallery=_gallery_grid(loaded.gallery, runs),
    )


def _notes(meta: Meta, runs: list[RunRecord]) -> list[str]:
    notes = [
        "Degradation Δ = clean score − adversarial score (lower is more robust). Reference "
        "'clean': scored against the model's own clean output (how far the attack moves the "
        "answer); 'ground_truth': against the dataset references.",
    ]
    seeds = seed_count(runs)
    if any(r.train_device_seconds is not None for r in runs):
        count = (
            f"one measurement per model and seed, {seeds} seeds"
            if seeds > 1
            else "one measurement per model"
        )
        notes.append(TIMING_NOTE.format(count=count))
    boot = meta.bootstrap
    if boot is not None and boot.resamples:
        seeded = f", seed {boot.seed}" if "seed" in boot.model_fields_set else ""
        notes.append(
            f"Intervals: {boot.level:.0%} percentile intervals of a paired bootstrap over the "
            f"items ({boot.resamples} resamples{seeded}; the same resamples for every model, "
            "clean and adversarial). A difference counts only when its interval excludes 0."
        )
    if seeds > 1:
        notes.append(
            f"Training seeds: {seeds}. Every number above is one seed's; 'Δ across seeds' is the "
            "mean ± sd of the seeds' degradations, and the verdict counts a cell only when the "
            "comparison of every seed agrees."
        )
    if meta.vqa_protocol:
        notes.append(f"VQA accuracy: the {meta.vqa_protocol} protocol (`vqa_protocol`).")
    if meta.bertscore_model and any("BERTScore" in r.clean for r in runs):
        notes.append(f"BERTScore model: {meta.bertscore_model}.")
    items = meta.items
    if items is not None and items.skipped:
        skipped = [Skipped(s.path, s.reason, s.key) for s in meta.skipped or []]
        notes.append(f"{skip_summary(skipped, items.looked_at)} (listed in results.json).")
    if "seed" in meta.model_fields_set:
        notes.append(f"Seed: {meta.seed}.")
    return notes


def _gallery_grid(
    gallery: list[GalleryEntry], runs: list[RunRecord]
) -> dict[str, list[GalleryRow]]:
    """Gallery rows per task (the task of the model's runs; "" when its runs span several),
    grouped by (image, attack, ε), sorted by image: one grid row each, models side by side."""
    tasks: dict[str, set[str]] = {}
    for run in runs:
        tasks.setdefault(run.model, set()).add(run.task)
    groups: dict[tuple, list[GalleryEntry]] = {}
    for row in gallery:
        found = tasks.get(row.model, set())
        task = next(iter(found)) if len(found) == 1 else ""
        groups.setdefault((task, row.key, row.attack, row.eps, row.seed), []).append(row)
    grid: dict[str, list[GalleryRow]] = {}
    for (task, key, attack, _, seed), rows in sorted(
        groups.items(), key=lambda item: (*item[0][:4], item[0][4] or 0)
    ):
        title = f"{key} — {attack} ε={rows[0].eps_text}" + (
            f" — seed {seed}" if seed is not None else ""
        )
        grid.setdefault(task, []).append(
            GalleryRow(title, Path(rows[0].images.clean), sorted(rows, key=lambda r: r.model))
        )
    return grid


# --- Markdown ---------------------------------------------------------------------------------


def _md_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    return lines + ["| " + " | ".join(row) + " |" for row in table.rows] + [""]


def _markdown(report: Report, out: Path) -> str:
    """The answer on the first line, then the title and the rest (module docstring)."""
    lines = [report.answer, "", f"# {report.title}", ""]
    lines += [f"> ⚠ {line}" for line in report.degenerate] + ([""] if report.degenerate else [])
    lines += [f"- {line}" for line in report.lead] + ([""] if report.lead else [])
    if report.scores:
        lines += ["## Scores", ""]
        for table in report.scores:
            lines += [f"### {table.title}", "", *_md_table(table)]
        lines += [f"> {report.legend}", ""]
    if report.plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({_rel(p, out)})" for p in report.plots] + [""]
    lines += ["## Details", "", "### The answer in detail", ""]
    lines += [f"- {line}" for line in report.verdict] + [""]
    lines += [f"### {report.compact.title}", "", *_md_table(report.compact)]
    if report.models.rows:
        lines += [f"### {report.models.title}", "", *_md_table(report.models)]
    for table in (t for t in report.attack_success if t.rows):
        lines += [f"### {table.title}", "", *_md_table(table)]
    lines += [f"> {n}" for n in report.notes] + [""]
    lines += ["### Detailed tables", ""]
    for table in report.detailed:
        lines += [f"#### {table.title}", "", *_md_table(table)]
    lines += ["### Gradient-masking checks", ""]
    summary = masking_summary(report.masking_flags, report.masking_checked)
    lines += [f"- ⚠ {flag}" for flag in report.masking_flags] or [f"- {summary}"]
    lines += [f"- checked: {c}" for c in report.masking_checked] + [""]
    for task, rows in report.gallery.items():
        lines += [f"## Gallery{': ' + task if task else ''}", "", *_md_gallery(rows, out), ""]
    return "\n".join(lines) + "\n"


def _md_gallery(gallery: list[GalleryRow], out: Path) -> list[str]:
    models = _gallery_models(gallery)
    lines = ["| image | " + " | ".join(models) + " |", "|" + "---|" * (len(models) + 1)]
    for row in gallery:
        by_model = {o.model: o for o in row.outputs}
        cells = [f"{row.title}<br>![clean]({_rel(row.clean_image, out)})"]
        for model in models:
            o = by_model.get(model)
            cells.append(
                f"![adversarial]({_rel(o.images.adversarial, out)})<br>"
                f"clean: {o.clean}<br>adversarial: {o.adversarial}"
                if o
                else "–"
            )
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def _gallery_models(gallery: list[GalleryRow]) -> list[str]:
    return sorted({o.model for row in gallery for o in row.outputs})


def _rel(path, out: Path) -> str:
    """``path`` as a link from a file in ``out``: relative, climbing out of ``out`` where the
    file lies elsewhere (a gallery image of a run reported into another folder)."""
    return os.path.relpath(Path(path).resolve(), Path(out).resolve())


# --- HTML -------------------------------------------------------------------------------------


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _inline(text: str) -> str:
    """Escaped text with `code` spans as <code>: the report's lines carry no other markup."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_table(table: Table) -> list[str]:
    parts = ["<table><tr>", *[f"<th>{html.escape(h)}</th>" for h in table.header], "</tr>"]
    for row in table.rows:
        cells = []
        for cell in row:
            bold = cell.startswith("**")
            text = html.escape(cell.strip("*"))
            cells.append(f"<td>{'<b>' + text + '</b>' if bold else text}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    return [*parts, "</table>"]


def _html(report: Report) -> str:
    """The answer first in the body, then the title and the rest (module docstring)."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(report.title)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}",
        "p.answer{font-size:1.3em;line-height:1.4;margin:0 0 .6em}",
        "h1{font-size:1.2em;color:#555}",
        "table{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}",
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}",
        "th{background:#f0f0f0}b{color:#0a6}img.plot{max-width:100%}",
        "details{margin-bottom:1em}summary{cursor:pointer;font-weight:600}",
        ".flag{color:#b00}.gallery td{text-align:left;max-width:220px}",
        ".gallery img{width:128px;image-rendering:pixelated;display:block}",
        "</style></head><body>",
        f"<p class='answer' id='answer'>{_inline(report.answer)}</p>",
        f"<h1>{esc(report.title)}</h1>",
        *[f"<p class='flag' id='degenerate'>⚠ {_inline(line)}</p>" for line in report.degenerate],
        *[f"<p class='lead'>{_inline(line)}</p>" for line in report.lead],
    ]
    if report.scores:
        parts.append("<section id='scores'><h2>Scores</h2>")
        for table in report.scores:
            parts += [f"<h3>{_inline(table.title)}</h3>", *_html_table(table)]
        parts += [f"<p><i>{_inline(report.legend)}</i></p>", "</section>"]
    if report.plots:
        parts.append("<section id='plots'><h2>Plots</h2>")
        parts += [
            f"<img class='plot' id='{esc(p.stem)}' alt='{esc(p.stem)}' src='{_data_uri(p)}'>"
            for p in report.plots
        ]
        parts.append("</section>")
    parts += ["<section id='details'><h2>Details</h2>"]
    parts += ["<section id='verdict'><h3>The answer in detail</h3><ul>"]
    parts += [f"<li>{_inline(line)}</li>" for line in report.verdict]
    parts += ["</ul></section>", "<section id='summary'>"]
    parts += [f"<h3>{esc(report.compact.title)}</h3>", *_html_table(report.compact)]
    if report.models.rows:
        parts += [f"<h3>{esc(report.models.title)}</h3>", *_html_table(report.models)]
    for table in (t for t in report.attack_success if t.rows):
        parts += [f"<h3>{esc(table.title)}</h3>", *_html_table(table)]
    parts += [f"<p><i>{_inline(n)}</i></p>" for n in report.notes]
    parts += ["</section>", "<section id='detailed'><h3>Detailed tables</h3>"]
    for table in report.detailed:
        parts.append(f"<details><summary>{esc(table.title)}</summary>")
        parts += [*_html_table(table), "</details>"]
    parts += ["</section>", "<section id='masking'><h3>Gradient-masking checks</h3><ul>"]
    summary = masking_summary(report.masking_flags, report.masking_checked)
    parts += [f"<li class='flag'>⚠ {_inline(f)}</li>" for f in report.masking_flags] or [
        f"<li>{_inline(summary or '')}</li>"
    ]
    parts += [f"<li>checked: {_inline(c)}</li>" for c in report.masking_checked]
    parts += ["</ul></section></section>"]
    for task, rows in report.gallery.items():
        parts += _html_gallery(task, rows)
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_gallery(task: str, gallery: list[GalleryRow]) -> list[str]:
    """A task's gallery as a table: one row per image, attack and ε, a column per model."""
    esc = html.escape
    models = _gallery_models(gallery)
    anchor = f"gallery-{task}" if task else "gallery"
    title = f"Gallery: {task}" if task else "Gallery"
    parts = [f"<section id='{esc(anchor)}'><h2>{esc(title)}</h2><table class='gallery'><tr>"]
    parts += ["<th>image</th>", *[f"<th>{esc(m)}</th>" for m in models], "</tr>"]
    for row in gallery:
        by_model = {o.model: o for o in row.outputs}
        cells = [f"<td>{esc(row.title)}<img alt='clean' src='{_data_uri(row.clean_image)}'></td>"]
        for model in models:
            o = by_model.get(model)
            cells.append(
                "<td>"
                f"<img alt='adversarial' src='{_data_uri(o.images.adversarial)}'>"
                f"clean: <q>{esc(o.clean)}</q><br>"
                f"adversarial: <q>{esc(o.adversarial)}</q></td>"
                if o
                else "<td>–</td>"
            )
        parts.append("<tr>" + "".join(cells) + "</tr>")
    return [*parts, "</table></section>"]
