"""The validation report of one LUT version: ``index.html``, ``report.md``, ``metrics.json``.

``build`` turns the version's stored validations into numbers (``analysis.stats``)
and figures (``analysis.plots``); ``write`` puts them in
``reports/<device>/<version>/``. The HTML page is one self-contained file (images
embedded, no scripts, no external links) that opens from disk; the Markdown file
references the PNGs written next to it. The page leads with the verdict, then the
figures, then the table of networks.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis import agreement, plots, stats
from analysis.features import Tables, all_tables, estimate_row
from analysis.plots import Plot
from lut_db.calibration import Calibration
from lut_db.errors import UserError
from lut_db.estimate import MissingKeys
from lut_db.progress import Steps, silent
from lut_db.spec import LayerSpec, Network
from lut_db.store import LutStore, Version

if TYPE_CHECKING:
    from analysis.validate import Validation
    from bench.runners.base import Runner


class ReportError(UserError):
    """A report that cannot be made as asked; the message is for the user as it is."""


@dataclass
class Compare:
    """Another version (or device) to put next to this one, key by key."""

    label: str
    table: dict[str, float]


@dataclass
class Report:
    version: Version
    lut: str
    metrics: dict[str, Any]
    plots: list[Plot]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


# -- numbers ----------------------------------------------------------------------------------


def parse_rows(stored: Sequence[Mapping[str, Any]], tables: Tables | None = None,
               calibration: Calibration | None = None) -> list[dict[str, Any]]:
    """Stored validation rows with their timing JSON unpacked; with ``tables``, each
    network's estimate is recomputed from its stored JSON (the features a correction
    uses are then always current), and with a ``calibration`` its calibrated estimate,
    and whether the calibration was fitted on it."""
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
                    lookup, _ = tables.lookup(net.keys)
                    layers = [(spec, lookup[spec.key]) for spec in net.specs]
                    row["calibrated_us"] = calibration.network_us(layers)
                    row["fitted"] = r["name"] in calibration.networks
                    if row.get("profile"):
                        row["profile"] = with_calibrated(row["profile"],
                                                         calibration.layers_us(layers))
            except MissingKeys:
                pass  # keep the stored estimate (its on-demand version is gone)
        rows.append(row)
    return rows


def with_calibrated(profile: Mapping[str, Any], layers_us: Sequence[float]) -> dict[str, Any]:
    """A per-layer profile with each layer's calibrated in-network estimate beside it
    (``layers_us``, in the network's node order, as the profile's layers are)."""
    layers = profile.get("layers", [])
    if len(layers) != len(layers_us):
        return dict(profile)
    return {**profile, "layers": [{**x, "calibrated_us": c} for x, c in zip(layers, layers_us)]}


def _groups(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """all, in space, held out; with a calibration, "unseen": in space and not fitted on."""
    ho = np.array([r["held_out"] for r in rows], bool)
    out = {"all": np.ones(len(rows), bool), "in_space": ~ho, "held_out": ho}
    if any("fitted" in r for r in rows):
        out["unseen"] = ~ho & ~np.array([bool(r.get("fitted")) for r in rows], bool)
    return out


def compute_metrics(rows: Sequence[Mapping[str, Any]], overhead_us: float,
                    n_boot: int = stats.BOOTSTRAP) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every number of the report, and the per-network predictions (us) behind them."""
    pred, model = stats.predictions(rows, overhead_us)
    if all("calibrated_us" in r for r in rows):
        cal = np.array([r["calibrated_us"] for r in rows], float)
        pred["calibrated"] = cal
        # the calibration describes the LUT's time; the drift factor brings it to now
        pred["calibrated_drift"] = cal * pred["drift"] / np.maximum(pred["overhead"], 1e-9)
    measured = np.array([r["measured_us"] for r in rows], float)
    groups = _groups(rows)
    out: dict[str, Any] = {"overhead_us": overhead_us, "predictors": {},
                           "predictor_labels": {k: stats.PREDICTOR_LABELS[k] for k in pred}}
    for name, p in pred.items():
        out["predictors"][name] = {g: stats.agreement(p[sel], measured[sel], n_boot)
                                   for g, sel in groups.items() if sel.any()}
    macs = np.array([r["macs"] for r in rows], float)
    inside = groups["in_space"]
    if inside.sum() >= 2:
        # The MACs line is fitted on the in-space networks and applied to all of them.
        _, line = stats.macs_predictor(macs[inside], measured[inside])
        all_p = line["us_per_mmac"] * macs / 1e6 + line["intercept_ms"] * 1000
        pred["macs"] = all_p
        out["macs"] = {"line": line, **{g: stats.agreement(all_p[sel], measured[sel], n_boot)
                                        for g, sel in groups.items() if sel.any()}}
    out["correction"] = model.to_dict() if model else None
    out["interpolation"] = _interpolation(rows)
    out["drift"] = _drift_sessions(rows)
    out["limits"] = limits_by_group(rows, pred, measured, groups)
    out["machine"] = _machine_sessions(rows)
    return out, pred


HEADLINE = ("calibrated", "corrected", "drift")  # the headline's predictor: the first there


def limit_groups(rows: Sequence[Mapping[str, Any]],
                 groups: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The test sets limits are given for: the headline's networks (unseen by the
    calibration, else in space), held out, 32 px and int8 where present."""
    head = "unseen" if "unseen" in groups else "in_space"
    out = {head: groups[head], "held_out": groups["held_out"],
           "32px": np.array([r.get("resolution") == 32 for r in rows], bool),
           "int8": np.array([bool(r.get("int8")) for r in rows], bool)}
    return {g: sel for g, sel in out.items() if sel.any()}


def limits_by_group(rows: Sequence[Mapping[str, Any]], pred: Mapping[str, np.ndarray],
                    measured: np.ndarray, groups: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Bland–Altman limits of the headline predictor per test set, each next to the
    measurements' own repeatability (``analysis.agreement``)."""
    best = next((p for p in HEADLINE if p in pred), "naive")
    repeats = [r.get("repeats_us") or [] for r in rows]
    return {"predictor": best, "groups": {
        g: agreement.side_by_side(pred[best][sel], measured[sel],
                                  [repeats[i] for i in np.flatnonzero(sel)])
        for g, sel in limit_groups(rows, groups).items()}}


def _busy_repeats(busy: Sequence[bool | None] | None) -> str:
    """Which repeats of a session ran busy, in words ('' when none or not recorded)."""
    which = [str(i + 1) for i, b in enumerate(busy or []) if b]
    return f" (busy in repeat {', '.join(which)} of {len(busy or [])})" if which else ""


def _machine_sessions(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The machine's state over each measuring session, with its network count."""
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        state = r.get("machine_state")
        if state:
            key = json.dumps(state, sort_keys=True)
            seen.setdefault(key, {**state, "measured_at": r.get("measured_at"),
                                  "repeats_busy": r.get("repeats_busy"),
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
    best = next(p for p in ("calibrated", "corrected", "drift") if p in preds)
    a = preds[best].get("unseen" if best == "calibrated" else "in_space", {})
    h = preds[best].get("held_out", {})
    n = preds["naive"].get("in_space", {})
    lim = metrics.get("limits", {}).get("groups", {})
    machine = metrics.get("machine", [])
    busy = [m for m in machine if m.get("busy")]
    return {"limits": lim.get("unseen" if best == "calibrated" else "in_space"),
            "held_out_limits": lim.get("held_out"),
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
            "naive_mean_error_pct": n.get("mean_error_pct")}


# -- figures ----------------------------------------------------------------------------------


def heatmap_points(table: Mapping[str, float],
                   grid: int = 32) -> tuple[list[tuple[int, int, float, int]], str]:
    """The pointwise-conv position with the most LUT entries on the channel grid, as
    (cin, cout, us, MACs): one layer position over every channel pair the sweep took."""
    groups: dict[tuple[int, int], list[tuple[int, int, float, int]]] = {}
    for key, us in table.items():
        if not key.startswith("conv2d:") or "k=1x1" not in key or "s=1x1" not in key:
            continue
        s = LayerSpec.parse(key)
        if s.cin % grid == 0 and s.cout % grid == 0:
            groups.setdefault((s.h, s.w), []).append((s.cin, s.cout, us, s.macs))
    if not groups:
        return [], "1x1 conv2d (no such entries on the channel grid in this LUT)"
    (h, w), pts = max(groups.items(), key=lambda kv: (len(kv[1]), -abs(kv[0][0] - 14)))
    return pts, f"1x1 conv2d at {h}x{w}, channel counts on the grid of {grid}"


def make_plots(rows: Sequence[Mapping[str, Any]], pred: Mapping[str, np.ndarray],
               metrics: Mapping[str, Any], table: Mapping[str, float],
               compare: Compare | None, label: str, grid: int = 32) -> list[Plot]:
    measured = [r["measured_us"] for r in rows]
    fams = [r["family"] for r in rows]
    ho = [r["held_out"] for r in rows]
    show = ["naive", "calibrated" if "calibrated" in pred else "corrected"]
    show = [k for k in show if k in pred]
    panels = {stats.PREDICTOR_LABELS[k]: pred[k] for k in show if k in pred}
    errors = {stats.PREDICTOR_LABELS[k]: 100 * (np.asarray(pred[k]) / np.asarray(measured) - 1)
              for k in show if k in pred}
    lut_r = metrics["predictors"].get(show[-1], {}).get("all", {}).get("pearson_r")
    points, position = heatmap_points(table, grid)
    profile = next((r["profile"] for r in rows if r.get("profile")), None)
    out = [plots.estimated_vs_measured(measured, panels, fams, ho),
           plots.residuals(errors),
           plots.macs_vs_latency([r["macs"] for r in rows], measured, fams, ho, lut_r),
           plots.lut_heatmap(points, position),
           plots.layer_profile(profile)]
    if compare is not None:
        out.append(plots.compare_versions(table, compare.table, label, compare.label))
    return out


# -- the report ---------------------------------------------------------------------------------


def build(store: LutStore, version: Version, compare: Compare | None = None,
          n_boot: int = stats.BOOTSTRAP) -> Report:
    """Numbers and figures of ``version``'s stored validations."""
    start = time.perf_counter()
    cal = store.calibration(version)
    rows = parse_rows(store.validations(version.id), all_tables(store, version), cal)
    lut = f"{store.path}@{version.id}"
    if not rows:
        raise ReportError(f"{version.label} has no validations yet; measure them with "
                          f"netadapt report --lut {lut} on the device")
    table = store.table(version.id)
    if compare is not None and not (table.keys() & compare.table.keys()):
        raise ReportError(f"{version.label} and {compare.label} have no layer keys in common: "
                          "compare versions swept over overlapping spaces")
    overhead = store.stats(version.id).get("invoke_overhead_us", 0.0)
    metrics, pred = compute_metrics(rows, overhead, n_boot)
    metrics["verdict"] = verdict(metrics)
    if compare is not None:
        metrics["compare"] = compare_numbers(table, compare)
    grid = max([int(sw.get("grid", 32)) for sw in version.space.get("sweeps", [])] or [32])
    figures = make_plots(rows, pred, metrics, table, compare, version.label, grid)
    table_rows = network_table(rows, pred)
    metrics["sweep_machine"] = store.stat_detail(version.id, "machine_busy")
    metrics["calibration_machine"] = (cal.machine_state or None) if cal else None
    metrics["verdict"]["calibration_warning"] = cal.busy_warning() if cal else None
    metrics.update(lut=lut, version=version.label, device=version.device,
                   backend=version.backend, fingerprint=version.fingerprint,
                   networks=table_rows, generated_s=time.perf_counter() - start)
    return Report(version, lut, metrics, figures, table_rows, method_notes(rows, metrics))


def compare_numbers(table: Mapping[str, float], compare: Compare) -> dict[str, Any]:
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
    out = []
    for i, r in enumerate(rows):
        m = r["measured_us"]
        row = {"name": r["name"], "family": r["family"], "kind": r.get("kind", ""),
               "held_out": r["held_out"], "fitted": bool(r.get("fitted")),
               "macs_m": r["macs"] / 1e6,
               "measured_ms": m / 1000, "source": r["estimate"].get("source", "")}
        if r.get("repeats_us"):  # each repeat's median: the measurement's own noise
            row["repeats_ms"] = [x / 1000 for x in r["repeats_us"]]
        for k in ("naive", "corrected", "calibrated", "calibrated_drift"):
            if k in pred:
                row[f"{k}_ms"] = float(pred[k][i]) / 1000
                row[f"{k}_err_pct"] = 100 * (float(pred[k][i]) / m - 1)
        out.append(row)
    worst = next((k for k in ("calibrated_err_pct", "corrected_err_pct") if k in out[0]),
                 "naive_err_pct") if out else "naive_err_pct"
    return sorted(out, key=lambda x: -abs(x.get(worst, 0)))


def method_notes(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any]) -> list[str]:
    """What each number comes from, in the page's words."""
    notes = [
        ("Measured: each network built as one TFLite model and timed whole on the device with "
        "the LUT version's own settings, in several interleaved passes (median over passes, "
        "per repeat where the networks were measured more than once). "
        "On the host, invokes that another process preempted (wall time above the thread's "
        "CPU time) are dropped."),
        (f"Per-invoke overhead: {metrics['overhead_us']:.2f} us, measured with the version; "
        "every layer alone pays it once, a network once in all, so the estimate subtracts "
        "(layers - 1) x overhead."),
    ]
    for d in metrics.get("drift", []):
        notes.append(
            f"Device drift: {d.get('lut_keys', 0)} of the networks' keys re-measured alone "
            f"during the session ran {100 * (d['lut'] - 1):+.1f} % against the LUT"
            + (f" (on-demand keys: {100 * (d['extra'] - 1):+.1f} % over "
               f"{d['extra_keys']})" if d.get("extra_keys") else "")
            + f"; applied to the {d['networks']} networks measured in that session.")
    for st in metrics.get("sweep_machine") or []:
        notes.append(f"Machine while the LUT was swept: {st.get('summary', '')}"
                     + (f" — busy: {'; '.join(st.get('reasons', []))}." if st.get("busy")
                        else "."))
    st = metrics.get("calibration_machine")
    if st:
        notes.append(f"Machine while the calibration's networks were measured: "
                     f"{st.get('summary', '')}" + (" — busy." if st.get("busy") else "."))
    for st in metrics.get("machine", []):
        notes.append(f"Machine while {st['networks']} networks were measured "
                     f"({st.get('measured_at') or 'time not recorded'}): "
                     f"{st.get('summary', '')}" + (" — busy" if st.get("busy") else "")
                     + _busy_repeats(st.get("repeats_busy")) + ".")
    reps = [r.get("repeats") for r in rows if r.get("repeats")]
    if reps:
        notes.append(f"Ground truth: each network measured {max(reps)} times at separate "
                     "moments (each time a block of interleaved passes over the whole set); "
                     "the median is its measured latency, their spread its repeatability. "
                     "Limits of agreement are Bland–Altman limits on log latency: bias ± 1.96 "
                     "SD of log(estimate / measured); repeatability limits ± 1.96 x sqrt(2) x "
                     "the within-network SD of the repeats.")
    corr = metrics.get("correction")
    if corr:
        parts = [f"{c}: +{100 * v:.1f} % of its entries" for c, v in corr["rel"].items() if v]
        parts.append(f"+{corr['us_per_weight_mb']:.1f} us per MB of weights")
        parts.append(f"+{corr['us_per_act_mb']:.1f} us per MB of activations read and written")
        notes.append(
            "In-network correction (a layer alone runs with warm caches, inside a network it "
            "does not): a factor per op class and a cost per MB of weights and of activations "
            "moved, fitted by non-negative least squares on relative errors of the in-space "
            "networks "
            f"({corr['fitted_on']}); each in-space network's number comes from a 5-fold "
            "cross-validated fit that never saw it, held-out networks from the fit on all "
            "in-space ones (an op class the fit never saw gets no factor). "
            + "; ".join(parts) + ".")
    else:
        notes.append("In-network correction: not fitted (fewer than "
                     f"{stats.MIN_FIT} in-space networks).")
    on_demand = [r for r in rows if r["estimate"].get("measured_on_demand")]
    if on_demand:
        labels = sorted({r["estimate"]["source"].rpartition(" into ")[2] for r in on_demand})
        keys = sum(r["estimate"]["measured_on_demand"] for r in on_demand)
        notes.append(f"Keys the LUT lacks (off-grid widths, the held-out families' shapes): "
                     f"measured on demand on the device, with the LUT's settings, into "
                     f"{', '.join(labels)} (derived from this version) for {len(on_demand)} "
                     f"networks ({keys} key uses); never interpolated in these numbers.")
    interp = metrics.get("interpolation", {})
    if interp.get("networks"):
        notes.append(f"Interpolating those off-grid keys over channel counts instead of "
                     f"measuring them would have moved the estimates of {interp['networks']} "
                     f"networks by {interp['mean_pct']:+.1f} % on average "
                     f"({interp['min_pct']:+.1f} to {interp['max_pct']:+.1f} %).")
    macs = metrics.get("macs")
    if macs:
        notes.append("MACs as a predictor: the least-squares line latency = a x MACs + b "
                     "fitted on the in-space networks themselves (in-sample: flattering).")
    return notes


# -- writing -------------------------------------------------------------------------------------


def report_dir(root: Path, version: Version) -> Path:
    return Path(root) / _safe(version.device) / str(version.id)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "device"


def write(report: Report, root: Path) -> Path:
    """Write index.html, report.md, metrics.json and the PNGs; return the folder."""
    folder = report_dir(root, report.version)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for p in report.plots:
            if p.png:
                (folder / f"{p.name}.png").write_bytes(p.png)
        (folder / "metrics.json").write_text(json.dumps(_jsonable(report.metrics), indent=1))
        (folder / "report.md").write_text(to_markdown(report))
        (folder / "index.html").write_text(to_html(report))
    except OSError as e:
        raise ReportError(f"cannot write the report to {folder}: {e.strerror or e}") from None
    return folder


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# -- rendering --------------------------------------------------------------------------------

METRIC_ROWS = [("within ±5 %", "within_5pct", "pct0"), ("within ±10 %", "within_10pct", "pct0"),
               ("Pearson r", "pearson_r", "f4"), ("Spearman rho", "spearman_rho", "f4"),
               ("Kendall tau", "kendall_tau", "f4"), ("RMSE (ms)", "rmse_ms", "f3"),
               ("MAPE (%)", "mape_pct", "f2"), ("max error (%)", "max_error_pct", "f1")]


def _fmt(v: Any, how: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if how == "pct0":
        return f"{100 * v:.0f} %"
    text = f"{v:.{how[1:]}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.0"


def _signed(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "–"
    return _fmt(v, f"f{digits}") if round(v, digits) <= 0 else f"+{v:.{digits}f}"


def _cell(a: Mapping[str, Any], key: str, how: str) -> tuple[str, str]:
    """(value, its confidence interval or '')."""
    if not a or key not in a:
        return "–", ""
    ci = a.get("ci", {}).get(key)
    return _fmt(a[key], how), (f"[{_fmt(ci[0], how)}, {_fmt(ci[1], how)}]" if ci else "")


def metric_columns(metrics: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(column title, agreement dict) for the numbers table: predictors, then MACs."""
    cols = []
    for name, groups in metrics["predictors"].items():
        cols.append((f"{stats.PREDICTOR_LABELS[name]} (in space)", groups.get("in_space", {})))
    if "corrected" in metrics["predictors"]:
        cols.append(("corrected, held out", metrics["predictors"]["corrected"].get("held_out", {})))
    for name in ("calibrated", "calibrated_drift"):
        groups = metrics["predictors"].get(name, {})
        for g in ("unseen", "held_out"):
            if g in groups:
                cols.append((f"{stats.PREDICTOR_LABELS[name]} ({g.replace('_', ' ')})",
                             groups[g]))
    if metrics.get("macs"):
        cols.append(("MACs, best line (in space)", metrics["macs"].get("in_space", {})))
    return cols


def verdict_sentences(report: Report) -> list[str]:
    v = report.metrics["verdict"]
    which = ("validation networks the calibration was not fitted on"
             if v["predictor"] == "calibrated" else "in-space validation networks")
    how = {"calibrated": "the LUT's calibrated estimate, as netadapt estimate prints it (its "
                         "stored in-network model).",
           "corrected": "the sum of LUT entries with the cross-validated in-network "
                        "correction.",
           "drift": "the sum of LUT entries aligned for overhead and drift."}[v["predictor"]]
    out = [(f"{v['within_5']} of {v['n']} {which} "
           f"({_pct(v['within_5'], v['n'])}) are estimated within ±5 % of their measured "
           f"latency, {v['within_10']} ({_pct(v['within_10'], v['n'])}) within ±10 %; "
           f"Pearson r = {_fmt(v['pearson_r'], 'f4')}. Estimate: " + how)]
    if v["held_out_n"]:
        out.append(f"Held-out families (never in the sweep space): {v['held_out_within_5']} of "
                   f"{v['held_out_n']} within ±5 %, {v['held_out_within_10']} within ±10 %"
                   f" (MAPE {_fmt(v['held_out_mape_pct'], 'f1')} %).")
    if v.get("limits"):
        out.append("Limits of agreement (log latency, 95 %): " + agreement.describe(v["limits"])
                   + ".")
    if v.get("held_out_limits"):
        out.append("Held out: " + agreement.describe(v["held_out_limits"]) + ".")
    out.append(f"The naive sum of LUT entries: {v['naive_within_5']} of {v['n']} within ±5 %, "
               f"{_fmt(v['naive_mean_error_pct'], 'f1')} % on average.")
    if v.get("calibration_warning"):
        out.append(v["calibration_warning"])
    if v.get("busy_networks"):
        out.append(f"warning: {v['busy_networks']} of the networks were measured while the "
                   f"machine was busy ({'; '.join(v['busy_reasons'])}): their numbers may be "
                   "off by 10-45 %; measure again on a quiet machine.")
    elif not v.get("state_recorded"):
        out.append("The machine's state was not recorded with these measurements.")
    return out


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.0f} %" if b else "–"


def to_markdown(report: Report) -> str:
    m = report.metrics
    lines = [f"# Validation of {report.lut}", "",
             f"Device {m['device']}, backend {m['backend']}.", "", "## Verdict", ""]
    lines += [f"- {s}" for s in verdict_sentences(report)] + ["", "## Numbers", ""]
    cols = metric_columns(m)
    lines.append("| | " + " | ".join(c for c, _ in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for title, key, how in METRIC_ROWS:
        lines.append(f"| {title} | " + " | ".join(" ".join(_cell(a, key, how)).strip()
                                                  for _, a in cols) + " |")
    lines += ["", "Brackets: 95 % bootstrap confidence intervals.", ""]
    head, body = limits_table(m)
    if body:
        lines += ["## Limits of agreement (log latency, 95 %)", "",
                  "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body] + [""]
    lines += ["## Figures", ""]
    for p in report.plots:
        lines.append(f"### {p.title}")
        lines.append("")
        lines.append(f"![{p.title}]({p.name}.png)" if p.png else f"**No data:** {p.empty}")
        if p.caption:
            lines += ["", p.caption]
        lines.append("")
    lines += ["## Method", ""] + [f"- {n}" for n in report.notes] + ["", "## Networks", ""]
    best = _best(report.rows)
    lines.append("| network | family | kind | MMACs | measured ms | naive ms | naive err % "
                 f"| {best} ms | {best} err % |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in report.rows:
        lines.append(f"| {r['name']} | {r['family']}{_tags(r)} "
                     f"| {r['kind']} | {r['macs_m']:.0f} | {r['measured_ms']:.3f} "
                     f"| {r['naive_ms']:.3f} | {_signed(r['naive_err_pct'])} "
                     f"| {_fmt(r.get(f'{best}_ms'), 'f3')} "
                     f"| {_signed(r.get(f'{best}_err_pct'))} |")
    return "\n".join(lines) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em} .sub{color:#666;margin-top:0}
.verdict{background:#f3f8ff;border-left:6px solid #1f77b4;padding:.8em 1.2em;font-size:1.1em}
.verdict.bad{background:#fff6f0;border-color:#d62728}
.verdict p{margin:.3em 0} table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right} th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left} figure{margin:1.2em 0}
figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:.9em}
.empty{background:#fff8e1;border:1px dashed #e0a800;padding:1em;color:#7a5b00}
.ok{color:#1a7f37} .off{color:#c62828} .ho{font-weight:600} ul.notes li{margin:.4em 0}
td.t{text-align:left} td small{color:#777} td:first-child{white-space:nowrap} .verdict p:first-child{font-size:1.15em;font-weight:600}
"""


def to_html(report: Report) -> str:
    m = report.metrics
    v = m["verdict"]
    good = v["n"] and v["within_5"] >= 0.95 * v["n"] and not v.get("busy_networks")
    e = html.escape
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>Validation of {e(report.lut)}</title>", f"<style>{CSS}</style></head><body>",
        f"<h1>LUT validation: {e(m['version'])}</h1>",
        (f"<p class='sub'>{e(report.lut)} · device {e(m['device'])} · backend "
        f"{e(m['backend'])} · {v['n'] + v['held_out_n']} networks measured whole</p>"),
        f"<div class='verdict{'' if good else ' bad'}'>",
        *[f"<p>{e(s)}</p>" for s in verdict_sentences(report)], "</div>",
        "<h2>Numbers</h2>", _html_metrics(m),
        ("<p class='sub'>Brackets: 95 % bootstrap confidence intervals. Each in-space column "
         "adds one step to the one before it; MACs: the best straight line through the "
         "measurements.</p>"), _html_limits(m), "<h2>Figures</h2>",
    ]
    for p in report.plots:
        parts.append(f"<figure id='{e(p.name)}'><h3>{e(p.title)}</h3>")
        if p.png:
            data = base64.b64encode(p.png).decode()
            parts.append(f"<img alt='{e(p.title)}' src='data:image/png;base64,{data}'>")
        else:
            parts.append(f"<div class='empty'><b>No data:</b> {e(p.empty)}</div>")
        if p.caption:
            parts.append(f"<figcaption>{e(p.caption)}</figcaption>")
        parts.append("</figure>")
    parts.append("<h2>Method</h2><ul class='notes'>")
    parts += [f"<li>{e(n)}</li>" for n in report.notes]
    parts += ["</ul>", "<h2>Networks</h2>", _html_networks(report.rows), "</body></html>"]
    return "\n".join(parts) + "\n"


def _html_metrics(m: Mapping[str, Any]) -> str:
    cols = metric_columns(m)
    head = "".join(f"<th>{html.escape(c)}</th>" for c, _ in cols)
    body = []
    for title, key, how in METRIC_ROWS:
        cells = "".join(f"<td>{html.escape(v)}<br><small>{html.escape(ci)}</small></td>"
                        for v, ci in (_cell(a, key, how) for _, a in cols))
        body.append(f"<tr><td>{html.escape(title)}</td>{cells}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>"


GROUP_TITLES = {"unseen": "unseen by the calibration", "in_space": "in space",
                "held_out": "held-out families", "32px": "32 px", "int8": "int8"}


def limits_table(m: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the limits of agreement per test set, as the page shows them."""
    lim = m.get("limits", {})
    head = ["test set", "n", "bias", "estimate vs measured", "measured vs measured again",
            "width ratio"]
    body = []
    for g, a in lim.get("groups", {}).items():
        e, r = a["estimate"], a["repeatability"]
        body.append([GROUP_TITLES.get(g, g), str(e.get("n", 0)), _signed(e.get("bias_pct"))
                     + (" %" if "bias_pct" in e else ""), _range(e), _range(r),
                     _fmt(a.get("width_ratio"), "f2") + ("x" if "width_ratio" in a else "")])
    return head, body


def _range(a: Mapping[str, Any]) -> str:
    if "lower_pct" not in a:
        return "–"
    return f"{_signed(a['lower_pct'])} % to {_signed(a['upper_pct'])} %"


def _html_limits(m: Mapping[str, Any]) -> str:
    head, body = limits_table(m)
    if not body:
        return ""
    e = html.escape
    label = stats.PREDICTOR_LABELS.get(m["limits"]["predictor"], m["limits"]["predictor"])
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in body)
    return (f"<h3>Limits of agreement (log latency, 95 %): {e(label)}</h3><table><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in head) + f"</tr>{rows}</table>"
            "<p class='sub'>Bland–Altman: bias and bias ± 1.96 SD of log(estimate / measured); "
            "repeatability: ± 1.96 x sqrt(2) x the within-network SD of the repeats. Width "
            "ratio: how many times as wide the estimate's limits are.</p>")


def _best(rows: Sequence[Mapping[str, Any]]) -> str:
    """The estimate the network tables show beside the naive sum."""
    return "calibrated" if rows and "calibrated_ms" in rows[0] else "corrected"


def _tags(r: Mapping[str, Any]) -> str:
    return (" (held out)" if r["held_out"] else "") + (" (calibration set)" if r.get("fitted")
                                                      else "")


def _html_networks(rows: Sequence[Mapping[str, Any]]) -> str:
    best = _best(rows)
    head = ("<tr><th>network</th><th>family</th><th>kind</th><th>MMACs</th>"
            f"<th>measured ms</th><th>naive ms</th><th>naive err</th><th>{best} ms</th>"
            f"<th>{best} err</th><th>LUT entries from</th></tr>")
    body = []
    for r in rows:
        err = r.get(f"{best}_err_pct")
        cls = "ok" if err is not None and abs(err) <= 5 else "off"
        fam = html.escape(r["family"]) + (f" <span class='ho'>{html.escape(_tags(r))}</span>"
                                          if _tags(r) else "")
        body.append(
            f"<tr><td>{html.escape(r['name'])}</td><td class='t'>{fam}</td>"
            f"<td class='t'>{html.escape(r['kind'])}"
            f"</td><td>{r['macs_m']:.0f}</td><td>{r['measured_ms']:.3f}</td>"
            f"<td>{r['naive_ms']:.3f}</td><td>{_signed(r['naive_err_pct'])} %</td>"
            f"<td>{_fmt(r.get(f'{best}_ms'), 'f3')}</td>"
            f"<td class='{cls}'>{_signed(err)} %</td><td class='t'>{html.escape(r['source'])}"
            "</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


# -- the `netadapt report` pipeline -------------------------------------------------------------


def writable(folder: Path) -> None:
    """Fail before any measuring if the report cannot be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ReportError(f"cannot write the report to {folder}: {e.strerror or e}") from None


def compare_with(ref: str, store: LutStore, version: Version) -> Compare:
    """Another LUT version (``file[@V]``) to put beside this one, key by key."""
    from lut_db.store import open_lut

    other_store, other = open_lut(ref)
    table = other_store.table(other.id)
    if not table.keys() & store.table(version.id).keys():
        raise ReportError(f"{version.label} and {other.label} ({ref}) have no layer keys in "
                          "common: compare versions swept over overlapping spaces")
    return Compare(f"{other.label} ({other.backend})", table)


def report_lut(store: LutStore, version: Version, runner: Runner | None, out: Path, *,
               compare: str | None = None, networks: int = 60, seed: int = 0,
               passes: int = 4, progress: Steps = silent, repeats: int = 3,
               log: Callable[[str], None] | None = None,
               sweep: bool = True) -> tuple[Report, Path, Validation]:
    """Validate ``version`` (measuring on ``runner`` what is not stored; None: report only
    what is), then write the report under ``out``; returns it, its folder and the run.
    ``progress`` hears each long step, ``log`` what is measured into a derived version
    (``sweep`` False: keys the LUT lacks stop it instead, ``validate.KeysNotSwept``)."""
    from analysis.validate import validate

    writable(report_dir(out, version))
    other = compare_with(compare, store, version) if compare else None
    if runner is not None:
        store.lock()  # on-demand keys go into a derived version of this file
    result = validate(store, version, runner, networks, seed, passes, progress=progress,
                      repeats=repeats, log=log, sweep=sweep)
    progress("writing the report", 0, None)
    report = build(store, version, other)
    folder = write(report, out)
    progress("writing the report", 1, 1)
    return report, folder, result
