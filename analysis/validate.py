"""Validation: measure the sampled networks whole on the device, estimate them from the
LUT, and store one row per network in the version's ``validations`` table.

A re-run reuses the stored rows. Sampling is ``analysis.sampling``, estimate features
``analysis.features``, per-layer profiles ``analysis.profile``, and whole networks are
timed by ``bench.timing``.
"""

from __future__ import annotations

import json
import math
import random
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from analysis.features import Tables, all_tables, estimate_row, missing_keys
from analysis.profile import profile_choice, profile_layers
from analysis.sampling import Space, ValidationError, sample_networks
from bench.missing import backend_option, ensure_keys
from bench.runners.base import Runner
from bench.timing import DriftSample, Measurement, sum_ratio, time_networks
from lut_db.fingerprint import same_setup
from lut_db.network import Network
from lut_db.progress import Steps, silent
from lut_db.store import LutStore
from lut_db.versions import Version


class NoDevice(ValidationError):
    """Validations are missing and there is no device to measure them on."""


class KeysNotSwept(ValidationError):
    """The validation networks need keys the LUT lacks, and measuring them was turned off."""


@dataclass
class Validation:
    version: Version
    rows: list[dict[str, Any]]
    measured: int  # networks measured in this run
    reused: int  # networks whose stored measurement was reused
    extra_label: str = ""


def stored_rows(store: LutStore, version: Version) -> dict[str, dict[str, Any]]:
    """The version's validations, plus its parent's where this version's entries give the
    same estimate (a version derived by measuring missing keys keeps its parent's)."""
    rows = {r["name"]: r for r in store.validations(version)}
    if version.parent is None:
        return rows
    parent = store.version(version.parent)
    if not same_setup(parent.fingerprint, version.fingerprint):
        return rows
    table = store.table(version)
    for r in store.validations(parent):
        if r["name"] in rows:
            continue
        net = Network.from_json_dict(json.loads(r["network"]))
        if all(k in table for k in net.keys) and math.isclose(
                sum(table[k] for k in net.keys), r["estimated_us"], rel_tol=1e-9):
            row = {k: v for k, v in r.items() if k not in ("version", "measured_at")}
            store.add_validation(version, row)
            rows[r["name"]] = {**r, "version": version.id}
    return rows


class SessionDrift(DriftSample):
    """How much slower the device runs now than when the LUT was measured.

    The validation networks are measured minutes to days after the LUT; on a shared
    machine the device's speed moves by 5-20 % in that time, which no layer-wise method
    can predict. A sample of the networks' own keys is re-measured alone, with the LUT's
    settings, a slice after every pass (so it spans the session like the networks do);
    sum(now) / sum(LUT) over it is the session's drift factor, kept with each row.
    Keys from the on-demand version get their own factor (measured at another time).
    """

    def __init__(self, runner: Runner, nets: Sequence[Network], tables: Tables,
                 n: int = 200, seed: int = 0) -> None:
        keys = list(dict.fromkeys(k for net in nets for k in net.keys))
        rng = random.Random(seed)
        lut = [k for k in keys if k in tables.table]
        extra = [k for k in keys if k not in tables.table and k in tables.extra]
        plan = rng.sample(lut, min(n, len(lut))) + extra
        rng.shuffle(plan)
        super().__init__(runner, plan)
        self.tables = tables

    def factors(self) -> dict[str, Any]:
        lut = {k: v for k, v in self.now.items() if k in self.tables.table}
        extra = {k: v for k, v in self.now.items() if k not in self.tables.table}
        return {"lut": sum_ratio(self.tables.table, lut), "lut_keys": len(lut),
                "extra": sum_ratio(self.tables.extra, extra), "extra_keys": len(extra)}

    def network_factor(self, net: Network, lut_factor: float) -> float:
        """How much slower ``net``'s own entries run now than when they were measured: the
        LUT's keys by ``lut_factor`` (a sample's), its on-demand keys (each re-measured, and
        measured at other times than the LUT, in different sessions) by their own times now,
        weighted by entry."""
        then = now = 0.0
        for k in net.keys:
            entry = self.tables.table.get(k, self.tables.extra.get(k))
            if entry is None:
                continue
            then += entry
            mine = self.now.get(k) if k not in self.tables.table else None
            now += mine if mine is not None else entry * lut_factor
        return now / then if then else lut_factor


REPEATS = 3  # each network measured this often at separate moments: the median is its
# latency, their spread its repeatability
PASSES = 4  # interleaved passes per repeat
NETWORKS = 60  # the validation set's size and seed when not told
SEED = 0


def validate(store: LutStore, version: Version, runner: Runner | None, n: int = NETWORKS,
             seed: int = SEED, passes: int = PASSES, profile: bool = True,
             drift_keys: int = 200, progress: Steps = silent, repeats: int = REPEATS,
             log: Callable[[str], None] | None = None, sweep: bool = True) -> Validation:
    """Sample, measure what is not stored yet, estimate, store; return the set's rows.
    Each network is measured ``repeats`` times (``passes`` interleaved passes each), the
    repeats one after another through the session. ``progress`` hears each long step; keys
    the networks need and the LUT lacks are measured into a derived version, said through
    ``log`` (``sweep`` False: KeysNotSwept instead, before anything is measured)."""
    nets = sample_networks(Space.of(version.space), n, seed)
    stored = stored_rows(store, version)
    todo = [net for net in nets if net.name not in stored]
    target = profile_choice(nets) if profile else None
    # The per-layer profile is measured when a device is there; without one it is left out.
    wants_profile = runner is not None and target is not None and "profile" not in json.loads(
        stored.get(target.name, {}).get("timing") or "{}")
    command = report_command(store, version, n, seed)
    if todo and runner is None:
        raise NoDevice(
            f"{version.label} has {len(nets) - len(todo)} of the {len(nets)} validation "
            "networks measured and no device to measure the rest on; attach the device "
            f"({version.device}, backend {version.backend}) and run: {command}")
    tables = Tables(store.table(version), {})
    if todo or wants_profile:
        if not sweep:
            _refuse_missing(store, version, todo, command)
        version.require_same_setup(runner.fingerprint(), "validating it here would compare "
                                   "two setups. Use the device and backend the LUT was built "
                                   "with.")
        tables = _tables_for(store, version, todo, runner, progress, log)
    if todo:
        drift = SessionDrift(runner, todo, tables, drift_keys, seed)
        rounds = passes * repeats
        step, total, timed_n = f"measuring {len(todo)} networks", len(todo) * rounds, [0]

        def counted(n: int, what: str) -> None:
            timed_n[0] += n
            progress(step, timed_n[0], total, what)

        timed = time_networks(runner, {net.name: net for net in todo}, passes, seed=seed,
                              repeats=repeats, progress=counted,
                              between=lambda p: drift.measure_slice(p, rounds))
        factors = drift.factors()
        for net in todo:
            store.add_validation(version, _row(net, timed[net.name], tables, factors))
    if wants_profile:
        _add_profile(store, version, target, tables, runner.for_networks(), passes, progress)
    rows = stored_rows(store, version)
    return Validation(version, [rows[net.name] for net in nets], len(todo),
                      len(nets) - len(todo), tables.extra_label)


def report_command(store: LutStore, version: Version, n: int = NETWORKS,
                   seed: int = SEED) -> str:
    """The `netadapt report` call that measures this validation set (and the keys it needs)
    on the version's own device and backend."""
    words = ["netadapt", "report", "--lut", f"{store.path}@{version.id}",
             "--device", version.device]
    backend = backend_option(version)
    words += ["--backend", backend] if backend else []
    words += ["--networks", str(n)] if n != NETWORKS else []
    words += ["--seed", str(seed)] if seed != SEED else []
    return shlex.join(words)


def _refuse_missing(store: LutStore, version: Version, nets: Sequence[Network],
                    command: str) -> None:
    """KeysNotSwept when ``nets`` need keys that neither the version nor a version derived
    from it holds (off-grid widths, held-out families: no `netadapt lut` sweep has them)."""
    tables = all_tables(store, version)
    keys = [k for k in missing_keys(nets, tables.table) if k not in tables.extra]
    if keys:
        needy = sum(any(k not in tables.table and k not in tables.extra for k in net.keys)
                    for net in nets)
        raise KeysNotSwept(
            f"{version.label} lacks {len(keys)} key(s) that {needy} of the validation "
            "networks need (off-grid widths, held-out families: no `netadapt lut` sweep holds "
            "them), and --no-sweep measures none; without it, they are measured into a "
            f"derived version: {command}")


def _tables_for(store: LutStore, version: Version, nets: Sequence[Network],
                runner: Runner, progress: Steps = silent,
                log: Callable[[str], None] | None = None) -> Tables:
    """The LUT plus the keys the networks need that it lacks, measured on demand into a
    derived version (sealed, same setup) unless one already holds them."""
    tables = all_tables(store, version)
    keys = [k for k in missing_keys(nets, tables.table) if k not in tables.extra]
    if keys:
        if log:
            log(f"{version.label} lacks {len(keys)} key(s) of the validation networks: "
                f"measuring them on {version.device} into a derived version")
        ensure_keys(store, version, keys, runner=runner, progress=progress)
        tables = all_tables(store, version)
    return tables


def _row(net: Network, measured: Measurement, tables: Tables,
         drift: dict[str, Any]) -> dict[str, Any]:
    est = estimate_row(net, tables)
    timing = {**measured.to_dict(), "kind": net.meta.get("kind"), "estimate": est,
              "drift": drift}
    return {"name": net.name, "family": net.meta.get("family", ""),
            "held_out": int(bool(net.meta.get("held_out"))), "network": net.to_json(),
            "estimated_us": est["raw_us"], "measured_us": timing["latency_us"],
            "timing": json.dumps(timing), "macs": net.macs, "params": net.params}


def _add_profile(store: LutStore, version: Version, net: Network, tables: Tables,
                 runner: Runner, passes: int, progress: Steps) -> None:
    row = {r["name"]: r for r in store.validations(version)}[net.name]
    lookup = {**tables.table, **tables.extra}
    timing = json.loads(row["timing"] or "{}")
    step = f"per-layer profile of {net.name}"
    timing["profile"] = profile_layers(runner, net, lookup, passes,
                                       lambda n, what: progress(step, 0, None, what))
    progress(step, 1, 1)
    row = {k: v for k, v in row.items() if k not in ("version", "measured_at")}
    store.add_validation(version, {**row, "timing": json.dumps(timing)})
