"""Turn ``results.json`` files into ``report.md`` and a self-contained ``report.html``.

The verdict and the tables (:mod:`prsl.report.tables`) come first, then the plots
(:mod:`prsl.report.plots`: score against ε, against attack iteration, and against a swept loss
parameter) and a gallery of clean/adversarial pairs with both outputs. Every PNG is embedded in
the HTML, so the file can be mailed on its own.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from prsl.data import Skipped, skip_summary
from prsl.report.plots import plot_vs_eps, plot_vs_iteration, plot_vs_parameter
from prsl.report.tables import summary_lines, table_rows
from prsl.results import grouped, load_results, run_eps_text


def write_report(
    result_files: list[Path], out: Path, title: str = "prsl robustness report"
) -> dict:
    """Write report.md, report.html and plots/ into ``out``; returns their paths."""
    runs, gallery, meta = load_results(result_files)
    out.mkdir(parents=True, exist_ok=True)
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    plots = (
        plot_vs_eps(runs, plots_dir)
        + plot_vs_iteration(runs, plots_dir)
        + plot_vs_parameter(runs, plots_dir)
    )
    sections = []
    for (task, reference, attack), group in grouped(runs).items():
        header, rows = table_rows(group)
        sections.append((f"{task} — {attack} — reference: {reference}", header, rows))
    md = _markdown(title, meta, runs, sections, plots, gallery, out)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html(title, meta, runs, sections, plots, gallery))
    return {"markdown": out / "report.md", "html": out / "report.html", "plots": plots}


def _notes(meta: dict) -> list[str]:
    notes = [
        "Degradation Δ = clean score − adversarial score (lower is more robust). "
        "Reference *clean*: scored against the model's own clean output (the paper's protocol: "
        "how far the attack moves the answer); *ground_truth*: against the dataset references.",
    ]
    if meta.get("bertscore_model"):
        notes.append(f"BERTScore model: {meta['bertscore_model']}.")
    items = meta.get("items")
    if isinstance(items, dict) and items.get("skipped"):
        skipped = [Skipped(s["path"], s["reason"], s.get("key")) for s in meta.get("skipped", [])]
        notes.append(f"{skip_summary(skipped, items['looked_at'])} (listed in results.json).")
    if "seed" in meta:
        notes.append(f"Seed: {meta['seed']}.")
    return notes


def _markdown(title, meta, runs, sections, plots, gallery, out: Path) -> str:
    lines = [f"# {title}", "", *[f"- {s}" for s in summary_lines(runs)], ""]
    lines += [f"> {n}" for n in _notes(meta)] + [""]
    for name, header, rows in sections:
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.relative_to(out)})" for p in plots] + [""]
    if gallery:
        lines += ["## Gallery", "", "| clean | adversarial | captions |", "|---|---|---|"]
        for row in gallery:
            clean, adv = row["images"]["clean"], row["images"]["adversarial"]
            lines.append(
                f"| ![clean]({_rel(clean, out)}) | ![adv]({_rel(adv, out)}) | "
                f"{row['model']} {row['attack']} ε={run_eps_text(row)}<br>"
                f"clean: {row['clean']}<br>adversarial: {row['adversarial']} |"
            )
    return "\n".join(lines) + "\n"


def _rel(path, out: Path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _html(title, meta, runs, sections, plots, gallery) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}",
        "table{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}",
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}",
        "th{background:#f0f0f0}b{color:#0a6}img.plot{max-width:100%}",
        ".pair img{width:128px;image-rendering:pixelated;margin-right:6px}",
        "</style></head><body>",
        f"<h1>{esc(title)}</h1><ul>",
        *[f"<li>{esc(s)}</li>" for s in summary_lines(runs)],
        "</ul>",
        *[f"<p><i>{esc(n)}</i></p>" for n in _notes(meta)],
    ]
    for name, header, rows in sections:
        parts.append(f"<h2>{esc(name)}</h2><table><tr>")
        parts += [f"<th>{esc(h)}</th>" for h in header]
        parts.append("</tr>")
        for row in rows:
            cells = []
            for cell in row:
                bold = cell.startswith("**")
                text = esc(cell.strip("*"))
                cells.append(f"<td>{'<b>' + text + '</b>' if bold else text}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [f"<img class='plot' alt='{esc(p.stem)}' src='{_data_uri(p)}'>" for p in plots]
    if gallery:
        parts.append("<h2>Gallery</h2>")
        for row in gallery:
            parts.append(
                "<div class='pair'>"
                f"<img alt='clean' src='{_data_uri(row['images']['clean'])}'>"
                f"<img alt='adversarial' src='{_data_uri(row['images']['adversarial'])}'>"
                f"<p>{esc(row['model'])} ({esc(row['loss'])}), {esc(row['attack'])} "
                f"ε={run_eps_text(row)}<br>clean: <q>{esc(row['clean'])}</q><br>"
                f"adversarial: <q>{esc(row['adversarial'])}</q></p></div>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
