"""A converter's .tflite file -> lut_db Network (the inverse of ``bench.tflite_build``).

The flatbuffer is read with the schema that ships with ai-edge-litert
(``ai_edge_litert.schema_py_generated``). Each operator becomes one LayerSpec node, named
after its output tensor; fused activations go into the key's ``act`` field. Ops that cost
nothing at run time (RESHAPE, SQUEEZE, EXPAND_DIMS, DEQUANTIZE of a constant) become no
node: their output is their input, and they are listed in ``ReadResult.free_ops``, as
are ops on constants and static shapes only (SHAPE and the integer arithmetic after it).
``ADD(x, 3, RELU6) -> MUL(1/6)``, Keras' hard_sigmoid once converted, is one
``hard_sigmoid`` node.

A layer with a bias tensor reads back as ``bias=1``, whatever its values. The builder
writes a conv of ``bias=0`` with a zero bias (TFLite's kernels need one), so such a conv
reads back as ``bias=1``: the same model, doing the same work.

Quantization parameters (per tensor or per channel) are read and checked. An op whose
activations are int8 (full-integer, the TF converter's scheme) gets a ``dt=int8`` key; its
weights must be int8 too. QUANTIZE and DEQUANTIZE (float to int8 at the model's input,
back at its output) are listed as dtype conversions without keys. A model whose weights
are stored as float16 (the converter's float16 quantization: FLOAT16 constants behind
DEQUANTIZE) runs in half precision where the runtime does (the GPU delegate; XNNPACK
when forced): all its float ops get ``dt=float16`` keys. uint8 and int16
activations have no keys (``QuantizedModel``), nor have float ops on int8 weights
(dynamic-range quantization).

Errors (``TfliteReadError``, a SpecError) each say what is wrong: not a flatbuffer, not a
TFLite model, several subgraphs or control flow, dynamic shapes (other than a -1 batch,
which the file's batch-1 shape fixes), an op the reader does
not know (named, with its index), a quantized tensor without a scale.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from lut_db.spec import DTYPES, INPUT, LayerSpec, Network, Node, SpecError

__all__ = ["OpRef", "QuantInfo", "QuantizedModel", "ReadResult", "TfliteReadError", "read_file",
           "read_model", "stores_float16"]

OP_NAMES = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES = {v: k.lower() for k, v in vars(tfl.TensorType).items() if not k.startswith("_")}
_NP_TYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32,
             "int64": np.int64, "int8": np.int8, "uint8": np.uint8, "int16": np.int16}
_QUANTIZED = ("int8", "uint8", "int16")  # activation/weight types that need a scale
_ACTIVATIONS = {tfl.ActivationFunctionType.NONE: "none", tfl.ActivationFunctionType.RELU: "relu",
                tfl.ActivationFunctionType.RELU6: "relu6"}
_PADDINGS = {tfl.Padding.SAME: "same", tfl.Padding.VALID: "valid"}
CONTROL_FLOW = ("WHILE", "IF", "CALL_ONCE", "CALL")
FREE = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")


class TfliteReadError(SpecError):
    """A .tflite file that cannot be read into a Network; the message says why."""


@dataclass(frozen=True)
class OpRef:
    """One operator of the file: its index in the subgraph, its name and a note."""

    index: int
    op: str
    note: str = ""

    def __str__(self) -> str:
        return f"op #{self.index} {self.op}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class QuantInfo:
    """A quantized tensor: per-tensor (one scale) or per-channel (one per ``axis`` index)."""

    tensor: str
    dtype: str
    scales: int
    axis: int

    @property
    def per_channel(self) -> bool:
        return self.scales > 1


@dataclass
class ReadResult:
    """The network, the ops that cost nothing, and (``allow_unknown``) ops left out."""

    network: Network
    free_ops: list[OpRef] = field(default_factory=list)
    unknown_ops: list[OpRef] = field(default_factory=list)
    quantization: list[QuantInfo] = field(default_factory=list)
    node_ops: dict[str, int] = field(default_factory=dict)  # node name -> op index


class QuantizedModel(TfliteReadError):
    """The model runs quantized ops of a scheme the LUT has no keys for (uint8, int16)."""

    def __init__(self, message: str, quantization: list[QuantInfo]) -> None:
        super().__init__(message)
        self.quantization = quantization


class _Unknown(Exception):
    """Raised by an op reader: this op (as configured) has no LUT key."""


@dataclass(frozen=True)
class _Value:
    """What a tensor holds, as the Network sees it: a node (or the input) and its shape."""

    node: str
    shape: tuple[int, int, int]


# -- the file -----------------------------------------------------------------------------


def read_file(path: str | Path, allow_unknown: bool = False) -> ReadResult:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TfliteReadError(f"cannot read model file {path}: {e.strerror}") from None
    try:
        return read_model(data, name=path.stem, allow_unknown=allow_unknown)
    except TfliteReadError as e:
        e.args = (f"{path}: {e}",)  # the same error (and class) naming the file
        raise


def read_model(data: bytes, name: str = "model", allow_unknown: bool = False) -> ReadResult:
    """Read a .tflite model into a Network.

    Ops without a key raise TfliteReadError naming each one; with ``allow_unknown`` those
    that keep their input's shape are passed through (not counted) and listed instead.
    """
    model = _unpack(data)
    if len(model.subgraphs or []) == 0:
        raise TfliteReadError("the model has no subgraph")
    codes = [_op_name(c) for c in model.operatorCodes or []]
    graph = model.subgraphs[0]
    for i, op in enumerate(graph.operators or []):
        if codes[op.opcodeIndex] in CONTROL_FLOW:
            raise TfliteReadError(f"op #{i} {codes[op.opcodeIndex]} is control flow; only "
                                  "straight-line models can be read")
    if len(model.subgraphs) > 1:
        raise TfliteReadError(f"the model has {len(model.subgraphs)} subgraphs; only "
                              "single-subgraph models can be read")
    return _Reader(model, data, codes, allow_unknown).read(name)


def stores_float16(data: bytes) -> bool:
    """Whether a .tflite model keeps float16 constants (the converter's float16
    quantization), read lazily: no unpacking. False for anything that is not a model."""
    try:
        model = tfl.Model.GetRootAs(data, 0)
        graphs = [model.Subgraphs(i) for i in range(model.SubgraphsLength())]
        return any(g.Tensors(i).Type() == tfl.TensorType.FLOAT16
                   for g in graphs for i in range(g.TensorsLength()))
    except (IndexError, struct.error, TypeError, ValueError):
        return False


def _unpack(data: bytes) -> tfl.ModelT:
    if len(data) < 8:
        raise TfliteReadError(f"not a flatbuffer: {len(data)} bytes")
    root = struct.unpack_from("<I", data, 0)[0]
    if root < 8 or root + 4 > len(data):
        raise TfliteReadError("not a flatbuffer: its root offset points outside the file")
    if not tfl.Model.ModelBufferHasIdentifier(data, 0):
        raise TfliteReadError(f"not a TFLite model: file identifier {bytes(data[4:8])!r}, "
                              "expected b'TFL3'")
    try:
        return tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(data, 0))
    # A corrupt table fails wherever the generated code first reads past it.
    except (struct.error, IndexError, ValueError, TypeError, OverflowError, AttributeError) as e:
        raise TfliteReadError(f"not a valid TFLite flatbuffer: {type(e).__name__}: {e}") from None


def _op_name(code: tfl.OperatorCodeT) -> str:
    # The schema's rule: the larger of the deprecated (int8) and the new field.
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == tfl.BuiltinOperator.CUSTOM:
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        return f"CUSTOM({custom})"
    return OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


# -- reading one subgraph -----------------------------------------------------------------


class _Reader:
    def __init__(self, model: tfl.ModelT, raw: bytes, codes: list[str],
                 allow_unknown: bool) -> None:
        self.model, self.raw, self.codes = model, raw, codes
        self.graph: tfl.SubGraphT = model.subgraphs[0]
        self.allow_unknown = allow_unknown
        self.tensors: list[tfl.TensorT] = self.graph.tensors or []
        self.values: dict[int, _Value] = {}
        self.consts: set[int] = {i for i, t in enumerate(self.tensors) if self._has_data(t)}
        # float16 weights: the whole model is a float16 model (the converter converts all)
        self.half = any(self.tensors[i].type == tfl.TensorType.FLOAT16 for i in self.consts)
        self.folded: dict[int, int] = {}  # constant computed at load -> the constant it reads
        self.nodes: list[Node] = []
        self.names: set[str] = {INPUT}
        self.result_free: list[OpRef] = []
        self.unknown: list[OpRef] = []
        self.node_ops: dict[str, int] = {}
        self.skip: set[int] = set()  # ops already read as part of an earlier one
        self.consumers: dict[int, list[int]] = {}
        for i, op in enumerate(self.graph.operators or []):
            for t in op.inputs:
                self.consumers.setdefault(int(t), []).append(i)

    # -- tensors ----------------------------------------------------------------------------
    def _has_data(self, t: tfl.TensorT) -> bool:
        buf = (self.model.buffers or [])[t.buffer] if t.buffer else None
        return buf is not None and (buf.data is not None and len(buf.data) > 0 or buf.offset > 1)

    def name(self, t: int) -> str:
        raw = self.tensors[t].name
        return raw.decode() if isinstance(raw, bytes) else (raw or f"tensor{t}")

    def shape(self, t: int) -> tuple[int, ...]:
        return tuple(int(v) for v in (self.tensors[t].shape if self.tensors[t].shape is not None
                                      else ()))

    def dtype(self, t: int) -> str:
        return TYPE_NAMES.get(self.tensors[t].type, str(self.tensors[t].type))

    def const(self, t: int) -> np.ndarray:
        """The value of a constant tensor (of a DEQUANTIZE or RESHAPE of one: its source's)."""
        src = t
        while src in self.folded:
            src = self.folded[src]
        if not self._has_data(self.tensors[src]):
            raise _Unknown(f"needs the value of {self.name(src)!r}, computed at run time")
        buf = self.model.buffers[self.tensors[src].buffer]
        raw = (np.asarray(buf.data, np.uint8).tobytes() if buf.data is not None
               else self.raw[buf.offset:buf.offset + buf.size])
        dtype = _NP_TYPES.get(self.dtype(src))
        if dtype is None:
            raise _Unknown(f"constant {self.name(src)!r} of type {self.dtype(src)}")
        return np.frombuffer(raw, dtype).astype(_NP_TYPES.get(self.dtype(t), dtype)) \
            .reshape(self.shape(t))

    def shape3(self, t: int, where: OpRef) -> tuple[int, int, int]:
        """A [1, H, W, C] or [1, C] activation as the Network's (H, W, C)."""
        s = self.shape(t)
        if len(s) == 4 and s[0] == 1:
            return (s[1], s[2], s[3])
        if len(s) == 2 and s[0] == 1:
            return (1, 1, s[1])
        raise _Unknown(f"tensor {self.name(t)!r} has shape {list(s)}; only batch-1 NHWC "
                       "or [1, C] activations have keys")

    def activation(self, t: int, where: OpRef) -> _Value:
        """The value an op reads; its TFLite shape must be the producer's shape."""
        value = self.value(t)
        if self.shape3(t, where) != value.shape:
            raise _Unknown(f"reads {self.name(t)!r} as {_fmt(self.shape3(t, where))} through "
                           f"a reshape of {_fmt(value.shape)}; only fully-connected layers "
                           "flatten for free")
        return value

    def value(self, t: int) -> _Value:
        if t in self.consts:
            raise _Unknown(f"reads the constant {self.name(t)!r} where a tensor is expected")
        if t not in self.values:
            raise _Unknown(f"reads {self.name(t)!r}, which no op before it writes")
        return self.values[t]

    # -- the walk ---------------------------------------------------------------------------
    def read(self, name: str) -> ReadResult:
        self._check_tensors()
        self.quant = self._check_quantization()
        inputs = [int(t) for t in self.graph.inputs]
        if len(inputs) != 1:
            raise TfliteReadError(f"the model has {len(inputs)} inputs; one is supported")
        (inp,) = inputs
        try:
            input_shape = self.shape3(inp, OpRef(-1, "input"))
        except _Unknown as e:
            raise TfliteReadError(f"model input: {e}") from None
        self.values[inp] = _Value(INPUT, input_shape)
        for i, op in enumerate(self.graph.operators or []):
            if i not in self.skip:
                self._read_op(i, op)
        if self.unknown and not self.allow_unknown:
            listed = "\n  ".join(str(u) for u in self.unknown)
            raise TfliteReadError(f"{len(self.unknown)} op(s) have no LUT key:\n  {listed}")
        missing = [self.name(int(t)) for t in self.graph.outputs if int(t) not in self.values]
        if missing:
            raise TfliteReadError(f"model output(s) {', '.join(missing)} are not computed from "
                                  "the input")
        outputs = [self.values[int(t)].node for t in self.graph.outputs]
        if INPUT in outputs or not self.nodes:
            raise TfliteReadError("a model output is the model input: nothing to estimate")
        meta = {"source": "tflite", "free_ops": [str(f) for f in self.result_free],
                "unknown_ops": [str(u) for u in self.unknown]}
        net = Network(name, input_shape, tuple(self.nodes), tuple(dict.fromkeys(outputs)),
                      meta=meta)
        return ReadResult(net, self.result_free, self.unknown, self.quant, self.node_ops)

    def _read_op(self, i: int, op: tfl.OperatorT) -> None:
        ref = OpRef(i, self.codes[op.opcodeIndex])
        ins = [int(t) for t in op.inputs]
        outs = [int(t) for t in op.outputs]
        if ref.op == "SHAPE" or all(t in self.consts for t in ins if t >= 0):
            # Constants, or a few integers of static shapes (Keras' dynamic-batch Reshape:
            # SHAPE -> STRIDED_SLICE -> PACK): folded at load, or next to no work.
            self.consts.update(outs)
            if ref.op in ("DEQUANTIZE", *FREE):
                self.folded[outs[0]] = ins[0]
            self.result_free.append(OpRef(i, ref.op, "on constants and static shapes only"))
            return
        if ref.op in (*FREE, "QUANTIZE", "DEQUANTIZE"):
            try:
                self.values[outs[0]] = self.value(ins[0])
            except _Unknown as e:
                self._unknown(OpRef(i, ref.op, str(e)), ins, outs)
                return
            note = "no work" if ref.op in FREE else "dtype conversion, not keyed"
            self.result_free.append(OpRef(i, ref.op, note))
            return
        reader = READERS.get(ref.op)
        try:
            if reader is None:
                raise _Unknown("no key kind for this op")
            spec, sources, out = reader(self, i, op)
            if self.shape3(out, ref) != spec.output_shape:
                raise _Unknown(f"writes {_fmt(self.shape3(out, ref))} where its key "
                               f"{spec.key} gives {_fmt(spec.output_shape)}")
        except _Unknown as e:
            self._unknown(OpRef(i, ref.op, str(e)), ins, outs)
            return
        node = self._node_name(out, i)
        self.nodes.append(Node(node, spec, tuple(v.node for v in sources)))
        self.node_ops[node] = i
        self.values[out] = _Value(node, spec.output_shape)

    def _unknown(self, ref: OpRef, ins: list[int], outs: list[int]) -> None:
        self.unknown.append(ref)
        acts = [t for t in ins if t >= 0 and t not in self.consts and t in self.values]
        if self.allow_unknown and len(acts) == 1 and len(outs) == 1 \
                and self.shape(acts[0]) == self.shape(outs[0]):
            self.values[outs[0]] = self.values[acts[0]]  # passed through, not counted
        elif self.allow_unknown:
            raise TfliteReadError(f"{ref}: has no LUT key and changes its input's shape, so "
                                  "the network cannot be read around it")
        else:  # keep walking, to list every unknown op at once
            for t in outs:
                try:
                    shape = self.shape3(t, ref)
                except _Unknown:
                    shape = (1, 1, 1)
                self.values[t] = _Value(f"<{ref}>", shape)

    def _node_name(self, tensor: int, i: int) -> str:
        base = self.name(tensor) or f"op{i}"
        name, n = base, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    # -- checks -----------------------------------------------------------------------------
    def _check_tensors(self) -> None:
        for i, t in enumerate(self.tensors):
            sig = [int(v) for v in t.shapeSignature] if t.shapeSignature is not None else []
            # A -1 batch is in every converted Keras model; the file's shape (batch 1) runs.
            if any(v < 0 for v in (*sig[1:], *self.shape(i))):
                raise TfliteReadError(f"tensor {self.name(i)!r} has a dynamic shape "
                                      f"{sig or list(self.shape(i))}; only static shapes can be read "
                                      "(convert with a fixed input size and batch 1)")

    def _check_quantization(self) -> list[QuantInfo]:
        """Every quantized tensor has its scales: one, or one per channel of its axis."""
        out = []
        for op_index, op in enumerate(self.graph.operators or []):
            for t in [int(v) for v in (*op.inputs, *op.outputs) if v >= 0]:
                q = self.tensors[t].quantization
                scales = list(q.scale) if q is not None and q.scale is not None else []
                dtype = self.dtype(t)
                if dtype in _QUANTIZED and not scales:
                    raise TfliteReadError(
                        f"op #{op_index} {self.codes[op.opcodeIndex]}: quantized tensor "
                        f"{self.name(t)!r} ({dtype}) has no scale")
                if len(scales) > 1:
                    axis, shape = q.quantizedDimension, self.shape(t)
                    if not 0 <= axis < len(shape) or shape[axis] != len(scales):
                        raise TfliteReadError(
                            f"op #{op_index} {self.codes[op.opcodeIndex]}: tensor "
                            f"{self.name(t)!r} has {len(scales)} scales for axis {axis} "
                            f"of shape {list(shape)}")
                if scales:
                    out.append(QuantInfo(self.name(t), dtype, len(scales),
                                         q.quantizedDimension))
        return list(dict.fromkeys(out))

    def op_dtype(self, t: int, where: OpRef) -> str:
        dtype = self.dtype(t)
        if dtype in _QUANTIZED and dtype not in DTYPES:
            raise QuantizedModel(f"{where} runs in {dtype}: the model is quantized "
                                 f"({_quant_summary(self.quant)}), and only int8 (full-integer) "
                                 "and float32 ops have keys", self.quant)
        if dtype not in DTYPES:
            raise _Unknown(f"{dtype} activations have no key")
        return "float16" if dtype == "float32" and self.half else dtype

    def act(self, options: object) -> str:
        fused = getattr(options, "fusedActivationFunction", 0)
        if fused not in _ACTIVATIONS:
            raise _Unknown(f"fused activation {fused} has no key")
        return _ACTIVATIONS[fused]

    def weight_shape(self, t: int, x: int, where: OpRef) -> tuple[int, ...]:
        """The shape of constant weights ``t`` of an op reading activation ``x``, checked
        against the op's dtype."""
        if t not in self.consts:
            raise _Unknown(f"weights {self.name(t)!r} are not constant")
        quantized, op_dtype = self.dtype(t) in _QUANTIZED, self.op_dtype(x, where)
        if quantized != (op_dtype == "int8"):
            raise QuantizedModel(f"{where}: {self.dtype(t)} weights {self.name(t)!r} with "
                                 f"{op_dtype} activations (dynamic-range quantization) have "
                                 "no key; full-integer int8 and float32 models have keys",
                                 self.quant)
        return self.shape(t)

    def has_bias(self, ins: list[int]) -> bool:
        # Present means bias=1, even all zeros (untrained or BN-folded at its init: a
        # key of bias=0 would split equal layers).
        return len(ins) >= 3 and ins[2] >= 0


def _quant_summary(quant: list[QuantInfo]) -> str:
    per_channel = sum(q.per_channel for q in quant)
    return (f"{len(quant)} quantized tensors, {per_channel} per-channel, "
            f"{len(quant) - per_channel} per-tensor")


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(v) for v in shape)


# -- one reader per op --------------------------------------------------------------------

# read(reader, op index, operator) -> (spec, source values in order, output tensor)
ReadFn = Callable[[_Reader, int, tfl.OperatorT], tuple[LayerSpec, list[_Value], int]]


def _ref(r: _Reader, i: int, op: tfl.OperatorT) -> OpRef:
    return OpRef(i, r.codes[op.opcodeIndex])


def _read_conv(r: _Reader, i: int, op: tfl.OperatorT) -> tuple[LayerSpec, list[_Value], int]:
    ref, ins, o = _ref(r, i, op), [int(t) for t in op.inputs], op.builtinOptions
    x = r.activation(ins[0], ref)
    h, w, cin = x.shape
    weight = r.weight_shape(ins[1], ins[0], ref)
    depthwise = ref.op == "DEPTHWISE_CONV_2D"
    cout = weight[3] if depthwise else weight[0]
    if not depthwise and weight[3] != cin:
        raise _Unknown(f"weights {list(weight)} for {cin} input channels (a grouped conv)")
    spec = LayerSpec("depthwise_conv2d" if depthwise else "conv2d", h, w, cin, cout,
                     kernel=(weight[1], weight[2]), stride=(o.strideH, o.strideW),
                     padding=_PADDINGS[o.padding],
                     dilation=(o.dilationHFactor, o.dilationWFactor), act=r.act(o),
                     bias=r.has_bias(ins), dtype=r.op_dtype(ins[0], ref))
    return spec, [x], int(op.outputs[0])


def _read_fully_connected(r: _Reader, i: int, op: tfl.OperatorT):
    ref, ins = _ref(r, i, op), [int(t) for t in op.inputs]
    weight = r.weight_shape(ins[1], ins[0], ref)
    x = r.value(ins[0])  # FC flattens: any reshape of the producer's output reads the same
    if int(np.prod(x.shape)) != weight[1] or int(np.prod(r.shape(int(op.outputs[0])))) != weight[0]:
        raise _Unknown(f"input {_fmt(x.shape)} and weights {list(weight)} are not one batch")
    spec = LayerSpec("fully_connected", *x.shape, weight[0], act=r.act(op.builtinOptions),
                     bias=r.has_bias(ins), dtype=r.op_dtype(ins[0], ref))
    return spec, [x], int(op.outputs[0])


def _scalar(r: _Reader, t: int) -> float | None:
    """The value of a one-element constant (an int8 one dequantized), else None."""
    if t not in r.consts or r.dtype(t) not in ("float32", "int8"):
        return None
    v = r.const(t)
    if v.size != 1:
        return None
    if r.dtype(t) == "float32":
        return float(v.reshape(-1)[0])
    q = r.tensors[t].quantization
    return (float(v.reshape(-1)[0]) - q.zeroPoint[0]) * q.scale[0]


def _read_add(r: _Reader, i: int, op: tfl.OperatorT):
    ref, ins, out = _ref(r, i, op), [int(t) for t in op.inputs], int(op.outputs[0])
    act = r.act(op.builtinOptions)
    if any(t in r.consts for t in ins):
        try:
            return _read_hard_sigmoid(r, i, op)
        except _Unknown:
            return _read_scalar_op(r, i, op, "add_scalar")
    a, b = r.activation(ins[0], ref), r.activation(ins[1], ref)
    if a.shape != b.shape:
        raise _Unknown(f"adds {_fmt(a.shape)} and {_fmt(b.shape)} (broadcasting)")
    return LayerSpec("add", *a.shape, act=act, dtype=r.op_dtype(ins[0], ref)), [a, b], out


def _read_hard_sigmoid(r: _Reader, i: int, op: tfl.OperatorT):
    """ADD(x, 3) with RELU6, read only by MUL(., 1/6): one hard_sigmoid node."""
    ref, ins, mid = _ref(r, i, op), [int(t) for t in op.inputs], int(op.outputs[0])
    x_t, c_t = (ins[0], ins[1]) if ins[1] in r.consts else (ins[1], ins[0])
    users = r.consumers.get(mid, [])
    mul = r.graph.operators[users[0]] if len(users) == 1 else None
    # int8 constants are exact only to their scale: 1 % is far from any other constant
    ok = (math.isclose(_scalar(r, c_t) or 0, 3.0, rel_tol=0.01)
          and r.act(op.builtinOptions) == "relu6"
          and mul is not None and r.codes[mul.opcodeIndex] == "MUL"
          and mid not in [int(t) for t in r.graph.outputs]
          and r.act(mul.builtinOptions) == "none")
    if ok:
        other = [int(t) for t in mul.inputs if int(t) != mid]
        ok = len(other) == 1 and math.isclose(_scalar(r, other[0]) or 0, 1 / 6, rel_tol=0.01)
    if not ok:
        raise _Unknown("not relu6(x + 3) / 6")
    x = r.activation(x_t, ref)
    r.skip.add(users[0])
    r.result_free.append(OpRef(users[0], "MUL", f"read with op #{i} ADD as hard_sigmoid"))
    return (LayerSpec("hard_sigmoid", *x.shape, dtype=r.op_dtype(x_t, ref)), [x],
            int(mul.outputs[0]))


def _read_scalar_op(r: _Reader, i: int, op: tfl.OperatorT, kind: str):
    """ADD / MUL of a tensor and a one-element constant."""
    ref, ins = _ref(r, i, op), [int(t) for t in op.inputs]
    x_t, c_t = (ins[0], ins[1]) if ins[1] in r.consts else (ins[1], ins[0])
    if _scalar(r, c_t) is None:
        raise _Unknown(f"{'adds' if kind == 'add_scalar' else 'multiplies by'} the constant "
                       f"{r.name(c_t)!r} of shape {list(r.shape(c_t))} (only one number has "
                       "a key)")
    x = r.activation(x_t, ref)
    spec = LayerSpec(kind, *x.shape, act=r.act(op.builtinOptions), dtype=r.op_dtype(x_t, ref))
    return spec, [x], int(op.outputs[0])


def _read_mul(r: _Reader, i: int, op: tfl.OperatorT):
    ref, ins, out = _ref(r, i, op), [int(t) for t in op.inputs], int(op.outputs[0])
    if any(t in r.consts for t in ins):
        return _read_scalar_op(r, i, op, "mul_scalar")
    a, b = r.activation(ins[0], ref), r.activation(ins[1], ref)
    act, dtype = r.act(op.builtinOptions), r.op_dtype(ins[0], ref)
    if a.shape == b.shape:
        return LayerSpec("mul", *a.shape, act=act, dtype=dtype), [a, b], out
    big, small = (a, b) if a.shape[:2] != (1, 1) else (b, a)
    if small.shape == (1, 1, big.shape[2]):  # the squeeze-excite multiply
        return LayerSpec("channel_mul", *big.shape, act=act, dtype=dtype), [big, small], out
    raise _Unknown(f"multiplies {_fmt(a.shape)} by {_fmt(b.shape)} (broadcasting)")


def _read_pool(r: _Reader, i: int, op: tfl.OperatorT):
    ref, o = _ref(r, i, op), op.builtinOptions
    x = r.activation(int(op.inputs[0]), ref)
    spec = LayerSpec("avg_pool" if ref.op == "AVERAGE_POOL_2D" else "max_pool", *x.shape,
                     kernel=(o.filterHeight, o.filterWidth), stride=(o.strideH, o.strideW),
                     padding=_PADDINGS[o.padding], act=r.act(o),
                     dtype=r.op_dtype(int(op.inputs[0]), ref))
    return spec, [x], int(op.outputs[0])


def _read_mean(r: _Reader, i: int, op: tfl.OperatorT):
    ref, ins = _ref(r, i, op), [int(t) for t in op.inputs]
    if len(r.shape(ins[0])) != 4 or ins[1] not in r.consts:
        raise _Unknown("a mean over other than a 4-D tensor's constant axes")
    axes = sorted(int(a) % 4 for a in r.const(ins[1]).reshape(-1))
    if axes != [1, 2]:
        raise _Unknown(f"a mean over axes {axes} (only the global pool over H, W has a key)")
    x = r.activation(ins[0], ref)
    return LayerSpec("global_avg_pool", *x.shape, dtype=r.op_dtype(ins[0], ref)), [x], \
        int(op.outputs[0])


def _read_pad(r: _Reader, i: int, op: tfl.OperatorT):
    ref, ins = _ref(r, i, op), [int(t) for t in op.inputs]
    if ins[1] not in r.consts or len(r.shape(ins[0])) != 4:
        raise _Unknown("pads other than a 4-D tensor by constant amounts")
    p = r.const(ins[1]).reshape(4, 2).astype(int)
    if len(ins) > 2 and ins[2] >= 0 and _scalar(r, ins[2]) != 0.0:
        raise _Unknown("pads with a value other than 0")
    if p[0].any() or p[3].any():
        raise _Unknown(f"pads the batch or channel axis ({p.tolist()})")
    x = r.activation(ins[0], ref)
    spec = LayerSpec("pad", *x.shape, pads=(p[1][0], p[1][1], p[2][0], p[2][1]),
                     dtype=r.op_dtype(ins[0], ref))
    return spec, [x], int(op.outputs[0])


def _read_concat(r: _Reader, i: int, op: tfl.OperatorT):
    ref, ins = _ref(r, i, op), [int(t) for t in op.inputs]
    rank = len(r.shape(ins[0]))
    if op.builtinOptions.axis % rank != rank - 1:
        raise _Unknown(f"concatenates along axis {op.builtinOptions.axis} (only channels)")
    if r.act(op.builtinOptions) != "none":
        raise _Unknown("a fused activation, which TFLite's kernel refuses")
    xs = [r.activation(t, ref) for t in ins]
    if len({x.shape[:2] for x in xs}) != 1 or len(xs) < 2:
        raise _Unknown("inputs of different sizes")
    parts = tuple(x.shape[2] for x in xs)
    spec = LayerSpec("concat", *xs[0].shape[:2], sum(parts), parts=parts,
                     dtype=r.op_dtype(ins[0], ref))
    return spec, xs, int(op.outputs[0])


def _unary(kind: str) -> ReadFn:
    def read(r: _Reader, i: int, op: tfl.OperatorT):
        ref, t = _ref(r, i, op), int(op.inputs[0])
        x = r.activation(t, ref)
        return LayerSpec(kind, *x.shape, dtype=r.op_dtype(t, ref)), [x], int(op.outputs[0])
    return read


READERS: dict[str, ReadFn] = {
    "CONV_2D": _read_conv,
    "DEPTHWISE_CONV_2D": _read_conv,
    "FULLY_CONNECTED": _read_fully_connected,
    "ADD": _read_add,
    "MUL": _read_mul,
    "AVERAGE_POOL_2D": _read_pool,
    "MAX_POOL_2D": _read_pool,
    "MEAN": _read_mean,
    "PAD": _read_pad,
    "PADV2": _read_pad,
    "CONCATENATION": _read_concat,
    "SOFTMAX": _unary("softmax"),
    "HARD_SWISH": _unary("hard_swish"),
    "LOGISTIC": _unary("logistic"),
}
"""TFLite op name -> reader. Add an entry (and a LayerSpec op) to read a new op."""
