"""Validation: sample networks, measure each whole on the device, estimate it from the LUT.

``sample_networks`` draws a seedable validation set from a LUT version's sweep space:
width-multiplier networks, random per-layer width configs on the LUT's channel grid
and off it, NetAdapt-like steps (one layer or lockstep group narrowed), every
resolution the version holds, and held-out families (``analysis.families``) that no
sweep contained. ``validate`` measures them end to end and stores one row per network
in the version's ``validations`` table; a re-run reuses the stored rows.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from analysis.drift import remeasure, sum_ratio
from analysis.families import HELD_OUT
from bench.runners.base import BatchItem, Failure, Runner, Timing
from bench.runners.host import HostRunner
from bench.sweep import measure_missing
from bench.tflite_build import build_layer, build_network
from bench.zoo import MULTIPLIERS, Family, family, make_divisible, slot_choices
from lut_db.estimate import Groups, MissingKeys, interpolate, shape_groups
from lut_db.spec import LayerSpec, Network
from lut_db.store import LutError, LutStore, Version

Progress = Callable[[int, str], None]  # (networks just measured, what is being measured)

KINDS = ("multiplier", "random", "netadapt", "resolution", "off_grid", "held_out")


class ValidationError(LutError):
    """A validation that cannot run as asked; the message is for the user as it is."""


# -- the sweep space a version holds -----------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """What a LUT version was swept over: families, resolutions, grid, classes."""

    families: tuple[str, ...]
    resolutions: tuple[int, ...]
    grid: int
    classes: int

    @classmethod
    def of(cls, space: Mapping[str, Any]) -> Space:
        sweeps = list(space.get("sweeps", []))
        if not sweeps:
            raise ValidationError("the LUT version records no sweep space (families, "
                                  "resolutions, grid), so there is nothing to sample from")
        fams = tuple(dict.fromkeys(f for s in sweeps for f in s.get("families", [])))
        res = tuple(dict.fromkeys(int(r) for s in sweeps for r in s.get("resolutions", [])))
        grids = [int(s.get("grid", 32)) for s in sweeps]
        return cls(fams, res, max(grids), int(sweeps[0].get("classes", 1000)))


# -- sampling ------------------------------------------------------------------------------


def _snap(value: float, choices: Sequence[int]) -> int:
    return min(choices, key=lambda c: (abs(c - value), c))


def _random_widths(fam: Family, rng: random.Random, grid: int | None) -> list[int]:
    """A pruned-looking config: a global factor in [0.25, 1] jittered per slot.

    On the grid (``grid`` given): each width snapped to the slot's LUT choices. Off it
    (``grid`` None): rounded to multiples of 8 that are not multiples of the LUT grid.
    """
    g = rng.uniform(0.25, 1.0)
    out = []
    for slot, base in zip(fam.slots, fam.base):
        target = base * min(1.0, max(0.1, g * rng.uniform(0.8, 1.2)))
        if grid is not None:
            out.append(_snap(target, slot_choices(fam, grid)[slot]))
        else:
            out.append(make_divisible(target, 8))
    return out


def _off_grid(fam: Family, rng: random.Random, grid: int) -> list[int]:
    """Random widths with at least a third of the slots off the grid (multiples of 8)."""
    widths = _random_widths(fam, rng, None)
    for i, w in enumerate(widths):
        if w % grid == 0 and rng.random() < 0.5 and w > 8:
            widths[i] = w - 8
    return widths


def _netadapt_step(fam: Family, rng: random.Random, grid: int) -> tuple[list[int], str]:
    """A NetAdapt-like step: a multiplier or random parent with one slot (group) narrowed."""
    start = (list(fam.multiplier(rng.choice(MULTIPLIERS[1:]))) if rng.random() < 0.5
             else _random_widths(fam, rng, grid))
    choices = slot_choices(fam, grid)
    for _ in range(20):
        i = rng.randrange(len(fam.slots))
        smaller = [c for c in choices[fam.slots[i]] if c < start[i]]
        if smaller:
            start[i] = rng.choice(smaller[-3:])
            return start, fam.slots[i]
    return start, ""


def _name(fam: str, kind: str, net: Network) -> str:
    """Names are content hashes: equal networks get equal names across seeds and runs."""
    digest = hashlib.sha1(net.to_json().encode()).hexdigest()[:8]
    return f"{fam}-{kind}-{net.input_shape[0]}-{digest}"


def _make(fam: Family, kind: str, widths: Sequence[int], resolution: int, classes: int,
          held_out: bool = False, note: str = "") -> Network:
    net = fam.network(list(widths), resolution=resolution, classes=classes, name="tmp")
    name = _name(fam.name, kind, net)
    meta = {**net.meta, "kind": kind, "held_out": held_out}
    if note:
        meta["note"] = note
    return Network(name, net.input_shape, net.nodes, net.outputs, meta)


def plan_counts(n: int, n_families: int, extra_resolutions: bool) -> dict[str, int]:
    """How many networks of each kind a set of ``n`` gets (multipliers are all taken)."""
    mult = len(MULTIPLIERS) * n_families
    held = max(2, round(0.12 * n))
    off = max(2, round(0.12 * n))
    res = max(2, round(0.12 * n)) if extra_resolutions else 0
    rest = max(0, n - mult - held - off - res)
    step = rest // 3
    return {"multiplier": mult, "netadapt": step, "random": rest - step, "resolution": res,
            "off_grid": off, "held_out": held}


def sample_networks(space: Space, n: int = 60, seed: int = 0,
                    held_out: Iterable[str] = tuple(HELD_OUT)) -> list[Network]:
    """A seedable validation set of (about) ``n`` networks drawn from ``space``."""
    if not space.families or not space.resolutions:
        raise ValidationError("the LUT's space has no families or resolutions to sample")
    rng = random.Random(seed)
    fams = [family(f) for f in space.families]
    main, others = space.resolutions[0], space.resolutions[1:]
    counts = plan_counts(n, len(fams), bool(others))
    nets: list[Network] = []
    for f in fams:
        nets += [_make(f, "multiplier", f.multiplier(m), main, space.classes)
                 for m in MULTIPLIERS]
    for i in range(counts["random"]):
        f = fams[i % len(fams)]
        nets.append(_make(f, "random", _random_widths(f, rng, space.grid), main, space.classes))
    for i in range(counts["netadapt"]):
        f = fams[i % len(fams)]
        widths, slot = _netadapt_step(f, rng, space.grid)
        nets.append(_make(f, "netadapt", widths, main, space.classes, note=f"narrowed {slot}"))
    for i in range(counts["resolution"]):
        f = fams[i % len(fams)]
        nets.append(_make(f, "resolution", _random_widths(f, rng, space.grid),
                          others[i % len(others)], space.classes))
    for i in range(counts["off_grid"]):
        f = fams[i % len(fams)]
        nets.append(_make(f, "off_grid", _off_grid(f, rng, space.grid), main, space.classes))
    held = [HELD_OUT[h] for h in held_out]
    for i in range(counts["held_out"] if held else 0):
        f = held[i % len(held)]
        m = rng.choice(MULTIPLIERS)
        widths = f.multiplier(m) if i < 2 * len(held) else _random_widths(f, rng, space.grid)
        nets.append(_make(f, "held_out", widths, main, space.classes, held_out=True))
    nets = _unique(nets)
    for i in range(20 * n):  # duplicates (small spaces): top up with more random configs
        if len(nets) >= n:
            break
        f = fams[i % len(fams)]
        nets = _unique(nets + [_make(f, "random", _random_widths(f, rng, space.grid), main,
                                     space.classes)])
    return nets


def _unique(nets: list[Network]) -> list[Network]:
    seen: dict[str, Network] = {}
    for net in nets:
        seen.setdefault(net.name, net)
    return list(seen.values())


# -- estimating ----------------------------------------------------------------------------


@dataclass
class Tables:
    """The LUT a validation estimates from, plus keys measured on demand for it.

    ``extra`` holds the entries of a version derived from the validated one (same device
    and settings) with the keys the off-grid and held-out networks need; ``extra_label``
    names it for the report.
    """

    table: dict[str, float]
    extra: dict[str, float]
    extra_label: str = ""
    _groups: Groups | None = None
    _filled: dict[str, float] = field(default_factory=dict)

    def interpolate(self, keys: Sequence[str]) -> dict[str, float]:
        """``keys`` interpolated over channel counts from the LUT alone (each key once:
        a 2-D interpolation triangulates its shape class, tens of ms)."""
        todo = [k for k in keys if k not in self._filled]
        if todo:
            if self._groups is None:
                self._groups = shape_groups(self.table)
            self._filled.update(interpolate(todo, self.table, self._groups))
        return {k: self._filled[k] for k in keys}

    def lookup(self, keys: Iterable[str]) -> tuple[dict[str, float], list[str]]:
        """key -> entry for the keys, and which of them came from ``extra``."""
        out, extra = {}, []
        for k in keys:
            if k in self.table:
                out[k] = self.table[k]
            elif k in self.extra:
                out[k] = self.extra[k]
                extra.append(k)
        return out, extra


def op_class(spec: LayerSpec) -> str:
    """What a correction tells apart: the op and, where it has one, its kernel (a 1x1 conv
    is memory-bound and suffers from cold caches; a 3x3 conv is compute-bound and less so),
    and a conv reading the image (3 channels: another kernel, another memory pattern)."""
    if spec.op == "conv2d" and spec.cin <= 4:
        return f"conv2d {spec.kernel[0]}x{spec.kernel[1]} on the image"
    if spec.op in ("conv2d", "depthwise_conv2d", "avg_pool", "max_pool"):
        return f"{spec.op} {spec.kernel[0]}x{spec.kernel[1]}"
    return spec.op


def layer_features(net: Network, lookup: Mapping[str, float]) -> dict[str, Any]:
    """Per-op-class sums of a network's entries, its weight bytes and the activation bytes
    its layers read and write (float32): what a correction may use."""
    by_class: dict[str, float] = {}
    for spec in net.specs:
        c = op_class(spec)
        by_class[c] = by_class.get(c, 0.0) + lookup[spec.key]
    act = sum(sum(math.prod(x) for x in s.input_shapes) + math.prod(s.output_shape)
              for s in net.specs)
    return {"by_class": by_class, "layers": len(net.nodes), "weight_bytes": 4 * net.params,
            "act_bytes": 4 * act}


def estimate_row(net: Network, tables: Tables, compare: bool = True) -> dict[str, Any]:
    """The raw LUT sum of ``net``, where its entries came from, and (``compare``) what
    interpolating the keys the LUT lacks instead of measuring them would have said."""
    lookup, extra = tables.lookup(dict.fromkeys(net.keys))
    absent = [k for k in dict.fromkeys(net.keys) if k not in lookup]
    if absent:
        raise MissingKeys(absent, "the LUT and its on-demand version")
    extra_set = set(extra)
    row = {"raw_us": sum(lookup[k] for k in net.keys),
           "extra_us": sum(lookup[k] for k in net.keys if k in extra_set),
           "measured_on_demand": len(extra),
           "source": (f"LUT + {len(extra)} key(s) measured on demand into {tables.extra_label}"
                      if extra else "LUT entries"),
           **layer_features(net, lookup)}
    if extra and compare:
        try:
            filled = tables.interpolate(extra)
            row["interpolated_us"] = sum(filled.get(k, lookup[k]) for k in net.keys)
        except MissingKeys:
            row["interpolated_us"] = None  # no measured layer of the same shape to go by
    return row


def missing_keys(nets: Iterable[Network], table: Mapping[str, float]) -> list[str]:
    """Keys of the networks that the LUT lacks (off-grid widths, held-out shapes)."""
    return list(dict.fromkeys(k for net in nets for k in net.keys if k not in table))


def root(store: LutStore, version: Version) -> Version:
    """The sweep a version descends from through versions of the same setup."""
    while version.parent is not None:
        parent = store.version(version.parent)
        if parent.fingerprint != version.fingerprint:
            break
        version = parent
    return version


def all_tables(store: LutStore, version: Version) -> Tables:
    """The entries of the sweep ``version`` descends from, plus those that versions of the
    same setup derived from it added (keys measured on demand, later sweeps): measured at
    other times, so kept apart for the drift factors. The same for a version and its
    derived ones, so their validations read the same."""
    base = root(store, version)
    table = store.table(base.id)
    extra: dict[str, float] = {}
    labels = []
    family = {base.id}
    for v in store.versions():  # ids grow: a parent comes before its children
        if v.parent in family and v.fingerprint == base.fingerprint and v.status == "sealed":
            family.add(v.id)
            extra.update({k: x for k, x in store.table(v.id).items() if k not in table})
            labels.append(v.label)
    return Tables(table, extra, ", ".join(labels))


# -- measuring -----------------------------------------------------------------------------

def network_runner(runner: Runner) -> Runner:
    """The runner whole networks are timed with: on the host, one pass per call, because
    measure_passes already spreads each network over passes through the whole set."""
    if isinstance(runner, HostRunner) and runner.passes != 1:
        single = copy.copy(runner)
        single.passes = 1
        return single
    return runner


def check_setup(runner: Runner, version: Version) -> None:
    """Refuse to compare measurements of another setup with this version's entries."""
    changed = version.setup_changes(runner.fingerprint())
    if changed:
        raise ValidationError(f"{version.label} was measured with another setup (differs in: "
                              f"{', '.join(changed)}); validating it here would compare two "
                              "setups. Use the device and backend the LUT was built with.")


def measure_passes(runner: Runner, nets: Sequence[Network], passes: int = 3,
                   progress: Progress | None = None, seed: int = 0,
                   between: Callable[[int], None] | None = None) -> dict[str, list[Timing]]:
    """Each network timed once per pass; passes are rounds over all networks, each in its
    own shuffled order, so slow drift of the device spreads over the set as noise instead
    of biasing whichever networks happen to be measured during a slow spell.
    ``between(p)`` runs after pass p (the drift sample is measured there, interleaved)."""
    out: dict[str, list[Timing]] = {n.name: [] for n in nets}
    rng = random.Random(seed)
    start = time.monotonic()
    for p in range(passes):
        order = list(nets)
        rng.shuffle(order)
        for chunk in _chunks(order, 4):
            items = [BatchItem(n.name, build_network(n)) for n in chunk]
            results = runner.measure(items)
            at = time.monotonic() - start  # when (s into the session): for drift analysis
            for net, res in zip(chunk, results):
                if isinstance(res, Failure):
                    raise ValidationError(f"{net.name} failed on the device: {res.error}")
                out[net.name].append(replace(res, extra={**res.extra, "at_s": round(at, 2)}))
            if progress:
                progress(len(chunk), f"pass {p + 1}/{passes}")
        if between:
            between(p)
    return out


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def timing_summary(timings: Sequence[Timing]) -> dict[str, Any]:
    """One network's passes -> its measured latency (median over passes) and the spread."""
    lat = [t.latency_us for t in timings]
    return {"latency_us": statistics.median(lat), "passes_us": lat,
            "passes_at_s": [t.extra.get("at_s") for t in timings],
            "pass_spread": (max(lat) - min(lat)) / statistics.median(lat),
            "runs": sum(t.runs for t in timings),
            "min_us": min(t.min_us for t in timings),
            "preempted": sum(int(t.extra.get("preempted", 0)) for t in timings)}


# -- the runtime's view of one network's layers ---------------------------------------------

PREFIX_METHOD = ("prefix differencing: the first k layers built and timed as one model, for "
                 "every k in order (preempted invokes dropped); layer k's cost is time(k) - "
                 "time(k - 1), taken within one pass (prefixes timed back to back share the "
                 "device's momentary speed) and the median over passes. LiteRT's Python "
                 "interpreter exposes no op profiler.")


def prefix(net: Network, k: int) -> Network:
    """The sub-network of the first ``k`` nodes; every node nothing else reads is an output."""
    nodes = net.nodes[:k]
    read = {src for n in nodes for src in n.inputs}
    outs = tuple(n.name for n in nodes if n.name not in read) or (nodes[-1].name,)
    return Network(f"{net.name}~{k}", net.input_shape, nodes, outs)


def profile_layers(runner: Runner, net: Network, lookup: Mapping[str, float],
                   passes: int = 3, progress: Progress | None = None) -> dict[str, Any]:
    """Per-layer in-network cost of ``net`` next to its LUT entries.

    A runner with its own op profiler (``op_profile(model) -> [us per node]``, e.g.
    benchmark_model --enable_op_profiling on a phone) is asked directly; otherwise the
    cost is measured by prefix differencing.
    """
    if hasattr(runner, "op_profile"):
        per_op = list(runner.op_profile(build_network(net)))
        method = "the runtime's op profiler (benchmark_model --enable_op_profiling)"
    else:
        per_op = prefix_costs(runner, net, passes, progress)
        method = PREFIX_METHOD
    layers = [{"node": n.name, "op": n.spec.op, "key": n.spec.key, "lut_us": lookup[n.spec.key],
               "profile_us": float(v)} for n, v in zip(net.nodes, per_op)]
    return {"network": net.name, "method": method, "layers": layers}


def prefix_costs(runner: Runner, net: Network, passes: int = 3,
                 progress: Progress | None = None) -> list[float]:
    """Per-layer cost inside ``net`` (us) by differencing prefixes timed back to back."""
    subs = [build_network(prefix(net, k)) for k in range(1, len(net.nodes) + 1)]
    diffs: list[list[float]] = []
    for p in range(passes):
        order = list(range(len(subs)))[:: 1 if p % 2 == 0 else -1]  # cancel slow trends
        totals = [0.0] * len(subs)
        for i in order:
            (res,) = runner.measure([BatchItem(f"{net.name}~{i + 1}", subs[i])])
            if isinstance(res, Failure):
                raise ValidationError(f"prefix {i + 1} of {net.name} failed: {res.error}")
            totals[i] = res.latency_us
        diffs.append([totals[0]] + [b - a for a, b in itertools.pairwise(totals)])
        if progress:
            progress(len(subs), f"per-layer profile, pass {p + 1}/{passes}")
    return [statistics.median(col) for col in zip(*diffs)]


def profile_choice(nets: Sequence[Network]) -> Network | None:
    """The network whose layers are profiled: the first family's full-width network."""
    full = [n for n in nets if n.meta.get("kind") == "multiplier" and not n.meta.get("held_out")]
    return max(full[:4], key=lambda n: n.macs) if full else None


# -- the whole validation ------------------------------------------------------------------


class NoDevice(ValidationError):
    """Validations are missing and there is no device to measure them on."""


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
    rows = {r["name"]: r for r in store.validations(version.id)}
    if version.parent is None:
        return rows
    parent = store.version(version.parent)
    if parent.fingerprint != version.fingerprint:
        return rows
    table = store.table(version.id)
    for r in store.validations(parent.id):
        if r["name"] in rows:
            continue
        net = Network.from_json_dict(json.loads(r["network"]))
        if all(k in table for k in net.keys) and math.isclose(
                sum(table[k] for k in net.keys), r["estimated_us"], rel_tol=1e-9):
            row = {k: v for k, v in r.items() if k not in ("version", "measured_at")}
            store.add_validation(version.id, row)
            rows[r["name"]] = {**r, "version": version.id}
    return rows


class SessionDrift:
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
        self.plan = rng.sample(lut, min(n, len(lut))) + extra
        rng.shuffle(self.plan)
        self.runner, self.tables = runner, tables
        self.now: dict[str, float] = {}

    def measure_slice(self, p: int, passes: int) -> None:
        size = -(-len(self.plan) // passes)
        now, _ = remeasure(self.runner, self.plan[p * size:(p + 1) * size])
        self.now.update(now)

    def factors(self) -> dict[str, Any]:
        lut = {k: v for k, v in self.now.items() if k in self.tables.table}
        extra = {k: v for k, v in self.now.items() if k not in self.tables.table}
        return {"lut": sum_ratio(self.tables.table, lut), "lut_keys": len(lut),
                "extra": sum_ratio(self.tables.extra, extra), "extra_keys": len(extra)}


def validate(store: LutStore, version: Version, runner: Runner | None, n: int = 60,
             seed: int = 0, passes: int = 10, profile: bool = True, drift_keys: int = 200,
             progress: Progress | None = None) -> Validation:
    """Sample, measure what is not stored yet, estimate, store; return the set's rows."""
    nets = sample_networks(Space.of(version.space), n, seed)
    stored = stored_rows(store, version)
    todo = [net for net in nets if net.name not in stored]
    target = profile_choice(nets) if profile else None
    # The per-layer profile is measured when a device is there; without one it is left out.
    wants_profile = runner is not None and target is not None and "profile" not in json.loads(
        stored.get(target.name, {}).get("timing") or "{}")
    if todo and runner is None:
        raise NoDevice(
            f"{version.label} has {len(nets) - len(todo)} of the {len(nets)} validation "
            "networks measured and no device to measure the rest on; attach the device "
            f"({version.device}, backend {version.backend}) or report only what is stored")
    tables = Tables(store.table(version.id), {})
    if todo or wants_profile:
        check_setup(runner, version)
        tables = _tables_for(store, version, todo, runner)
    if todo:
        drift = SessionDrift(runner, todo, tables, drift_keys, seed)
        timed = measure_passes(network_runner(runner), todo, passes, progress, seed,
                               between=lambda p: drift.measure_slice(p, passes))
        factors = drift.factors()
        for net in todo:
            store.add_validation(version.id, _row(net, timed[net.name], tables, factors))
    if wants_profile:
        _add_profile(store, version, target, tables, network_runner(runner), passes, progress)
    rows = stored_rows(store, version)
    return Validation(version, [rows[net.name] for net in nets], len(todo),
                      len(nets) - len(todo), tables.extra_label)


def _tables_for(store: LutStore, version: Version, nets: Sequence[Network],
                runner: Runner) -> Tables:
    """The LUT plus the keys the networks need that it lacks, measured on demand into a
    derived version (sealed, same setup) unless one already holds them."""
    tables = all_tables(store, version)
    keys = [k for k in missing_keys(nets, tables.table) if k not in tables.extra]
    if keys:
        measure_missing(store, version, keys, [runner], build_layer)
        tables = all_tables(store, version)
    return tables


def _row(net: Network, timings: Sequence[Timing], tables: Tables,
         drift: dict[str, Any]) -> dict[str, Any]:
    est = estimate_row(net, tables)
    timing = {**timing_summary(timings), "kind": net.meta.get("kind"), "estimate": est,
              "drift": drift}
    return {"name": net.name, "family": net.meta.get("family", ""),
            "held_out": int(bool(net.meta.get("held_out"))), "network": net.to_json(),
            "estimated_us": est["raw_us"], "measured_us": timing["latency_us"],
            "timing": json.dumps(timing), "macs": net.macs, "params": net.params}


def _add_profile(store: LutStore, version: Version, net: Network, tables: Tables,
                 runner: Runner, passes: int, progress: Progress | None) -> None:
    row = {r["name"]: r for r in store.validations(version.id)}[net.name]
    lookup = {**tables.table, **tables.extra}
    timing = json.loads(row["timing"] or "{}")
    timing["profile"] = profile_layers(runner, net, lookup, passes, progress)
    row = {k: v for k, v in row.items() if k not in ("version", "measured_at")}
    store.add_validation(version.id, {**row, "timing": json.dumps(timing)})
