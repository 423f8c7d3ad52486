"""The in-network model: what a layer costs inside a network, from its LUT entry.

A LUT entry is a layer timed alone, over and over: its weights and input stay in the
core's caches, and every invoke pays the runtime's fixed overhead once. Inside a
network neither holds. The network pays the overhead once. And when the network's
working set does not fit in the core's cache, the layers after a layer evict its weights and
activations before the next invoke, so they stream in from further away, at a bandwidth
the device sets. A layer then costs what its compute costs (its entry) or what streaming
its weights costs, whichever is more (a roofline: a 1x1 conv at 2x2 px waits for its
weights, the same conv at 14x14 px hides them under compute):

    in_network(layer) = entry - overhead
                        + evicted x (max(0, us_per_weight_mb x weight MB - (entry - overhead))
                                     + us_per_act_mb x activation MB read and written)
                        + us_per_layer
    network = sum of in_network(layer) + overhead
    evicted = the share of a network's weights that does not survive until the next
              invoke: 0 up to cache_mb MB of working set (weights and activations),
              1 from evicted_mb MB, linear between (a real cache loses lines well before
              it is full)

The parameters are fitted per device and setup from whole networks measured on it
(``analysis.calibrate``) and stored with the LUT version. Every term is a layer's own
except ``evicted``, which a network's working set decides, so the model carries
over to widths, resolutions and families it was not fitted on, and the adapter's fast
path (``SlotEstimator``) stays a sum of cached look-ups.

Fitted on per-layer times as well (``layer-roofline-v5``: the runtime's op profiler gives
each layer's time inside the network), the same formula gives each kind of layer (1x1
conv, depthwise, dense conv, the conv on the image, fully connected, add, ...) its own
loss to a cold cache, a factor on its entry less the overhead, paid as eviction is:

    in_network(layer) = ... + evicted x (... + kind_factor[kind] x (entry - overhead)
                                             + us_per_weight_mb_exposed x weight MB)

(Applied to warm networks too, the factors took over what eviction costs, and read small
networks and the ResNet/VGG-style stems high.) The last term, where fitted, is streaming
that compute does not hide (big 1x1 convs pay it on top of their compute). A kind the
calibration never profiled keeps factor 0: only the physics terms reach it.

The cache window (``cache_mb``, ``evicted_mb``) is set by the cache sizes the device
reports (``cache_kb`` in the fingerprint): pinned to its L2, or chosen out of fold between
the L2's window and one set by its L3; with no sizes reported, chosen by
cross-validation over a grid. ``cache_source`` says which.

What fills the cache is the network's working set (``cache-roofline-v5``,
``layer-roofline-v5``): its weights *and* the activations its layers read and write, each
at its layer's dtype. Counting weights alone (v3, v4) was right for float32 networks at
224 px, whose weights outgrow the L2 anyway, but an int8 MobileNet keeps 0.5-1.5 MB of
weights while its layers move 2.5-8 MB of activations per invoke through a 2 MB L2: read
as warm, it was estimated at its plain sum, 3-7 % below what it measures (a ResNet-style
stack with under 1.5 MB of both runs at its sum: warm indeed).

Versions calibrated before these models keep their calibration and its formula: v3 and
v4 count weights alone, and ``cache-l2-v2`` adds a cost per MB of the weights that fit in
L2, in every network. A calibration never changes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lut_db.errors import UserError
from lut_db.spec import BYTES, LayerSpec

MODEL = "cache-roofline-v5"  # fitted on whole-network totals
PER_LAYER = "layer-roofline-v5"  # ... and on per-layer times, with a factor per layer kind
V3 = "cache-roofline-v3"  # read only: v5 and its per-layer form with weights alone filling
V4 = "layer-roofline-v4"  # the cache (LUT versions calibrated before v5)
V2 = "cache-l2-v2"  # read only: LUT versions calibrated before v3
WEIGHTS_ONLY = (V3, V4)
MODELS = (MODEL, PER_LAYER, V3, V4, V2)
MB = 2**20


class CalibrationError(UserError):
    """A calibration that cannot be made or used as asked."""


def weight_mb(spec: LayerSpec) -> float:
    return spec.params * BYTES.get(spec.dtype, 4) / MB


def act_mb(spec: LayerSpec) -> float:
    """Activations a layer reads (every input) and writes."""
    reads = sum(math.prod(x) for x in spec.input_shapes)
    return (reads + math.prod(spec.output_shape)) * BYTES.get(spec.dtype, 4) / MB


def working_mb(spec: LayerSpec) -> float:
    """What a layer puts in the cache each invoke: its weights and the activations it reads
    and writes (at its dtype)."""
    return weight_mb(spec) + act_mb(spec)


def layer_kind(spec: LayerSpec) -> str:
    """What the per-layer model tells apart: the op and, for a convolution, whether it is
    pointwise, depthwise, dense or reads the image (3 channels: its cost is its activations)."""
    if spec.op == "conv2d":
        if spec.kernel == (1, 1):
            return "conv 1x1"
        return "conv on the image" if spec.cin <= 4 else "dense conv"
    return spec.op


def evicted_share(working_mb: float, cache_mb: float, evicted_mb: float) -> float:
    """The share of a network's weights evicted between invokes by its ``working_mb`` MB
    working set: 0 up to ``cache_mb``, 1 from ``evicted_mb``, linear between."""
    if working_mb >= evicted_mb:
        return 1.0
    if working_mb <= cache_mb:
        return 0.0
    return (working_mb - cache_mb) / (evicted_mb - cache_mb)


@dataclass(frozen=True)
class Calibration:
    """One LUT version's fitted in-network model, with how well it did and on what."""

    overhead_us: float
    cache_mb: float  # a network with a working set up to this many MB keeps its weights
    evicted_mb: float  # ... from this many on, none (v2: its per-layer L2 cutoff)
    us_per_weight_mb: float  # streaming weights from beyond it (v2: extra per MB that fits)
    us_per_act_mb: float
    us_per_layer: float
    fingerprint: dict[str, Any] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)  # the networks it was fitted on
    cv: dict[str, Any] = field(default_factory=dict)  # cross-validated errors on them
    model: str = MODEL
    # the machine while its networks were measured (bench.machine_state; {}: not recorded)
    machine_state: dict[str, Any] = field(default_factory=dict)
    kind_factor: dict[str, float] = field(default_factory=dict)  # per layer_kind() (v4, v5)
    us_per_weight_mb_exposed: float = 0.0  # streaming that compute does not hide (v4, v5)
    cache_source: str = ""  # how the cache window was set ("": before it was recorded)
    candidates: dict[str, Any] = field(default_factory=dict)  # each model's cross-validation

    def evicted(self, working_mb: float) -> float:
        """The share of a network's weights evicted between invokes, for the sum of its
        layers' ``footprint_mb``."""
        if self.model == V2:
            return 1.0
        return evicted_share(working_mb, self.cache_mb, self.evicted_mb)

    def footprint_mb(self, spec: LayerSpec) -> float:
        """What a layer adds to its network's working set under this model: its weights and
        activations (v5), its weights alone (v3, v4)."""
        return weight_mb(spec) if self.model in WEIGHTS_ONLY else working_mb(spec)

    def parts(self, spec: LayerSpec, entry_us: float) -> tuple[float, float]:
        """A layer's in-network cost as (what it costs when its network stays in cache,
        what eviction adds): ``warm + evicted x extra``."""
        alone = entry_us - self.overhead_us
        inside = alone + self.us_per_layer
        w = weight_mb(spec)
        act = (self.us_per_act_mb * act_mb(spec) + self.us_per_weight_mb_exposed * w
               + self.kind_factor.get(layer_kind(spec), 0.0) * alone)  # per layer, once evicted
        if self.model == V2:
            return inside + act + self.us_per_weight_mb * (w if w <= self.evicted_mb else 0), 0.0
        return inside, max(0.0, self.us_per_weight_mb * w - alone) + act

    def layer_us(self, spec: LayerSpec, entry_us: float, evicted: float = 1.0) -> float:
        """What a layer of LUT entry ``entry_us`` costs inside a network whose weights are
        ``evicted`` (see ``evicted()``) between invokes."""
        warm, extra = self.parts(spec, entry_us)
        return warm + evicted * extra

    def layers_us(self, layers: Sequence[tuple[LayerSpec, float]]) -> list[float]:
        """Each layer's in-network cost, for a network of these (spec, LUT entry) layers."""
        evicted = self.evicted(sum(self.footprint_mb(spec) for spec, _ in layers))
        return [self.layer_us(spec, entry, evicted) for spec, entry in layers]

    def network_us(self, layers: Sequence[tuple[LayerSpec, float]]) -> float:
        """A network's latency from its (spec, LUT entry) layers."""
        return sum(self.layers_us(layers)) + self.overhead_us

    def describe(self) -> str:
        cv = self.cv
        err = (f", cross-validated error {cv['mape_pct']:.1f} % (max {cv['max_pct']:.1f} %)"
               if cv else "")
        cache = f"; cache window {self.cache_source}" if self.cache_source else ""
        return f"{self.model} fitted on {len(self.networks)} networks{err}{cache}"

    def busy_warning(self) -> str | None:
        """One line when the calibration's networks were measured on a busy machine."""
        why = self.machine_state.get("reasons")
        if not why:
            return None
        return ("warning: this LUT's calibration was fitted from networks measured while the "
                f"machine was busy ({'; '.join(why)}), so calibrated estimates may be off; "
                "calibrate a new LUT version on a quiet machine")

    def physics(self) -> str:
        """The fitted parameters in words."""
        if self.model == V2:
            return (f"L2 cutoff {self.evicted_mb:g} MB, {self.us_per_weight_mb:.1f} us per MB "
                    f"of weights that fit in it")
        kinds = ", ".join(f"{k} {100 * f:+.0f} %" for k, f in sorted(self.kind_factor.items()))
        kinds = f"; once evicted, per kind: {kinds}" if kinds else ""
        what = "weights" if self.model in WEIGHTS_ONLY else "weights and activations"
        return (f"a network's weights stay in cache up to {self.cache_mb:g} MB of {what} and "
                f"are evicted from {self.evicted_mb:g} MB, then stream at "
                f"{self.us_per_weight_mb:.1f} us/MB"
                f"{kinds}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        data = json.loads(text)
        if data.get("model") == V2 and "us_per_mb_fits" in data:  # its names, in v3's
            data["us_per_weight_mb"] = data.pop("us_per_mb_fits")
            data["cache_mb"] = data["evicted_mb"] = data.pop("l2_mb")
        if data.get("model") not in MODELS:
            raise CalibrationError(f"calibration model {data.get('model')!r} was written by "
                                   f"another netadapt-farm (this one knows "
                                   f"{', '.join(map(repr, MODELS))}); use "
                                   "--raw for the plain sum, or build a new LUT file")
        return cls(**data)
