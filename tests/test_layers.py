"""The layer picture holds: arrows point down lut_db <- bench <- analysis, adapter <- CLI.

Read from the sources' import statements (top level and inside functions alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# package -> packages it must never import
FORBIDDEN = {
    "lut_db": {"bench", "analysis", "adapter", "netadapt_cli", "torch"},
    "bench": {"analysis", "adapter", "netadapt_cli", "torch"},
    "analysis": {"adapter", "netadapt_cli", "torch"},
    "adapter": {"analysis", "netadapt_cli"},
    "benchmarks": {"netadapt_cli"},
}


def imported(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_arrow_points_up(package: str) -> None:
    bad = {str(p.relative_to(REPO)): sorted(imported(p) & FORBIDDEN[package])
           for p in (REPO / package).rglob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}
