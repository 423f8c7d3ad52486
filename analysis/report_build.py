"""One validation report, built: a LUT version's stored validations -> ``Report``.

``build`` gathers the numbers (``analysis.report_metrics``), the figures
(``analysis.plots``) and the method notes, which say in the page's words what each number
comes from. Writing it out is ``analysis.report``'s; the Markdown and HTML writers read a
``Report`` and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis import plots, stats
from analysis.features import all_tables
from analysis.plots import Plot
from analysis.report_metrics import (
    Compare,
    compare_numbers,
    compute_metrics,
    headline,
    network_table,
    parse_rows,
    verdict,
)
from lut_db.errors import UserError
from lut_db.spec import LayerSpec
from lut_db.store import LutStore
from lut_db.versions import Version


class ReportError(UserError):
    """A report that cannot be made as asked; the message is for the user as it is."""


@dataclass
class Report:
    version: Version
    lut: str
    metrics: dict[str, Any]
    plots: list[Plot]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def build(store: LutStore, version: Version, compare: Compare | None = None,
          n_boot: int = stats.BOOTSTRAP) -> Report:
    """Numbers and figures of ``version``'s stored validations."""
    start = time.perf_counter()
    cal = store.calibration(version)
    rows = parse_rows(store.validations(version), all_tables(store, version), cal)
    lut = f"{store.path}@{version.id}"
    if not rows:
        raise ReportError(f"{version.label} has no validations yet; measure them with "
                          f"netadapt report --lut {lut} on the device")
    table = store.table(version)
    if compare is not None and not (table.keys() & compare.table.keys()):
        raise ReportError(f"{version.label} and {compare.label} have no layer keys in common: "
                          "compare versions swept over overlapping spaces")
    overhead = store.stats(version).get("invoke_overhead_us", 0.0)
    metrics, pred = compute_metrics(rows, overhead, n_boot)
    metrics["verdict"] = verdict(metrics)
    if compare is not None:
        metrics["compare"] = compare_numbers(table, compare)
    grid = max([int(sw.get("grid", 32)) for sw in version.space.get("sweeps", [])] or [32])
    figures = make_plots(rows, pred, metrics, table, compare, version.label, grid)
    table_rows = network_table(rows, pred)
    metrics["sweep_machine"] = store.stat_detail(version, "machine_busy")
    metrics["calibration"] = cal.describe() if cal else None
    metrics["calibration_machine"] = (cal.machine_state or None) if cal else None
    metrics["verdict"]["calibration_warning"] = (
        cal.busy_warning() if cal else
        f"{version.label} has no calibration, so netadapt estimate prints the plain sum of "
        f"its entries; calibrate it with: netadapt calibrate --lut {lut}")
    metrics.update(lut=lut, version=version.label, device=version.device,
                   backend=version.backend, fingerprint=version.fingerprint,
                   networks=table_rows, generated_s=time.perf_counter() - start)
    return Report(version, lut, metrics, figures, table_rows, method_notes(rows, metrics))


# -- figures ----------------------------------------------------------------------------------


def heatmap_points(table: Mapping[str, float],
                   grid: int = 32) -> tuple[list[tuple[int, int, float, int]], str]:
    """The pointwise-conv position with the most LUT entries on the channel grid, as
    (cin, cout, us, MACs): one layer position over every channel pair the sweep took."""
    by_position: dict[tuple[int, int], list[tuple[int, int, float, int]]] = {}
    for key, us in table.items():
        if not key.startswith("conv2d:") or "k=1x1" not in key or "s=1x1" not in key:
            continue
        s = LayerSpec.parse(key)
        if s.cin % grid == 0 and s.cout % grid == 0:
            by_position.setdefault((s.h, s.w), []).append((s.cin, s.cout, us, s.macs))
    if not by_position:
        return [], "1x1 conv2d (no such entries on the channel grid in this LUT)"
    (h, w), pts = max(by_position.items(), key=lambda kv: (len(kv[1]), -abs(kv[0][0] - 14)))
    return pts, f"1x1 conv2d at {h}x{w}, channel counts on the grid of {grid}"


def make_plots(rows: Sequence[Mapping[str, Any]], pred: Mapping[str, np.ndarray],
               metrics: Mapping[str, Any], table: Mapping[str, float],
               compare: Compare | None, label: str, grid: int = 32) -> list[Plot]:
    """The page's figures: the plain sum, the headline estimate and (where the session had
    its anchors) the re-levelled one against measurements, their errors, MACs, the LUT's
    heat map, a per-layer profile, and the comparison."""
    measured = [r["measured_us"] for r in rows]
    fams = [r["family"] for r in rows]
    ho = [r["held_out"] for r in rows]
    show = list(dict.fromkeys(["naive", headline(pred)]))
    show += [k for k in ("calibrated_anchored",) if k in pred]
    panels = {stats.PREDICTOR_LABELS[k]: pred[k] for k in show}
    errors = {stats.PREDICTOR_LABELS[k]: 100 * (np.asarray(pred[k]) / np.asarray(measured) - 1)
              for k in show}
    lut_r = metrics["predictors"].get(headline(pred), {}).get("all", {}).get("pearson_r")
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


# -- what each number comes from ----------------------------------------------------------------


def busy_repeats(busy: Sequence[bool | None] | None) -> str:
    """Which repeats of a session ran busy, in words ('' when none or not recorded)."""
    which = [str(i + 1) for i, b in enumerate(busy or []) if b]
    return f" (busy in repeat {', '.join(which)} of {len(busy or [])})" if which else ""


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
    if metrics.get("calibration"):
        notes.append(f"Calibrated estimate: the version's stored in-network model "
                     f"({metrics['calibration']}), as netadapt estimate prints it and the "
                     "adapter searches with it; scored on the in-space networks it was not "
                     "fitted on (unseen), the ones it was are marked calibration set.")
    notes += _drift_notes(metrics) + _machine_notes(metrics)
    reps = [r.get("repeats") for r in rows if r.get("repeats")]
    if reps:
        notes.append(f"Ground truth: each network measured {max(reps)} times at separate "
                     "moments (each time a block of interleaved passes over the whole set); "
                     "the median is its measured latency, their spread its repeatability. "
                     "Limits of agreement are Bland–Altman limits on log latency: bias ± 1.96 "
                     "SD of log(estimate / measured); repeatability limits ± 1.96 x sqrt(2) x "
                     "the within-network SD of the repeats.")
    return notes + _key_notes(rows, metrics)


def _drift_notes(metrics: Mapping[str, Any]) -> list[str]:
    return [f"Device drift: {d.get('lut_keys', 0)} of the networks' keys re-measured alone "
            f"during the session ran {100 * (d['lut'] - 1):+.1f} % against the LUT"
            + (f" (on-demand keys: {100 * (d['extra'] - 1):+.1f} % over "
               f"{d['extra_keys']})" if d.get("extra_keys") else "")
            + f"; applied to the {d['networks']} networks measured in that session."
            for d in metrics.get("drift", [])]


def _busy(st: Mapping[str, Any]) -> str:
    """The reasons a busy state was busy (load, steal, its passes' scatter), as a clause."""
    return f" — busy: {'; '.join(st.get('reasons') or [])}" if st.get("busy") else ""


def _machine_notes(metrics: Mapping[str, Any]) -> list[str]:
    notes = [f"Machine while the LUT was swept: {st.get('summary', '')}{_busy(st)}."
             for st in metrics.get("sweep_machine") or []]
    st = metrics.get("calibration_machine")
    if st:
        notes.append(f"Machine while the calibration's networks were measured: "
                     f"{st.get('summary', '')}{_busy(st)}.")
    for st in metrics.get("machine", []):
        notes.append(f"Machine while {st['networks']} networks were measured "
                     f"({st.get('measured_at') or 'time not recorded'}): "
                     f"{st.get('summary', '')}{_busy(st)}"
                     + busy_repeats(st.get("repeats_busy")) + ".")
        if st.get("pace"):
            lo, hi = st["pace"]
            notes.append(f"The machine's pace over those passes: {lo:.2f}x to {hi:.2f}x its "
                         "median, shared by every network timed in a pass (the median of "
                         "their times against their own), and taken out of each before its "
                         "median and repeatability.")
    return notes


def _key_notes(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any]) -> list[str]:
    """Where the keys the LUT lacks came from, and what the MACs line is."""
    notes = []
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
    if metrics.get("macs"):
        notes.append("MACs as a predictor: the least-squares line latency = a x MACs + b "
                     "fitted on the in-space networks themselves (in-sample: flattering).")
    return notes
