"""Adaptation figures (matplotlib, Agg): progress, filters per layer, accuracy vs latency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def progress(history: Sequence[Mapping], budget_ms: float | None, path: Path,
             title: str, measured: Mapping | None = None) -> Path:
    """Estimated latency (with targets and budget) and holdout accuracy per iteration;
    with a measured budget (``measured``: its target and checks), the device's readings
    on a second axis and the estimate's budget as it was tightened."""
    it = [h["iteration"] for h in history]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    ax1.plot(it, [h["latency_ms"] for h in history], "o-", color="tab:blue",
             label="estimated latency (kept proposal)")
    tgt = [(h["iteration"], h["targets"]["latency_ms"]) for h in history
           if "latency_ms" in h.get("targets", {})]
    if tgt:
        ax1.plot(*zip(*tgt), "_", color="tab:gray", markersize=14, mew=2,
                 label="iteration target")
    if measured and measured.get("checks"):
        _measured_checks(ax1, it, measured)
    elif budget_ms is not None:
        ax1.axhline(budget_ms, color="tab:red", ls="--", label=f"budget {budget_ms:.3f} ms")
    for h in history[1:]:
        ax1.annotate(h["chosen"], (h["iteration"], h["latency_ms"]), textcoords="offset points",
                     xytext=(4, 4), fontsize=7, color="tab:blue")
    ax1.set_ylabel("latency (ms; LUT estimate unless marked measured)" if measured
                   else "estimated latency (ms, LUT)")
    ax1.set_title(title)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8, loc="lower left")
    ax2.plot(it, [100 * h["holdout_acc"] for h in history], "s-", color="tab:green",
             label="holdout accuracy (after short-term fine-tune)")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("NetAdapt iteration (0 = initial network)")
    ax2.set_ylabel("holdout accuracy (%)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def _measured_checks(ax: Any, it: Sequence[int], measured: Mapping) -> None:
    """The estimate's budget per iteration (a step down after each failed check) and the
    measured latency of every checked network against the measured budget."""
    checks = measured["checks"]

    def budget_at(i: int) -> float:
        done = [c for c in checks if c["iteration"] < i]
        return done[-1]["estimate_budget_ms"] if done else measured["estimate_budget_ms"]

    ax.step(it, [budget_at(i) for i in it], where="post", color="tab:red", ls="--",
            label="estimate's budget (tightened after a check)")
    ax.plot([c["iteration"] for c in checks], [c["measured_ms"] for c in checks], "D",
            color="tab:purple", label="measured on the device (checks)")
    ax.plot([c["iteration"] for c in checks], [c["target_ms"] for c in checks], "_",
            color="tab:purple", markersize=16, mew=2, label="measured budget at the check")


def filters(slots: Sequence[str], series: Mapping[str, Mapping[str, int]], path: Path,
            title: str) -> Path:
    """Filters per layer (slot) of several networks side by side, e.g. initial, adapted and
    the width-multiplier network of equal latency (the paper's Fig. 5 comparison)."""
    n = len(series)
    width = 0.8 / n
    colors = ["#bbbbbb", "tab:blue", "tab:orange", "tab:green", "tab:purple"]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.55 * len(slots) + 2), 4.5))
    for k, (label, widths) in enumerate(series.items()):
        xs = [i + (k - (n - 1) / 2) * width for i in range(len(slots))]
        ax.bar(xs, [widths[s] for s in slots], width, label=label, color=colors[k % 5])
    ax.set_xticks(range(len(slots)), slots, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("filters (output channels)")
    ax.set_xlabel("layer (slot), input to output")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def tradeoff(multipliers: Sequence[Mapping], points: Mapping[str, Mapping], path: Path,
             title: str, key: str = "measured_ms") -> Path:
    """Test accuracy vs latency: the multiplier curve and single networks (initial, adapted).

    ``key`` selects the latency: measured (``measured_ms``) or estimated (``latency``)."""
    label = "measured latency (ms)" if key == "measured_ms" else "estimated latency (ms, LUT)"
    fig, ax = plt.subplots(figsize=(7, 4.8))
    pts = sorted((m[key], 100 * m["test_acc"], m["name"]) for m in multipliers
                 if m.get(key) is not None)
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="tab:orange",
                label="width multipliers (same training budget)")
        for x, y, name in pts:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, -10), fontsize=7)
    marks = {"initial": ("D", "#777777"), "adapted": ("*", "tab:blue")}
    for name, p in points.items():
        if p.get(key) is None:
            continue
        marker, color = marks.get(name, ("^", "tab:green"))
        ax.plot([p[key]], [100 * p["test_acc"]], marker, color=color, markersize=13 if
                marker == "*" else 8, label=f"{name} (NetAdapt)" if name == "adapted" else name)
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def pareto(series: Mapping[str, Sequence[Mapping]], path: Path, title: str) -> Path:
    """Accuracy (mean +- std over seeds) vs measured latency (mean +- std), one curve per
    method (e.g. NetAdapt over budgets, width multipliers), with the Pareto front of all
    points. A point: ``ms``, ``ms_std``, ``acc``, ``acc_std`` (fractions) and ``name``."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    every = []
    for (label, pts), color in zip(series.items(), colors):
        pts = sorted(pts, key=lambda p: p["ms"])
        every += pts
        ax.errorbar([p["ms"] for p in pts], [100 * p["acc"] for p in pts],
                    xerr=[p.get("ms_std", 0) for p in pts],
                    yerr=[100 * p.get("acc_std", 0) for p in pts], fmt="o-", color=color,
                    capsize=3, label=label)
        for p in pts:
            ax.annotate(p["name"], (p["ms"], 100 * p["acc"]), textcoords="offset points",
                        xytext=(5, -11), fontsize=7, color=color)
    front, best = [], -1.0
    for p in sorted(every, key=lambda p: (p["ms"], -p["acc"])):
        if p["acc"] > best:
            front.append(p)
            best = p["acc"]
    ax.step([p["ms"] for p in front], [100 * p["acc"] for p in front], where="post",
            color="black", alpha=0.35, lw=4, label="Pareto front", zorder=0)
    ms = [p["ms"] for p in every]
    if ms and min(ms) > 0 and max(ms) / min(ms) > 8:  # x0.25 is ~15x faster than x1.0
        ax.set_xscale("log")
    ax.set_xlabel("latency measured whole on the device (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def training_curves(curves: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    """Test accuracy after each epoch of the shared training recipe (is it converged?)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, accs in curves.items():
        ax.plot(range(1, len(accs) + 1), [100 * a for a in accs], "o-", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
