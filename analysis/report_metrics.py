"""The validation report's numbers: stored validations -> agreement metrics and the verdict.

``parse_rows`` unpacks the version's stored validations (re-estimating each network from
the LUT and its calibration); ``compute_metrics`` scores every predictor against the
measurements per test set (``analysis.stats``, ``analysis.agreement``); ``verdict`` picks
the headline numbers. The calibrated estimate, when the version has a calibration, is the
headline: it is what `netadapt estimate` prints and what the adapter searches with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis import agreement, anchors, stats
from analysis.features import Tables, estimate_row
from lut_db.calibration import Calibration
from lut_db.estimate import MissingKeys
from lut_db.network import Network

HEADLINE = ("calibrated", "drift")  # the headline's predictor: the first there


@dataclass
class Compare:
    """Another version (or device) to put next to this one, key by key."""

    label: str
    table: dict[str, float]


def parse_rows(stored: Sequence[Mapping[str, Any]], tables: Tables | None = None,
               calibration: Calibration | None = None) -> list[dict[str, Any]]:
    """Stored validation rows with their timing JSON unpacked; with ``tables``, each
    network's estimate is recomputed from its stored JSON (so it is always the LUT's
    current one), and with a ``calibration`` its calibrated estimate, and whether the
    calibration was fitted on it."""
    rows = []
    for r in stored:
        timing = json.loads(r.get("timing") or "{}")
        if "estimate" not in timing:
            continue  # a row written by something else: nothing to estimate from
        row = {**r, **timing, "held_out": bool(r["held_out"])}
        net = Network.from_json_dict(json.loads(r["network"]))
        specs = net.specs
        row["resolution"] = specs[0].h if specs else None
        row["int8"] = any(spec.dtype == "int8" for spec in specs)
        if tables is not None:
            try:
                fresh = estimate_row(net, tables, compare=False)  # stored: interpolated_us
                row["estimate"] = {**timing["estimate"], **fresh}
                if calibration is not None:
                    _calibrate(row, net, tables, calibration)
            except MissingKeys:
                pass  # keep the stored estimate (its on-demand version is gone)
        rows.append(row)
    return rows


def _calibrate(row: dict[str, Any], net: Network, tables: Tables,
               calibration: Calibration) -> None:
    lookup, _ = tables.lookup(net.keys)
    layers = [(spec, lookup[spec.key]) for spec in net.specs]
    row["calibrated_us"] = calibration.network_us(layers)
    row["fitted"] = row["name"] in calibration.networks
    if row.get("profile"):
        row["profile"] = with_calibrated(row["profile"], calibration.layers_us(layers))


def with_calibrated(profile: Mapping[str, Any], layers_us: Sequence[float]) -> dict[str, Any]:
    """A per-layer profile with each layer's calibrated in-network estimate beside it
    (``layers_us``, in the network's node order, as the profile's layers are)."""
    layers = profile.get("layers", [])
    if len(layers) != len(layers_us):
        return dict(profile)
    return {**profile, "layers": [{**x, "calibrated_us": c} for x, c in zip(layers, layers_us)]}


def groups(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """all, in space, held out; with a calibration, "unseen": in space and not fitted on."""
    ho = np.array([r["held_out"] for r in rows], bool)
    out = {"all": np.ones(len(rows), bool), "in_space": ~ho, "held_out": ho}
    if any("fitted" in r for r in rows):
        out["unseen"] = ~ho & ~np.array([bool(r.get("fitted")) for r in rows], bool)
    return out


def compute_metrics(rows: Sequence[Mapping[str, Any]], overhead_us: float,
                    n_boot: int = stats.BOOTSTRAP) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every number of the report, and the per-network predictions (us) behind them."""
    pred = stats.predictions(rows, overhead_us)
    moved: list[dict[str, Any]] = []
    if all("calibrated_us" in r for r in rows):
        cal = np.array([r["calibrated_us"] for r in rows], float)
        pred["calibrated"] = cal
        # the calibration describes the LUT's time; the drift factor brings it to now
        pred["calibrated_drift"] = cal * pred["drift"] / np.maximum(pred["overhead"], 1e-9)
        anchored, moved = anchored_by_session(rows)
        if anchored is not None:
            pred["calibrated_anchored"] = anchored
    measured = np.array([r["measured_us"] for r in rows], float)
    sets = groups(rows)
    out: dict[str, Any] = {"overhead_us": overhead_us, "predictors": {},
                           "predictor_labels": {k: stats.PREDICTOR_LABELS[k] for k in pred}}
    for name, p in pred.items():
        out["predictors"][name] = {g: stats.agreement(p[sel], measured[sel], n_boot)
                                   for g, sel in sets.items() if sel.any()}
    macs = np.array([r["macs"] for r in rows], float)
    inside = sets["in_space"]
    if inside.sum() >= 2:
        # The MACs line is fitted on the in-space networks and applied to all of them.
        _, line = stats.macs_predictor(macs[inside], measured[inside])
        all_p = line["us_per_mmac"] * macs / 1e6 + line["intercept_ms"] * 1000
        pred["macs"] = all_p
        out["macs"] = {"line": line, **{g: stats.agreement(all_p[sel], measured[sel], n_boot)
                                        for g, sel in sets.items() if sel.any()}}
    out["interpolation"] = _interpolation(rows)
    out["drift"] = _drift_sessions(rows)
    out["anchors"] = moved
    out["limits"] = limits_by_group(rows, pred, measured, sets)
    out["machine"] = _machine_sessions(rows)
    return out, pred


def headline(predictors: Mapping[str, Any]) -> str:
    """The predictor the verdict, the limits and the network table lead with."""
    return next((p for p in HEADLINE if p in predictors), "naive")


def limit_groups(rows: Sequence[Mapping[str, Any]],
                 sets: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The test sets limits are given for: the headline's networks (unseen by the
    calibration, else in space), held out, 32 px and int8 where present."""
    head = "unseen" if "unseen" in sets else "in_space"
    out = {head: sets[head], "held_out": sets["held_out"],
           "32px": np.array([r.get("resolution") == 32 for r in rows], bool),
           "int8": np.array([bool(r.get("int8")) for r in rows], bool)}
    return {g: sel for g, sel in out.items() if sel.any()}


def limits_by_group(rows: Sequence[Mapping[str, Any]], pred: Mapping[str, np.ndarray],
                    measured: np.ndarray, sets: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Bland–Altman limits of the headline predictor per test set, each next to the
    measurements' own repeatability (``analysis.agreement``)."""
    best = headline(pred)
    repeats = [r.get("repeats_us") or [] for r in rows]
    return {"predictor": best, "groups": {
        g: agreement.side_by_side(pred[best][sel], measured[sel],
                                  [repeats[i] for i in np.flatnonzero(sel)])
        for g, sel in limit_groups(rows, sets).items()}}


def _machine_sessions(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The machine's state over each measuring session, with its network count."""
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        state = r.get("machine_state")
        if state:
            key = json.dumps(state, sort_keys=True)
            pace = r.get("pass_pace") or []
            seen.setdefault(key, {**state, "measured_at": r.get("measured_at"),
                                  "repeats_busy": r.get("repeats_busy"),
                                  "pace": [min(pace), max(pace)] if pace else None,
                                  "networks": 0})["networks"] += 1
    return list(seen.values())


def _interpolation(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How far interpolating the off-grid keys lands from measuring them."""
    errs = [r["estimate"]["interpolated_us"] / r["estimate"]["raw_us"] - 1 for r in rows
            if r["estimate"].get("interpolated_us") and not r["held_out"]]
    if not errs:
        return {"networks": 0}
    return {"networks": len(errs), "mean_pct": 100 * float(np.mean(errs)),
            "min_pct": 100 * min(errs), "max_pct": 100 * max(errs)}


def anchored_by_session(rows: Sequence[Mapping[str, Any]]
                        ) -> tuple[np.ndarray | None, list[dict[str, Any]]]:
    """Each row's calibrated estimate re-levelled by the calibration's own networks measured
    in its session (``analysis.anchors``; a session with too few keeps its rows' calibrated
    estimates; None when none has enough), and each session's anchors and level."""
    out = np.array([r["calibrated_us"] for r in rows], float)
    sessions: dict[Any, list[int]] = {}
    for i, r in enumerate(rows):
        sessions.setdefault(r.get("measured_at"), []).append(i)
    found = []
    for when, idx in sessions.items():
        pairs = [(rows[i]["calibrated_us"], rows[i]["measured_us"])
                 for i in idx if rows[i].get("fitted")]
        moved = anchors.anchored([out[i] for i in idx], pairs)
        if moved is None:
            continue
        found.append({"measured_at": when, "anchors": len(pairs), "networks": len(idx),
                      "level": anchors.level(pairs)})
        out[idx] = moved
    return (out if found else None), found


def _drift_sessions(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        d = r.get("drift")
        if d:
            seen.setdefault(json.dumps(d, sort_keys=True), {**d, "networks": 0})["networks"] += 1
    return list(seen.values())


def verdict(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The headline: the best predictor's agreement, in-space and held out."""
    preds = metrics["predictors"]
    best = headline(preds)
    head = "unseen" if best == "calibrated" else "in_space"
    a = preds[best].get(head, {})
    h = preds[best].get("held_out", {})
    n = preds["naive"].get("in_space", {})
    lim = metrics.get("limits", {}).get("groups", {})
    machine = metrics.get("machine", [])
    busy = [m for m in machine if m.get("busy")]
    return {"limits": lim.get(head), "held_out_limits": lim.get("held_out"),
            "busy_networks": sum(m["networks"] for m in busy),
            "busy_reasons": sorted({x for m in busy for x in m.get("reasons", [])}),
            "state_recorded": bool(machine),
            "predictor": best, "label": stats.PREDICTOR_LABELS[best],
            "n": a.get("n", 0), "within_5": a.get("count_within_5pct", 0),
            "within_10": a.get("count_within_10pct", 0), "pearson_r": a.get("pearson_r"),
            "held_out_n": h.get("n", 0), "held_out_within_5": h.get("count_within_5pct", 0),
            "held_out_within_10": h.get("count_within_10pct", 0),
            "held_out_mape_pct": h.get("mape_pct"),
            "naive_within_5": n.get("count_within_5pct", 0),
            "naive_mean_error_pct": n.get("mean_error_pct"),
            "anchored": _anchored_verdict(metrics, head)}


def _anchored_verdict(metrics: Mapping[str, Any], head: str) -> dict[str, Any] | None:
    """The anchored estimate's counts on the headline's networks and held out, with each
    session's anchors."""
    preds = metrics["predictors"].get("calibrated_anchored")
    if not preds or head not in preds:
        return None
    a, h = preds[head], preds.get("held_out", {})
    return {"n": a.get("n", 0), "within_5": a.get("count_within_5pct", 0),
            "held_out_n": h.get("n", 0), "held_out_within_5": h.get("count_within_5pct", 0),
            "sessions": metrics.get("anchors", [])}


def compare_numbers(table: Mapping[str, float], compare: Compare) -> dict[str, Any]:
    """How another version's entries relate to this one's over the keys both hold."""
    common = sorted(table.keys() & compare.table.keys())
    a = np.array([table[k] for k in common])
    b = np.array([compare.table[k] for k in common])
    ratio = b / a
    out = {"other": compare.label, "common_keys": len(common),
           "median_ratio": float(np.median(ratio))}
    if len(common) >= 3:
        out.update(spearman_rho=float(stats.sps.spearmanr(a, b).statistic),
                   kendall_tau=float(stats.sps.kendalltau(a, b).statistic))
    return out


def network_table(rows: Sequence[Mapping[str, Any]],
                  pred: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per network (ms and % error per predictor), the headline's worst first."""
    out = []
    for i, r in enumerate(rows):
        m = r["measured_us"]
        row = {"name": r["name"], "family": r["family"], "kind": r.get("kind", ""),
               "held_out": r["held_out"], "fitted": bool(r.get("fitted")),
               "macs_m": r["macs"] / 1e6,
               "measured_ms": m / 1000, "source": r["estimate"].get("source", "")}
        if r.get("repeats_us"):  # each repeat's median: the measurement's own noise
            row["repeats_ms"] = [x / 1000 for x in r["repeats_us"]]
        for k in ("naive", "drift", "calibrated", "calibrated_drift"):
            if k in pred:
                row[f"{k}_ms"] = float(pred[k][i]) / 1000
                row[f"{k}_err_pct"] = 100 * (float(pred[k][i]) / m - 1)
        out.append(row)
    worst = f"{headline(pred)}_err_pct"
    return sorted(out, key=lambda x: -abs(x.get(worst, 0)))
