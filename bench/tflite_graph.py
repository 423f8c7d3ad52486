"""The flatbuffer writer under ``bench.tflite_build``: one subgraph's tensors, constant
buffers, op codes and operators, serialised as a TFLite model with LiteRT's own schema
(``ai_edge_litert.schema_py_generated``, object API), no TensorFlow.

It knows tensors and operators, not LayerSpecs (``bench.tflite_ops`` turns those into
operators), so what the TF converter does to a file as a whole lives here once: op versions
raised for int8 inputs, constants 16-byte aligned, a ``serving_default`` SignatureDef (for
``litert-benchmark`` and ``Interpreter.get_signature_runner``), and the float16 scheme
(checked against TF 2.21's output): FLOAT16 constants, each behind a DEQUANTIZE (version 3)
to float32, those DEQUANTIZEs first in the graph, and the metadata
``reduced_precision_support = fp16accfp32`` (fp16 weights, fp32 accumulation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from bench.tflite_quant import Quant

__all__ = ["REDUCED_PRECISION", "SIGNATURE_KEY", "Graph"]

SIGNATURE_KEY = "serving_default"
_BUFFER_ALIGN = 16  # what the TF converter uses; lets kernels read weights in place
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


class Graph:
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
