"""The repository's own promises: CI runs exactly the README's set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if re.match(r"\s*(python3 -m )?(pip|pytest|ruff)", ln.strip())]


def test_ci_runs_the_readme_setup_commands():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Set up", 1)[1].split("```", 2)[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands(block) == _commands(ci) and len(_commands(ci)) == 2
