"""Offline: the in-network model refitted on what stored LUT files hold, the rule before v5
(weights alone decide whether a network's weights stay in cache) against v5's (its working
set: weights and the activations its layers move). Nothing is timed.

For a LUT file whose version holds `netadapt report`'s validation (each network measured
whole, the session's drift factors kept with it), the networks of the LUT's own families
stand in for a calibration set:

- ``unseen``: each of them predicted out of fold by both rules fitted on the other folds
  (``analysis.calibrate.fit``: the candidates compared out of fold, as calibrate does);
- ``held_out``: the ResNet/VGG-style families, predicted by both rules fitted on all of them;
- ``files``: the converter's files of the LUT (``benchmarks/results.json``, files section:
  their measured medians), predicted the same way from the .tflite files.

Each measured latency is first brought to the LUT's time by the drift factors of its
session (keys re-measured alone beside it), as calibration does: the numbers compare
models, not the machine's minute. The validation networks' layers were not profiled, so
only the totals candidate competes here (the per-layer ones need profiles of at least 8
networks). The LUT's stored calibration is scored on the same sets. A LUT without
validations (the float ones) has its files scored with its stored calibration under both
rules, its parameters unchanged: what changing the rule alone does to them.

``python -m benchmarks.int8_fit_check --lut A.db --lut B.db [--results results.json]
[--keras folder]``; prints one table and the JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from analysis import calibrate as cb
from analysis.calibration_fit import errors
from analysis.features import Tables, all_tables
from analysis.stats import out_of_fold
from bench.tflite_read import read_file
from lut_db.calibration import MODEL, PER_LAYER, V3, V4, Calibration
from lut_db.network import Network
from lut_db.store import LutStore
from lut_db.versions import Version

OLD = "weights alone (v3/v4)"
NEW = "working set (v5)"
STORED = "stored calibration"


def sample(net: Network, measured_us: float, tables: Tables,
           drift: dict[str, float] | float) -> cb.Sample | None:
    """``net`` with its LUT entries and its latency at the LUT's time (the LUT's keys by
    the session's factor, keys measured on demand by theirs, weighted by entry); None
    when the LUT lacks a key."""
    lookup, _ = tables.lookup(net.keys)
    if len(lookup) < len(set(net.keys)):
        return None
    if isinstance(drift, dict):
        lut, extra = drift.get("lut") or 1.0, drift.get("extra") or drift.get("lut") or 1.0
        then = sum(lookup[k] for k in net.keys)
        now = sum(lookup[k] * (lut if k in tables.table else extra) for k in net.keys)
        factor = now / then
    else:
        factor = drift
    layers = [(node.spec, lookup[node.spec.key]) for node in net.nodes]
    return cb.Sample(net.name, layers, measured_us / factor)


def validation_sets(store: LutStore, version: Version, tables: Tables
                    ) -> dict[str, list[cb.Sample]]:
    """The version's validations as samples: in its families, and held out."""
    out: dict[str, list[cb.Sample]] = {"unseen": [], "held_out": []}
    for row in store.validations(version):
        timing = json.loads(row["timing"] or "{}")
        net = Network.from_json_dict(json.loads(row["network"]))
        s = sample(net, row["measured_us"], tables, timing.get("drift") or 1.0)
        if s is not None:
            out["held_out" if row["held_out"] else "unseen"].append(s)
    return out


def file_samples(db: Path, tables: Tables, results: Path | None, keras: Path | None
                 ) -> list[cb.Sample]:
    """The converter's files that ``results`` measured against this LUT file."""
    if results is None or keras is None or not results.exists():
        return []
    files = json.loads(results.read_text())["sections"].get("files", {}).get("estimates", {})
    drift = files.get("drift_factor", {})
    out = []
    for row in files.get("rows", []):
        if Path(row["lut"].rpartition("@")[0]).name != db.name:
            continue
        path = keras / f"{row['file']}.tflite"
        if not path.exists():
            continue
        net = read_file(path).network
        dtype = "int8" if row["file"].endswith("_int8") else "float32"
        s = sample(replace(net, name=row["file"]), 1000 * row["measured_ms"], tables,
                   drift.get(dtype, 1.0))
        if s is not None:
            out.append(s)
    return out


def fitted(rule: str, train: Sequence[cb.Sample], overhead: float, fp: dict[str, Any]
           ) -> Calibration:
    """The calibration ``rule`` (OLD or NEW) fits on ``train``, as calibrate would."""
    return cb.fit(train, overhead, fp, weights_only=rule == OLD)


def scores(pred: np.ndarray, samples: Sequence[cb.Sample]) -> dict[str, Any]:
    rel = pred / np.array([s.measured_us for s in samples]) - 1
    return {**errors(rel), "mean_signed_pct": float(100 * rel.mean()),
            "each_pct": {s.name: round(float(100 * r), 1) for s, r in zip(samples, rel)}}


def check(db: Path, results: Path | None = None, keras: Path | None = None) -> dict[str, Any]:
    """Old rule vs new on one LUT file's stored measurements (see the module)."""
    with LutStore.open(db) as store:
        version = store.version(min(v.id for v in store.versions() if v.parent is None))
        tables = all_tables(store, version)
        stored = store.calibration(version)
        overhead = store.stats(version).get("invoke_overhead_us", 0.0)
        sets = validation_sets(store, version, tables)
    sets["files"] = file_samples(db, tables, results, keras)
    out: dict[str, Any] = {"lut": f"{db}@{version.id}", "dtype": _dtypes(version),
                           "stored_model": stored.model if stored else None, "sets": {}}
    unseen = sets["unseen"]
    models: dict[str, dict[str, np.ndarray]] = {OLD: {}, NEW: {}, STORED: {}}
    if len(unseen) >= 2 * cb.MIN_NETWORKS:
        fp = version.fingerprint
        for name in (OLD, NEW):
            def fit_predict(train: np.ndarray, test: np.ndarray, name: str = name) -> list:
                cal = fitted(name, [unseen[i] for i in train], overhead, fp)
                return [cal.network_us(unseen[i].layers) for i in test]
            models[name]["unseen"] = out_of_fold(len(unseen), fit_predict)
        every = {name: fitted(name, unseen, overhead, fp) for name in (OLD, NEW)}
        out["fitted_on_all"] = {name: c.physics() for name, c in every.items()}
        for name, cal in every.items():
            for g in ("held_out", "files"):
                models[name][g] = np.array([cal.network_us(s.layers) for s in sets[g]])
    elif stored is not None:  # no validations to refit on: the rule alone, stored parameters
        kinds = bool(stored.kind_factor)
        for name, model in ((OLD, V4 if kinds else V3), (NEW, PER_LAYER if kinds else MODEL)):
            cal = replace(stored, model=model)
            models[name] = {g: np.array([cal.network_us(s.layers) for s in sets[g]])
                            for g in sets if sets[g]}
    if stored is not None:
        models[STORED] = {g: np.array([stored.network_us(s.layers) for s in sets[g]])
                          for g in sets if sets[g]}
    for name, by_set in models.items():
        out["sets"][name] = {g: scores(p, sets[g]) for g, p in by_set.items() if len(p)}
    return out


def _dtypes(version: Version) -> str:
    return ",".join(sorted({s.get("dtype", "float32") for s in version.space.get("sweeps", [])}))


def table(checks: Sequence[dict[str, Any]]) -> str:
    """One line per LUT, model and set: within ±5 % of n, mean signed and max error."""
    lines = ["lut  dtype  model  set: within ±5 % / n, mean signed %, MAPE %, max %"]
    for c in checks:
        for name, by_set in c["sets"].items():
            for g, s in by_set.items():
                lines.append(f"{Path(c['lut']).name}  {c['dtype']}  {name:22}  {g:8}  "
                             f"{s['within_5']}/{s['n']}  {s['mean_signed_pct']:+.1f}  "
                             f"{s['mape_pct']:.1f}  {s['max_pct']:.1f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lut", type=Path, action="append", required=True)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results.json"))
    ap.add_argument("--keras", type=Path, default=Path("luts/files_bench/keras"))
    args = ap.parse_args()
    checks = [check(db, args.results, args.keras) for db in args.lut]
    print(table(checks))
    print(json.dumps(checks, indent=1))


if __name__ == "__main__":
    main()
