"""The `make adapt` demo's numbers, float and int8, with its files timed again.

For each demo run folder there is (``runs/demo-host-32-fashion-x0.5`` from ``make adapt``,
``...-int8`` from ``make adapt DTYPE=int8``): every exported file of the run (the int8
files of an int8 run) is timed whole on the host in interleaved rounds (``bench.timing``,
as the comparison times its files), and from these timings come the adapted / initial
latency ratio against the budget, and the width multipliers' curve at the adapted
network's latency and accuracy (``adapter.pipeline.quality``: the run's own comparison).
Accuracies are the run's, measured on the files (LiteRT for int8). A folder that is
missing or unfinished is skipped with the command that makes it.

Run alone: python -m benchmarks.demo_bench [--runs runs] [--rounds 15]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

# The Makefile's adapt target names its runs demo-$(DEVICE)-$(ADAPT_RES)-fashion-x0.5[-int8]
DEMOS = {"float32": ("demo-host-32-fashion-x0.5", "make adapt"),
         "int8": ("demo-host-32-fashion-x0.5-int8", "make adapt DTYPE=int8")}
ROUNDS = 15


def time_files(files: dict[str, bytes], rounds: int, runner: Any = None) -> dict[str, float]:
    """Each file's median latency (ms) over ``rounds`` interleaved rounds on ``runner``
    (None: this host's runner)."""
    from bench.timing import median_ms

    if runner is not None:
        return median_ms(runner, files, rounds)
    from bench.devices import open_runners

    with open_runners("host") as runners:
        return median_ms(runners[0], files, rounds)


def demo(result: dict, folder: Path, rounds: int, runner: Any = None) -> dict[str, Any]:
    """One finished demo run, its files timed again now."""
    from adapter.pipeline import quality, run_files

    ms = time_files(run_files(result), rounds, runner)
    now = copy.deepcopy(result)
    now.pop("drift_factor", None)  # the run's drift sample is not taken again
    now["initial"]["measured_ms"], now["adapted"]["measured_ms"] = ms["initial"], ms["adapted"]
    for m in now["multipliers"]:
        m["measured_ms"] = ms[m["name"]]
    quality(now)
    q, a, i = now["quality"], result["adapted"], result["initial"]
    budget = result.get("measured_budget", {}).get("relative")
    curve = q.get("multiplier_acc_at_adapted_latency")
    int8 = "int8" in a
    return {
        "run": str(folder), "files": "int8" if int8 else "float32", "rounds": rounds,
        "measured_ms": ms, "budget": budget, "measured_ratio": q["measured_ratio"],
        "within_budget": None if budget is None else q["measured_ratio"] <= budget,
        "adapted_acc": a["test_acc"], "initial_acc": i["test_acc"],
        # points lost to int8 (float file's accuracy - int8 file's): adapted, initial
        "int8_drop_points": [a["int8"]["drop_points"], i["int8"]["drop_points"]] if int8 else None,
        "multiplier_acc_at_adapted_latency": curve,
        "acc_gain_at_equal_latency": None if curve is None else a["test_acc"] - curve,
        "speedup_at_equal_accuracy": q.get("speedup_at_equal_accuracy"),
        "at_run": {k: result.get("quality", {}).get(k) for k in (
            "measured_ratio", "multiplier_acc_at_adapted_latency", "speedup_at_equal_accuracy")},
    }


def run(out: dict[str, Any], runs: Path = Path("runs"), rounds: int = ROUNDS,
        runner: Any = None) -> None:
    """The ``demo`` section of ``make bench``: one entry per dtype."""
    from adapter.pipeline import finished_result

    for dtype, (name, command) in DEMOS.items():
        folder = Path(runs) / name
        result = finished_result(folder)
        if result is None:
            what = "no finished run" if folder.exists() else "no run"
            out[dtype] = {"skipped": f"{what} in {folder}: run {command}, then "
                                     "python -m benchmarks.run --only demo"}
            continue
        out[dtype] = demo(result, folder, rounds, runner)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    run(out, args.runs, args.rounds)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
