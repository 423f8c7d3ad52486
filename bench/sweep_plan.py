"""Planning a sweep: which version it writes (resume a building one, derive from a sealed
one, or start anew), which keys are still to measure, in a shuffled, repeatable order,
and how they are batched (``batches``)."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lut_db.spec import LayerSpec, SpecError
from lut_db.store import LutStore
from lut_db.versions import Version

ORDER_SEED = 20180908  # keys are measured in a shuffled, repeatable order: drift becomes noise
REPLICA_SAMPLE = 20  # keys measured on every phone of a farm sweep


@dataclass
class Plan:
    """What a sweep would do: which version it writes and which keys it still has to measure."""

    action: str  # "resume", "new", "derive" (new version from a sealed parent) or "up-to-date"
    version: Version | None
    parent: Version | None
    total: int
    missing: list[str]

    @property
    def done(self) -> int:
        return self.total - len(self.missing)


def plan(store: LutStore, device: str, backend: str, fingerprint: dict[str, Any],
         specs: Iterable[LayerSpec]) -> Plan:
    """Decide which version a sweep of these specs writes, and what it still has to measure."""
    keys = sorted({s.key for s in specs})
    building = store.find_building(device, backend, fingerprint)
    if building:
        return Plan("resume", building, None, len(keys), _missing(store, building, keys))
    sealed = store.find_sealed(device, backend, fingerprint)
    if sealed:
        missing = _missing(store, sealed, keys)
        if not missing:
            return Plan("up-to-date", sealed, None, len(keys), [])
        return Plan("derive", None, sealed, len(keys), missing)
    return Plan("new", None, None, len(keys), _shuffled(keys))


def _missing(store: LutStore, version: Version, keys: list[str]) -> list[str]:
    """Keys to measure: a building version retries its failed keys, a sealed one keeps them."""
    have = store.keys(version, status="ok" if version.status == "building" else None)
    return _shuffled([k for k in keys if k not in have])


def _shuffled(keys: list[str]) -> list[str]:
    out = list(keys)
    random.Random(ORDER_SEED).shuffle(out)
    return out


def start_version(store: LutStore, p: Plan, device: str, backend: str,
                  fingerprint: dict[str, Any], space: dict[str, Any]) -> Version:
    """The version the plan writes into (created now for a new or derived plan)."""
    if p.version is not None:
        merged = merge_space(p.version.space, space)
        if p.version.status == "building" and merged != p.version.space:
            store.update_space(p.version, merged)
        return p.version
    if p.parent is not None:
        space = merge_space(p.parent.space, space)
    note = f"derived from {p.parent.label}: +{len(p.missing)} keys" if p.parent else ""
    return store.create_version(device, backend, fingerprint, parent=p.parent, note=note,
                                space=space)


def merge_space(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A version's space is the list of sweeps it holds: {"sweeps": [descriptor, ...]}."""
    sweeps = list(old.get("sweeps", []))
    have = [_with_dtype(s) for s in sweeps]
    sweeps += [s for s in new.get("sweeps", []) if _with_dtype(s) not in have]
    return {**old, **new, "sweeps": sweeps}


def _with_dtype(sweep: Any) -> Any:
    """A sweep descriptor with its dtype spelt out (older versions recorded float32 alone)."""
    return {"dtype": "float32", **sweep} if isinstance(sweep, dict) else sweep


def replica_sample(keys: Iterable[str], n: int = REPLICA_SAMPLE) -> list[str]:
    """A fixed sample of a sweep's keys (the same for every run of the same space)."""
    ordered = sorted(set(keys))
    return sorted(random.Random(ORDER_SEED).sample(ordered, min(n, len(ordered))))


def matrix_vector(key: str) -> bool:
    """A layer that reads each weight once per invoke: fully connected, or a conv on a
    1x1 map (the classifier and the last 1x1 convs of a network at 32 px)."""
    try:
        spec = LayerSpec.parse(key)
    except SpecError:
        return False  # measured, and failed, like any other key
    return spec.op in ("fully_connected", "conv2d") and (spec.h, spec.w) == (1, 1)


def batches(keys: Sequence[str], size: int) -> list[list[str]]:
    """``keys`` in batches of at most ``size`` that never mix matrix-vector layers with
    the others; each kind keeps its order, and the batches run in the order of their
    first key, so drift still spreads over both.

    Why: a matrix-vector layer whose weights outgrow the L2 ran 10-30 % slower (this VM,
    2026-12-07) in a batch of mostly other layers than in a batch of its own kind, as if
    the caches adapted to what the core ran over the last tens of ms. A shuffled batch
    holds one or two such layers, so their entries came out inflated by a random 0-16 %,
    while inside a network at 32 px, where they take half the time, they ran at about
    their own kind's speed (op profiler: 0.87-0.98 of the inflated entries). At 224 px they
    wait for their weights from memory in either case, which the calibration's eviction
    models (benchmarks/README.md, "Matrix-vector layers timed apart")."""
    kinds: dict[bool, list[tuple[int, str]]] = {True: [], False: []}
    for i, k in enumerate(keys):
        kinds[matrix_vector(k)].append((i, k))
    chunks = [part[j:j + size] for part in kinds.values() for j in range(0, len(part), size)]
    return [[k for _, k in c] for c in sorted(chunks, key=lambda c: c[0][0])]
