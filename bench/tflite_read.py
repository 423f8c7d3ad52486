"""A converter's .tflite file -> lut_db Network (the inverse of ``bench.tflite_build``).

The flatbuffer is read with the schema that ships with ai-edge-litert
(``ai_edge_litert.schema_py_generated``). Each operator becomes one LayerSpec node, named
after its output tensor; fused activations go into the key's ``act`` field. Ops that cost
nothing at run time (RESHAPE, SQUEEZE, EXPAND_DIMS, DEQUANTIZE of a constant) become no
node: their output is their input, and they are listed in ``ReadResult.free_ops``, as
are ops on constants and static shapes only (SHAPE and the integer arithmetic after it).
``ADD(x, 3, RELU6) -> MUL(1/6)``, Keras' hard_sigmoid once converted, is one
``hard_sigmoid`` node. This module walks the model; each op kind's reader is in
``bench.tflite_op_readers`` (``READERS``).

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

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from bench.tflite_op_readers import READERS, NoLutKey, OpRef, Value
from lut_db.network import INPUT, Network, Node
from lut_db.spec import DTYPES, SpecError, shape_text

__all__ = ["OpRef", "QuantInfo", "QuantizedModel", "ReadResult", "TfliteReadError", "read_file",
           "read_model", "stores_float16"]

OP_NAMES = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES = {v: k.lower() for k, v in vars(tfl.TensorType).items() if not k.startswith("_")}
_NP_TYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32,
             "int64": np.int64, "int8": np.int8, "uint8": np.uint8, "int16": np.int16}
_QUANTIZED = ("int8", "uint8", "int16")  # activation/weight types that need a scale
_ACTIVATIONS = {tfl.ActivationFunctionType.NONE: "none", tfl.ActivationFunctionType.RELU: "relu",
                tfl.ActivationFunctionType.RELU6: "relu6"}
CONTROL_FLOW = ("WHILE", "IF", "CALL_ONCE", "CALL")
FREE = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")


class TfliteReadError(SpecError):
    """A .tflite file that cannot be read into a Network; the message says why."""


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
    try:
        return _read_unpacked(model, data, name, allow_unknown)
    except TfliteReadError:
        raise
    except SpecError as e:  # a layer the file describes that no key can hold
        raise TfliteReadError(str(e)) from None
    # A corrupt file can unpack and still fail wherever the walk first trusts one of its
    # indices or fields: that is the file's fault, said as such, never a traceback.
    except (IndexError, KeyError, TypeError, AttributeError, ValueError, OverflowError,
            UnicodeDecodeError) as e:
        raise TfliteReadError(f"not a consistent TFLite model (a corrupt file?): "
                              f"{type(e).__name__}: {e}") from None


def _read_unpacked(model: tfl.ModelT, data: bytes, name: str, allow_unknown: bool
                   ) -> ReadResult:
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
    """The walk over the model's subgraph; an op reader sees it as a ``Walk``."""

    def __init__(self, model: tfl.ModelT, raw: bytes, codes: list[str],
                 allow_unknown: bool) -> None:
        self.model, self.raw, self.codes = model, raw, codes
        self.graph: tfl.SubGraphT = model.subgraphs[0]
        self.allow_unknown = allow_unknown
        self.tensors: list[tfl.TensorT] = self.graph.tensors or []
        self.values: dict[int, Value] = {}
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

    def ref(self, i: int, op: tfl.OperatorT, note: str = "") -> OpRef:
        """Operator ``op`` at index ``i``, by its op code's name."""
        return OpRef(i, self.codes[op.opcodeIndex], note)

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
            raise NoLutKey(f"needs the value of {self.name(src)!r}, computed at run time")
        buf = self.model.buffers[self.tensors[src].buffer]
        raw = (np.asarray(buf.data, np.uint8).tobytes() if buf.data is not None
               else self.raw[buf.offset:buf.offset + buf.size])
        dtype = _NP_TYPES.get(self.dtype(src))
        if dtype is None:
            raise NoLutKey(f"constant {self.name(src)!r} of type {self.dtype(src)}")
        return np.frombuffer(raw, dtype).astype(_NP_TYPES.get(self.dtype(t), dtype)) \
            .reshape(self.shape(t))

    def shape3(self, t: int, where: OpRef) -> tuple[int, int, int]:
        """A [1, H, W, C] or [1, C] activation as the Network's (H, W, C)."""
        s = self.shape(t)
        if len(s) == 4 and s[0] == 1:
            return (s[1], s[2], s[3])
        if len(s) == 2 and s[0] == 1:
            return (1, 1, s[1])
        raise NoLutKey(f"tensor {self.name(t)!r} has shape {list(s)}; only batch-1 NHWC "
                       "or [1, C] activations have keys")

    def activation(self, t: int, where: OpRef) -> Value:
        """The value an op reads; its TFLite shape must be the producer's shape."""
        value = self.value(t)
        if self.shape3(t, where) != value.shape:
            raise NoLutKey(f"reads {self.name(t)!r} as {shape_text(self.shape3(t, where))} through "
                           f"a reshape of {shape_text(value.shape)}; only fully-connected layers "
                           "flatten for free")
        return value

    def value(self, t: int) -> Value:
        if t in self.consts:
            raise NoLutKey(f"reads the constant {self.name(t)!r} where a tensor is expected")
        if t not in self.values:
            raise NoLutKey(f"reads {self.name(t)!r}, which no op before it writes")
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
        except NoLutKey as e:
            raise TfliteReadError(f"model input: {e}") from None
        self.values[inp] = Value(INPUT, input_shape)
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
        ref = self.ref(i, op)
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
            except NoLutKey as e:
                self._unknown(OpRef(i, ref.op, str(e)), ins, outs)
                return
            note = "no work" if ref.op in FREE else "dtype conversion, not keyed"
            self.result_free.append(OpRef(i, ref.op, note))
            return
        reader = READERS.get(ref.op)
        try:
            if reader is None:
                raise NoLutKey("no key kind for this op")
            spec, sources, out = reader(self, i, op)
            if self.shape3(out, ref) != spec.output_shape:
                raise NoLutKey(f"writes {shape_text(self.shape3(out, ref))} where its key "
                               f"{spec.key} gives {shape_text(spec.output_shape)}")
        except NoLutKey as e:
            self._unknown(OpRef(i, ref.op, str(e)), ins, outs)
            return
        node = self._node_name(out, i)
        self.nodes.append(Node(node, spec, tuple(v.node for v in sources)))
        self.node_ops[node] = i
        self.values[out] = Value(node, spec.output_shape)

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
                except NoLutKey:
                    shape = (1, 1, 1)
                self.values[t] = Value(f"<{ref}>", shape)

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
            raise NoLutKey(f"{dtype} activations have no key")
        return "float16" if dtype == "float32" and self.half else dtype

    def act(self, options: object) -> str:
        fused = getattr(options, "fusedActivationFunction", 0)
        if fused not in _ACTIVATIONS:
            raise NoLutKey(f"fused activation {fused} has no key")
        return _ACTIVATIONS[fused]

    def weight_shape(self, t: int, x: int, where: OpRef) -> tuple[int, ...]:
        """The shape of constant weights ``t`` of an op reading activation ``x``, checked
        against the op's dtype."""
        if t not in self.consts:
            raise NoLutKey(f"weights {self.name(t)!r} are not constant")
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
