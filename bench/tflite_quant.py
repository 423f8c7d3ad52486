"""int8 quantization as ``bench.tflite_build`` writes it, in the TF converter's scheme:
activations asymmetric per tensor (over the range calibration saw, else the one their fused
activation implies), weights symmetric per output channel, pools, pads and concats keeping
their input's parameters, softmax and logistic at the fixed 1/256. ``adapter.quantize`` and
``adapter.int8_reference`` compute with the same parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from lut_db.network import INPUT, Network
from lut_db.spec import LayerSpec


@dataclass(frozen=True)
class Quant:
    """int8 quantization: real = scale * (q - zero_point), per channel along ``dim``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    dim: int = 0

    @classmethod
    def of_range(cls, lo: float, hi: float) -> Quant:
        """Asymmetric per-tensor int8 over [lo, hi] widened to hold 0 (exact zero)."""
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (hi - lo) / 255.0
        return cls((scale,), (int(np.clip(round(-128 - lo / scale), -128, 127)),))

    def params(self) -> tfl.QuantizationParametersT:
        return tfl.QuantizationParametersT(scale=list(self.scale), zeroPoint=list(self.zero_point),
                                           quantizedDimension=self.dim)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """``x`` (per-tensor) as int8."""
        q = np.round(x / self.scale[0]) + self.zero_point[0]
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (q.astype(np.float64) - self.zero_point[0]) * self.scale[0]


ACT_RANGE = {"none": (-8.0, 8.0), "relu": (0.0, 8.0), "relu6": (0.0, 6.0)}
INPUT_QUANT = Quant.of_range(*ACT_RANGE["none"])  # a model's int8 input
# Ops whose output keeps the input's quantization (their int8 kernels require or assume it).
_KEEPS_QUANT = ("avg_pool", "max_pool", "global_avg_pool", "pad", "concat")
_FIXED_QUANT = {"softmax": Quant((1 / 256,), (-128,)), "logistic": Quant((1 / 256,), (-128,)),
                "hard_sigmoid": Quant.of_range(0.0, 1.0)}


def output_quant(spec: LayerSpec, input_quant: Quant,
                 observed: tuple[float, float] | None = None) -> Quant:
    """The quantization of an int8 layer's output: over the ``observed`` (calibration) range
    when given, else the range assumed from its fused activation."""
    if spec.op in _KEEPS_QUANT:
        return input_quant
    fixed = _FIXED_QUANT.get(spec.op)
    if fixed:
        return fixed
    return Quant.of_range(*(observed if observed is not None else ACT_RANGE[spec.act]))


def activation_quants(net: Network, ranges: Mapping[str, tuple[float, float]] | None = None
                      ) -> dict[str, Quant]:
    """node (and ``input``) -> the int8 quantization of its output in ``build_network``'s
    file; ``ranges``: the (min, max) calibration saw per node (absent: assumed)."""
    ranges = ranges or {}
    out = {INPUT: Quant.of_range(*ranges[INPUT]) if INPUT in ranges else INPUT_QUANT}
    for node in net.nodes:
        out[node.name] = output_quant(node.spec, out[node.inputs[0]], ranges.get(node.name))
    return out


_CHANNEL_AXIS = {"conv2d": 0, "depthwise_conv2d": 3, "fully_connected": 0}


def weight_quant(spec: LayerSpec, weight: np.ndarray) -> Quant:
    """Symmetric per-output-channel int8 scales of a layer's float weights."""
    axis = _CHANNEL_AXIS[spec.op]
    others = tuple(a for a in range(weight.ndim) if a != axis)
    peak = np.abs(weight).max(axis=others).astype(np.float64)
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    return Quant(tuple(float(v) for v in scale), (0,) * len(scale), axis)
