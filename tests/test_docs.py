"""Docs that cannot rot: the CLI reference is generated from the CLI and must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current() -> None:
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "cli_reference.py"), "--check"],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr


def test_readme_starts_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    quick = text[text.index("## Quick start"):]
    assert quick.index("make lut") < quick.index("make test") < quick.index("## How it works")
