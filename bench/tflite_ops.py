"""One emitter per LayerSpec op kind: the TFLite operators ``bench.tflite_build`` writes for
a layer, in the forms the TF converter writes (``BUILDERS``: op kind -> ``OpBuilder``; add an
entry to support a new op). Apart from the graph writer (``bench.tflite_graph``), which knows
no LayerSpec, and from the entry points, which wire layers together.

Weights are emitted per dtype: float32 constants; at ``dt=float16`` FLOAT16 constants
behind DEQUANTIZE (``Graph.half``); at ``dt=int8`` int8 weights per output channel and
int32 biases at input scale x weight scale (``bench.tflite_quant``). A conv or depthwise
layer without bias still gets a (zero) bias tensor: TFLite's builtin kernels require one,
as the TF converter knows (see ``_weight_inputs``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from bench.tflite_graph import Graph
from bench.tflite_quant import ACT_RANGE, Quant, weight_quant
from lut_db.spec import LayerSpec, SpecError

__all__ = ["ADD_SCALAR", "BUILDERS", "HARD_SIGMOID_OFFSET", "HARD_SIGMOID_SCALE", "MUL_SCALAR",
           "EmitFn", "OpBuilder", "builder_for", "output_shape"]

_PADDING = {"same": tfl.Padding.SAME, "valid": tfl.Padding.VALID}
_ACTIVATION = {
    "none": tfl.ActivationFunctionType.NONE,
    "relu": tfl.ActivationFunctionType.RELU,
    "relu6": tfl.ActivationFunctionType.RELU6,
}
_OP = tfl.BuiltinOperator
_OPTIONS = tfl.BuiltinOptions

# emit(graph, spec, input tensors, output tensor, weights, name prefix for constants)
EmitFn = Callable[[Graph, LayerSpec, list[int], int, Mapping[str, np.ndarray], str], None]


@dataclass(frozen=True)
class OpBuilder:
    """How one LayerSpec op becomes TFLite operators.

    ``weight_shape`` gives the weight tensor's TFLite shape (None: the op has no
    weights). The activation inputs are ``LayerSpec.input_shapes``.
    """

    emit: EmitFn
    weight_shape: Callable[[LayerSpec], tuple[int, ...]] | None = None


def _weight_inputs(g: Graph, spec: LayerSpec, w: Mapping[str, np.ndarray], prefix: str,
                   x: int, optional_bias: bool = False) -> list[int]:
    """[weight, bias] tensor indices.

    Without a bias, FULLY_CONNECTED takes -1 (an absent optional input). CONV_2D and
    DEPTHWISE_CONV_2D get a zero bias instead, as the TF converter emits: their builtin
    kernels require one (conv.cc: "has_bias was not true"; depthwise crashes), so a
    2-input or -1 conv runs only where XNNPACK happens to take the node.
    """
    if spec.dtype == "int8":
        return _int8_weight_inputs(g, spec, w, prefix, g.quants[x], optional_bias)
    const = g.half if spec.dtype == "float16" else g.const
    weight = const(f"{prefix}/weight", w["weight"])
    if spec.bias:
        return [weight, const(f"{prefix}/bias", w["bias"])]
    if optional_bias:
        return [weight, -1]
    return [weight, const(f"{prefix}/bias", np.zeros(spec.cout, np.float32))]


def _int8_weight_inputs(g: Graph, spec: LayerSpec, w: Mapping[str, np.ndarray], prefix: str,
                        x_quant: Quant | None, optional_bias: bool) -> list[int]:
    """int8 weights per channel and an int32 bias at input scale x weight scale."""
    if x_quant is None:
        raise SpecError(f"{spec.key}: an int8 layer needs an int8 input")
    wq = weight_quant(spec, w["weight"])
    shape = [1] * w["weight"].ndim
    shape[wq.dim] = -1
    scale = np.array(wq.scale).reshape(shape)
    weight = g.const(f"{prefix}/weight",
                     np.clip(np.round(w["weight"] / scale), -127, 127).astype(np.int8), wq)
    if not spec.bias and optional_bias:
        return [weight, -1]
    bias_scale = np.array(wq.scale) * x_quant.scale[0]
    bias = w["bias"] if spec.bias else np.zeros(spec.cout)
    bq = Quant(tuple(float(v) for v in bias_scale), (0,) * spec.cout)
    return [weight, g.const(f"{prefix}/bias", np.round(bias / bias_scale).astype(np.int32), bq)]


def _emit_conv2d(g, spec, ins, out, w, prefix) -> None:
    options = tfl.Conv2DOptionsT(
        padding=_PADDING[spec.padding], strideH=spec.stride[0], strideW=spec.stride[1],
        dilationHFactor=spec.dilation[0], dilationWFactor=spec.dilation[1],
        fusedActivationFunction=_ACTIVATION[spec.act],
    )
    g.op(_OP.CONV_2D, [ins[0], *_weight_inputs(g, spec, w, prefix, ins[0])], [out],
         _OPTIONS.Conv2DOptions, options)


def _emit_depthwise(g, spec, ins, out, w, prefix) -> None:
    options = tfl.DepthwiseConv2DOptionsT(
        padding=_PADDING[spec.padding], strideH=spec.stride[0], strideW=spec.stride[1],
        depthMultiplier=spec.depth_multiplier,
        dilationHFactor=spec.dilation[0], dilationWFactor=spec.dilation[1],
        fusedActivationFunction=_ACTIVATION[spec.act],
    )
    version = 2 if spec.dilation != (1, 1) else 1  # as the converter versions it
    g.op(_OP.DEPTHWISE_CONV_2D, [ins[0], *_weight_inputs(g, spec, w, prefix, ins[0])], [out],
         _OPTIONS.DepthwiseConv2DOptions, options, version)


def _emit_fully_connected(g, spec, ins, out, w, prefix) -> None:
    # keep_num_dims=False: TFLite flattens [1,h,w,c] (or [1,c]) to [1, h*w*c] itself.
    options = tfl.FullyConnectedOptionsT(fusedActivationFunction=_ACTIVATION[spec.act],
                                         keepNumDims=False)
    weights = _weight_inputs(g, spec, w, prefix, ins[0], optional_bias=True)
    g.op(_OP.FULLY_CONNECTED, [ins[0], *weights], [out],
         _OPTIONS.FullyConnectedOptions, options)


def _emit_add(g, spec, ins, out, w, prefix) -> None:
    g.op(_OP.ADD, ins, [out], _OPTIONS.AddOptions,
         tfl.AddOptionsT(fusedActivationFunction=_ACTIVATION[spec.act]))


def _pool(code: int) -> EmitFn:
    def emit(g, spec, ins, out, w, prefix) -> None:
        options = tfl.Pool2DOptionsT(
            padding=_PADDING[spec.padding], strideH=spec.stride[0], strideW=spec.stride[1],
            filterHeight=spec.kernel[0], filterWidth=spec.kernel[1],
            fusedActivationFunction=_ACTIVATION[spec.act],
        )
        g.op(code, ins, [out], _OPTIONS.Pool2DOptions, options)
    return emit


def _emit_global_avg_pool(g, spec, ins, out, w, prefix) -> None:
    # MEAN over H, W keeping dims: what the converter emits for Keras GlobalAveragePooling2D
    # (keepdims) and what XNNPACK delegates.
    axes = g.const(f"{prefix}/axes", np.array([1, 2], np.int32))
    g.op(_OP.MEAN, [ins[0], axes], [out], _OPTIONS.ReducerOptions,
         tfl.ReducerOptionsT(keepDims=True))


def _emit_binary(code: int, options_type: int, options: type) -> EmitFn:
    """ADD / MUL of two tensors (MUL broadcasts a 1x1xC operand: channel_mul)."""
    def emit(g, spec, ins, out, w, prefix) -> None:
        g.op(code, ins, [out], options_type,
             options(fusedActivationFunction=_ACTIVATION[spec.act]))
    return emit


def _emit_concat(g, spec, ins, out, w, prefix) -> None:
    # int8 CONCATENATION wants one quantization on all tensors: requantize parts that differ.
    ins = [g.requantize(t, g.quants[out]) for t in ins] if g.quants[out] else ins
    g.op(_OP.CONCATENATION, ins, [out], _OPTIONS.ConcatenationOptions,
         tfl.ConcatenationOptionsT(axis=3))


def _emit_pad(g, spec, ins, out, w, prefix) -> None:
    top, bottom, left, right = spec.pads
    paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
    g.op(_OP.PAD, [ins[0], g.const(f"{prefix}/paddings", paddings)], [out],
         _OPTIONS.PadOptions, tfl.PadOptionsT())


def _emit_softmax(g, spec, ins, out, w, prefix) -> None:
    g.op(_OP.SOFTMAX, ins, [out], _OPTIONS.SoftmaxOptions, tfl.SoftmaxOptionsT(beta=1.0))


def _unary(code: int) -> EmitFn:
    def emit(g, spec, ins, out, w, prefix) -> None:
        g.op(code, ins, [out])
    return emit


HARD_SIGMOID_OFFSET, HARD_SIGMOID_SCALE = 3.0, 1.0 / 6.0
# The constants of add_scalar / mul_scalar models (the time does not depend on them).
ADD_SCALAR, MUL_SCALAR = -1.0, 1.0 / 6.0


def _scalar_op(code: int, options_type: int, options: type, value: float) -> EmitFn:
    """ADD / MUL of a tensor and a scalar constant (0-d, as the converter writes it)."""
    def emit(g, spec, ins, out, w, prefix) -> None:
        scalar = g.scalar(f"{prefix}/scalar", value, spec.dtype == "int8")
        g.op(code, [ins[0], scalar], [out], options_type,
             options(fusedActivationFunction=_ACTIVATION[spec.act]))
    return emit


def _emit_hard_sigmoid(g, spec, ins, out, w, prefix) -> None:
    # TFLite has no HARD_SIGMOID: relu6(x + 3) / 6 as ADD (fused RELU6) then MUL, with
    # scalar constants, the form of Keras' hard_sigmoid once converted.
    int8 = spec.dtype == "int8"
    mid = g.activation(f"{prefix}/hard_sigmoid_add", g.shapes[out],
                       Quant.of_range(*ACT_RANGE["relu6"]) if int8 else None)
    offset = g.scalar(f"{prefix}/offset", HARD_SIGMOID_OFFSET, int8)
    scale = g.scalar(f"{prefix}/scale", HARD_SIGMOID_SCALE, int8)
    g.op(_OP.ADD, [ins[0], offset], [mid], _OPTIONS.AddOptions,
         tfl.AddOptionsT(fusedActivationFunction=tfl.ActivationFunctionType.RELU6))
    g.op(_OP.MUL, [mid, scale], [out], _OPTIONS.MulOptions, tfl.MulOptionsT())


BUILDERS: dict[str, OpBuilder] = {
    "conv2d": OpBuilder(_emit_conv2d,
                        weight_shape=lambda s: (s.cout, *s.kernel, s.cin)),
    "depthwise_conv2d": OpBuilder(_emit_depthwise,
                                  weight_shape=lambda s: (1, *s.kernel, s.cout)),
    "fully_connected": OpBuilder(_emit_fully_connected,
                                 weight_shape=lambda s: (s.cout, s.h * s.w * s.cin)),
    "add": OpBuilder(_emit_add),
    "avg_pool": OpBuilder(_pool(_OP.AVERAGE_POOL_2D)),
    "max_pool": OpBuilder(_pool(_OP.MAX_POOL_2D)),
    "global_avg_pool": OpBuilder(_emit_global_avg_pool),
    "mul": OpBuilder(_emit_binary(_OP.MUL, _OPTIONS.MulOptions, tfl.MulOptionsT)),
    "channel_mul": OpBuilder(_emit_binary(_OP.MUL, _OPTIONS.MulOptions, tfl.MulOptionsT)),
    "add_scalar": OpBuilder(_scalar_op(_OP.ADD, _OPTIONS.AddOptions, tfl.AddOptionsT,
                                       ADD_SCALAR)),
    "mul_scalar": OpBuilder(_scalar_op(_OP.MUL, _OPTIONS.MulOptions, tfl.MulOptionsT,
                                       MUL_SCALAR)),
    "concat": OpBuilder(_emit_concat),
    "pad": OpBuilder(_emit_pad),
    "softmax": OpBuilder(_emit_softmax),
    "hard_swish": OpBuilder(_unary(_OP.HARD_SWISH)),
    "logistic": OpBuilder(_unary(_OP.LOGISTIC)),
    "hard_sigmoid": OpBuilder(_emit_hard_sigmoid),
}
"""Op kind -> builder. Add an entry to support a new LayerSpec op."""


def builder_for(spec: LayerSpec) -> OpBuilder:
    """``spec``'s entry in ``BUILDERS``; an op kind without one is refused (SpecError)."""
    try:
        return BUILDERS[spec.op]
    except KeyError:
        raise SpecError(f"{spec.key}: no TFLite builder for op {spec.op!r}") from None


def output_shape(spec: LayerSpec) -> tuple[int, ...]:
    """The TFLite shape of ``spec``'s output tensor: NHWC with batch 1, but ``[1, cout]``
    for a fully-connected layer (``keep_num_dims=False``)."""
    if spec.op == "fully_connected":
        return (1, spec.cout)
    return (1, *spec.output_shape)
