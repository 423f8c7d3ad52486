"""Numbers of the NetAdapt adapter, on the `make adapt` demo.

- proposal search: time to find the filter count of every MobileNetV1 layer for one
  iteration, from the LUT only (target < 50 ms), with cold and warm estimate caches;
- adaptation quality over seeds: the demo (MobileNetV1, digits at 32 px, 50% of the
  initial estimated latency, width multipliers with the same training budget), each seed
  measured on the host: adapted vs multiplier test accuracy at equal measured latency,
  measured speed-up at equal accuracy, mean and spread;
- estimated vs measured latency of the final adapted network (% error), per seed.

Runs are kept in runs/bench-adapt-s<seed> and resumed, so a second `make bench` only
re-measures. The demo LUT (luts/host.db swept at 32 px) is built when it is missing.

Run alone: python -m benchmarks.adapt_bench [--seeds 0 1 2] [--lut luts/host.db]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

RES, GRID, CLASSES = 32, 32, 10
# The Makefile's demo settings (ADAPT_DEMO and the adapt line): keep them in step.
DEMO: dict[str, Any] = {
    "model": "mobilenet_v1", "resolution": RES, "data": "digits", "budgets": {"latency_ms": "0.5"},
    "pretrain_epochs": 10, "short_steps": 10, "reduction": 0.08, "decay": 0.97, "long_epochs": 8}
MULTIPLIERS = [0.25, 0.5, 0.75]


def demo_lut(path: Path, version: int | None = None) -> tuple[Any, str]:
    """(SearchSpace on the demo LUT, its label); sweeps the 32 px space when missing."""
    from adapter.errors import AdaptError
    from adapter.search_space import SearchSpace, lut_grid
    from bench.devices import open_runners
    from bench.sweep import build_lut
    from bench.sweep_space import SweepSpace
    from lut_db.errors import LutError
    from lut_db.store import LutStore

    def load() -> tuple[Any, str]:
        store = LutStore.open(path)
        v = store.version(version)
        label = f"{path}@{v.id}"
        grid = lut_grid(v.space, "mobilenet_v1", RES, CLASSES, label)
        return SearchSpace("mobilenet_v1", RES, CLASSES, store.table(v), grid,
                           lut=label), label

    try:
        return load()
    except (AdaptError, LutError):
        with open_runners("host") as runners:
            build_lut(path, "host", runners,
                      SweepSpace(("mobilenet_v1",), (RES,), GRID, CLASSES))
        return load()


def search_time(space: Any, repeats: int = 20) -> dict[str, Any]:
    """ms to make one iteration's proposals for all 14 MobileNetV1 slots (LUT only)."""
    from adapter.search_space import SearchSpace

    out: dict[str, Any] = {"slots": len(space.groups)}
    for label, mult in (("full_width", 1.0), ("x0.75", 0.75)):
        widths = space.snap(space.fam.widths(width_mult=mult))
        target = {"latency_ms": 0.95 * space.resource("latency_ms", widths)}
        cold, warm = [], []
        for _ in range(5):
            fresh = SearchSpace("mobilenet_v1", RES, CLASSES, space._latency.table, space.grid)
            t0 = time.perf_counter()
            props = fresh.propose(widths, target)
            cold.append(time.perf_counter() - t0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            space.propose(widths, target)
            warm.append(time.perf_counter() - t0)
        out[label] = {"proposals": len(props), "candidates": sum(
            len(space.candidates(widths, g)) for g in space.groups),
            "cold_cache_ms": 1000 * statistics.median(cold),
            "warm_cache_ms": 1000 * statistics.median(warm)}
    out["target_ms"] = 50
    out["meets_target"] = all(out[k]["cold_cache_ms"] < 50 for k in ("full_width", "x0.75"))
    return out


def adapt_seed(space: Any, label: str, seed: int, runs_dir: Path, workers: int) -> dict:
    from adapter import data
    from adapter.config import AdaptConfig
    from adapter.pipeline import adapt

    run_dir = runs_dir / f"bench-adapt-s{seed}"
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():  # a kept run continues on the LUT version it started with
        from adapter.checkpoints import load_checkpoint

        started = load_checkpoint(ckpt)["config"]["lut"]
        if started != label and started.rpartition("@")[0] == label.rpartition("@")[0]:
            space, label = demo_lut(Path(label.rpartition("@")[0]),
                                    int(started.rpartition("@")[2]))
    cfg = AdaptConfig(**DEMO, lut=label, grid=space.grid, seed=seed)
    ds = data.load("digits", RES)
    return adapt(cfg, space, ds, run_dir, workers=workers, resume=True, multipliers=MULTIPLIERS,
                 device="host", measure_rounds=5, log=lambda m: print(f"  [seed {seed}] {m}", flush=True))


def seed_row(seed: int, r: dict) -> dict[str, Any]:
    a, q = r["adapted"], r.get("quality", {})
    eq = [m for m in r["multipliers"] if "equal latency" in m["name"]]
    return {
        "seed": seed, "iterations": r["iterations"],
        "initial_est_ms": r["initial"]["latency_ms"], "initial_meas_ms": r["initial"]["measured_ms"],
        "adapted_est_ms": a["latency_ms"], "adapted_meas_ms": a["measured_ms"],
        "est_vs_meas_pct": q.get("adapted_est_vs_measured_pct"),
        "measured_speedup_vs_initial": 1 / q["measured_ratio"],
        "adapted_acc": a["test_acc"], "adapted_acc_before_long": a["test_acc_before_long"],
        "mult_acc_at_adapted_meas_latency": q.get("multiplier_acc_at_adapted_latency"),
        "eq_est_latency_mult": eq[0]["multiplier"] if eq else None,
        "eq_mult_meas_ms": eq[0].get("measured_ms") if eq else None,
        "eq_mult_acc": eq[0]["test_acc"] if eq else None,
        "speedup_at_equal_acc": q.get("speedup_at_equal_accuracy"),
        "wall_s": r["wall_s"],
    }


def _spread(rows: list[dict], key: str) -> dict[str, float] | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1
            else 0.0, "min": min(vals), "max": max(vals), "n": len(vals)}


def run(out: dict[str, Any] | None = None, seeds: tuple[int, ...] = (0, 1, 2),
        lut: Path = Path("luts/host.db"), runs_dir: Path = Path("runs"),
        workers: int = 2) -> dict[str, Any]:
    out = {} if out is None else out
    space, label = demo_lut(lut)
    out["lut"] = label
    out["proposal_search"] = search_time(space)
    rows = [seed_row(s, adapt_seed(space, label, s, runs_dir, workers)) for s in seeds]
    out["seeds"] = rows
    out["summary"] = {k: _spread(rows, k) for k in (
        "adapted_acc", "mult_acc_at_adapted_meas_latency", "eq_mult_acc", "adapted_meas_ms",
        "eq_mult_meas_ms", "measured_speedup_vs_initial", "speedup_at_equal_acc",
        "est_vs_meas_pct")}
    out["demo"] = {**DEMO, "multipliers": MULTIPLIERS, "seeds": list(seeds)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lut", type=Path, default=Path("luts/host.db"))
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--search-only", action="store_true", help="only the proposal search time")
    args = ap.parse_args()
    if args.search_only:
        space, label = demo_lut(args.lut)
        print(json.dumps({"lut": label, **search_time(space)}, indent=1))
        return
    out = run({}, tuple(args.seeds), args.lut, args.runs_dir, args.workers)
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
