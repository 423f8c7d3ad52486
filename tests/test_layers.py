"""The layer picture holds: arrows point down lut_db <- bench <- analysis, adapter <- the API
(``netadapt``) <- CLI, and no package's modules import each other in a circle.

Read from the sources' import statements (top level and inside functions alike): a lazy
import that breaks a loop at run time is still a loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# package -> packages it must never import
FORBIDDEN = {
    "lut_db": {"bench", "analysis", "adapter", "netadapt", "netadapt_cli", "torch"},
    "bench": {"analysis", "adapter", "netadapt", "netadapt_cli", "torch"},
    "analysis": {"adapter", "netadapt", "netadapt_cli", "torch"},
    "adapter": {"analysis", "netadapt", "netadapt_cli"},
    "netadapt": {"netadapt_cli"},  # the API: the top floor beside the CLI, which speaks it
    "benchmarks": {"netadapt_cli", "tests"},
    "loopback": {"analysis", "adapter", "netadapt", "netadapt_cli", "benchmarks", "tests"},
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


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path, known: set[str], root: Path = REPO) -> set[str]:
    """The modules of ``known`` that ``path`` imports anywhere in its body."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports the module; ``from mod import name`` the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != me}
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


PACKAGES = sorted(FORBIDDEN) + ["netadapt_cli", "tests"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    assert import_cycles(REPO, package) == []


def import_cycles(root: Path, package: str) -> list[list[str]]:
    files = list((root / package).rglob("*.py"))
    known = {module_name(p, root) for p in files}
    return cycles({module_name(p, root): module_imports(p, known, root) for p in files})


def test_a_lazy_import_loop_is_found(tmp_path: Path) -> None:
    """The check sees imports inside functions and relative ones."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    assert import_cycles(tmp_path, "pkg") == [["pkg.a", "pkg.b"]]


def test_no_test_module_imports_another() -> None:
    """Shared test helpers live in modules not named test_*: importing a test module runs
    its tests' collection twice and ties the two files together."""
    files = list((REPO / "tests").rglob("*.py"))
    known = {module_name(p) for p in files}
    bad = {module_name(p): sorted(m for m in module_imports(p, known)
                                  if m.rpartition(".")[2].startswith("test_"))
           for p in files}
    assert {k: v for k, v in bad.items() if v} == {}
