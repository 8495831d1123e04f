"""The documentation builds strictly, and the README's links lead somewhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = Path(sys.executable).with_name("mkdocs")
#: A Markdown link or image to a file of the repository (not a URL, not an anchor of the same page).
_RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s#]+)(?:#[^)\s]*)?\)")


def test_the_site_builds_strictly_with_every_page_in_the_navigation(tmp_path: Path) -> None:
    built = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=240,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "admin-api" / "index.html").exists()


def test_every_relative_link_of_the_readme_names_a_file_of_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [target for target in _RELATIVE_LINK.findall(readme) if not (ROOT / target).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
