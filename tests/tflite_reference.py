"""What the .tflite builder's tests check its models against: torch's reading of each
LayerSpec and Network, a LiteRT run of a built model, and the layers they try.

Shared by the float32, int8 and float16 builder tests (a test module imports no other).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from ai_edge_litert import schema_py_generated as tfl
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from bench.tflite_ops import ADD_SCALAR, MUL_SCALAR
from lut_db.network import INPUT, Network
from lut_db.spec import LayerSpec

TOL = 1e-4
RESOLVERS = {
    "xnnpack": OpResolverType.AUTO,
    "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
}


# -- torch reference ------------------------------------------------------------------------


def _same_pads(size: int, k_eff: int, stride: int) -> tuple[int, int]:
    """TFLite SAME padding: asymmetric, the extra row/column at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def _pad(x: torch.Tensor, spec: LayerSpec, value: float = 0.0) -> torch.Tensor:
    if spec.padding == "valid":
        return x
    (kh, kw), (sh, sw) = spec.effective_kernel, spec.stride
    top, bottom = _same_pads(spec.h, kh, sh)
    left, right = _same_pads(spec.w, kw, sw)
    return F.pad(x, (left, right, top, bottom), value=value)


def _act(x: torch.Tensor, act: str) -> torch.Tensor:
    return {"none": x, "relu": x.clamp(min=0), "relu6": x.clamp(0, 6)}[act]


def torch_layer(spec: LayerSpec, xs: list[torch.Tensor],
                w: dict[str, np.ndarray]) -> torch.Tensor:
    """One layer in float64, NCHW in and out (a fully-connected output is [1, C, 1, 1])."""
    x = xs[0]
    weight = torch.from_numpy(w["weight"]).double() if "weight" in w else None
    bias = torch.from_numpy(w["bias"]).double() if "bias" in w else None
    if spec.op == "conv2d":  # OHWI -> OIHW
        y = F.conv2d(_pad(x, spec), weight.permute(0, 3, 1, 2), bias,
                     stride=spec.stride, dilation=spec.dilation)
    elif spec.op == "depthwise_conv2d":  # [1, kh, kw, cout] -> [cout, 1, kh, kw]
        y = F.conv2d(_pad(x, spec), weight.permute(3, 0, 1, 2), bias,
                     stride=spec.stride, dilation=spec.dilation, groups=spec.cin)
    elif spec.op == "fully_connected":  # TFLite flattens NHWC
        flat = x.permute(0, 2, 3, 1).reshape(1, -1)
        y = F.linear(flat, weight, bias).reshape(1, -1, 1, 1)
    elif spec.op == "add":
        y = xs[0] + xs[1]
    elif spec.op == "avg_pool":  # SAME: average over the valid elements only
        total = F.avg_pool2d(_pad(x, spec), spec.kernel, spec.stride, divisor_override=1)
        ones = torch.ones_like(x[:, :1])
        count = F.avg_pool2d(_pad(ones, spec), spec.kernel, spec.stride, divisor_override=1)
        y = total / count
    elif spec.op == "max_pool":
        y = F.max_pool2d(_pad(x, spec, value=-float("inf")), spec.kernel, spec.stride)
    elif spec.op == "global_avg_pool":
        y = x.mean(dim=(2, 3), keepdim=True)
    elif spec.op in ("mul", "channel_mul"):  # [1, C, 1, 1] broadcasts over H, W
        y = xs[0] * xs[1]
    elif spec.op == "add_scalar":
        y = x + ADD_SCALAR
    elif spec.op == "mul_scalar":
        y = x * MUL_SCALAR
    elif spec.op == "concat":
        y = torch.cat(xs, dim=1)
    elif spec.op == "pad":
        top, bottom, left, right = spec.pads
        y = F.pad(x, (left, right, top, bottom))
    elif spec.op == "softmax":  # over channels, as TFLite's last axis
        y = torch.softmax(x, dim=1)
    elif spec.op == "hard_swish":
        y = F.hardswish(x)
    elif spec.op == "hard_sigmoid":
        y = F.hardsigmoid(x)
    elif spec.op == "logistic":
        y = torch.sigmoid(x)
    else:
        raise AssertionError(f"no torch reference for {spec.op}")
    return _act(y, spec.act)


def torch_network(net: Network, x: np.ndarray,
                  weights: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Evaluate a Network's DAG; ``x`` and the results are NHWC."""
    values = {INPUT: torch.from_numpy(x).double().permute(0, 3, 1, 2)}
    for node in net.nodes:
        values[node.name] = torch_layer(node.spec, [values[s] for s in node.inputs],
                                        weights[node.name])
    return {o: values[o].permute(0, 2, 3, 1).numpy() for o in net.outputs}


# -- running built models -----------------------------------------------------------------


def run_tflite(model: bytes, feeds: dict[str, np.ndarray],
               resolver: OpResolverType = OpResolverType.AUTO) -> dict[str, np.ndarray]:
    interpreter = Interpreter(model_content=model, num_threads=1,
                              experimental_op_resolver_type=resolver)
    return interpreter.get_signature_runner("serving_default")(**feeds)


def tflite_shape(spec: LayerSpec) -> tuple[int, ...]:
    return (1, spec.cout) if spec.op == "fully_connected" else (1, *spec.output_shape)


def rand(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check_close(got: np.ndarray, want: np.ndarray) -> None:
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    assert err <= TOL, f"max abs error {err:.3g} > {TOL}"


# -- single layers ------------------------------------------------------------------------

LAYERS = [
    # conv2d: kernels 1/3/5, stride 1/2, same/valid, dilation, odd and even sizes
    "conv2d:in=9x9x4,out=6,k=1x1,s=1x1,pad=same,act=relu",
    "conv2d:in=9x9x4,out=6,k=1x1,s=2x2,pad=valid,act=none",
    "conv2d:in=9x9x4,out=6,k=3x3,s=1x1,pad=same,act=none",
    "conv2d:in=9x9x4,out=6,k=3x3,s=2x2,pad=same,act=relu6",
    "conv2d:in=10x10x4,out=6,k=3x3,s=2x2,pad=same,act=relu",
    "conv2d:in=9x9x4,out=6,k=3x3,s=2x2,pad=valid,act=none",
    "conv2d:in=9x9x4,out=6,k=5x5,s=1x1,pad=same,act=relu6",
    "conv2d:in=10x10x4,out=6,k=5x5,s=2x2,pad=same,act=none",
    "conv2d:in=9x9x4,out=6,k=5x5,s=1x1,pad=valid,act=relu",
    "conv2d:in=9x9x4,out=6,k=3x3,s=1x1,pad=same,d=2x2,act=relu",
    "conv2d:in=9x9x4,out=6,k=3x3,s=1x1,pad=valid,d=2x2,act=none",
    "conv2d:in=8x11x3,out=5,k=3x2,s=2x1,pad=same,act=none",
    "conv2d:in=9x9x4,out=6,k=3x3,s=1x1,pad=same,act=relu6,bias=0",
    # depthwise: stride 1/2, same/valid, multiplier 2, dilation
    "depthwise_conv2d:in=9x9x8,k=3x3,s=1x1,pad=same,act=relu6",
    "depthwise_conv2d:in=10x10x8,k=3x3,s=2x2,pad=same,act=none",
    "depthwise_conv2d:in=9x9x8,k=3x3,s=2x2,pad=same,act=relu",
    "depthwise_conv2d:in=9x9x8,k=3x3,s=1x1,pad=valid,act=none",
    "depthwise_conv2d:in=9x9x8,k=3x3,s=2x2,pad=valid,act=relu6",
    "depthwise_conv2d:in=9x9x4,mult=2,k=3x3,s=1x1,pad=same,act=relu6",
    "depthwise_conv2d:in=9x9x4,mult=2,k=3x3,s=2x2,pad=valid,act=none",
    "depthwise_conv2d:in=9x9x8,k=3x3,s=1x1,pad=same,d=2x2,act=relu",
    "depthwise_conv2d:in=9x9x8,k=5x5,s=1x1,pad=same,act=none,bias=0",
    # fully connected from 1x1xC and 2x2xC
    "fully_connected:in=1x1x16,out=10,act=none",
    "fully_connected:in=2x2x8,out=5,act=relu",
    "fully_connected:in=1x1x16,out=7,act=relu6,bias=0",
    # add, pools
    "add:in=6x6x8,act=none",
    "add:in=6x6x8,act=relu",
    "add:in=5x7x3,act=relu6",
    "avg_pool:in=9x9x4,k=3x3,s=2x2,pad=same,act=none",
    "avg_pool:in=10x10x4,k=3x3,s=1x1,pad=same,act=relu",
    "avg_pool:in=10x10x4,k=2x2,s=2x2,pad=valid,act=none",
    "max_pool:in=9x9x4,k=3x3,s=2x2,pad=same,act=none",
    "max_pool:in=10x10x4,k=2x2,s=2x2,pad=valid,act=relu6",
    "global_avg_pool:in=7x7x16",
    # elementwise, squeeze-excite multiply, concat, pad, softmax, activations
    "mul:in=6x6x8,act=none",
    "mul:in=5x7x3,act=relu6",
    "channel_mul:in=6x6x8,act=none",
    "channel_mul:in=5x7x3,act=relu",
    "add_scalar:in=6x6x3,act=none",
    "mul_scalar:in=1x1x16,act=relu6",
    "concat:in=6x6x12,parts=4+8",
    "concat:in=5x7x9,parts=2+3+4",
    "pad:in=9x9x4,pads=0x1x0x1",
    "pad:in=5x7x3,pads=2x0x1x3",
    "softmax:in=1x1x10",
    "softmax:in=3x4x5",
    "hard_swish:in=6x6x8",
    "hard_sigmoid:in=6x6x8",
    "hard_sigmoid:in=1x1x16",
    "logistic:in=6x6x8",
]


def flatbuffer_model(data: bytes) -> tfl.ModelT:
    """A built model's flatbuffer as LiteRT's schema objects."""
    return tfl.ModelT.InitFromObj(tfl.Model.GetRootAsModel(data, 0))
