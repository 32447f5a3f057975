"""``benchmarks/gpu.sh``, the prepared GPU check: a part that fails leaves every other part's
output, and its own exit status, in the one results file (checked here with a Python that fails
every command; the GPU run itself is a benchmark, not a test)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_part_reports_even_when_each_one_fails(tmp_path):
    failing = tmp_path / "python"
    failing.write_text('#!/bin/sh\necho "cannot run: $*" >&2\nexit 3\n')
    failing.chmod(0o755)
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh")],
        env=os.environ | {"OUT": str(tmp_path / "out"), "PYTHON": str(failing)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "out" / "gpu_results.md").read_text()
    parts = re.findall(r"^## (\d)\. ", report, flags=re.MULTILINE)
    assert parts == ["1", "2", "3", "4", "5"]
    assert len(re.findall(r"^exit 3 after \d+ s$", report, flags=re.MULTILINE)) == 5
    assert report.count("cannot run:") >= 5  # each part's own output is kept
    assert f"tables: {tmp_path / 'out' / 'gpu_results.md'}" in done.stdout
