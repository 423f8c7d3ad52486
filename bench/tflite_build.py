"""LayerSpec / Network -> .tflite bytes, without TensorFlow.

The flatbuffer is written directly with the schema that ships with ai-edge-litert
(``ai_edge_litert.schema_py_generated``, object API). The TF converter costs ~5 s to
import and ~0.4 s per single-layer model; this costs about a millisecond.

- ``build_layer(spec)``: one layer alone. Inputs ``input`` (and ``input_b``, ... for ops
  reading several tensors: a residual add reads both operands from memory), output
  ``output``.
- ``build_network(net)``: the whole DAG. Input ``input``, outputs named after the
  ``net.outputs`` nodes.

Every model carries a ``serving_default`` SignatureDef, so signature-based tools
(``litert-benchmark``, ``Interpreter.get_signature_runner``) can run it.

Weights are deterministic random (seeded numpy PCG64), variance-preserving: He-scaled
before a ReLU/ReLU6, LeCun-scaled before a linear output (uniform, as torch's default
init), so deep chains neither explode nor vanish. In a network each node's seed is
``node_seed(seed, name)`` (crc32, not Python's salted ``hash``).

A conv or depthwise layer without bias still gets a (zero) bias tensor: TFLite's
builtin kernels require one, as the TF converter knows (see ``_weight_inputs``).

Tensor layouts are TFLite's: NHWC activations, conv weights OHWI ``[cout, kh, kw, cin]``,
depthwise weights ``[1, kh, kw, cout]``, fully-connected weights ``[cout, h*w*cin]``
(the input flattened in NHWC order). A fully-connected output is ``[1, cout]``
(``keep_num_dims=False``); where a consumer other than another fully-connected layer
reads it, a RESHAPE to ``[1, 1, 1, cout]`` is inserted (the shape LayerSpec says).

``dt=int8`` layers are full-integer quantized as the TF converter writes them: int8
activations quantized per tensor, int8 weights per output channel (symmetric, scale from
each channel's largest weight), int32 biases at input scale x weight scale, and int8 model
inputs and outputs (no QUANTIZE/DEQUANTIZE: the LUT times the int8 op alone). With no
calibration data, activation ranges are assumed from the fused activation
(``ACT_RANGE``; the weights keep activations near unit variance); with it
(``build_network(ranges=...)``, a trained model's: ``adapter.quantize``) they are the
observed min/max; either way ops whose int8 kernels
need it keep their input's quantization (pools, pad, concat, MEAN) or take the fixed
output quantization TFLite requires (softmax, logistic: 1/256, zero point -128).

``dt=float16`` layers are written as the TF converter's float16 quantization writes them
(checked against TF 2.21's output): weights and biases as FLOAT16 constants, each behind
a DEQUANTIZE (version 3) to float32, those DEQUANTIZEs first in the graph; activations
float32; and the model metadata ``reduced_precision_support = fp16accfp32`` (fp16
weights, fp32 accumulation). The GPU delegate runs such a model in half precision;
XNNPACK only when forced to (it reads fp16 accumulation from that metadata as not
allowed); on this machine's CPU it dequantizes the weights once, at load.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from bench.tflite_quant import (
    ACT_RANGE,
    INPUT_QUANT,
    Quant,
    activation_quants,
    output_quant,
    weight_quant,
)
from lut_db.spec import INPUT, LayerSpec, Network, SpecError

__all__ = [
    "BUILDERS",
    "OpBuilder",
    "build_layer",
    "build_network",
    "layer_weights",
    "network_weights",
    "node_seed",
]

SIGNATURE_KEY = "serving_default"
_BUFFER_ALIGN = 16  # what the TF converter uses; lets kernels read weights in place
_PADDING = {"same": tfl.Padding.SAME, "valid": tfl.Padding.VALID}
_ACTIVATION = {
    "none": tfl.ActivationFunctionType.NONE,
    "relu": tfl.ActivationFunctionType.RELU,
    "relu6": tfl.ActivationFunctionType.RELU6,
}
_OP = tfl.BuiltinOperator
_OPTIONS = tfl.BuiltinOptions
_INT8 = tfl.TensorType.INT8
_DEQUANTIZE_FP16_VERSION = 3  # what the converter writes for a float16 -> float32 DEQUANTIZE
REDUCED_PRECISION = ("reduced_precision_support", b"fp16accfp32")  # the converter's metadata
# Op versions the TF converter writes for int8 kernels (a version range the resolver checks).
_INT8_VERSION = {_OP.CONV_2D: 3, _OP.DEPTHWISE_CONV_2D: 3, _OP.FULLY_CONNECTED: 4,
                 **dict.fromkeys((_OP.ADD, _OP.MUL, _OP.MEAN, _OP.SOFTMAX, _OP.LOGISTIC,
                                  _OP.AVERAGE_POOL_2D, _OP.MAX_POOL_2D, _OP.CONCATENATION,
                                  _OP.PAD, _OP.QUANTIZE), 2)}


# -- the graph under construction ---------------------------------------------------------


class _Graph:
    """Tensors, constant buffers, op codes and operators of one subgraph."""

    def __init__(self) -> None:
        self.buffers: list[tfl.BufferT] = [tfl.BufferT()]  # buffer 0: the empty sentinel
        self.consts: dict[int, np.ndarray] = {}  # buffer index -> payload
        self.tensors: list[tfl.TensorT] = []
        self.shapes: list[tuple[int, ...]] = []
        self.quants: list[Quant | None] = []
        self.operators: list[tfl.OperatorT] = []
        self.dequantize: list[tfl.OperatorT] = []  # float16 weights' DEQUANTIZEs, run first
        self.opcodes: dict[tuple[int, int], int] = {}  # (builtin code, version) -> index
        self._as_4d: dict[int, int] = {}

    def tensor(self, name: str, shape: Sequence[int], dtype: int = tfl.TensorType.FLOAT32,
               data: np.ndarray | None = None, quant: Quant | None = None) -> int:
        """Add a tensor (a constant when ``data`` is given); return its index."""
        buffer = 0
        if data is not None:
            buffer = len(self.buffers)
            self.buffers.append(tfl.BufferT())
            self.consts[buffer] = data
        shape = tuple(int(v) for v in shape)
        self.tensors.append(tfl.TensorT(shape=list(shape), type=dtype, buffer=buffer, name=name,
                                        quantization=quant.params() if quant else None))
        self.shapes.append(shape)
        self.quants.append(quant)
        return len(self.tensors) - 1

    def activation(self, name: str, shape: Sequence[int], quant: Quant | None) -> int:
        """A float32 activation tensor, or an int8 one when ``quant`` is given."""
        return self.tensor(name, shape, _INT8 if quant else tfl.TensorType.FLOAT32, quant=quant)

    def const(self, name: str, array: np.ndarray, quant: Quant | None = None) -> int:
        dtype = {np.dtype(np.float32): tfl.TensorType.FLOAT32,
                 np.dtype(np.float16): tfl.TensorType.FLOAT16,
                 np.dtype(np.int32): tfl.TensorType.INT32,
                 np.dtype(np.int8): _INT8}[array.dtype]
        return self.tensor(name, array.shape, dtype, np.ascontiguousarray(array), quant)

    def half(self, name: str, array: np.ndarray) -> int:
        """A float16 constant of ``array`` dequantized to float32 (the float32 tensor)."""
        stored = self.const(f"{name}/fp16", array.astype(np.float16))
        out = self.tensor(name, array.shape)
        self.op(_OP.DEQUANTIZE, [stored], [out], version=_DEQUANTIZE_FP16_VERSION)
        self.dequantize.append(self.operators.pop())
        return out

    def scalar(self, name: str, value: float, int8: bool) -> int:
        """A 0-d constant; int8 at a scale that represents ``value`` exactly (q = +-127/-128)."""
        if not int8:
            return self.const(name, np.array(value, np.float32))
        quant = Quant.of_range(min(value, 0.0), max(value, 0.0))
        return self.const(name, quant.quantize(np.array(value)), quant)

    def requantize(self, tensor: int, quant: Quant) -> int:
        """``tensor`` at ``quant``: itself, or a QUANTIZE of it (int8 to int8)."""
        if self.quants[tensor] in (None, quant):
            return tensor
        out = self.activation(f"{self.tensors[tensor].name}/requant", self.shapes[tensor], quant)
        self.op(_OP.QUANTIZE, [tensor], [out])
        return out

    def op(self, code: int, inputs: Sequence[int], outputs: Sequence[int],
           options_type: int = 0, options: object = None, version: int = 1) -> None:
        if inputs and self.tensors[inputs[0]].type == _INT8:
            version = max(version, _INT8_VERSION.get(code, version))
        index = self.opcodes.setdefault((code, version), len(self.opcodes))
        self.operators.append(tfl.OperatorT(
            opcodeIndex=index, inputs=list(inputs), outputs=list(outputs),
            builtinOptionsType=options_type, builtinOptions=options,
        ))

    def as_4d(self, tensor: int) -> int:
        """``tensor`` itself if 4-D, else a (cached) RESHAPE of it to [1, 1, 1, C]."""
        shape = self.shapes[tensor]
        if len(shape) == 4:
            return tensor
        if tensor not in self._as_4d:
            name = f"{self.tensors[tensor].name}/4d"
            new_shape = [1, 1, 1, shape[-1]]
            target = self.const(f"{name}/shape", np.array(new_shape, np.int32))
            out = self.activation(name, new_shape, self.quants[tensor])
            self.op(_OP.RESHAPE, [tensor, target], [out], _OPTIONS.ReshapeOptions,
                    tfl.ReshapeOptionsT(newShape=new_shape))
            self._as_4d[tensor] = out
        return self._as_4d[tensor]

    def finish(self, inputs: Mapping[str, int], outputs: Mapping[str, int],
               description: str) -> bytes:
        """Serialise as a TFLite model with a ``serving_default`` signature."""
        def tensor_maps(named: Mapping[str, int]) -> list[tfl.TensorMapT]:
            return [tfl.TensorMapT(name=n, tensorIndex=i) for n, i in named.items()]

        metadata = []
        if self.dequantize:
            name, value = REDUCED_PRECISION
            metadata.append(tfl.MetadataT(name=name, buffer=len(self.buffers)))
            self.buffers.append(tfl.BufferT())
            self.consts[metadata[0].buffer] = np.frombuffer(value, np.uint8)
        payload = sum(a.nbytes for a in self.consts.values())
        builder = flatbuffers.Builder(payload + 1024 + 256 * len(self.tensors))
        buffers = self._pack_buffers(builder)
        subgraph = tfl.SubGraphT(
            tensors=self.tensors, inputs=list(inputs.values()), outputs=list(outputs.values()),
            operators=self.dequantize + self.operators, name="main",
        )
        model = tfl.ModelT(
            version=3,
            operatorCodes=[
                tfl.OperatorCodeT(deprecatedBuiltinCode=min(code, 127), builtinCode=code,
                                  version=version)
                for (code, version) in self.opcodes  # dicts keep insertion (= index) order
            ],
            subgraphs=[subgraph],
            description=description,
            metadata=metadata or None,
            buffers=buffers,
            signatureDefs=[tfl.SignatureDefT(
                inputs=tensor_maps(inputs), outputs=tensor_maps(outputs),
                signatureKey=SIGNATURE_KEY, subgraphIndex=0,
            )],
        )
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(memoryview(builder.Bytes)[builder.Head():])  # Output() copies twice

    def _pack_buffers(self, builder: flatbuffers.Builder) -> list:
        """Serialise the constants' buffers ahead of Pack, 16-byte aligned, one copy each.

        BufferT.Pack would align an array only to its own itemsize.
        """
        buffers: list = list(self.buffers)
        for index, array in self.consts.items():
            raw = memoryview(np.ascontiguousarray(array, array.dtype.newbyteorder("<"))).cast("B")
            # A ubyte vector whose data starts on the boundary; one copy, straight into the
            # builder (CreateNumpyVector would copy three times).
            builder.StartVector(1, raw.nbytes, _BUFFER_ALIGN)
            builder.head -= raw.nbytes
            builder.Bytes[builder.head:builder.head + raw.nbytes] = raw
            data = builder.EndVector()
            tfl.BufferStart(builder)
            tfl.BufferAddData(builder, data)
            buffers[index] = _Packed(tfl.BufferEnd(builder))
        return buffers


class _Packed:
    """An already-serialised table that the object API's Pack() passes through."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def Pack(self, builder: flatbuffers.Builder) -> int:  # the object API calls Pack()
        return self.offset


# -- weights ------------------------------------------------------------------------------


def node_seed(seed: int, name: str) -> int:
    """The weight seed of network node ``name``: stable across processes and platforms."""
    return zlib.crc32(f"{seed}:{name}".encode())


def layer_weights(spec: LayerSpec, seed: int) -> dict[str, np.ndarray]:
    """Deterministic random ``weight`` (TFLite layout) and ``bias`` of one layer.

    Empty for ops without weights; no ``bias`` when ``spec.bias`` is False.
    """
    shape_of = BUILDERS[spec.op].weight_shape
    if shape_of is None:
        return {}
    rng = np.random.default_rng(seed)
    shape = shape_of(spec)
    fan_in = int(np.prod(shape)) // spec.cout
    gain = 1.0 if spec.act == "none" else 2.0  # LeCun before linear, He before ReLU
    # Uniform with the same variance as He/LeCun-normal: 5x faster to draw than normals,
    # which matters when a sweep builds thousands of models.
    out = {"weight": _uniform(rng, shape, np.sqrt(3.0 * gain / fan_in))}
    if spec.bias:
        out["bias"] = _uniform(rng, (spec.cout,), 0.1)
    return out


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], limit: float) -> np.ndarray:
    """float32 samples of U(-limit, limit), drawn and scaled in place."""
    x = rng.random(shape, dtype=np.float32)
    x *= np.float32(2.0 * limit)
    x -= np.float32(limit)
    return x


def network_weights(net: Network, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """``layer_weights`` of every node, seeded per node by ``node_seed(seed, name)``."""
    return {n.name: layer_weights(n.spec, node_seed(seed, n.name)) for n in net.nodes}


# -- one op per LayerSpec kind --------------------------------------------------------------

# emit(graph, spec, input tensors, output tensor, weights, name prefix for constants)
EmitFn = Callable[[_Graph, LayerSpec, list[int], int, Mapping[str, np.ndarray], str], None]


@dataclass(frozen=True)
class OpBuilder:
    """How one LayerSpec op becomes TFLite operators.

    ``weight_shape`` gives the weight tensor's TFLite shape (None: the op has no
    weights). The activation inputs are ``LayerSpec.input_shapes``.
    """

    emit: EmitFn
    weight_shape: Callable[[LayerSpec], tuple[int, ...]] | None = None


def _weight_inputs(g: _Graph, spec: LayerSpec, w: Mapping[str, np.ndarray], prefix: str,
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


def _int8_weight_inputs(g: _Graph, spec: LayerSpec, w: Mapping[str, np.ndarray], prefix: str,
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


def _builder(spec: LayerSpec) -> OpBuilder:
    try:
        return BUILDERS[spec.op]
    except KeyError:
        raise SpecError(f"{spec.key}: no TFLite builder for op {spec.op!r}") from None


def _output_shape(spec: LayerSpec) -> tuple[int, ...]:
    if spec.op == "fully_connected":
        return (1, spec.cout)
    return (1, *spec.output_shape)


def _checked(net: Network, weights: Mapping[str, Mapping[str, np.ndarray]]
             ) -> dict[str, Mapping[str, np.ndarray]]:
    """Given weights, refused (SpecError) unless they have the shapes the nodes' specs say."""
    specs = {n.name: n.spec for n in net.nodes}
    for name, w in weights.items():
        if name not in specs:
            raise SpecError(f"weights given for {name!r}, which is not a node of {net.name}")
        spec = specs[name]
        shape_of = _builder(spec).weight_shape
        want = {"weight": shape_of(spec)} if shape_of else {}
        if spec.bias and want:
            want["bias"] = (spec.cout,)
        got = {k: tuple(np.shape(v)) for k, v in w.items()}
        if got != want or any(np.asarray(v).dtype != np.float32 for v in w.values()):
            raise SpecError(f"node {name} ({spec.key}): weights {got} given, float32 {want} "
                            "expected")
    return dict(weights)


# -- public builders --------------------------------------------------------------------------


def _layer_input_names(n: int) -> list[str]:
    """``input``, ``input_b``, ``input_c``, ...: one per activation input of a layer model."""
    return ["input"] + [f"input_{chr(ord('a') + i)}" for i in range(1, n)]


def build_layer(spec: LayerSpec, seed: int = 0) -> bytes:
    """A standalone model of one layer: inputs ``input`` (+ ``input_b``, ... for ops reading
    several tensors), output ``output``."""
    op = _builder(spec)
    g = _Graph()
    shapes = spec.input_shapes
    in_quant = INPUT_QUANT if spec.dtype == "int8" else None
    inputs = {n: g.activation(n, (1, *shape), in_quant)
              for n, shape in zip(_layer_input_names(len(shapes)), shapes)}
    out = g.activation("output", _output_shape(spec), in_quant and output_quant(spec, in_quant))
    op.emit(g, spec, list(inputs.values()), out, layer_weights(spec, seed), "layer")
    return g.finish(inputs, {"output": out}, description=spec.key)


def build_network(net: Network, seed: int = 0,
                  weights: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                  ranges: Mapping[str, tuple[float, float]] | None = None) -> bytes:
    """The whole DAG as one model: input ``input``, one output per ``net.outputs`` node.

    ``weights`` (node -> ``weight``/``bias`` in TFLite layout, float32; e.g. a trained
    model's) replace the seeded random ones for the nodes it names. ``ranges`` (int8: node
    or ``input`` -> the (min, max) calibration saw) replace the assumed ``ACT_RANGE``s;
    ops whose kernels fix their output quantization keep it (``activation_quants``).
    """
    given = _checked(net, weights or {})
    weights = {n.name: given[n.name] if n.name in given
               else layer_weights(n.spec, node_seed(seed, n.name)) for n in net.nodes}
    g = _Graph()
    dtypes = {n.spec.dtype for n in net.nodes}
    if len(dtypes) > 1:
        raise SpecError(f"network {net.name!r} mixes dtypes {sorted(dtypes)}: one model runs one")
    int8 = dtypes == {"int8"}
    quants = activation_quants(net, ranges) if int8 else {}
    tensors = {INPUT: g.activation(INPUT, (1, *net.input_shape), quants.get(INPUT))}
    for node in net.nodes:
        op = _builder(node.spec)
        ins = [tensors[src] for src in node.inputs]
        if node.spec.op != "fully_connected":  # everything else reads NHWC
            ins = [g.as_4d(t) for t in ins]
        tensors[node.name] = g.activation(node.name, _output_shape(node.spec),
                                          quants.get(node.name))
        op.emit(g, node.spec, ins, tensors[node.name], weights[node.name], node.name)
    outputs = {name: tensors[name] for name in dict.fromkeys(net.outputs)}
    return g.finish({INPUT: tensors[INPUT]}, outputs, description=net.name)
