"""The report's figures (matplotlib, Agg): each function returns a Plot with PNG bytes.

A plot without data is never a blank image: it comes back with ``png = None`` and an
``empty`` reason that the report prints where the image would be.
Latencies arrive in microseconds and are drawn in ms.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter
from scipy import stats as sps

DPI = 100
FAMILY_COLORS = {"mobilenet_v1": "#1f77b4", "mobilenet_v2": "#ff7f0e",
                 "resnet_style": "#2ca02c", "vgg_style": "#d62728"}
OTHER_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


@dataclass
class Plot:
    name: str  # file stem, e.g. "scatter"
    title: str
    png: bytes | None
    caption: str = ""
    empty: str = ""  # why there is no image


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _empty(name: str, title: str, reason: str) -> Plot:
    return Plot(name, title, None, empty=reason)


def family_color(family: str, known: dict[str, str] | None = None) -> str:
    known = known if known is not None else {}
    if family in FAMILY_COLORS:
        return FAMILY_COLORS[family]
    if family not in known:
        known[family] = OTHER_COLORS[len(known) % len(OTHER_COLORS)]
    return known[family]


def _by_family(ax: Any, x: np.ndarray, y: np.ndarray, families: Sequence[str],
               held_out: np.ndarray) -> None:
    """Scatter coloured by family; held-out networks as large crosses."""
    extra: dict[str, str] = {}
    for fam in dict.fromkeys(families):
        sel = np.array([f == fam for f in families])
        ho = bool(held_out[sel].any())
        ax.scatter(x[sel], y[sel], s=60 if ho else 28, marker="X" if ho else "o",
                   color=family_color(fam, extra), edgecolor="black" if ho else "white",
                   linewidth=0.6, label=f"{fam} (held out)" if ho else fam, zorder=3)


def _band(ax: Any, lo: float, hi: float) -> None:
    """y = x with the ±5 % (dashed) and ±10 % (shaded) bands, on log axes."""
    xs = np.geomspace(lo, hi, 50)
    ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="0.85", label="±10 %", zorder=1)
    ax.plot(xs, xs * 0.95, color="0.6", lw=0.8, ls="--", label="±5 %", zorder=2)
    ax.plot(xs, xs * 1.05, color="0.6", lw=0.8, ls="--", zorder=2)
    ax.plot(xs, xs, color="black", lw=1, label="y = x", zorder=2)
    _log_axes(ax, lo, hi)
    ax.set_aspect("equal")


def _log_axes(ax: Any, lo: float, hi: float) -> None:
    """Both axes logarithmic over [lo, hi], ticked 1-2-5 in plain numbers: matplotlib's
    default labels every minor tick in 10^x form, which overlap within a decade."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)


def estimated_vs_measured(measured_us: Sequence[float], panels: Mapping[str, Sequence[float]],
                          families: Sequence[str], held_out: Sequence[bool],
                          notes: Mapping[str, str] | None = None) -> Plot:
    """One panel per predictor: estimated (x) vs measured (y), y = x and the ±10 % band."""
    title = "Estimated vs measured latency"
    m = np.asarray(measured_us, float) / 1000
    if m.size == 0 or not panels:
        return _empty("scatter", title, "no validation networks to plot")
    ho = np.asarray(held_out, bool)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.2), squeeze=False)
    values = np.concatenate([m] + [np.asarray(p, float) / 1000 for p in panels.values()])
    values = values[values > 0]
    lo, hi = values.min() / 1.25, values.max() * 1.25
    for ax, (label, pred) in zip(axes[0], panels.items()):
        p = np.asarray(pred, float) / 1000
        _band(ax, lo, hi)
        _by_family(ax, p, m, families, ho)
        within = np.mean(np.abs(p / m - 1) <= 0.05) * 100
        ax.set_title(f"{label}\n{within:.0f} % of networks within ±5 %"
                     + (f"; {notes[label]}" if notes and label in notes else ""), fontsize=10)
        ax.set_xlabel("estimated latency (ms, log scale)")
        ax.set_ylabel("measured latency (ms, log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(loc="upper left", fontsize=8, framealpha=0.9)
    fig.suptitle(title, fontsize=12)
    return Plot("scatter", title, _png(fig))


def residuals(errors_pct: Mapping[str, Sequence[float]]) -> Plot:
    """Histogram of relative errors (estimated / measured - 1) per predictor."""
    title = "Relative error of the estimate"
    data = {k: np.asarray(v, float) for k, v in errors_pct.items() if len(v)}
    if not data:
        return _empty("residuals", title, "no validation networks to plot")
    fig, ax = plt.subplots(figsize=(8, 4))
    lo = min(-12.0, min(v.min() for v in data.values()) - 1)
    hi = max(12.0, max(v.max() for v in data.values()) + 1)
    bins = np.arange(np.floor(lo), np.ceil(hi) + 1, 1.0)
    for (label, v), color in zip(data.items(), ("#bbbbbb", "#1f77b4", "#ff7f0e", "#2ca02c")):
        ax.hist(v, bins=bins, alpha=0.6, color=color,
                label=f"{label} (median {np.median(v):+.1f} %)")
    for x in (-5, 5):
        ax.axvline(x, color="black", ls="--", lw=0.8)
    ax.axvline(0, color="black", lw=1)
    ax.set_xlabel("estimated / measured - 1 (%)   (dashed: ±5 %)")
    ax.set_ylabel("networks")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return Plot("residuals", title, _png(fig))


def macs_vs_latency(macs: Sequence[float], measured_us: Sequence[float],
                    families: Sequence[str], held_out: Sequence[bool],
                    lut_r: float | None = None) -> Plot:
    """Measured latency against MACs with the best line: the predictor a LUT must beat."""
    title = "MACs vs measured latency"
    x = np.asarray(macs, float) / 1e6
    y = np.asarray(measured_us, float) / 1000
    if x.size < 2:
        return _empty("macs", title, "fewer than two validation networks: nothing to fit")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    _by_family(ax, x, y, families, np.asarray(held_out, bool))
    fit = sps.linregress(x, y)
    xs = np.linspace(0, x.max() * 1.05, 50)
    r = sps.pearsonr(x, y).statistic if np.ptp(x) and np.ptp(y) else float("nan")
    ax.plot(xs, fit.slope * xs + fit.intercept, color="black", lw=1,
            label=f"best line: {fit.slope * 1000:.2f} us/MMAC, r = {r:.3f}")
    txt = f"MACs: r = {r:.3f}" + (f"\nLUT estimate: r = {lut_r:.4f}" if lut_r is not None else "")
    ax.text(0.98, 0.03, txt, transform=ax.transAxes, ha="right", va="bottom", fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.9, "edgecolor": "0.7"})
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("measured latency (ms)")
    ax.set_title(title + ": networks with equal MACs differ in latency")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return Plot("macs", title, _png(fig))


def lut_heatmap(points: Sequence[tuple[int, int, float, int]], position: str) -> Plot:
    """Latency over (input, output) channels of one layer position, and its ratio to what
    MACs alone predict: the staircases of the kernels' channel tiling."""
    title = f"LUT heat map: {position}"
    if len(points) < 4:
        return _empty("heatmap", title, f"the LUT has fewer than 4 entries for {position}")
    cins = sorted({p[0] for p in points})
    couts = sorted({p[1] for p in points})
    lat = np.full((len(cins), len(couts)), np.nan)
    per_mac = np.full_like(lat, np.nan)
    for cin, cout, us, macs in points:
        i, j = cins.index(cin), couts.index(cout)
        lat[i, j] = us / 1000
        per_mac[i, j] = us / max(macs, 1)
    # What a MACs-proportional model says, scaled to the table's median speed.
    rel = per_mac / np.nanmedian(per_mac)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    panels = [(lat, "latency (ms)", "viridis", None),
              (rel, "latency / (MACs x median us per MAC)", "RdBu_r", (0.5, 1.5))]
    for ax, (data, label, cmap, lim) in zip(axes, panels):
        im = ax.imshow(data, origin="lower", aspect="auto", cmap=cmap,
                       vmin=lim[0] if lim else None, vmax=lim[1] if lim else None,
                       interpolation="nearest")
        fig.colorbar(im, ax=ax, label=label)
        ax.set_xticks(range(len(couts)), _sparse(couts), rotation=90, fontsize=7)
        ax.set_yticks(range(len(cins)), _sparse(cins), fontsize=7)
        ax.set_xlabel("output channels")
        ax.set_ylabel("input channels")
    axes[0].set_title("measured latency of the layer alone")
    axes[1].set_title("latency relative to MACs: red = slower than MACs say")
    fig.suptitle(title, fontsize=12)
    return Plot("heatmap", title, _png(fig),
                caption="Right: each entry's latency per MAC against the table's median. Red "
                        "regions cost more per MAC (here, layers whose weights, input x output "
                        "channels x 4 bytes, outgrow a core's cache); a MACs-based estimate "
                        "cannot see them, the LUT measures them.")


def _sparse(values: Sequence[int], most: int = 24) -> list[str]:
    step = max(1, -(-len(values) // most))
    return [str(v) if i % step == 0 else "" for i, v in enumerate(values)]


def layer_profile(profile: Mapping[str, Any] | None) -> Plot:
    """Per-layer: the LUT entry (layer alone), the calibrated estimate of its cost inside
    the network (when the version has a calibration), and its measured cost there."""
    title = "Per-layer: LUT entry vs cost inside the network"
    if not profile or not profile.get("layers"):
        return _empty("profile", title, "no per-layer profile was measured for this version "
                      "(it is measured with the validation when the device is attached)")
    layers = profile["layers"]
    names = [x["node"] for x in layers]
    bars = [("lut_us", "LUT entry (alone)", "#1f77b4"),
            ("calibrated_us", "calibrated estimate in the network", "#2ca02c"),
            ("profile_us", "measured in the network", "#ff7f0e")]
    bars = [b for b in bars if all(b[0] in x for x in layers)]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.32 * len(names) + 2), 4.6))
    idx = np.arange(len(names))
    width = 0.8 / len(bars)
    for i, (field, label, color) in enumerate(bars):
        ms = np.array([x[field] for x in layers]) / 1000
        ax.bar(idx + (i - (len(bars) - 1) / 2) * width, ms, width,
               label=f"{label}, sum {ms.sum():.2f} ms", color=color)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(idx, names, rotation=90, fontsize=7)
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{title}: {profile.get('network', '')}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return Plot("profile", title, _png(fig), caption=str(profile.get("method", "")))


def compare_versions(a: Mapping[str, float], b: Mapping[str, float], label_a: str,
                     label_b: str) -> Plot:
    """Per-key latencies of two versions or devices: scatter and the ratio's spread."""
    title = f"{label_a} vs {label_b}: per-key latency"
    common = sorted(a.keys() & b.keys())
    if len(common) < 2:
        return _empty("compare", title, f"{label_a} and {label_b} have {len(common)} key(s) "
                      "in common: nothing to compare")
    x = np.array([a[k] for k in common]) / 1000
    y = np.array([b[k] for k in common]) / 1000
    ops = [k.split(":", 1)[0] for k in common]
    rho = sps.spearmanr(x, y).statistic
    tau = sps.kendalltau(x, y).statistic
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    ax = axes[0]
    extra: dict[str, str] = {}
    for op in dict.fromkeys(ops):
        sel = np.array([o == op for o in ops])
        ax.scatter(x[sel], y[sel], s=10, alpha=0.6, label=op, color=family_color(op, extra))
    lo, hi = min(x.min(), y.min()) * 0.8, max(x.max(), y.max()) * 1.25
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="y = x")
    _log_axes(ax, lo, hi)
    ax.set_xlabel(f"{label_a} latency (ms)")
    ax.set_ylabel(f"{label_b} latency (ms)")
    ax.set_title(f"{len(common)} common keys; Spearman rho = {rho:.3f}, Kendall tau = {tau:.3f}",
                 fontsize=10)
    ax.legend(fontsize=7, markerscale=2)
    ax.grid(alpha=0.3, which="both")
    ratio = y / x
    axes[1].hist(ratio, bins=40, color="#1f77b4")
    axes[1].axvline(np.median(ratio), color="black", ls="--",
                    label=f"median {np.median(ratio):.3f}")
    axes[1].set_xlabel(f"{label_b} / {label_a}")
    axes[1].set_ylabel("keys")
    axes[1].set_title("per-key ratio", fontsize=10)
    axes[1].legend(fontsize=8)
    fig.suptitle(title, fontsize=12)
    return Plot("compare", title, _png(fig))
