"""Render benchmark results (nested dicts) as Markdown: scalars as a table, row lists as tables."""

from __future__ import annotations

from typing import Any

from bench import quiet


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _flatten(d: dict[str, Any], prefix: str = "") -> tuple[list[tuple[str, Any]],
                                                           list[tuple[str, list]]]:
    scalars, tables = [], []
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            s, t = _flatten(v, name + ".")
            scalars += s
            tables += t
        elif isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            tables.append((name, v))
        elif k != "trace":
            scalars.append((name, v))
    return scalars, tables


def _table(rows: list[dict[str, Any]]) -> list[str]:
    cols = list(dict.fromkeys(c for r in rows for c in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Benchmark results ({results['when']}, {results['machine']})", ""]
    for name, out in results["sections"].items():
        lines += [f"## {name}", ""]
        state = out.get("machine_state") or {}
        if state:  # the machine while the section ran, and its warning when it was busy
            lines += [f"Machine: {state.get('summary', '')}.", ""]
            if state.get("warning"):
                lines += [f"**{state['warning']}**", ""]
        for when, key in (("Before", "quiet_probe"), ("After", "quiet_probe_after")):
            calm = out.get(key)  # the machine's own noise around it (bench/quiet.py)
            if calm:
                lines += [f"{when} it: {quiet.describe(calm)}"
                          + ("" if calm.get("quiet") else " (not quiet)") + ".", ""]
        scalars, tables = _flatten({k: v for k, v in out.items() if k not in
                                    ("machine_state", "quiet_probe", "quiet_probe_after")})
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in scalars]
        for tname, rows in tables:
            lines += ["", f"### {name}: {tname}", ""] + _table(rows[:60])
        lines.append("")
    return "\n".join(lines)
