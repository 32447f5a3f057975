"""``prsl quickstart --fast`` as a user runs it: the embedded default end to end, once per suite.

It trains CE and PRSL tiny models for captioning and VQA, attacks them with BIM and PGD at three
ε, scores and reports. The checks are what a user relies on: every promised run is there with
finite numbers, the attacks really do damage, and the HTML report renders with its tables,
plots and gallery.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MATPLOTLIB_LINE_COLOURS
from prsl.results import validate_results


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("quickstart")
    prsl = Path(sys.executable).with_name("prsl")
    done = subprocess.run(
        [str(prsl), "quickstart", "--fast", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout + done.stderr


def test_results_hold_ce_and_prsl_for_both_tasks_with_finite_metrics(quickstart_run):
    out, printed = quickstart_run
    assert f"report: {out / 'report.html'}" in " ".join(printed.split())
    results = json.loads((out / "results.json").read_text())
    validate_results(results)
    found = {(r["task"], r["loss"], r["attack"], r["reference"]) for r in results["runs"]}
    for task in ("caption", "vqa"):
        for loss in ("ce", "prsl"):
            for attack in ("bim", "pgd"):
                for reference in ("clean", "ground_truth"):
                    assert (task, loss, attack, reference) in found
    epsilons = {round(r["eps"] * 255) for r in results["runs"]}
    assert epsilons == {2, 4, 8}
    for run in results["runs"]:
        for part in ("clean", "adversarial", "degradation"):
            assert all(math.isfinite(v) for v in run[part].values())
        if run["attack"] == "bim":
            assert len(run["per_step"]) == 10
    assert results["meta"]["seed"] == 0 and results["meta"]["fast"] is True


def test_attacks_do_damage(quickstart_run):
    out, _ = quickstart_run
    runs = json.loads((out / "results.json").read_text())["runs"]
    (ce,) = [
        r
        for r in runs
        if (r["task"], r["loss"], r["attack"], r["reference"]) == ("caption", "ce", "bim", "clean")
        and round(r["eps"] * 255) == 8
    ]
    assert ce["adversarial"]["CIDEr"] < 0.5 * ce["clean"]["CIDEr"]


def test_report_renders_with_tables_plots_and_gallery(quickstart_run, render_html):
    out, _ = quickstart_run
    markdown = (out / "report.md").read_text()
    assert "PRSL" in markdown.splitlines()[2]  # the verdict, whichever way it goes
    page = render_html(out / "report.html")
    assert page.dom.count("<table>") == 8  # 2 tasks x 2 attacks x 2 references
    plots = len(list((out / "plots").glob("*.png")))
    gallery = len(list(out.glob("eval-*/gallery/*.png")))
    assert plots >= 4 and gallery > 0
    assert page.dom.count("<img") == plots + gallery
    for colour in MATPLOTLIB_LINE_COLOURS:
        assert page.pixels_near(colour) > 500, colour
