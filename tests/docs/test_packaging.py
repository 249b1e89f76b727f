"""Packaging metadata (issue 16, small things): an SPDX licence, typed package."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_licence_is_an_spdx_string_and_the_package_is_typed() -> None:
    """Scenario: pip builds the package. We expect: the licence is an SPDX expression
    (a table is deprecated: setuptools warns on every build), with a setuptools that reads
    it; py.typed ships, so type checkers use agentstream's annotations; and setuptools
    reads the project table without a warning."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in data["build-system"]["requires"]
    assert data["tool"]["setuptools"]["package-data"]["agentstream"] == ["py.typed"]
    assert (REPO / "agentstream" / "py.typed").exists()
    from setuptools.config.pyprojecttoml import read_configuration

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_configuration(REPO / "pyproject.toml")
