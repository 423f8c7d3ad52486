"""`make bench`: every section's numbers, measured in one run, written to results files.

Each section is a module with ``run(out, ...)`` filling a dict. Sections whose module
is missing are skipped with a note. Results: benchmarks/results.json (everything)
and a Markdown summary (``--out``). Each section's results carry the machine's state
while it ran (``machine_state``: load, other processes' CPU, steal;
``bench.machine_state``), and a section measured on a busy machine says so in one line.
Before and after each section one layer is timed for a few seconds, and two layers that
fill half and an eighth of the L3 (``quiet_probe``, ``quiet_probe_after``: the machine's
own noise and its share of the L3, which load and steal miss); ``--wait-quiet MINUTES``
waits for a quiet machine first (``bench/quiet.py``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import quiet
from bench.machine_state import HostProbe
from benchmarks.summary import markdown

SECTIONS: dict[str, Callable[[argparse.Namespace], tuple[str, dict[str, Any]]]] = {}


def section(name: str, module: str, **kwargs: Any) -> None:
    def call(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
        mod = importlib.import_module(module)
        out: dict[str, Any] = {}
        extra = {k: getattr(args, v) for k, v in kwargs.items()}
        mod.run(out, **extra)
        return name, out

    SECTIONS[name] = call


section("foundation", "benchmarks.foundation_bench", lut="lut")
section("adb", "benchmarks.adb_bench")
section("report", "benchmarks.report_bench")
section("adapt", "benchmarks.adapt_bench")
section("layer_gap", "benchmarks.layer_gap_bench")
section("calibration", "benchmarks.calibration_bench", lut="lut")
section("adapted_limit", "benchmarks.adapted_limit_bench", lut="lut")
section("faults", "benchmarks.fault_bench")
section("files", "benchmarks.files_bench", tf_python_path="tf_python")
section("op_profile", "benchmarks.op_profile_bench")
section("float16", "benchmarks.float16_bench")
section("demo", "benchmarks.demo_bench", runs="runs")
section("compare", "benchmarks.compare_bench", runs="compare_runs", lut="lut", tags="compare_tags")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lut", type=Path, default=Path("luts/host.db"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results.md"))
    ap.add_argument("--only", nargs="*", default=None, help="section names to run")
    ap.add_argument("--tf-python", default=None, help="a Python with TensorFlow, for the "
                    "files section (default: NETADAPT_TF_PYTHON; without one it is skipped)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="MINUTES",
                    help="before each section, wait up to this long for a quiet machine "
                    "(load and one layer's noise under their limits: bench/quiet.py)")
    ap.add_argument("--probe-seconds", type=float, default=6.0,
                    help="how long each quiet probe times its layer")
    ap.add_argument("--runs", type=Path, default=Path("runs"),
                    help="where the `make adapt` demo's run folders are (demo section)")
    ap.add_argument("--compare-runs", type=Path, default=Path("runs"),
                    help="where `make compare`'s run folders are (compare section)")
    ap.add_argument("--compare-tags", nargs=2, default=["fmnist", "fmnist-int8-x1"],
                    metavar=("FLOAT", "INT8"), help="the float and int8 comparisons' --tag")
    args = ap.parse_args(argv)
    json_path = args.out.with_suffix(".json")
    results: dict[str, Any] = {"sections": {}}
    if args.only and json_path.exists():  # keep the sections not run this time
        results = json.loads(json_path.read_text())
    results.update(when=datetime.now(UTC).isoformat(timespec="seconds"),
                   machine=f"{platform.machine()} {platform.node()}")
    for name, call in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        calm = quiet.wait_quiet(60 * args.wait_quiet,  # one probe when not waiting
                                lambda: quiet.probe(args.probe_seconds))
        print(f"{name}: {quiet.describe(calm)}"
              + ("" if calm["quiet"] else " - not quiet: this section's numbers are noisier"),
              flush=True)
        t0 = time.perf_counter()
        probe = HostProbe()
        probe.start()
        try:
            _, out = call(args)
        except ModuleNotFoundError as e:
            out = {"skipped": f"module missing: {e.name}"}
        except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
            out = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        out["section_wall_s"] = time.perf_counter() - t0
        out["when"] = results["when"]
        state = probe.stop()
        out["machine_state"] = state.to_dict()
        out["quiet_probe"] = calm
        # the probe again: a section of minutes can outlast a quiet spell (the L3 most of all)
        out["quiet_probe_after"] = after = quiet.wait_quiet(  # one probe: no waiting
            0, lambda: quiet.probe(args.probe_seconds))
        results["sections"][name] = out
        print(f"{name}: done in {out['section_wall_s']:.0f} s; {state.describe()}; after it: "
              f"{quiet.describe(after)}", flush=True)
        if state.warning():
            print(state.warning(f"the {name} section's numbers"), flush=True)
    json_path.write_text(json.dumps(results, indent=1, default=str))
    args.out.write_text(markdown(results))
    print(f"wrote {args.out} and {json_path}")


if __name__ == "__main__":
    main()
