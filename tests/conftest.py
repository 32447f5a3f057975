"""Shared test setup: one intra-op thread, a trained tiny captioner built once per session,
and rendering a report in headless Chromium.

Every model in the suite is tiny, where torch's intra-op threads cost more than they give: on a
loaded 2-core machine a 60-step fine-tune took 23 s with 2 threads and 4 s with one. Child
processes (the DDP and kill-and-resume tests) inherit ``OMP_NUM_THREADS``.

Chromium is optional on a developer machine (the test skips, naming the package to install) but
required in CI (``CI=true``), where ``.ci/run`` installs it: there a missing browser fails the
suite instead of silently skipping the only check that the HTML report really renders.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

THREADS = int(os.environ.get("PRSL_TEST_THREADS", "1"))
"""Intra-op threads of the suite: 1, or what ``make test-portability`` sets to vary it."""


def pytest_configure(config: pytest.Config) -> None:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def scorer():
    """One :class:`prsl.metrics.Scorer` for every test that scores: its METEOR JVM and BERTScore
    model start once per session, not once per module."""
    from prsl.metrics import Scorer

    with Scorer() as shared:
        yield shared


@pytest.fixture(scope="session")
def meteor_jar():
    """pycocoevalcap's own METEOR, started once: the tests' independent reference."""
    from pycocoevalcap.meteor.meteor import Meteor

    jar = Meteor()
    yield jar
    jar.meteor_p.stdin.close()  # METEOR exits at end of input
    jar.meteor_p.wait()


@pytest.fixture(scope="session")
def trained_captioner():
    """The tiny captioner trained on shapes (``shapes_training.train_shapes_captioner``), built
    once per session and shared read-only: tests that attack it must leave it as they found it
    (``test_attacks_captioner`` checks that they do)."""
    from shapes_training import train_shapes_captioner

    return train_shapes_captioner()


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
MATPLOTLIB_LINE_COLOURS = [(31, 119, 180), (255, 127, 14)]  # tab:blue, tab:orange


@dataclass
class Rendered:
    dom: str
    screenshot: Image.Image

    def pixels_near(self, colour: tuple[int, int, int], tolerance: int = 12) -> int:
        """How many screenshot pixels have about this colour (e.g. a plot's line colour)."""
        counts = self.screenshot.getcolors(maxcolors=1 << 22) or []
        return sum(
            count
            for count, rgb in counts
            if all(abs(a - b) <= tolerance for a, b in zip(rgb, colour, strict=True))
        )


@pytest.fixture
def render_html(tmp_path: Path) -> Callable[[Path], Rendered]:
    """``render_html(path)`` -> the DOM Chromium built and a 1200x4000 screenshot of the page."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing in CI: .ci/run should have installed it")
        pytest.skip("Chromium not installed (apt-get install chromium) to render the report")

    def render(page: Path) -> Rendered:
        dom = subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / 'chromium-dom'}",
                "--virtual-time-budget=3000",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        ).stdout
        shot = tmp_path / "screenshot.png"
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / 'chromium-shot'}",
                f"--screenshot={shot}",
                "--window-size=1200,4000",
                page.as_uri(),
            ],
            capture_output=True,
            timeout=180,
            check=True,
        )
        return Rendered(dom, Image.open(shot).convert("RGB"))

    return render


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the background jobs that the selected tests need (see tests/background.py)."""
    import background

    if session.config.option.collectonly:
        return
    modules = {item.module for item in session.items if getattr(item, "module", None)}
    fixtures = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    for module in sorted(modules, key=lambda m: m.__name__):
        background.start_needed(getattr(module, "BACKGROUND", []), fixtures)


def pytest_sessionfinish(session: pytest.Session) -> None:
    import background

    background.stop_all()
