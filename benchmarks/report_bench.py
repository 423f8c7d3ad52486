"""Report section of `make bench`: validation numbers of the host LUT, and how long the
report of 60 networks takes to generate once they are measured.

``run(out)`` uses luts/host.db (built first with `netadapt lut` if it is missing),
measures the validation networks it does not hold yet (timed apart), then times
``analysis.report_build.build`` + ``analysis.report.write`` alone. Runnable by itself:
``python -m benchmarks.report_bench [--lut luts/host.db]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

NETWORKS = 60


def run(out: dict[str, Any], lut: Path = Path("luts/host.db"), networks: int = NETWORKS,
        passes: int = 4, repeats: int = 3) -> None:
    from analysis import validate as val
    from analysis.report import write
    from analysis.report_build import build
    from bench.devices import open_runners
    from bench.sweep import build_lut
    from bench.sweep_space import SweepSpace
    from lut_db.store import LutStore

    if not lut.exists():
        t0 = time.perf_counter()
        with open_runners("host") as runners:
            build_lut(lut, "host", runners, SweepSpace(("mobilenet_v1", "mobilenet_v2")))
        out["lut_build_s"] = round(time.perf_counter() - t0, 1)
    store = LutStore.open(lut)
    version = store.version()
    store.lock()
    t0 = time.perf_counter()
    with open_runners(version.device, version.backend) as runners:
        res = val.validate(store, version, runners[0], networks, passes=passes,
                           repeats=repeats)
    out["measure_s"] = round(time.perf_counter() - t0, 1)
    out["measured_now"], out["reused"] = res.measured, res.reused
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = build(store, version)
        write(report, Path(tmp))
        out["report_generation_s"] = round(time.perf_counter() - t0, 2)
    store.close()
    m = report.metrics
    out["lut"] = m["lut"]
    out["networks"] = len(m["networks"])
    for name, groups in m["predictors"].items():
        for group in ("in_space", "held_out"):
            a = groups.get(group, {})
            if a:
                out[f"{name}_{group}"] = {
                    "n": a["n"], "within_5": a["count_within_5pct"],
                    "within_10": a["count_within_10pct"],
                    "pearson_r": round(a.get("pearson_r", float("nan")), 4),
                    "mape_pct": round(a["mape_pct"], 2)}
    if m.get("macs"):
        a = m["macs"]["in_space"]
        out["macs_in_space"] = {"n": a["n"], "within_5": a["count_within_5pct"],
                                "pearson_r": round(a.get("pearson_r", float("nan")), 4)}
    out["calibration"] = m.get("calibration")  # the stored in-network model, described
    out["drift"] = m.get("drift")
    out["limits"] = m.get("limits")  # Bland–Altman, beside the repeats' own limits
    out["machine"] = m.get("machine")  # the machine's state per measuring session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lut", type=Path, default=Path("luts/host.db"))
    ap.add_argument("--networks", type=int, default=NETWORKS)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    run(out, args.lut, args.networks)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
