"""The README points only inside the repository (issue 16, small things)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_links_only_to_files_inside_the_repository() -> None:
    """Scenario: a user reads the README in a clone or on a package page. We expect: every
    link and every path it names resolves to a file of the repository, none outside it
    (no ``../``), and no link leaves for a local path outside the checkout."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "../" not in text, "the README names a path outside the repository"
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links
    for target in links:
        if re.match(r"^[a-z]+://", target):
            continue
        path = (REPO / target).resolve()
        assert path.is_relative_to(REPO) and path.exists(), f"README: broken link {target}"
