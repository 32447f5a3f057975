"""The report: schema validation, the verdict from the comparisons only, tables with the better
value marked, the answer first, HTML without markdown."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import MATPLOTLIB_LINE_COLOURS
from prsl.cli import app
from prsl.report import verdict_lines, write_report
from prsl.results import validate_results

METRICS = ["BLEU-4", "CIDEr", "BERTScore"]


def _run(loss, eps, reference, clean, adv, per_step=None):
    run = {
        "model": f"tiny-{loss}",
        "loss": loss,
        "loss_params": {"k": 4} if loss == "prsl" else {},
        "task": "caption",
        "attack": "bim",
        "eps": eps,
        "steps": 10,
        "n_images": 8,
        "reference": reference,
        "clean": dict.fromkeys(METRICS, clean),
        "adversarial": dict.fromkeys(METRICS, adv),
        "degradation": dict.fromkeys(METRICS, clean - adv),
    }
    if per_step:
        run["per_step"] = [dict.fromkeys(METRICS, v) for v in per_step]
    return run


def _results(tmp_path, prsl_adv):
    runs = []
    for reference in ("clean", "ground_truth"):
        for eps in (2 / 255, 8 / 255):
            runs.append(_run("ce", eps, reference, 0.9, 0.3, per_step=[0.6, 0.3]))
            runs.append(_run("prsl", eps, reference, 0.88, prsl_adv, per_step=[0.7, prsl_adv]))
    folder = tmp_path / "eval"
    (folder / "gallery").mkdir(parents=True)
    for name in ("clean", "adv"):
        Image.new("RGB", (16, 16), (200, 30, 30)).save(folder / "gallery" / f"x_{name}.png")
    gallery = [
        {
            "model": "tiny-ce",
            "loss": "ce",
            "attack": "bim",
            "eps": 8 / 255,
            "key": "img-0",
            "clean": "a red square",
            "adversarial": "a blue circle",
            "images": {"clean": "gallery/x_clean.png", "adversarial": "gallery/x_adv.png"},
        }
    ]
    path = folder / "results.json"
    meta = {"bertscore_model": "MiniLM-L6"}
    path.write_text(json.dumps({"runs": runs, "gallery": gallery, "meta": meta}))
    return path


def test_report_files_tables_and_marking(tmp_path, monkeypatch):
    results = _results(tmp_path, prsl_adv=0.6)
    monkeypatch.chdir(tmp_path)  # folders given as a user types them: relative to here
    paths = write_report([results.relative_to(tmp_path)], Path("report"))
    md = paths["markdown"].read_text()
    assert "#### caption — bim — reference: clean" in md
    # PRSL keeps more under attack here, but with no comparison nothing says the difference is
    # real: no number is bold for being the higher one
    assert "| 8/255 | CIDEr | 0.9000 | 0.3000 | +0.6000 | 0.8800 | 0.6000 | +0.2800 |" in md
    assert "**" not in md
    # ... and these results carry no intervals, so the answer says so, first
    assert md.splitlines()[0].startswith("No answer: these results carry no intervals")
    assert "MiniLM-L6" in md
    # the headline, score vs ε per reference (2), score vs iteration per reference (2)
    assert len(paths["plots"]) == 1 + 2 + 2
    # every image the markdown links, the run's gallery in another folder too, is found from it
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 5 + 2
    assert all((paths["markdown"].parent / link).is_file() for link in links), links
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 5 + 2  # plots + one gallery pair, inline
    assert "a blue circle" in html and "<table>" in html


def test_the_report_answers_first_then_scores_plots_and_details(tmp_path):
    paths = write_report([_results(tmp_path, prsl_adv=0.6)], tmp_path / "report")
    md = paths["markdown"].read_text()
    assert md.splitlines()[0] == paths["answer"]
    order = [
        paths["answer"],
        "# prsl robustness report",
        "Items: 8 (caption).",
        "## Scores",
        "## Plots",
        "headline.png",
        "## Details",
        "### The answer in detail",
        "### Detailed tables",
        "### Gradient-masking checks",
        "## Gallery: caption",
    ]
    assert [md.index(s) for s in order] == sorted(md.index(s) for s in order)
    html = paths["html"].read_text()
    body = html.split("</style>")[1]
    for markup in ("**", "`", "![", "## ", "|---|"):
        assert markup not in body, markup
    assert "<code>prsl evaluate</code>" in body
    assert html.index("id='answer'") < html.index("id='scores'") < html.index("id='headline'")
    assert html.index("id='headline'") < html.index("id='summary'") < html.index("<details>")


def test_verdict_counts_only_comparisons_not_lower_numbers():
    runs = [_run("ce", 8 / 255, "clean", 0.9, 0.5), _run("prsl", 8 / 255, "clean", 0.9, 0.2)]
    (line,) = verdict_lines([], runs, 0.95)
    assert "carry no intervals" in line  # lower numbers alone say nothing


@pytest.mark.parametrize(
    "data,message",
    [
        ([], "expected an object with a 'runs' list"),
        ({"runs": []}, "missing the 'meta' object"),
        ({"runs": [{"model": "m"}], "meta": {}}, r"runs\[0\] lacks field 'loss'"),
        (
            {"runs": [_run("ce", 0.1, "clean", 1, 0) | {"task": "retrieval"}], "meta": {}},
            "task must be 'caption' or 'vqa'",
        ),
        (
            {"runs": [_run("ce", 0.1, "clean", 1, 0) | {"clean": {"CIDEr": "high"}}], "meta": {}},
            r"clean\['CIDEr'\] is not a finite number",
        ),
        (
            {
                "runs": [_run("ce", 0.1, "clean", 1, 0) | {"adversarial": {"CIDEr": float("nan")}}],
                "meta": {},
            },
            r"adversarial\['CIDEr'\] is not a finite number",
        ),
    ],
)
def test_wrong_schema_is_a_clear_error(data, message):
    with pytest.raises(ValueError, match=message):
        validate_results(data)


def test_report_rejects_files_that_are_not_results(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not a prsl results file \\(not valid JSON"):
        write_report([bad], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report([tmp_path / "missing.json"], tmp_path / "out")


def test_html_renders_in_headless_chromium_with_the_answer_first(tmp_path, render_html):
    paths = write_report([_results(tmp_path, prsl_adv=0.6)], tmp_path / "report")
    page = render_html(paths["html"])
    body = page.dom.split("<body>")[1]
    first = re.match(r'\s*<p class="answer" id="answer">([^<]*)<', body)
    assert first and html.unescape(first.group(1)) == paths["answer"].split("`")[0]
    # the field's tables (2 references), the comparisons, 2 detailed tables, the gallery
    assert page.dom.count("<img") == 7 and page.dom.count("<table>") == 2 + 1 + 2
    assert page.dom.count('<table class="gallery">') == 1
    # The plots are embedded PNGs: their line colours on screen prove they decoded and painted.
    for colour in MATPLOTLIB_LINE_COLOURS:
        assert page.pixels_near(colour) > 200, colour
    assert len(page.screenshot.getcolors(maxcolors=1 << 22)) > 50  # not a blank page


def test_odd_attack_names_and_l2_budgets_are_reported(tmp_path):
    runs = []
    for loss in ("ce", "prsl"):
        for eps in (0.5, 1.0):
            run = _run(loss, eps, "clean", 0.9, 0.4) | {"attack": "pgd-l2@a/run", "norm": "l2"}
            runs.append(run)
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"runs": runs, "meta": {}}))
    paths = write_report([path], tmp_path / "report")
    md = paths["markdown"].read_text()
    assert "| 0.5 (L2) | BERTScore |" in md and "/255" not in md.split("## caption")[1]
    assert all(p.is_file() and p.parent == tmp_path / "report" / "plots" for p in paths["plots"])


def _report_cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, " ".join(result.output.split())


def test_prsl_report_takes_a_run_folder_and_refuses_a_binary_file_in_one_line(tmp_path):
    folder = _results(tmp_path, prsl_adv=0.6).parent
    result, output = _report_cli("report", str(folder), "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, output
    assert "tiny-prsl" in (tmp_path / "report" / "report.md").read_text()

    binary = tmp_path / "model.safetensors"
    binary.write_bytes(bytes(range(256)) * 4)
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    for given, said in (
        (binary, f"{binary} is not a prsl results file (not text)"),
        (empty, f"{empty} is a folder without a results.json: pass a results.json file"),
    ):
        result, output = _report_cli("report", str(given), "--out", str(tmp_path / "other"))
        assert result.exit_code == 2, output
        assert "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert said in output
        assert not (tmp_path / "other").exists()
