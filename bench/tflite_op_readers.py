"""One reader per TFLite op kind (``READERS``: op name -> ``ReadFn``; add an entry, and a
LayerSpec op, to read a new op). Apart from the walk over the model (``bench.tflite_read``),
as ``bench.tflite_ops`` is apart from the writer: the walk knows the file (tensors,
constants, quantization, the ops that cost nothing), a reader one op kind's options.

A reader gets the walk (typed as ``Walk``: the part of it readers use), the op's index and
the operator; it returns the op's LayerSpec, the values it reads (in order) and its output
tensor, or raises ``NoLutKey`` saying why the op, as configured, has no key. What the
readers and the walk share (``OpRef``, ``Value``) lives here, so this module imports
nothing of the walk, which imports ``READERS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from lut_db.spec import LayerSpec, shape_text

__all__ = ["READERS", "NoLutKey", "OpRef", "ReadFn", "Value", "Walk"]

_PADDINGS = {tfl.Padding.SAME: "same", tfl.Padding.VALID: "valid"}


class NoLutKey(Exception):
    """Raised by an op reader: this op (as configured) has no LUT key."""


@dataclass(frozen=True)
class OpRef:
    """One operator of the file: its index in the subgraph, its name and a note."""

    index: int
    op: str
    note: str = ""

    def __str__(self) -> str:
        return f"op #{self.index} {self.op}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Value:
    """What a tensor holds, as the Network sees it: a node (or the input) and its shape."""

    node: str
    shape: tuple[int, int, int]


class Walk(Protocol):
    """What an op reader uses of the walk over the model (``bench.tflite_read._Reader``)."""

    codes: list[str]  # op code index -> op name
    graph: tfl.SubGraphT
    tensors: list[tfl.TensorT]
    consts: set[int]  # tensors known at load
    consumers: dict[int, list[int]]  # tensor -> indices of the ops reading it
    skip: set[int]  # ops read as part of an earlier one
    result_free: list[OpRef]

    def ref(self, i: int, op: tfl.OperatorT, note: str = "") -> OpRef: ...
    def name(self, t: int) -> str: ...
    def shape(self, t: int) -> tuple[int, ...]: ...
    def dtype(self, t: int) -> str: ...
    def const(self, t: int) -> np.ndarray: ...
    def value(self, t: int) -> Value: ...
    def activation(self, t: int, where: OpRef) -> Value: ...
    def weight_shape(self, t: int, x: int, where: OpRef) -> tuple[int, ...]: ...
    def op_dtype(self, t: int, where: OpRef) -> str: ...
    def act(self, options: object) -> str: ...
    def has_bias(self, ins: list[int]) -> bool: ...


# read(walk, op index, operator) -> (spec, source values in order, output tensor)
ReadFn = Callable[[Walk, int, tfl.OperatorT], tuple[LayerSpec, list[Value], int]]


def _read_conv(r: Walk, i: int, op: tfl.OperatorT) -> tuple[LayerSpec, list[Value], int]:
    ref, ins, o = r.ref(i, op), [int(t) for t in op.inputs], op.builtinOptions
    x = r.activation(ins[0], ref)
    h, w, cin = x.shape
    weight = r.weight_shape(ins[1], ins[0], ref)
    depthwise = ref.op == "DEPTHWISE_CONV_2D"
    cout = weight[3] if depthwise else weight[0]
    if not depthwise and weight[3] != cin:
        raise NoLutKey(f"weights {list(weight)} for {cin} input channels (a grouped conv)")
    spec = LayerSpec("depthwise_conv2d" if depthwise else "conv2d", h, w, cin, cout,
                     kernel=(weight[1], weight[2]), stride=(o.strideH, o.strideW),
                     padding=_PADDINGS[o.padding],
                     dilation=(o.dilationHFactor, o.dilationWFactor), act=r.act(o),
                     bias=r.has_bias(ins), dtype=r.op_dtype(ins[0], ref))
    return spec, [x], int(op.outputs[0])


def _read_fully_connected(r: Walk, i: int, op: tfl.OperatorT):
    ref, ins = r.ref(i, op), [int(t) for t in op.inputs]
    weight = r.weight_shape(ins[1], ins[0], ref)
    x = r.value(ins[0])  # FC flattens: any reshape of the producer's output reads the same
    if int(np.prod(x.shape)) != weight[1] or int(np.prod(r.shape(int(op.outputs[0])))) != weight[0]:
        raise NoLutKey(f"input {shape_text(x.shape)} and weights {list(weight)} are not one batch")
    spec = LayerSpec("fully_connected", *x.shape, weight[0], act=r.act(op.builtinOptions),
                     bias=r.has_bias(ins), dtype=r.op_dtype(ins[0], ref))
    return spec, [x], int(op.outputs[0])


def _scalar(r: Walk, t: int) -> float | None:
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


def _read_add(r: Walk, i: int, op: tfl.OperatorT):
    ref, ins, out = r.ref(i, op), [int(t) for t in op.inputs], int(op.outputs[0])
    act = r.act(op.builtinOptions)
    if any(t in r.consts for t in ins):
        try:
            return _read_hard_sigmoid(r, i, op)
        except NoLutKey:
            return _read_scalar_op(r, i, op, "add_scalar")
    a, b = r.activation(ins[0], ref), r.activation(ins[1], ref)
    if a.shape != b.shape:
        raise NoLutKey(f"adds {shape_text(a.shape)} and {shape_text(b.shape)} (broadcasting)")
    return LayerSpec("add", *a.shape, act=act, dtype=r.op_dtype(ins[0], ref)), [a, b], out


def _read_hard_sigmoid(r: Walk, i: int, op: tfl.OperatorT):
    """ADD(x, 3) with RELU6, read only by MUL(., 1/6): one hard_sigmoid node."""
    ref, ins, mid = r.ref(i, op), [int(t) for t in op.inputs], int(op.outputs[0])
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
        raise NoLutKey("not relu6(x + 3) / 6")
    x = r.activation(x_t, ref)
    r.skip.add(users[0])
    r.result_free.append(r.ref(users[0], mul, f"read with op #{i} ADD as hard_sigmoid"))
    return (LayerSpec("hard_sigmoid", *x.shape, dtype=r.op_dtype(x_t, ref)), [x],
            int(mul.outputs[0]))


def _read_scalar_op(r: Walk, i: int, op: tfl.OperatorT, kind: str):
    """ADD / MUL of a tensor and a one-element constant."""
    ref, ins = r.ref(i, op), [int(t) for t in op.inputs]
    x_t, c_t = (ins[0], ins[1]) if ins[1] in r.consts else (ins[1], ins[0])
    if _scalar(r, c_t) is None:
        raise NoLutKey(f"{'adds' if kind == 'add_scalar' else 'multiplies by'} the constant "
                       f"{r.name(c_t)!r} of shape {list(r.shape(c_t))} (only one number has "
                       "a key)")
    x = r.activation(x_t, ref)
    spec = LayerSpec(kind, *x.shape, act=r.act(op.builtinOptions), dtype=r.op_dtype(x_t, ref))
    return spec, [x], int(op.outputs[0])


def _read_mul(r: Walk, i: int, op: tfl.OperatorT):
    ref, ins, out = r.ref(i, op), [int(t) for t in op.inputs], int(op.outputs[0])
    if any(t in r.consts for t in ins):
        return _read_scalar_op(r, i, op, "mul_scalar")
    a, b = r.activation(ins[0], ref), r.activation(ins[1], ref)
    act, dtype = r.act(op.builtinOptions), r.op_dtype(ins[0], ref)
    if a.shape == b.shape:
        return LayerSpec("mul", *a.shape, act=act, dtype=dtype), [a, b], out
    big, small = (a, b) if a.shape[:2] != (1, 1) else (b, a)
    if small.shape == (1, 1, big.shape[2]):  # the squeeze-excite multiply
        return LayerSpec("channel_mul", *big.shape, act=act, dtype=dtype), [big, small], out
    raise NoLutKey(f"multiplies {shape_text(a.shape)} by {shape_text(b.shape)} (broadcasting)")


def _read_pool(r: Walk, i: int, op: tfl.OperatorT):
    ref, o = r.ref(i, op), op.builtinOptions
    x = r.activation(int(op.inputs[0]), ref)
    spec = LayerSpec("avg_pool" if ref.op == "AVERAGE_POOL_2D" else "max_pool", *x.shape,
                     kernel=(o.filterHeight, o.filterWidth), stride=(o.strideH, o.strideW),
                     padding=_PADDINGS[o.padding], act=r.act(o),
                     dtype=r.op_dtype(int(op.inputs[0]), ref))
    return spec, [x], int(op.outputs[0])


def _read_mean(r: Walk, i: int, op: tfl.OperatorT):
    ref, ins = r.ref(i, op), [int(t) for t in op.inputs]
    if len(r.shape(ins[0])) != 4 or ins[1] not in r.consts:
        raise NoLutKey("a mean over other than a 4-D tensor's constant axes")
    axes = sorted(int(a) % 4 for a in r.const(ins[1]).reshape(-1))
    if axes != [1, 2]:
        raise NoLutKey(f"a mean over axes {axes} (only the global pool over H, W has a key)")
    x = r.activation(ins[0], ref)
    return LayerSpec("global_avg_pool", *x.shape, dtype=r.op_dtype(ins[0], ref)), [x], \
        int(op.outputs[0])


def _read_pad(r: Walk, i: int, op: tfl.OperatorT):
    ref, ins = r.ref(i, op), [int(t) for t in op.inputs]
    if ins[1] not in r.consts or len(r.shape(ins[0])) != 4:
        raise NoLutKey("pads other than a 4-D tensor by constant amounts")
    p = r.const(ins[1]).reshape(4, 2).astype(int)
    if len(ins) > 2 and ins[2] >= 0 and _scalar(r, ins[2]) != 0.0:
        raise NoLutKey("pads with a value other than 0")
    if p[0].any() or p[3].any():
        raise NoLutKey(f"pads the batch or channel axis ({p.tolist()})")
    x = r.activation(ins[0], ref)
    spec = LayerSpec("pad", *x.shape, pads=(p[1][0], p[1][1], p[2][0], p[2][1]),
                     dtype=r.op_dtype(ins[0], ref))
    return spec, [x], int(op.outputs[0])


def _read_concat(r: Walk, i: int, op: tfl.OperatorT):
    ref, ins = r.ref(i, op), [int(t) for t in op.inputs]
    rank = len(r.shape(ins[0]))
    if op.builtinOptions.axis % rank != rank - 1:
        raise NoLutKey(f"concatenates along axis {op.builtinOptions.axis} (only channels)")
    if r.act(op.builtinOptions) != "none":
        raise NoLutKey("a fused activation, which TFLite's kernel refuses")
    xs = [r.activation(t, ref) for t in ins]
    if len({x.shape[:2] for x in xs}) != 1 or len(xs) < 2:
        raise NoLutKey("inputs of different sizes")
    parts = tuple(x.shape[2] for x in xs)
    spec = LayerSpec("concat", *xs[0].shape[:2], sum(parts), parts=parts,
                     dtype=r.op_dtype(ins[0], ref))
    return spec, xs, int(op.outputs[0])


def _unary(kind: str) -> ReadFn:
    def read(r: Walk, i: int, op: tfl.OperatorT):
        ref, t = r.ref(i, op), int(op.inputs[0])
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
