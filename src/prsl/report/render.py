"""Turn ``results.json`` files into ``report.md`` and a self-contained ``report.html``.

The report first warns of each degenerate model (one whose clean outputs leave an attack nothing
to measure, :func:`prsl.results.degenerate_reason`), then leads with the answer: the verdict
(:mod:`prsl.report.verdict`) and the headline figure (degradation vs ε with interval bands),
then the compact table, the notes, the detailed tables (collapsible in HTML), the
gradient-masking checks (:mod:`prsl.report.masking`), the other figures
(:mod:`prsl.report.plots`) and a gallery laid out as a grid: one row per image, attack and ε,
each model's clean and adversarial output side by side. Every PNG is embedded in the HTML, so
the file can be mailed on its own.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from prsl.data import Skipped, skip_summary
from prsl.report.masking import masking_checks, masking_summary
from prsl.report.plots import plot_headline, plot_vs_eps, plot_vs_iteration, plot_vs_parameter
from prsl.report.seeds import seed_count
from prsl.report.tables import (
    ITERATIONS_HEADER,
    MODEL_HEADER,
    TARGETED_HEADER,
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
    degenerate: list[str]
    verdict: list[str]
    headline: Path | None
    compact: Table
    models: Table
    attack_success: list[Table]
    """Targeted success rates and iterations to success (tables without rows are not shown)."""
    notes: list[str]
    detailed: list[Table]
    masking_flags: list[str]
    masking_checked: list[str]
    plots: list[Path]
    gallery: list[GalleryRow]


def write_report(
    result_files: list[Path], out: Path, title: str = "prsl robustness report"
) -> dict:
    """Write report.md, report.html and plots/ into ``out``; returns their paths."""
    loaded = load_results(result_files)
    out.mkdir(parents=True, exist_ok=True)
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    report = _compose(title, loaded, plots_dir)
    (out / "report.md").write_text(_markdown(report, out))
    (out / "report.html").write_text(_html(report))
    plots = [report.headline] if report.headline else []
    return {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "plots": plots + report.plots,
    }


def _compose(title: str, loaded: Results, plots_dir: Path) -> Report:
    runs, meta, level = loaded.runs, loaded.meta, loaded.level
    detailed = [
        Table(f"{task} — {attack} — reference: {reference}", *table_rows(group))
        for (task, reference, attack), group in grouped(runs).items()
    ]
    flags, checked = masking_checks(runs)
    return Report(
        title=title,
        degenerate=[degenerate_text(m, why) for m, why in degenerate_models(runs).items()],
        verdict=verdict_lines(loaded.comparisons, runs, level),
        headline=plot_headline(runs, plots_dir, level),
        compact=Table("Summary", *compact_table(runs, loaded.comparisons)),
        models=Table("Models and their training cost", MODEL_HEADER, model_rows(runs)),
        attack_success=[
            Table("Targeted attacks: success rate", TARGETED_HEADER, targeted_rows(runs)),
            Table("Iterations to success", ITERATIONS_HEADER, iteration_rows(runs)),
        ],
        notes=_notes(meta, runs),
        detailed=detailed,
        masking_flags=flags,
        masking_checked=checked,
        plots=plot_vs_eps(runs, plots_dir)
        + plot_vs_iteration(runs, plots_dir)
        + plot_vs_parameter(runs, plots_dir),
        gallery=_gallery_grid(loaded.gallery),
    )


def _notes(meta: Meta, runs: list[RunRecord]) -> list[str]:
    notes = [
        "Degradation Δ = clean score − adversarial score (lower is more robust). Reference "
        "'clean': scored against the model's own clean output (how far the attack moves the "
        "answer); 'ground_truth': against the dataset references.",
    ]
    boot = meta.bootstrap
    if boot is not None and boot.resamples:
        seeded = f", seed {boot.seed}" if "seed" in boot.model_fields_set else ""
        notes.append(
            f"Intervals: {boot.level:.0%} percentile intervals of a paired bootstrap over the "
            f"items ({boot.resamples} resamples{seeded}; the same resamples for every model, "
            "clean and adversarial). A difference counts only when its interval excludes 0."
        )
    seeds = seed_count(runs)
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


def _gallery_grid(gallery: list[GalleryEntry]) -> list[GalleryRow]:
    """Gallery rows grouped by (attack, ε, image): one grid row each, models side by side."""
    groups: dict[tuple, list[GalleryEntry]] = {}
    for row in gallery:
        groups.setdefault((row.attack, row.eps, row.key, row.seed), []).append(row)
    return [
        GalleryRow(
            f"{attack} ε={rows[0].eps_text} — {key}"
            + (f" — seed {seed}" if seed is not None else ""),
            Path(rows[0].images.clean),
            sorted(rows, key=lambda r: r.model),
        )
        for (attack, _, key, seed), rows in groups.items()
    ]


# --- Markdown ---------------------------------------------------------------------------------


def _md_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    return lines + ["| " + " | ".join(row) + " |" for row in table.rows] + [""]


def _markdown(report: Report, out: Path) -> str:
    lines = [f"# {report.title}", ""]
    lines += [f"> ⚠ {line}" for line in report.degenerate] + ([""] if report.degenerate else [])
    lines += ["## Verdict", ""]
    lines += [f"- {line}" for line in report.verdict] + [""]
    if report.headline:
        lines += [f"![headline]({_rel(report.headline, out)})", ""]
    lines += [f"## {report.compact.title}", "", *_md_table(report.compact)]
    if report.models.rows:
        lines += [f"### {report.models.title}", "", *_md_table(report.models)]
    for table in (t for t in report.attack_success if t.rows):
        lines += [f"### {table.title}", "", *_md_table(table)]
    lines += [f"> {n}" for n in report.notes] + [""]
    lines += ["## Detailed tables", ""]
    for table in report.detailed:
        lines += [f"### {table.title}", "", *_md_table(table)]
    lines += ["## Gradient-masking checks", ""]
    summary = masking_summary(report.masking_flags, report.masking_checked)
    lines += [f"- ⚠ {flag}" for flag in report.masking_flags] or [f"- {summary}"]
    lines += [f"- checked: {c}" for c in report.masking_checked] + [""]
    if report.plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({_rel(p, out)})" for p in report.plots] + [""]
    if report.gallery:
        models = _gallery_models(report.gallery)
        lines += ["## Gallery", "", "| image | " + " | ".join(models) + " |"]
        lines.append("|" + "---|" * (len(models) + 1))
        for row in report.gallery:
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
    return "\n".join(lines) + "\n"


def _gallery_models(gallery: list[GalleryRow]) -> list[str]:
    return sorted({o.model for row in gallery for o in row.outputs})


def _rel(path, out: Path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


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
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(report.title)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px}",
        "table{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}",
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}",
        "th{background:#f0f0f0}b{color:#0a6}img.plot{max-width:100%}",
        "details{margin-bottom:1em}summary{cursor:pointer;font-weight:600}",
        ".flag{color:#b00}.gallery td{text-align:left;max-width:220px}",
        ".gallery img{width:128px;image-rendering:pixelated;display:block}",
        "</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
        *[f"<p class='flag' id='degenerate'>⚠ {_inline(line)}</p>" for line in report.degenerate],
        "<section id='verdict'><h2>Verdict</h2><ul>",
        *[f"<li>{_inline(line)}</li>" for line in report.verdict],
        "</ul>",
    ]
    if report.headline:
        parts.append(
            f"<img class='plot' id='headline' alt='headline' src='{_data_uri(report.headline)}'>"
        )
    parts += ["</section>", "<section id='summary'><h2>Summary</h2>"]
    parts += _html_table(report.compact)
    if report.models.rows:
        parts += [f"<h3>{esc(report.models.title)}</h3>", *_html_table(report.models)]
    for table in (t for t in report.attack_success if t.rows):
        parts += [f"<h3>{esc(table.title)}</h3>", *_html_table(table)]
    parts += [f"<p><i>{_inline(n)}</i></p>" for n in report.notes]
    parts += ["</section>", "<section id='detailed'><h2>Detailed tables</h2>"]
    for table in report.detailed:
        parts.append(f"<details><summary>{esc(table.title)}</summary>")
        parts += [*_html_table(table), "</details>"]
    parts += ["</section>", "<section id='masking'><h2>Gradient-masking checks</h2><ul>"]
    summary = masking_summary(report.masking_flags, report.masking_checked)
    parts += [f"<li class='flag'>⚠ {_inline(f)}</li>" for f in report.masking_flags] or [
        f"<li>{_inline(summary or '')}</li>"
    ]
    parts += [f"<li>checked: {_inline(c)}</li>" for c in report.masking_checked]
    parts += ["</ul></section>"]
    if report.plots:
        parts.append("<section id='plots'><h2>Plots</h2>")
        parts += [
            f"<img class='plot' alt='{esc(p.stem)}' src='{_data_uri(p)}'>" for p in report.plots
        ]
        parts.append("</section>")
    if report.gallery:
        parts += _html_gallery(report.gallery)
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_gallery(gallery: list[GalleryRow]) -> list[str]:
    """The gallery as a table: one row per image, attack and ε, a column per model."""
    esc = html.escape
    models = _gallery_models(gallery)
    parts = ["<section id='gallery'><h2>Gallery</h2><table class='gallery'><tr>"]
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
