"""Docs that cannot rot: the CLI reference is generated from the CLI and must be current, and
the README's Python example runs (the README's other checks: test_readme.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current() -> None:
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "cli_reference.py"), "--check"],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr


@pytest.mark.any_load  # what it prints is checked for its form, not its numbers
@pytest.mark.sweep  # the block sweeps a small LUT and times networks on this host
def test_readme_python_api_example_runs(tmp_path: Path) -> None:
    """The README's Python API block, run as it is in a fresh folder on this machine."""
    import os
    import re

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert re.fullmatch(r"luts/example.db@1: \d+ keys measured, \S+ fitted on 12 networks, .*",
                        lines[0]), lines
    assert re.fullmatch(r"mobilenet_v1_x0.5_32: \d+\.\d{3} ms estimated", lines[1]), lines
    rows = [line for line in lines[2:] if "ms measured" in line]
    assert len(rows) >= 6, lines
    assert lines[-1] == "report: reports/host/1/index.html", lines
    assert (tmp_path / "reports" / "host" / "1" / "index.html").is_file()
