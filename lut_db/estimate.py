"""Network latency = the sum of its layers' LUT entries (the paper's method).

A missing key is never silently zero. Policies:
- ``error`` (default): MissingKeys names the keys and the command that measures them;
- ``interpolate``: interpolate over channel counts between measured neighbours of the
  same layer shape (same op, spatial size, kernel, stride, ...);
- measuring on demand needs a device, so it lives in ``bench.missing`` (which applies
  every policy for every caller).

``SlotEstimator`` is the adapter's hot path: for a family of networks that differ
only in slot widths, it caches each layer position's latency by (cin, cout), so an
estimate is a few dict look-ups.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from operator import itemgetter

import numpy as np

from lut_db.calibration import Calibration
from lut_db.errors import LutError
from lut_db.network import Network
from lut_db.spec import LayerSpec


class MissingPolicy(StrEnum):
    """What happens to keys a network needs and a LUT version lacks: one policy for every
    caller (library and CLI). ``measure`` needs a device: ``bench.missing.resolve``."""

    ERROR = "error"
    INTERPOLATE = "interpolate"
    MEASURE = "measure"


class MissingKeys(LutError):
    """The LUT lacks entries a network needs."""

    def __init__(self, keys: Sequence[str], lut: str = "LUT", hint: str = ""):
        self.keys = list(keys)
        shown = "\n  ".join(self.keys[:10])
        more = f"\n  ... and {len(self.keys) - 10} more" if len(self.keys) > 10 else ""
        hint = hint or ("measure them with --missing measure (device attached), approximate "
                        "them with --missing interpolate, or sweep a space that contains them "
                        "with: netadapt lut")
        super().__init__(f"{lut} has no entry for {len(self.keys)} layer(s):\n  {shown}{more}\n"
                         f"{hint}")


@dataclass
class LayerEstimate:
    node: str
    key: str
    latency_us: float  # the LUT entry: the layer alone
    source: str  # "lut" or "interpolated"
    macs: int = 0
    in_network_us: float | None = None  # its cost inside the network (calibrated LUTs)


@dataclass
class Estimate:
    """A network's latency: calibrated when the LUT version has a calibration (the in-network
    model, ``lut_db.calibration``), else the paper's plain sum of entries."""

    network: str
    layers: list[LayerEstimate] = field(default_factory=list)
    calibration: Calibration | None = None
    lut: str = ""  # file@version the entries came from

    @property
    def raw_total_us(self) -> float:
        """The plain sum of the layers' LUT entries (the paper's estimate)."""
        return sum(layer.latency_us for layer in self.layers)

    @property
    def total_us(self) -> float:
        if self.calibration is None:
            return self.raw_total_us
        return sum(x.in_network_us or 0.0 for x in self.layers) + self.calibration.overhead_us

    @property
    def total_ms(self) -> float:
        return self.total_us / 1000

    @property
    def raw_total_ms(self) -> float:
        return self.raw_total_us / 1000

    @property
    def interpolated(self) -> list[str]:
        return [layer.key for layer in self.layers if layer.source == "interpolated"]

    def to_dict(self) -> dict:
        cal = self.calibration
        return {"network": self.network, "lut": self.lut, "total_ms": self.total_ms,
                "total_us": self.total_us, "raw_total_ms": self.raw_total_ms,
                "calibrated": cal is not None,
                "calibration": {"model": cal.model, "networks": len(cal.networks),
                                "cv": cal.cv, "machine_state": cal.machine_state or None,
                                "warning": cal.busy_warning()} if cal else None,
                "interpolated": len(self.interpolated),
                "layers": [vars(layer) for layer in self.layers]}


def estimate(net: Network, table: Mapping[str, float], missing: str = MissingPolicy.ERROR,
             lut: str = "LUT", interpolated: Collection[str] = (),
             calibration: Calibration | None = None) -> Estimate:
    """Sum the LUT entries of ``net``'s layers under a missing-key policy, and with a
    ``calibration`` each layer's in-network cost too (the total is then theirs). Entries
    of ``table`` listed in ``interpolated`` were filled in by the caller
    (``bench.missing``) and are marked so."""
    if missing not in (MissingPolicy.ERROR, MissingPolicy.INTERPOLATE):
        if missing == MissingPolicy.MEASURE:
            raise LutError("missing-key policy 'measure' needs a device: bench.missing.resolve")
        raise LutError(f"unknown missing-key policy {missing!r}; use one of "
                       f"{', '.join(MissingPolicy)}")
    keys = net.keys
    absent = [k for k in dict.fromkeys(keys) if k not in table]
    if absent and missing == MissingPolicy.ERROR:
        raise MissingKeys(absent, lut)
    filled = interpolate(absent, table) if absent else {}
    out = Estimate(net.name, calibration=calibration, lut=lut)
    entries = [table[k] if k in table else filled[k] for k in keys]
    inside = (calibration.layers_us(list(zip(net.specs, entries))) if calibration
              else [None] * len(entries))
    for node, key, entry, cost in zip(net.nodes, keys, entries, inside):
        source = "interpolated" if key in interpolated or key not in table else "lut"
        out.layers.append(LayerEstimate(node.name, key, entry, source, node.spec.macs, cost))
    return out


# -- interpolation over channel counts --------------------------------------------------------


def shape_class(spec: LayerSpec) -> LayerSpec:
    """The spec with its channel counts zeroed out: layers that differ only in channels
    (a concat keeps its number of parts)."""
    if spec.op == "concat":
        return replace(spec, cin=len(spec.parts), parts=(1,) * len(spec.parts))
    return replace(spec, cin=1, cout=spec.depth_multiplier)


Groups = dict[LayerSpec, list[tuple[LayerSpec, float]]]


def shape_groups(table: Mapping[str, float]) -> Groups:
    """The table's entries by shape class (parsing every key: done once per table)."""
    groups: Groups = {}
    for k, v in table.items():
        s = LayerSpec.parse(k)
        groups.setdefault(shape_class(s), []).append((s, v))
    return groups


def interpolate(keys: Iterable[str], table: Mapping[str, float],
                groups: Groups | None = None) -> dict[str, float]:
    """Latency of each missing key from measured entries of the same shape class.

    Inside the measured (cin, cout) points: linear interpolation (1-D over cin for layers
    whose output channels follow their input, 1-D along the one free count when the other
    is fixed, 2-D otherwise). Outside them: the nearest measured point scaled by the MACs
    ratio. Raises MissingKeys when a class has no entry. ``groups``: shape_groups(table).
    """
    groups = shape_groups(table) if groups is None else groups
    out, hopeless = {}, []
    for k in keys:
        s = LayerSpec.parse(k)
        pts = groups.get(shape_class(s))
        if not pts:
            hopeless.append(k)
            continue
        out[k] = _interp_one(s, pts)
    if hopeless:
        raise MissingKeys(hopeless, hint="interpolation needs measured layers of the same "
                          "shape with other channel counts; measure with --missing measure")
    return out


def _interp_one(s: LayerSpec, pts: list[tuple[LayerSpec, float]]) -> float:
    tied = s.op not in ("conv2d", "fully_connected")  # output channels follow the input
    if tied:
        v = _interp_1d(s.cin, [(p.cin, v) for p, v in pts])
        if v is not None:
            return v
    else:
        # Along the one free count first (a first conv's cin, a classifier's cout are fixed:
        # their points lie on a line, where a 2-D triangulation does not exist).
        for v in (_interp_1d(s.cout, [(p.cout, v) for p, v in pts if p.cin == s.cin]),
                  _interp_1d(s.cin, [(p.cin, v) for p, v in pts if p.cout == s.cout])):
            if v is not None:
                return v
        if (len(pts) >= 3 and len({p.cin for p, _ in pts}) > 1
                and len({p.cout for p, _ in pts}) > 1):
            plane = _plane(tuple((p.cin, p.cout, v) for p, v in pts))
            v = plane([(s.cin, s.cout)])[0] if plane is not None else np.nan
            if np.isfinite(v):
                return float(v)
    nearest, value = min(pts, key=lambda pv: abs(pv[0].cin - s.cin) + abs(pv[0].cout - s.cout))
    return value * s.macs / max(nearest.macs, 1)


@lru_cache(maxsize=256)
def _plane(points: tuple[tuple[int, int, float], ...]) -> Callable | None:
    """The linear interpolant over a shape class's measured (cin, cout, value) points (what
    griddata builds for each call): triangulated once for all the keys it is asked for,
    tens of ms each time. None: all points on one line, where no triangle holds a key."""
    from scipy.interpolate import LinearNDInterpolator
    from scipy.spatial import QhullError

    xy = np.array([(a, b) for a, b, _ in points], float)
    try:
        return LinearNDInterpolator(xy, np.array([v for _, _, v in points], float))
    except QhullError:
        return None


def _interp_1d(x: float, pts: list[tuple[int, float]]) -> float | None:
    """Linear interpolation at x between measured (x, value) points; None outside them."""
    if len(pts) < 2:
        return None
    xs, ys = zip(*sorted(pts))
    return float(np.interp(x, xs, ys)) if xs[0] <= x <= xs[-1] else None


# -- the fast path for families of networks that differ only in widths ------------------------

LayerFn = tuple[tuple[str, ...], Callable[[Mapping[str, int]], LayerSpec]]


def _signature(slots: Sequence[str]) -> Callable[[Mapping[str, int]], object]:
    """The widths a position depends on, read in C (the hot path's dict key)."""
    return itemgetter(*slots) if slots else (lambda width: ())


class SlotCost:
    """A cost summed over layer positions, cached per position by the widths it depends on.

    ``layers`` lists, per layer position, the slots it depends on and a function that
    makes its LayerSpec from a slot -> width mapping (see ``bench.zoo``); ``cost`` prices
    a spec (MACs, parameters, or a LUT entry in SlotEstimator).
    """

    def __init__(self, layers: Sequence[LayerFn], cost: Callable[[LayerSpec], float]):
        self.layers = list(layers)
        self.cost = cost
        self._positions = [(_signature(slots), make, {}) for slots, make in self.layers]

    def __call__(self, width: Mapping[str, int]) -> float:
        total = 0.0
        for sig, make, cache in self._positions:
            key = sig(width)
            v = cache.get(key)
            if v is None:
                v = cache[key] = self.cost(make(width))
            total += v
        return total


class SlotEstimator:
    """Estimated latency (us) of width configs of one family: the sum of LUT entries, or
    with a ``calibration`` the sum of in-network costs plus its overhead. Each position
    caches its in-network cost as (warm, what eviction adds, working-set MB) by the widths it
    depends on, so a calibrated estimate is the same look-ups as a raw one, summed in a
    single loop."""

    def __init__(self, layers: Sequence[LayerFn], table: Mapping[str, float],
                 missing: str = MissingPolicy.ERROR, lut: str = "LUT",
                 calibration: Calibration | None = None):
        self.layers = list(layers)
        self.calibration = calibration
        self.table = table
        self.missing = missing
        self.lut = lut
        self._groups: Groups | None = None  # for interpolation, built on the first miss
        self._positions: list[tuple[Callable, Callable, dict]] = [
            (_signature(slots), make, {}) for slots, make in self.layers]

    def __call__(self, width: Mapping[str, int]) -> float:
        warm = extra = working = 0.0
        for sig, make, cache in self._positions:
            key = sig(width)
            v = cache.get(key)
            if v is None:
                v = cache[key] = self._costs(make(width))
            a, b, c = v
            warm += a
            extra += b
            working += c
        cal = self.calibration
        if cal is None:
            return warm
        return warm + cal.evicted(working) * extra + cal.overhead_us

    def layer_costs(self, width: Mapping[str, int]) -> list[float]:
        costs = [self._costs(make(width)) for _, make in self.layers]
        cal = self.calibration
        evicted = cal.evicted(sum(c[2] for c in costs)) if cal is not None else 0.0
        return [warm + evicted * extra for warm, extra, _ in costs]

    def _costs(self, spec: LayerSpec) -> tuple[float, float, float]:
        """A layer's in-network cost as (warm, what eviction adds) and what it adds to the
        network's working set (raw: its entry, nothing)."""
        entry = self._lookup(spec)
        cal = self.calibration
        if cal is None:
            return entry, 0.0, 0.0
        return (*cal.parts(spec, entry), cal.footprint_mb(spec))

    def _lookup(self, spec: LayerSpec) -> float:
        v = self.table.get(spec.key)
        if v is not None:
            return v
        if self.missing == MissingPolicy.INTERPOLATE:
            if self._groups is None:
                self._groups = shape_groups(self.table)
            return interpolate([spec.key], self.table, self._groups)[spec.key]
        raise MissingKeys([spec.key], self.lut)
