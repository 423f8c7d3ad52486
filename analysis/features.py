"""What the validation knows of a network besides its measured latency: its LUT sum,
where each entry came from, and features a correction may use (entries per op class,
weight and activation bytes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lut_db.calibration import BYTES
from lut_db.estimate import Groups, MissingKeys, interpolate, shape_groups
from lut_db.network import Network
from lut_db.spec import LayerSpec
from lut_db.store import LutStore
from lut_db.versions import Version


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
    its layers read and write (at each layer's dtype): what a correction may use."""
    by_class: dict[str, float] = {}
    for spec in net.specs:
        c = op_class(spec)
        by_class[c] = by_class.get(c, 0.0) + lookup[spec.key]
    act = sum((sum(math.prod(x) for x in s.input_shapes) + math.prod(s.output_shape))
              * BYTES[s.dtype] for s in net.specs)
    weights = sum(s.params * BYTES[s.dtype] for s in net.specs)
    return {"by_class": by_class, "layers": len(net.nodes), "weight_bytes": weights,
            "act_bytes": act}


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


def all_tables(store: LutStore, version: Version) -> Tables:
    """The entries of the sweep ``version`` descends from, and apart from them those that
    versions of the same setup derived from it added (``LutStore.lineage``)."""
    table, extra, labels = store.lineage(version)
    return Tables(table, extra, ", ".join(labels))
