"""``report.md``: the validation report as Markdown, its figures the PNGs written beside it."""

from __future__ import annotations

from analysis.report_build import Report
from analysis.report_words import (
    SHORT,
    best,
    fmt,
    limits_table,
    metric_columns,
    metric_rows,
    signed,
    tags,
    verdict_sentences,
)


def to_markdown(report: Report) -> str:
    """Verdict, numbers, limits, figures, method, networks: the page's order."""
    m = report.metrics
    lines = [f"# Validation of {report.lut}", "",
             f"Device {m['device']}, backend {m['backend']}.", "", "## Verdict", ""]
    lines += [f"- {s}" for s in verdict_sentences(report)] + ["", "## Numbers", ""]
    cols = metric_columns(m)
    lines.append("| | " + " | ".join(c for c, _ in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for title, cells in metric_rows(m):
        lines.append(f"| {title} | " + " | ".join(f"{v} {ci}".strip() for v, ci in cells) + " |")
    lines += ["", "Brackets: 95 % bootstrap confidence intervals.", ""]
    head, body = limits_table(m)
    if body:
        lines += ["## Limits of agreement (log latency, 95 %)", "",
                  "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body] + [""]
    lines += ["## Figures", ""]
    for p in report.plots:
        lines += [f"### {p.title}", "",
                  f"![{p.title}]({p.name}.png)" if p.png else f"**No data:** {p.empty}"]
        if p.caption:
            lines += ["", p.caption]
        lines.append("")
    lines += ["## Method", ""] + [f"- {n}" for n in report.notes] + ["", "## Networks", ""]
    return "\n".join(lines + _networks(report)) + "\n"


def _networks(report: Report) -> list[str]:
    b = best(report.rows)
    lines = [("| network | family | kind | MMACs | measured ms | naive ms | naive err % "
              f"| {SHORT[b]} ms | {SHORT[b]} err % |"), "|---" * 9 + "|"]
    for r in report.rows:
        lines.append(f"| {r['name']} | {r['family']}{tags(r)} "
                     f"| {r['kind']} | {r['macs_m']:.0f} | {r['measured_ms']:.3f} "
                     f"| {r['naive_ms']:.3f} | {signed(r['naive_err_pct'])} "
                     f"| {fmt(r.get(f'{b}_ms'), 'f3')} "
                     f"| {signed(r.get(f'{b}_err_pct'))} |")
    return lines
