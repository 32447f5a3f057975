"""``make install`` builds the package without a deprecation warning: setuptools (77 and later)
warns on a TOML-table ``project.license``, so the license is an SPDX string and the build needs
a setuptools that reads one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_the_license_is_an_spdx_string():
    assert PYPROJECT["project"]["license"] == "MIT"
    assert not any(c.startswith("License ::") for c in PYPROJECT["project"].get("classifiers", []))


def test_the_build_needs_a_setuptools_that_reads_spdx_licenses():
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    found = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools.replace(" ", ""))
    assert found and int(found.group(1)) >= 77, setuptools
