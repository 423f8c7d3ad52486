"""The in-network model: what a layer costs inside a network, from its LUT entry.

A LUT entry is a layer timed alone, over and over: its weights and input stay in the
core's caches, and every invoke pays the runtime's fixed overhead once. Inside a
network neither holds: the network pays the overhead once, and the layers before
evict a layer's weights, which then come from further away. The model says so, per
layer, with the physics as its features:

    in_network(layer) = entry - overhead
                        + us_per_mb_fits x weight MB   (only weights that fit in L2: warm
                                                        alone, cold inside; bigger ones
                                                        stream from further away either way)
                        + us_per_act_mb  x activation MB read and written
                        + us_per_layer
    network = sum of in_network(layer) + overhead

The parameters are fitted per device and setup from whole networks measured on it
(``analysis.calibrate``) and stored with the LUT version; the L2 size is the cutoff
that explains those networks best. Because every term is a layer's own, the model
carries over to widths, resolutions and families it was not fitted on, and a
calibrated LUT is just another table (``in_network_table``), so the adapter's fast
path stays a sum of look-ups.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from lut_db.errors import UserError
from lut_db.spec import LayerSpec

MODEL = "cache-l2-v2"
BYTES = {"float32": 4, "float16": 2, "int8": 1}
MB = 2**20


class CalibrationError(UserError):
    """A calibration that cannot be made or used as asked."""


def weight_mb(spec: LayerSpec) -> float:
    return spec.params * BYTES.get(spec.dtype, 4) / MB


def act_mb(spec: LayerSpec) -> float:
    """Activations a layer reads (every input) and writes."""
    reads = sum(math.prod(x) for x in spec.input_shapes)
    return (reads + math.prod(spec.output_shape)) * BYTES.get(spec.dtype, 4) / MB


def features(spec: LayerSpec, l2_mb: float) -> tuple[float, float, float]:
    """(weight MB if they fit in L2, activation MB, 1): what the model's parameters
    multiply, for one layer."""
    w = weight_mb(spec)
    return (w if w <= l2_mb else 0.0, act_mb(spec), 1.0)


@dataclass(frozen=True)
class Calibration:
    """One LUT version's fitted in-network model, with how well it did and on what."""

    overhead_us: float
    l2_mb: float
    us_per_mb_fits: float
    us_per_act_mb: float
    us_per_layer: float
    fingerprint: dict[str, Any] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)  # the networks it was fitted on
    cv: dict[str, Any] = field(default_factory=dict)  # cross-validated errors on them
    model: str = MODEL

    @property
    def coefficients(self) -> tuple[float, float, float]:
        return (self.us_per_mb_fits, self.us_per_act_mb, self.us_per_layer)

    def layer_us(self, spec: LayerSpec, entry_us: float) -> float:
        """What a layer of LUT entry ``entry_us`` costs inside a network."""
        f = features(spec, self.l2_mb)
        return entry_us - self.overhead_us + sum(a * x for a, x in zip(self.coefficients, f))

    def network_us(self, layer_us_sum: float) -> float:
        """A network's latency from the sum of its layers' in-network costs."""
        return layer_us_sum + self.overhead_us

    def in_network_table(self, table: Mapping[str, float]) -> dict[str, float]:
        """Every key's in-network cost: a calibrated table, summed like a raw one."""
        return {k: self.layer_us(LayerSpec.parse(k), v) for k, v in table.items()}

    def describe(self) -> str:
        cv = self.cv
        err = (f", cross-validated error {cv['mape_pct']:.1f} % (max {cv['max_pct']:.1f} %)"
               if cv else "")
        return f"{self.model} fitted on {len(self.networks)} networks{err}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        data = json.loads(text)
        if data.get("model") != MODEL:
            raise CalibrationError(f"calibration model {data.get('model')!r} was written by "
                                   f"another netadapt-farm (this one knows {MODEL!r}); use "
                                   "--raw for the plain sum, or build a new LUT file")
        return cls(**data)
