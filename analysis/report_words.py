"""What the validation report says, as text: the verdict's sentences, the numbers' tables
and how each value is written. The Markdown and HTML writers and the CLI share it, so the
page, the file and the terminal say the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from analysis import agreement, anchors, stats
from analysis.report_build import Report

# (row title, agreement key, format) of the numbers table
METRIC_ROWS = [("within ±5 %", "within_5pct", "pct0"), ("within ±10 %", "within_10pct", "pct0"),
               ("Pearson r", "pearson_r", "f4"), ("Spearman rho", "spearman_rho", "f4"),
               ("Kendall tau", "kendall_tau", "f4"), ("RMSE (ms)", "rmse_ms", "f3"),
               ("MAPE (%)", "mape_pct", "f2"), ("max error (%)", "max_error_pct", "f1")]
GROUP_TITLES = {"unseen": "unseen by the calibration", "in_space": "in space",
                "held_out": "held-out families", "32px": "32 px", "int8": "int8"}
SHORT = {"naive": "naive", "drift": "aligned", "calibrated": "calibrated"}  # table headers
HOW = {"calibrated": "the LUT's calibrated estimate, as netadapt estimate prints it (its "
                     "stored in-network model).",
       "drift": "the sum of LUT entries aligned for overhead and drift."}


def fmt(v: Any, how: str) -> str:
    """``how``: "pct0" (a share as a whole percent) or "fN" (N decimals); "–" for none."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if how == "pct0":
        return f"{100 * v:.0f} %"
    text = f"{v:.{how[1:]}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.0"


def signed(v: float | None, digits: int = 1) -> str:
    """A change with its sign: "+3.2", "-1.0", "0.0"."""
    if v is None:
        return "–"
    return fmt(v, f"f{digits}") if round(v, digits) <= 0 else f"+{v:.{digits}f}"


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:.0f} %" if b else "–"


def cell(a: Mapping[str, Any], key: str, how: str) -> tuple[str, str]:
    """(value, its confidence interval or '')."""
    if not a or key not in a:
        return "–", ""
    ci = a.get("ci", {}).get(key)
    return fmt(a[key], how), (f"[{fmt(ci[0], how)}, {fmt(ci[1], how)}]" if ci else "")


def metric_columns(metrics: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(column title, agreement dict) for the numbers table: every predictor in space, the
    calibrated estimate unseen and held out (else the aligned sum held out), then MACs."""
    preds = metrics["predictors"]
    cols = [(f"{stats.PREDICTOR_LABELS[name]} (in space)", groups.get("in_space", {}))
            for name, groups in preds.items()]
    for name in ("calibrated", "calibrated_drift", "calibrated_anchored"):
        for g in ("unseen", "held_out"):
            if g in preds.get(name, {}):
                cols.append((f"{stats.PREDICTOR_LABELS[name]} ({g.replace('_', ' ')})",
                             preds[name][g]))
    if "calibrated" not in preds and "held_out" in preds.get("drift", {}):
        cols.append((f"{stats.PREDICTOR_LABELS['drift']} (held out)", preds["drift"]["held_out"]))
    if metrics.get("macs"):
        cols.append(("MACs, best line (in space)", metrics["macs"].get("in_space", {})))
    return cols


def metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The numbers table's body: (row title, (value, interval) per metric_columns column)."""
    cols = metric_columns(metrics)
    return [(title, [cell(a, key, how) for _, a in cols]) for title, key, how in METRIC_ROWS]


def verdict_sentences(report: Report) -> list[str]:
    """The headline, sentence by sentence: the estimate's agreement, then its caveats."""
    v = report.metrics["verdict"]
    which = ("validation networks the calibration was not fitted on"
             if v["predictor"] == "calibrated" else "in-space validation networks")
    out = [(f"{v['within_5']} of {v['n']} {which} "
           f"({pct(v['within_5'], v['n'])}) are estimated within ±5 % of their measured "
           f"latency, {v['within_10']} ({pct(v['within_10'], v['n'])}) within ±10 %; "
           f"Pearson r = {fmt(v['pearson_r'], 'f4')}. Estimate: " + HOW[v["predictor"]])]
    if v["held_out_n"]:
        out.append(f"Held-out families (never in the sweep space): {v['held_out_within_5']} of "
                   f"{v['held_out_n']} within ±5 %, {v['held_out_within_10']} within ±10 %"
                   f" (MAPE {fmt(v['held_out_mape_pct'], 'f1')} %).")
    if v.get("limits"):
        out.append("Limits of agreement (log latency, 95 %): " + agreement.describe(v["limits"])
                   + ".")
    if v.get("held_out_limits"):
        out.append("Held out: " + agreement.describe(v["held_out_limits"]) + ".")
    if v.get("anchored"):
        out.append(anchored_sentence(v["anchored"]))
    out.append(f"The naive sum of LUT entries: {v['naive_within_5']} of {v['n']} within ±5 %, "
               f"{fmt(v['naive_mean_error_pct'], 'f1')} % on average.")
    if v.get("calibration_warning"):
        out.append(v["calibration_warning"])
    if v.get("busy_networks"):
        out.append(f"warning: {v['busy_networks']} of the networks were measured while the "
                   f"machine was busy ({'; '.join(v['busy_reasons'])}): their numbers may be "
                   "off by 10-45 %; measure again on a quiet machine.")
    elif not v.get("state_recorded"):
        out.append("The machine's state was not recorded with these measurements.")
    return out


def anchored_sentence(a: Mapping[str, Any]) -> str:
    """The anchored estimate in one sentence: how far the anchors moved, then its counts."""
    moved = ", ".join(f"{x['anchors']} of them ran {100 * (x['level'] - 1):+.1f} % against "
                      "their calibrated estimates" for x in a["sessions"])
    held = (f", held out {a['held_out_within_5']} of {a['held_out_n']}"
            if a.get("held_out_n") else "")
    return (f"Re-levelled by the calibration's own networks measured in the same session "
            f"({moved}; each network by the {anchors.K} nearest in latency): {a['within_5']} "
            f"of {a['n']} within ±5 %{held}.")


def verdict_is_good(report: Report) -> bool:
    """At least 95 % within ±5 %, measured on a quiet machine."""
    v = report.metrics["verdict"]
    return bool(v["n"] and v["within_5"] >= 0.95 * v["n"] and not v.get("busy_networks"))


def limits_table(m: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the limits of agreement per test set, as the page shows them."""
    lim = m.get("limits", {})
    head = ["test set", "n", "bias", "estimate vs measured", "measured vs measured again",
            "width ratio"]
    body = []
    for g, a in lim.get("groups", {}).items():
        e, r = a["estimate"], a["repeatability"]
        body.append([GROUP_TITLES.get(g, g), str(e.get("n", 0)), signed(e.get("bias_pct"))
                     + (" %" if "bias_pct" in e else ""), _range(e), _range(r),
                     fmt(a.get("width_ratio"), "f2") + ("x" if "width_ratio" in a else "")])
    return head, body


def limits_label(m: Mapping[str, Any]) -> str:
    """The predictor the limits are of, in words."""
    name = m.get("limits", {}).get("predictor", "")
    return stats.PREDICTOR_LABELS.get(name, name)


def _range(a: Mapping[str, Any]) -> str:
    if "lower_pct" not in a:
        return "–"
    return f"{signed(a['lower_pct'])} % to {signed(a['upper_pct'])} %"


def best(rows: Sequence[Mapping[str, Any]]) -> str:
    """The estimate the network tables show beside the naive sum."""
    return "calibrated" if rows and "calibrated_ms" in rows[0] else "drift"


def tags(r: Mapping[str, Any]) -> str:
    """A network's marks after its family: held out, in the calibration set."""
    return (" (held out)" if r["held_out"] else "") + (" (calibration set)" if r.get("fitted")
                                                      else "")
