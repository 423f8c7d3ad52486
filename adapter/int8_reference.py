"""The int8 file's arithmetic in torch: the reference a full-integer file is held to.

Computed from the float weights and the tensor quantizations (``adapter.quantize``), not
read from the flatbuffer: weights per output channel on [-127, 127], int32 biases at input
scale x weight scale, exact integer accumulators, scales as the file stores them (float32), and then each op's
requantization as LiteRT's default CPU path does it, matched bit for bit on this machine
(ai-edge-litert 2.3.0, x86):

- conv2d, depthwise_conv2d, fully_connected (XNNPACK): float32(acc) x float32(s_in x s_w
  / s_out), rounded half to even, plus the output zero point;
- add (XNNPACK): 20-bit fixed-point multipliers of s_a / s_out and s_b / s_out, one
  arithmetic shift, ties rounded up;
- global_avg_pool, a MEAN (XNNPACK): float32(sum) x float32(s_in / (s_out x n)), half to even;
- avg_pool (TFLite's own integer kernel; XNNPACK does not take it): the raw sum (zero point
  included) divided by the window, ties away from zero;
- max_pool and pad: exact.

A float fake-quant reference (dequantized values through float32 layers, rounded at every
tensor) is one step off wherever float32 error or another tie rule decides a rounding, and
those steps compound through a deep network; ``docs/netadapt.md`` has the measurements.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from adapter.errors import AdaptError
from adapter.export import Weights
from adapter.same_padding import same_pads
from bench.tflite_quant import Quant, weight_quant
from lut_db.network import INPUT, Network
from lut_db.spec import LayerSpec

__all__ = ["REFERENCE_OPS", "forward", "layer", "nhwc"]

REFERENCE_OPS = ("conv2d", "depthwise_conv2d", "fully_connected", "add", "avg_pool",
                 "max_pool", "global_avg_pool", "pad")
F32 = np.float32
# |input - zero point| <= 255 and |weight| <= 127: a product is below 2**15, so 512 of
# them add up exactly in float32 (below 2**24) in any order.
EXACT_SUM = 512
ADD_MULTIPLIER_BITS = 20  # XNNPACK's qs8 add: the larger multiplier in [2**20, 2**21)


@torch.no_grad()
def forward(net: Network, weights: Mapping[str, Weights], quants: Mapping[str, Quant],
            x: np.ndarray, keep_all: bool = False) -> dict[str, torch.Tensor]:
    """The int8 input ``x`` (N x H x W x C, the file's own input quantization) through
    ``net``: every node's int8 output (``keep_all``) or the outputs', NHWC float32 tensors
    holding integers (a fully-connected output is N x 1 x 1 x C)."""
    values = {INPUT: nhwc(x)}
    for node in net.nodes:
        values[node.name] = layer(node.spec, [values[s] for s in node.inputs],
                                  [quants[s] for s in node.inputs], quants[node.name],
                                  weights.get(node.name, {}))
    return values if keep_all else {o: values[o] for o in net.outputs}


def nhwc(a: np.ndarray) -> torch.Tensor:
    """A file's int8 tensor (N x H x W x C, or N x C) as the reference holds it."""
    t = torch.from_numpy(np.asarray(a, np.float32))
    return t if t.dim() == 4 else t.view(len(t), 1, 1, -1)


@torch.no_grad()
def layer(spec: LayerSpec, xs: Sequence[torch.Tensor], ins: Sequence[Quant], out: Quant,
          w: Weights) -> torch.Tensor:
    """One int8 layer: its int8 inputs ``xs`` (quantized as ``ins``; ``nhwc``) to its int8
    output (quantized as ``out``)."""
    op, x = spec.op, xs[0]
    if op in ("conv2d", "depthwise_conv2d", "fully_connected"):
        weight, bias, wq = _int_weights(spec, w, ins[0])
        acc = _accumulate(spec, x - ins[0].zero_point[0], weight) + bias
        # float32(s_in x s_w) / s_out in float32, per output channel, as XNNPACK forms it
        y = _requantize(acc, (F32(ins[0].scale[0]) * np.asarray(wq.scale, F32))
                        / F32(out.scale[0]), out)
    elif op == "add":
        y = _add(xs, ins, out)
    elif op == "global_avg_pool":
        acc = (x - ins[0].zero_point[0]).double().sum(dim=(1, 2), keepdim=True)
        scale = F32(ins[0].scale[0]) / (F32(out.scale[0]) * F32(spec.h * spec.w))
        y = _requantize(acc, np.full(acc.shape[-1], scale, F32), out)
    elif op == "avg_pool":  # the raw sum (zero point in), ties away from zero; scale kept
        n = spec.kernel[0] * spec.kernel[1]
        raw = _nchw_op(x, lambda t: F.avg_pool2d(t, spec.kernel, spec.stride,
                                                 divisor_override=1))
        y = torch.sign(raw) * torch.div(raw.abs() + n // 2, n, rounding_mode="floor")
    elif op == "max_pool":
        y = _nchw_op(x, lambda t: F.max_pool2d(t, spec.kernel, spec.stride))
    elif op == "pad":
        top, bottom, left, right = spec.pads
        y = F.pad(x, (0, 0, left, right, top, bottom), value=float(ins[0].zero_point[0]))
    else:
        raise AdaptError(f"{spec.key}: no int8 reference for op {op!r}")
    return y.clamp(*_bounds(out, spec.act))


def _int_weights(spec: LayerSpec, w: Weights, x_quant: Quant
                 ) -> tuple[torch.Tensor, torch.Tensor, Quant]:
    """The layer's int8 weights (TFLite layout, float32) and int32 bias (float64)."""
    wq = weight_quant(spec, w["weight"])
    shape = [1] * w["weight"].ndim
    shape[wq.dim] = -1
    ints = np.clip(np.round(w["weight"] / np.asarray(wq.scale).reshape(shape)), -127, 127)
    bias = np.zeros(len(wq.scale))
    if "bias" in w:
        bias = np.round(w["bias"] / (np.asarray(wq.scale) * x_quant.scale[0]))
    return torch.from_numpy(ints.astype(np.float32)), torch.from_numpy(bias), wq


def _accumulate(spec: LayerSpec, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(input - zero point) x int8 weights, exactly, float64 NHWC (padding with the zero
    point is padding with 0 here)."""
    if spec.op == "fully_connected":  # TFLite flattens NHWC
        return _exact_matmul(x.reshape(len(x), -1), weight.T).view(len(x), 1, 1, -1)
    if spec.padding != "valid":
        (t, b), (left, r) = [same_pads(n, k, s, d) for n, k, s, d in
                             zip((spec.h, spec.w), spec.kernel, spec.stride, spec.dilation)]
        x = F.pad(x, (0, 0, left, r, t, b))
    taps = _taps(x, spec)
    if spec.op == "depthwise_conv2d":  # [1, kh, kw, C]
        wide = len(taps) > EXACT_SUM  # more taps than float32 adds exactly
        return sum((tap.double() if wide else tap) * weight[0, i, j]
                   for (i, j), tap in taps).double()
    # conv2d: the taps side by side in (kh, kw, C) order, OHWI weights flattened alike
    cols = torch.cat([tap for _, tap in taps], dim=-1)
    n, h, w_, k = cols.shape
    return _exact_matmul(cols.view(-1, k), weight.reshape(len(weight), -1).T).view(n, h, w_, -1)


def _taps(x: torch.Tensor, spec: LayerSpec) -> list[tuple[tuple[int, int], torch.Tensor]]:
    """The (padded) input under each kernel tap (i, j), strided: N x out_h x out_w x C."""
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel, spec.stride, spec.dilation
    out_h = (x.shape[1] - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[2] - dw * (kw - 1) - 1) // sw + 1
    return [((i, j), x[:, i * dh:i * dh + sh * (out_h - 1) + 1:sh,
                      j * dw:j * dw + sw * (out_w - 1) + 1:sw])
            for i in range(kh) for j in range(kw)]


def _exact_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of int8-range integers, exactly, fast: float32 over slices of EXACT_SUM
    terms (every partial sum an integer below 2**24), the slices added in float64."""
    out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.float64)
    for k in range(0, a.shape[1], EXACT_SUM):
        out += (a[:, k:k + EXACT_SUM] @ b[k:k + EXACT_SUM]).double()
    return out


def _requantize(acc: torch.Tensor, scale: np.ndarray, out: Quant) -> torch.Tensor:
    """float32(acc) x float32 scale per channel, half to even, plus the zero point."""
    return torch.round(acc.float() * torch.from_numpy(scale)) + out.zero_point[0]


def _add(xs: Sequence[torch.Tensor], ins: Sequence[Quant], out: Quant) -> torch.Tensor:
    """XNNPACK's qs8 add: multipliers m = lrint(s / s_out x 2**shift), the larger one of
    ADD_MULTIPLIER_BITS + 1 bits; (m_a x a + m_b x b + 2**(shift-1)) >> shift."""
    ratios = [F32(q.scale[0]) / F32(out.scale[0]) for q in ins]
    shift = ADD_MULTIPLIER_BITS - (int(np.frexp(max(ratios))[1]) - 1)
    mults = [int(np.rint(r * F32(2.0 ** shift))) for r in ratios]
    acc = sum(((x - q.zero_point[0]).to(torch.int64) * m
               for x, q, m in zip(xs, ins, mults)), torch.tensor(1 << (shift - 1)))
    return torch.bitwise_right_shift(acc, shift).float() + out.zero_point[0]


def _bounds(out: Quant, act: str) -> tuple[float, float]:
    """The int8 range, cut by a fused ReLU / ReLU6 at real 0 and 6."""
    zp, lo, hi = out.zero_point[0], -128, 127
    if act in ("relu", "relu6"):
        lo = max(lo, zp)
    if act == "relu6":
        hi = min(hi, zp + round(6.0 / float(F32(out.scale[0]))))
    return float(lo), float(hi)


def _nchw_op(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return fn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
