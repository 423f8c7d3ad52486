"""``index.html``: the validation report as one self-contained page.

Rendered from the Jinja2 templates in ``analysis/templates/`` (``report.html``, its CSS
inlined from ``report.css``) with autoescaping on: network names, families and notes
arrive escaped. Images are embedded as data URIs and the page has no scripts and no
external links, so it opens from disk anywhere.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import jinja2

from analysis.report_build import Report
from analysis.report_words import (
    SHORT,
    best,
    fmt,
    limits_label,
    limits_table,
    metric_columns,
    metric_rows,
    signed,
    tags,
    verdict_is_good,
    verdict_sentences,
)

ENV = jinja2.Environment(loader=jinja2.PackageLoader("analysis", "templates"),
                         autoescape=True, undefined=jinja2.StrictUndefined,
                         trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
ENV.filters.update(fmt=fmt, signed=signed, tags=tags,
                   b64=lambda data: base64.b64encode(data).decode())


def to_html(report: Report) -> str:
    """The page: verdict first, then the numbers, the figures, the method, the networks."""
    m = report.metrics
    v = m["verdict"]
    head, body = limits_table(m)
    b = best(report.rows)
    return ENV.get_template("report.html").render(
        report=report, m=m, good=verdict_is_good(report),
        measured_whole=v["n"] + v["held_out_n"], verdict=verdict_sentences(report),
        columns=[title for title, _ in metric_columns(m)], headline=_headline_column(m),
        metric_rows=metric_rows(m), limits_head=head, limits_body=body,
        limits_label=limits_label(m), best=b, best_title=SHORT[b])


def _headline_column(m: Mapping[str, Any]) -> int | None:
    """Which numbers column the verdict quotes, to mark it on the page."""
    v = m["verdict"]
    quoted = m["predictors"][v["predictor"]].get(
        "unseen" if v["predictor"] == "calibrated" else "in_space")
    return next((i for i, (_, a) in enumerate(metric_columns(m)) if a is quoted), None)
