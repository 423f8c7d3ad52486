"""Files section of `make bench`: the TF converter's Keras MobileNets, float and
int8, against a float and an int8 LUT of MobileNetV1+V2 at 224 px, all on one device;
and, held back, converter files of two families the LUT's calibration never fits on.

Needs a Python with TensorFlow to write the files (never a dependency: NETADAPT_TF_PYTHON
or ``--tf-python``); without one the section is skipped and says so. In order:

1. ``files``: ``scripts/keras_reference.py`` writes Keras MobileNet V1 x0.5/0.75/1.0 and
   V2 x0.75/1.0, float and full-integer int8, into ``WORK/keras`` (kept between runs),
   and the held-out files (``HELD_OUT``): the ResNet-style and VGG-style networks of
   ``analysis.families`` at x0.5/0.75/1.0 and 112 px, written in Keras (the VGG one pools by 2x2
   max pools), float and int8 by the same recipe. Each is read (``bench.tflite_read``):
   its ops, those mapped to keys, those that do no work, the dtype conversions, the
   unmapped ones.
2. ``builds``: a float and an int8 LUT of the same space (MobileNetV1+V2, 224 px, grid 32)
   on the same device config, each a fresh file, built as `netadapt lut` does (sweep, then
   calibration), in the order float, int8, int8, float so that a steady drift of the
   machine's speed weighs on both alike; the sweep and the calibration timed apart.
3. ``estimates``: the keys the files need and the sweeps lack are measured on demand into
   derived versions of the last two LUTs (`--missing measure`); each file's calibrated
   estimate (what `netadapt estimate --model-file` prints) against the file itself timed
   whole, all the files interleaved over ``repeats`` x ``passes`` rounds, with a sample of
   the MobileNet files' LUT keys measured alone between rounds (the session's speed
   against the LUT's); each file's measured latency is the median of its repeats, and the
   limits of agreement per dtype stand next to the repeats' own (``analysis.agreement``).
   The held-out files are timed in the same rounds and scored as their own set
   (``held_out_files``: rows, within ±5 %, limits per dtype). They are held back: the
   LUT is swept and calibrated before any file is read, a calibration never changes
   (keys measured on demand inherit it), and the drift sample draws on the MobileNet
   files' keys only; nothing about these families reaches a fit. Beside them, up to
   ``ANCHORS`` of each LUT's own calibration networks are timed in the same rounds: each
   file's estimate re-levelled by them (``anchored_error_pct``, ``analysis.anchors``) is
   scored too, next to the stored estimate.
4. ``int8_validation``: `netadapt report` on the last int8 LUT: sampled int8 networks
   measured whole, scored with the calibrated estimate on those the calibration was not
   fitted on.

Runnable alone: ``python -m benchmarks.files_bench --tf-python /path/to/tf-venv/bin/python``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from analysis import agreement, anchors
from analysis.calibrate import ensure_calibrated
from analysis.features import all_tables
from analysis.report import report_lut
from analysis.validate import SessionDrift
from bench.devices import open_runners
from bench.missing import ensure_keys, estimate_network
from bench.runners.base import Runner
from bench.sweep import build_lut
from bench.sweep_space import SweepSpace
from bench.tflite_read import ReadResult, TfliteReadError, read_file
from bench.timing import Measurement, Model, session_state, time_networks
from lut_db.estimate import Estimate
from lut_db.store import LutStore
from lut_db.versions import Version

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "keras_reference.py"
MODELS = ("keras_mobilenet_v1_x0.5", "keras_mobilenet_v1_x0.75", "keras_mobilenet_v1_x1.0",
          "keras_mobilenet_v2_x0.75", "keras_mobilenet_v2_x1.0")
DTYPES = ("float32", "int8")
BUILD_ORDER = ("float32", "int8", "int8", "float32")  # ABBA: a steady drift weighs alike
HELD_OUT = tuple(f"keras_{f}_style_x{m}" for f in ("resnet", "vgg")
                 for m in ("0.5", "0.75", "1.0"))  # in no sweep, no calibration
FAMILIES = ("mobilenet_v1", "mobilenet_v2")
DRIFT_KEYS = 100  # per LUT: its keys measured alone again between the files' rounds
ANCHORS = 12  # calibration networks per LUT timed beside the files


def tf_python(given: str | None) -> str | None:
    """The Python with TensorFlow: ``given``, else NETADAPT_TF_PYTHON; None when neither
    names an existing file."""
    path = given or os.environ.get("NETADAPT_TF_PYTHON", "")
    return path if path and Path(path).exists() else None


def write_files(python: str, folder: Path,
                models: tuple[str, ...] = MODELS + HELD_OUT) -> dict[str, Path]:
    """Each of ``models`` float and int8 under ``folder`` (converted now when absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = {}
    for extra, suffix in (([], ""), (["--int8"], "_int8")):
        todo = [m for m in models if not (folder / f"{m}{suffix}.tflite").exists()]
        if todo:
            subprocess.run([python, str(SCRIPT), str(folder), "--only", *todo, *extra],
                           env=env, check=True, capture_output=True, timeout=1800)
        out.update({f"{m}{suffix}": folder / f"{m}{suffix}.tflite" for m in models})
    return out


def describe_read(name: str, path: Path) -> tuple[dict[str, Any], ReadResult | None]:
    """One file read: how many ops, how each was taken (the ``files`` step)."""
    row: dict[str, Any] = {"file": name, "bytes": path.stat().st_size}
    t0 = time.perf_counter()
    try:
        res = read_file(path)
    except TfliteReadError as e:
        loose = read_file(path, allow_unknown=True)
        row |= {"error": str(e).splitlines()[0], "unknown_ops": len(loose.unknown_ops)}
        return row, None
    row["read_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    conversions = [f for f in res.free_ops if f.op in ("QUANTIZE", "DEQUANTIZE")
                   and "constants" not in f.note]
    keyed = len(res.network.nodes)
    ops = keyed + len(res.free_ops) + len(res.unknown_ops)
    row |= {"ops": ops, "keyed": keyed, "free": len(res.free_ops) - len(conversions),
            "conversions": len(conversions), "unknown_ops": len(res.unknown_ops),
            "all_mapped": not res.unknown_ops,
            "dtypes": sorted({n.spec.dtype for n in res.network.nodes}),
            "keys": len(set(res.network.keys))}
    return row, res


def build(work: Path, runner: Runner, runners: list[Runner], dtype: str, i: int,
          grid: int = 32, calibration_networks: int = 40) -> dict[str, Any]:
    """One fresh LUT file of the space at ``dtype``, swept and calibrated; timed."""
    db = work / f"lut_{dtype}_{i}.db"
    for stale in work.glob(f"{db.name}*"):
        stale.unlink()
    shutil.rmtree(work / f"{db.stem}.failures", ignore_errors=True)
    space = SweepSpace(FAMILIES, (224,), grid, 1000, dtype)
    t0 = time.perf_counter()
    res = build_lut(db, "host", runners, space)
    t1 = time.perf_counter()
    cal, _ = ensure_calibrated(db, res.version.id, runner, calibration_networks)
    t2 = time.perf_counter()
    return {"build": i, "dtype": dtype, "db": str(db), "version": res.version.id,
            "keys": res.measured,
            "failed": res.failed, "sweep_s": round(t1 - t0, 1),
            "sweep_efficiency": round(res.efficiency or 0, 2),
            "calibration_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1),
            "calibration": cal.describe(), "calibration_cv_mape_pct": cal.cv.get("mape_pct")}


def ratios(builds: list[dict[str, Any]]) -> dict[str, Any]:
    """int8 / float32 build times: in all, and for each adjacent pair (drift shows)."""
    def total(dtype: str, what: str) -> float:
        return sum(b[what] for b in builds if b["dtype"] == dtype)

    out = {f"int8_over_float_{w}": round(total("int8", w) / total("float32", w), 3)
           for w in ("sweep_s", "calibration_s", "total_s")}
    f = [b for b in builds if b["dtype"] == "float32"]
    q = [b for b in builds if b["dtype"] == "int8"]
    out["pairs_total_s"] = [round(b["total_s"] / a["total_s"], 3) for a, b in zip(f, q)]
    out["float_runs_total_s"] = [a["total_s"] for a in f]
    out["int8_runs_total_s"] = [b["total_s"] for b in q]
    return out


def estimates(runner: Runner, luts: dict[str, Path], ids: dict[str, int],
              reads: dict[str, ReadResult], paths: dict[str, Path], passes: int,
              repeats: int = 3) -> dict[str, Any]:
    """Each file's calibrated estimate against the file timed whole (see the module): the
    MobileNet files' rows and scores at the top, the held-out files' in ``held_out_files``."""
    stores = {dt: LutStore.open(db) for dt, db in luts.items()}
    try:
        derived: dict[str, Version] = {}
        drifts: dict[str, SessionDrift] = {}
        on_demand: dict[str, int] = {}
        held_on_demand: dict[str, int] = {}
        t0 = time.perf_counter()
        for dt, store in stores.items():
            root = store.version(ids[dt])
            nets = {n: r.network for n, r in reads.items() if _dtype(n) == dt}
            table = store.table(root)
            absent = sorted({k for n in nets.values() for k in n.keys if k not in table})
            on_demand[dt] = len(absent)
            mine = {k for n, net in nets.items() if not _held_out(n) for k in net.keys}
            held_on_demand[dt] = len(set(absent) - mine)
            derived[dt] = ensure_keys(store, root, absent, runner=runner) if absent else root
            drifts[dt] = SessionDrift(runner, [net for n, net in nets.items()
                                               if not _held_out(n)],
                                      all_tables(store, root), DRIFT_KEYS, 11)
        ests = {}
        for name, r in reads.items():
            dt = _dtype(name)
            ests[name] = estimate_network(stores[dt], derived[dt], r.network, "error")
        # calibration networks timed beside the files re-level their estimates
        anchor_dt = {}
        anchor_nets = {}
        for dt, store in stores.items():
            for net in anchors.calibration_networks(store, store.version(ids[dt]), ANCHORS):
                name = f"anchor/{dt}/{net.name}"
                anchor_dt[name], anchor_nets[name] = dt, net
                ests[name] = estimate_network(store, derived[dt], net, "error")

        def between(p: int) -> None:
            for d in drifts.values():
                d.measure_slice(p, passes * repeats)

        t1 = time.perf_counter()
        models: dict[str, Model] = {n: paths[n].read_bytes() for n in reads}
        timed = time_networks(runner, {**models, **anchor_nets}, passes, repeats=repeats,
                              seed=11, between=between)
        t2 = time.perf_counter()
        factors = {dt: d.factors() for dt, d in drifts.items()}
        pairs = {dt: [(ests[n].total_us, timed[n].latency_us) for n in anchor_nets
                      if anchor_dt[n] == dt] for dt in stores}
        rows = [_row(name, est, timed[name], factors[_dtype(name)]["lut"] or 1.0,
                     pairs[_dtype(name)])
                for name, est in ests.items() if name in reads]
        state = session_state(timed)
        held = [r for r in rows if _held_out(r["file"])]
        return {"passes": passes, "repeats": repeats, "keys_on_demand": on_demand,
                "on_demand_s": round(t1 - t0, 1), "timing_s": round(t2 - t1, 1),
                "machine_state": state.to_dict() if state else None,
                "drift_factor": {dt: round(f["lut"] or 1.0, 3) for dt, f in factors.items()},
                "drift_keys": {dt: f["lut_keys"] for dt, f in factors.items()},
                "anchors": {dt: {"networks": len(pp), "level": anchors.level(pp)}
                            for dt, pp in pairs.items()},
                **_scored([r for r in rows if not _held_out(r["file"])], ests, timed),
                "held_out_files": {"keys_on_demand": held_on_demand,
                                   **_scored(held, ests, timed)}}
    finally:
        for s in stores.values():
            s.close()


def _row(name: str, est: Estimate, t: Measurement, drift: float,
         pairs: list[tuple[float, float]]) -> dict[str, Any]:
    m = t.latency_us
    moved = anchors.anchored([est.total_us], pairs)
    return {"file": name, "lut": est.lut, "raw_ms": round(est.raw_total_us / 1000, 3),
            "calibrated_ms": round(est.total_us / 1000, 3),
            "measured_ms": round(m / 1000, 3),
            "repeats_ms": [round(x / 1000, 3) for x in t.repeats_us],
            "pass_spread_pct": round(100 * t.pass_spread, 1),
            "error_pct": round(100 * (est.total_us / m - 1), 1),
            "raw_error_pct": round(100 * (est.raw_total_us / m - 1), 1),
            "error_drift_out_pct": round(100 * (est.total_us * drift / m - 1), 1),
            **({"anchored_error_pct": round(100 * (moved[0] / m - 1), 1)} if moved else {})}


def _scored(rows: list[dict[str, Any]], ests: dict[str, Estimate],
            timed: dict[str, Measurement]) -> dict[str, Any]:
    """One set of files: its rows, limits of agreement per dtype, counts within bands."""
    limits = {}
    for dt in DTYPES:
        names = [r["file"] for r in rows if _dtype(r["file"]) == dt]
        if names:
            limits[dt] = agreement.side_by_side([ests[n].total_us for n in names],
                                                [timed[n].latency_us for n in names],
                                                [timed[n].repeats_us for n in names])
    return {"limits": limits, "rows": rows, **_scores(rows)}


def _dtype(name: str) -> str:
    return "int8" if name.endswith("_int8") else "float32"


def _held_out(name: str) -> bool:
    return name.removesuffix("_int8") in HELD_OUT


def _scores(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col in ("error_pct", "error_drift_out_pct", "raw_error_pct", "anchored_error_pct"):
        for dt in DTYPES:
            errs = [abs(r[col]) for r in rows if _dtype(r["file"]) == dt and col in r]
            if not errs:
                continue
            out[f"{col}.{dt}"] = {"within_5": sum(e <= 5 for e in errs),
                                  "within_10": sum(e <= 10 for e in errs), "of": len(errs),
                                  "max_abs": max(errs)}
    return out


def int8_validation(runner: Runner, db: Path, version_id: int, out_dir: Path, networks: int,
                    passes: int) -> dict[str, Any]:
    """`netadapt report --lut DB@ID` (validation measured now), its calibrated numbers."""
    t0 = time.perf_counter()
    with LutStore.open(db) as store:
        version = store.version(version_id)
        report, folder, result = report_lut(store, version, runner, out_dir, networks=networks,
                                            passes=passes)
    preds = report.metrics["predictors"]
    keep = ("n", "count_within_5pct", "count_within_10pct", "within_5pct", "within_10pct",
            "mape_pct", "mean_error_pct", "max_error_pct", "pearson_r")
    out: dict[str, Any] = {"lut": f"{db}@{version.id}", "report": str(folder),
                           "networks": networks,
                           "passes": passes, "measured": result.measured,
                           "wall_s": round(time.perf_counter() - t0, 1)}
    out["session_drift"] = report.metrics.get("drift")  # the keys re-measured: now / LUT
    out["limits"] = report.metrics.get("limits")
    out["machine"] = report.metrics.get("machine")
    for name in ("calibrated", "calibrated_drift", "calibrated_anchored", "naive", "drift"):
        for group in ("unseen", "held_out"):
            got = preds.get(name, {}).get(group)
            if got:
                out[f"{name}.{group}"] = {k: got[k] for k in keep if k in got}
    return out


def run(out: dict[str, Any], tf_python_path: str | None = None,
        work: Path = Path("luts/files_bench"), passes: int = 4, report_networks: int = 60,
        report_passes: int = 4, builds: tuple[str, ...] = BUILD_ORDER, grid: int = 32,
        calibration_networks: int = 40,
        models: tuple[str, ...] = MODELS + HELD_OUT) -> None:
    python = tf_python(tf_python_path)
    if python is None:
        out["skipped"] = ("needs a Python with TensorFlow to write the Keras files: set "
                          "NETADAPT_TF_PYTHON or pass --tf-python (e.g. "
                          "/work/tfref-venv/bin/python)")
        return
    t0 = time.perf_counter()
    paths = write_files(python, work / "keras", models)
    out["convert_s"] = round(time.perf_counter() - t0, 1)
    reads: dict[str, ReadResult] = {}
    out["files"] = []
    for name, path in paths.items():
        row, res = describe_read(name, path)
        out["files"].append(row)
        if res is not None:
            reads[name] = res
    out["all_files_mapped"] = all(r.get("all_mapped") for r in out["files"])
    for name in models:  # an int8 file must read as its float file's keys at dt=int8
        if name in reads and f"{name}_int8" in reads:
            f = [n.spec.key.replace("dt=float32", "dt=int8") for n in reads[name].network.nodes]
            q = [n.spec.key for n in reads[f"{name}_int8"].network.nodes]
            out.setdefault("int8_keys_equal_float_keys", {})[name] = f == q
    with open_runners("host") as runners:
        runner = runners[0]
        out["device"] = "host (device_configs/host.toml, tflite-cpu, 1 thread pinned)"
        out["builds"] = [build(work, runner, runners, dt, i, grid, calibration_networks)
                         for i, dt in enumerate(builds)]
        print(json.dumps(out["builds"], indent=1), file=sys.stderr, flush=True)
        if {b["dtype"] for b in out["builds"]} == set(DTYPES):
            out["build_ratios"] = ratios(out["builds"])
        last = {b["dtype"]: Path(b["db"]) for b in out["builds"]}
        ids = {b["dtype"]: b["version"] for b in out["builds"]}
        files = {n: r for n, r in reads.items() if _dtype(n) in last}
        out["estimates"] = estimates(runner, last, ids, files, paths, passes)
        print(json.dumps(out["estimates"], indent=1), file=sys.stderr, flush=True)
        if "int8" in last:
            out["int8_validation"] = int8_validation(runner, last["int8"], ids["int8"],
                                                     work / "reports", report_networks,
                                                     report_passes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tf-python", default=None, help="a Python with TensorFlow "
                    "(default: NETADAPT_TF_PYTHON)")
    ap.add_argument("--work", type=Path, default=Path("luts/files_bench"))
    ap.add_argument("--passes", type=int, default=4, help="passes per repeat (3 repeats)")
    # a smaller run (e.g. checking the wiring): fewer builds, files, a coarser grid
    ap.add_argument("--builds", nargs="+", choices=DTYPES, default=list(BUILD_ORDER),
                    help="the LUTs built, in order (default: %(default)s)")
    ap.add_argument("--models", nargs="+", choices=MODELS + HELD_OUT,
                    default=list(MODELS + HELD_OUT), help="the files (default: all)")
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--calibration-networks", type=int, default=40)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    run(out, args.tf_python, args.work, args.passes, builds=tuple(args.builds),
        grid=args.grid, calibration_networks=args.calibration_networks,
        models=tuple(args.models))
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
