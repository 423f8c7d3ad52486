"""The LUT key vocabulary: LayerSpec, one layer's shape (lut_db.network holds a DAG of them).

A LayerSpec's canonical string is the primary key of the look-up table, e.g.
``conv2d:in=112x112x32,out=64,k=1x1,s=1x1,pad=same,act=relu6,dt=float32``,
``concat:in=8x8x96,parts=32+64,dt=float32`` or
``pad:in=224x224x3,pads=0x1x0x1,dt=float32`` (top, bottom, left, right).
Fields at their default (dilation 1x1, bias on) are left out of the string, so
one spec has exactly one key and parsing the key gives back an equal spec.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from lut_db.errors import UserError

OPS = (
    "conv2d",
    "depthwise_conv2d",
    "fully_connected",
    "add",
    "avg_pool",
    "max_pool",
    "global_avg_pool",
    "mul",
    "channel_mul",
    "add_scalar",
    "mul_scalar",
    "concat",
    "pad",
    "softmax",
    "hard_swish",
    "hard_sigmoid",
    "logistic",
)
ACTIVATIONS = ("none", "relu", "relu6")
PADDINGS = ("same", "valid")
# int8: full-integer quantized, the TF converter's scheme (int8 activations per tensor,
# int8 weights per channel, int32 bias); the op alone, int8 in and int8 out.
# float16: the converter's float16 quantization: weights and biases stored as float16
# behind a DEQUANTIZE, activations float32; a GPU delegate runs such a model in half
# precision (XNNPACK when forced to), a CPU otherwise as float32.
class Dtype(StrEnum):
    """A key's dtype (a StrEnum: equal to its string, so keys and JSON hold the plain name)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"


DTYPES = tuple(d.value for d in Dtype)
BYTES = {"float32": 4, "float16": 2, "int8": 1}  # per element, by dtype
# The largest tensor or weight buffer a key may hold: a .tflite file is a flatbuffer, which
# holds at most 2 GiB, and no phone's runtime allocates an activation that size. Beyond it
# a key could only be measured as a failure (and stored as one).
MAX_TENSOR_BYTES = 2**31
# Ops whose output channel count is a free choice (NetAdapt prunes these).
WEIGHTED = ("conv2d", "depthwise_conv2d", "fully_connected")
# Ops with a kernel window (kernel, stride, padding in the key).
WINDOWED = ("conv2d", "depthwise_conv2d", "avg_pool", "max_pool")
# Ops without a fused activation (no ``act`` in the key): TFLite has no such option for them.
# CONCATENATION has the option, but the builtin kernel refuses any activation in it.
UNFUSED = ("global_avg_pool", "concat", "pad", "softmax", "hard_swish", "hard_sigmoid",
           "logistic")
# Ops reading two tensors: add and mul of equal shapes; channel_mul scales HxWxC by a
# 1x1xC tensor (the squeeze-excite multiply). concat reads one tensor per part.
BINARY = ("add", "mul", "channel_mul")
# add_scalar / mul_scalar: a tensor plus / times one constant number (Keras' Rescaling; the
# 1/6 of a hard_sigmoid whose +3 and ReLU6 the converter folded into the conv before it).


class SpecError(UserError, ValueError):
    """An invalid LayerSpec, key string or Network description."""


@dataclass(frozen=True, order=True)
class LayerSpec:
    """One layer's shape: the unit measured once and stored under its key.

    Shapes are NHWC with batch 1. A fully-connected layer sees its input as
    ``h x w x cin`` and flattens it; the MobileNets give it 1x1xC.
    """

    op: str
    h: int
    w: int
    cin: int
    cout: int = 0
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: str = "same"
    dilation: tuple[int, int] = (1, 1)
    act: str = "none"
    bias: bool = True
    dtype: str = "float32"
    parts: tuple[int, ...] = ()  # concat: channels of each input, in order (sum = cin)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # pad: top, bottom, left, right

    def __post_init__(self) -> None:
        # Normalise fields that only one value makes sense for, so equal layers get equal keys.
        if self.op == "channel_mul" and (self.h, self.w) == (1, 1):
            object.__setattr__(self, "op", "mul")  # 1x1xC times 1x1xC: elementwise
        if self.op not in ("conv2d", "depthwise_conv2d", "fully_connected"):
            object.__setattr__(self, "cout", self.cin)
        if self.op == "depthwise_conv2d" and self.cout == 0:
            object.__setattr__(self, "cout", self.cin)
        for name in ("kernel", "stride", "dilation", "parts", "pads"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, tuple(int(v) for v in value))
            except (TypeError, ValueError):
                what = "integers" if name in ("parts", "pads") else "two positive integers"
                raise SpecError(f"{self.op}: {name} must be {what}, got {value!r}") from None
        # Fields the op does not have (the key leaves them out) take their defaults, so
        # they can neither give one key two unequal specs nor change derived shapes.
        if self.op not in WINDOWED:
            object.__setattr__(self, "kernel", (1, 1))
            object.__setattr__(self, "stride", (1, 1))
            object.__setattr__(self, "padding", "same")
        if self.op not in WEIGHTED:
            object.__setattr__(self, "bias", True)
        if self.op in WINDOWED and self.padding == "valid" and self.kernel == (1, 1):
            object.__setattr__(self, "padding", "same")  # a 1x1 window never pads
        if self.op != "concat":
            object.__setattr__(self, "parts", ())
        if self.op != "pad":
            object.__setattr__(self, "pads", (0, 0, 0, 0))
        self.validate()

    # -- validation -------------------------------------------------------------------
    def validate(self) -> None:
        """Raise SpecError naming the first thing wrong with this spec."""
        if self.op not in OPS:
            raise SpecError(f"unknown op {self.op!r}; expected one of {', '.join(OPS)}")
        for name in ("h", "w", "cin", "cout"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise SpecError(f"{self.op}: {name} must be a positive integer, got {value!r}")
        if self.act not in ACTIVATIONS:
            raise SpecError(f"{self.op}: act must be one of {ACTIVATIONS}, got {self.act!r}")
        if self.padding not in PADDINGS:
            raise SpecError(f"{self.op}: padding must be same or valid, got {self.padding!r}")
        if self.dtype not in DTYPES:
            raise SpecError(f"{self.op}: dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("kernel", "stride", "dilation"):
            pair = getattr(self, name)
            if len(pair) != 2 or min(pair) <= 0:
                raise SpecError(f"{self.op}: {name} must be two positive integers, got {pair}")
        if self.op == "depthwise_conv2d" and self.cout % self.cin:
            raise SpecError(
                f"depthwise_conv2d: out ({self.cout}) must be a multiple of in channels ({self.cin})"
            )
        if self.dilation != (1, 1) and self.op not in ("conv2d", "depthwise_conv2d"):
            raise SpecError(f"{self.op}: only conv2d and depthwise_conv2d take a dilation")
        if self.op in UNFUSED and self.act != "none":
            raise SpecError(f"{self.op} takes no fused activation")
        if self.op == "concat" and (len(self.parts) < 2 or min(self.parts) <= 0
                                    or sum(self.parts) != self.cin):
            raise SpecError(f"concat: parts must be two or more positive channel counts "
                            f"summing to in channels ({self.cin}), got {self.parts}")
        if len(self.pads) != 4 or min(self.pads) < 0:
            raise SpecError(f"{self.op}: pads must be four non-negative integers "
                            f"(top, bottom, left, right), got {self.pads}")
        self._check_size()
        if self.padding == "valid" and self.op in ("conv2d", "depthwise_conv2d", "avg_pool",
                                                  "max_pool"):
            kh, kw = self.effective_kernel
            if kh > self.h or kw > self.w:
                raise SpecError(
                    f"{self.op}: kernel {kh}x{kw} is larger than the input {self.h}x{self.w} "
                    "with valid padding"
                )

    def _check_size(self) -> None:
        """Refuse a layer whose largest tensor (an input, the output or its weights) is over
        MAX_TENSOR_BYTES, naming it."""
        size = BYTES[self.dtype]
        tensors = [("input", s) for s in self.input_shapes] + [("output", self.output_shape)]
        named = [(f"{what} {shape_text(s)}", math.prod(s)) for what, s in tensors]
        named.append((f"{self.params:,} weights", self.params))
        what, n = max(named, key=lambda x: x[1])
        if n * size > MAX_TENSOR_BYTES:
            raise SpecError(f"{self.op}: its {what} ({self.dtype}) would need "
                            f"{n * size / 2**30:.1f} GiB; a TFLite model holds at most "
                            f"{MAX_TENSOR_BYTES // 2**30} GiB per tensor")

    # -- derived shapes and costs -----------------------------------------------------------
    @property
    def effective_kernel(self) -> tuple[int, int]:
        """Kernel extent once dilation spreads it out."""
        (kh, kw), (dh, dw) = self.kernel, self.dilation
        return (kh - 1) * dh + 1, (kw - 1) * dw + 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.h, self.w, self.cin)

    @property
    def input_shapes(self) -> list[tuple[int, int, int]]:
        """The shape of each tensor the op reads, in order."""
        if self.op == "concat":
            return [(self.h, self.w, c) for c in self.parts]
        if self.op == "channel_mul":
            return [self.input_shape, (1, 1, self.cin)]
        return [self.input_shape] * (2 if self.op in BINARY else 1)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Output H, W, C (NHWC, batch 1) as TFLite computes it."""
        if self.op == "fully_connected":
            return (1, 1, self.cout)
        if self.op == "global_avg_pool":
            return (1, 1, self.cin)
        if self.op == "pad":
            top, bottom, left, right = self.pads
            return (self.h + top + bottom, self.w + left + right, self.cin)
        if self.op not in WINDOWED:  # elementwise ops, concat, softmax
            return self.input_shape
        (kh, kw), (sh, sw) = self.effective_kernel, self.stride
        if self.padding == "same":
            return (math.ceil(self.h / sh), math.ceil(self.w / sw), self.cout)
        return ((self.h - kh) // sh + 1, (self.w - kw) // sw + 1, self.cout)

    @property
    def depth_multiplier(self) -> int:
        return self.cout // self.cin if self.op == "depthwise_conv2d" else 1

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference (adds and pools count one per input read)."""
        oh, ow, oc = self.output_shape
        kh, kw = self.kernel
        if self.op == "conv2d":
            return oh * ow * oc * kh * kw * self.cin
        if self.op == "depthwise_conv2d":
            return oh * ow * oc * kh * kw
        if self.op == "fully_connected":
            return self.h * self.w * self.cin * self.cout
        if self.op in ("avg_pool", "max_pool"):
            return oh * ow * oc * kh * kw
        return self.h * self.w * self.cin  # elementwise ops, concat, pad, global_avg_pool

    @property
    def params(self) -> int:
        """Weights plus biases."""
        kh, kw = self.kernel
        b = self.cout if self.bias else 0
        if self.op == "conv2d":
            return kh * kw * self.cin * self.cout + b
        if self.op == "depthwise_conv2d":
            return kh * kw * self.cout + b
        if self.op == "fully_connected":
            return self.h * self.w * self.cin * self.cout + b
        return 0

    def with_channels(self, cin: int | None = None, cout: int | None = None) -> LayerSpec:
        """The same layer with other channel counts (depthwise keeps its multiplier)."""
        cin = self.cin if cin is None else cin
        if self.op == "depthwise_conv2d":
            return replace(self, cin=cin, cout=cin * self.depth_multiplier)
        return replace(self, cin=cin, cout=self.cout if cout is None else cout)

    # -- the key ------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        """Canonical string form; ``LayerSpec.parse(spec.key) == spec``."""
        parts = [f"in={self.h}x{self.w}x{self.cin}"]
        if self.op in ("conv2d", "fully_connected"):
            parts.append(f"out={self.cout}")
        if self.op == "depthwise_conv2d" and self.depth_multiplier != 1:
            parts.append(f"mult={self.depth_multiplier}")
        if self.op in WINDOWED:
            parts += [f"k={_pair(self.kernel)}", f"s={_pair(self.stride)}", f"pad={self.padding}"]
        if self.op in ("conv2d", "depthwise_conv2d") and self.dilation != (1, 1):
            parts.append(f"d={_pair(self.dilation)}")
        if self.op == "concat":
            parts.append("parts=" + "+".join(str(c) for c in self.parts))
        if self.op == "pad":
            parts.append("pads=" + "x".join(str(p) for p in self.pads))
        if self.op not in UNFUSED:
            parts.append(f"act={self.act}")
        if self.op in WEIGHTED and not self.bias:
            parts.append("bias=0")
        parts.append(f"dt={self.dtype}")
        return f"{self.op}:{','.join(parts)}"

    def __str__(self) -> str:
        return self.key

    @classmethod
    def parse(cls, key: str) -> LayerSpec:
        """Parse a canonical (or hand-written, any field order) key string."""
        op, sep, rest = key.strip().partition(":")
        if not sep:
            raise SpecError(f"{key!r} is not a layer key: expected 'op:field=value,...'")
        fields: dict[str, str] = {}
        for item in filter(None, rest.split(",")):
            name, eq, value = item.partition("=")
            if not eq:
                raise SpecError(f"{key!r}: {item!r} is not field=value")
            fields[name.strip()] = value.strip()
        try:
            return cls._from_fields(op.strip(), fields)
        except (TypeError, ValueError) as e:
            raise SpecError(f"{key!r}: {e}") from None

    @classmethod
    def _from_fields(cls, op: str, f: dict[str, str]) -> LayerSpec:
        known = {"in", "out", "mult", "k", "s", "pad", "d", "act", "bias", "dt", "parts", "pads"}
        unknown = set(f) - known
        if unknown:
            raise SpecError(f"unknown field(s) {', '.join(sorted(unknown))}")
        if "in" not in f:
            raise SpecError("missing field 'in' (HxWxC)")
        h, w, cin = _ints(f["in"], 3, "in")
        if op in ("conv2d", "fully_connected") and "out" not in f:
            raise SpecError("missing field 'out' (output channels)")
        cout = int(f["out"]) if "out" in f else cin * int(f.get("mult", 1))
        return cls(
            op=op, h=h, w=w, cin=cin, cout=cout,
            kernel=_ints(f.get("k", "1x1"), 2, "k"),
            stride=_ints(f.get("s", "1x1"), 2, "s"),
            padding=f.get("pad", "same"),
            dilation=_ints(f.get("d", "1x1"), 2, "d"),
            act=f.get("act", "none"),
            bias=f.get("bias", "1") not in ("0", "false", "False"),
            dtype=f.get("dt", "float32"),
            parts=tuple(int(c) for c in f["parts"].split("+")) if "parts" in f else (),
            pads=_ints(f.get("pads", "0x0x0x0"), 4, "pads"),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key"] = self.key
        return d


def _pair(p: tuple[int, int]) -> str:
    return f"{p[0]}x{p[1]}"


def _ints(text: str, n: int, name: str) -> tuple[int, ...]:
    parts = text.lower().split("x")
    if len(parts) != n:
        raise SpecError(f"field {name}={text!r}: expected {n} integers joined by 'x'")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise SpecError(f"field {name}={text!r}: expected integers") from None


def shape_text(shape: Sequence[int]) -> str:
    """A shape as keys and messages write it: 1x112x112x32."""
    return "x".join(str(v) for v in shape)
