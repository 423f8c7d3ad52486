"""bench.tflite_read: .tflite files read back into the Networks they were built from, and
every kind of bad file refused with one message saying what is wrong."""

from __future__ import annotations

from collections.abc import Callable

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as tfl

from bench.tflite_build import build_network
from bench.tflite_read import QuantizedModel, TfliteReadError, read_file, read_model
from bench.zoo import MOBILENET_V1, MOBILENET_V2, MOBILENET_V3_SMALL
from lut_db.network import INPUT, Network, Node, chain
from lut_db.spec import LayerSpec, SpecError
from tests.sample_networks import NETWORKS

_OP = tfl.BuiltinOperator

# -- round trips ----------------------------------------------------------------------------

ZOO = [
    lambda: MOBILENET_V1.network(),
    lambda: MOBILENET_V1.network(width_mult=0.5, resolution=128),
    lambda: MOBILENET_V2.network(),
    lambda: MOBILENET_V2.network(width_mult=0.75, resolution=96, classes=10),
    lambda: MOBILENET_V3_SMALL.network(),
    lambda: MOBILENET_V3_SMALL.network(width_mult=0.75, resolution=160),
]


@pytest.mark.parametrize("make", ZOO + NETWORKS)
def test_built_network_reads_back_equal(make: Callable[[], Network]) -> None:
    net = make()
    got = read_model(build_network(net, seed=1), name=net.name)
    assert got.network == net  # same nodes (names, specs, inputs) and outputs
    assert got.network.keys == net.keys
    assert got.unknown_ops == [] and got.quantization == []
    assert list(got.node_ops) == [n.name for n in net.nodes]


def test_free_ops_and_hard_sigmoid_are_listed() -> None:
    s = LayerSpec.parse
    net = Network("fc-gate", (4, 4, 8), (
        Node("fc", s("fully_connected:in=4x4x8,out=16,act=relu"), (INPUT,)),
        Node("gate", s("hard_sigmoid:in=1x1x16"), ("fc",)),  # reads the FC through a RESHAPE
    ))
    got = read_model(build_network(net), name=net.name)
    assert got.network == net
    assert [(f.index, f.op) for f in got.free_ops] == [(1, "RESHAPE"), (3, "MUL")]
    assert "hard_sigmoid" in got.free_ops[1].note and "op #2 ADD" in got.free_ops[1].note


def test_read_file_names_the_network_after_the_file(tmp_path) -> None:
    path = tmp_path / "tiny_net.tflite"
    path.write_bytes(build_network(NETWORKS[0]()))
    assert read_file(path).network.name == "tiny_net"
    with pytest.raises(TfliteReadError, match="cannot read model file"):
        read_file(tmp_path / "missing.tflite")


def test_errors_are_spec_errors() -> None:
    """The CLI shows SpecErrors as one message: the reader's errors must be among them."""
    assert issubclass(TfliteReadError, SpecError)


# -- bad input ------------------------------------------------------------------------------


def _edit(model: bytes, change: Callable[[tfl.ModelT], None]) -> bytes:
    """The model with ``change`` applied to its object tree, serialised again."""
    obj = tfl.ModelT.InitFromPackedBuf(model, 0)
    change(obj)
    builder = flatbuffers.Builder(len(model) + 1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _conv() -> bytes:
    spec = LayerSpec.parse("conv2d:in=8x8x3,out=4,k=3x3,s=1x1,pad=same,act=relu")
    return build_network(chain("conv", (8, 8, 3), [("c", spec)]))


def _tensor(m: tfl.ModelT, name: str) -> tfl.TensorT:
    (t,) = [t for t in m.subgraphs[0].tensors if t.name.decode() == name]
    return t


def _add_subgraph(m: tfl.ModelT) -> None:
    m.subgraphs.append(m.subgraphs[0])


def _while_op(m: tfl.ModelT) -> None:
    m.operatorCodes.append(tfl.OperatorCodeT(deprecatedBuiltinCode=_OP.WHILE,
                                             builtinCode=_OP.WHILE, version=1))
    op = m.subgraphs[0].operators[0]
    op.opcodeIndex = len(m.operatorCodes) - 1
    op.builtinOptionsType, op.builtinOptions = 0, None


def _dynamic(m: tfl.ModelT) -> None:
    _tensor(m, "input").shapeSignature = [-1, -1, -1, 3]


def _quantize(m: tfl.ModelT, scales: int, with_scale: bool = True) -> None:
    """Mark the conv's tensors int8 (the payloads do not matter: nothing reads them)."""
    for name, n in (("input", 1), ("c", 1), ("c/weight", scales)):
        t = _tensor(m, name)
        t.type = tfl.TensorType.INT8
        if with_scale:
            t.quantization = tfl.QuantizationParametersT(
                scale=[0.1] * n, zeroPoint=[0] * n, quantizedDimension=0)


@pytest.mark.parametrize("data, words", [
    (b"abc", ["not a flatbuffer", "3 bytes"]),
    (b"hello, this is a text file, not a model\n", ["not a flatbuffer", "outside the file"]),
    (_conv()[:4] + b"ABCD" + _conv()[8:], ["not a TFLite model", "ABCD", "TFL3"]),
    (_conv()[:64], ["not a valid TFLite flatbuffer"]),
    (_edit(_conv(), _add_subgraph), ["2 subgraphs", "single-subgraph"]),
    (_edit(_conv(), _while_op), ["op #0 WHILE", "control flow"]),
    (_edit(_conv(), _dynamic), ["'input'", "dynamic shape", "[-1, -1, -1, 3]"]),
    (_edit(_conv(), lambda m: _quantize(m, 4, with_scale=False)),
     ["op #0 CONV_2D", "quantized tensor 'input' (int8) has no scale"]),
    (_edit(_conv(), lambda m: _quantize(m, 3)),
     ["op #0 CONV_2D", "'c/weight'", "3 scales", "axis 0", "[4, 3, 3, 3]"]),
])
def test_bad_files_say_what_is_wrong(data: bytes, words: list[str]) -> None:
    with pytest.raises(TfliteReadError) as e:
        read_model(data)
    for word in words:
        assert word in str(e.value)


def test_corrupt_files_are_reader_errors_never_tracebacks() -> None:
    """A byte flipped in a model's tables (then, every other time, the file cut short):
    each file either reads or raises TfliteReadError, whatever the walk trips on."""
    import random

    data = build_network(MOBILENET_V1.network(width_mult=0.25, resolution=32, classes=10))
    rng = random.Random(0)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(300):
        bad = bytearray(data)
        bad[rng.randrange(2000)] ^= 0xFF  # the tables, ahead of the weights
        if rng.random() < 0.5:
            bad = bad[:rng.randrange(len(bad))]
        try:
            read_model(bytes(bad))
            outcomes["read"] += 1
        except TfliteReadError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 200 and outcomes["read"] > 0, outcomes


def test_a_dynamic_batch_is_read_at_the_files_batch_of_one() -> None:
    """Every Keras model converted by TF has a -1 batch in its shape signature."""
    def dynamic_batch(m: tfl.ModelT) -> None:
        _tensor(m, "input").shapeSignature = [-1, 8, 8, 3]
        _tensor(m, "c").shapeSignature = [-1, 8, 8, 4]

    assert read_model(_edit(_conv(), dynamic_batch)).network == read_model(_conv()).network


@pytest.mark.parametrize("scales", [1, 4])
def test_int8_models_read_as_int8_keys(scales: int) -> None:
    got = read_model(_edit(_conv(), lambda m: _quantize(m, scales)))
    assert got.network.keys == ["conv2d:in=8x8x3,out=4,k=3x3,s=1x1,pad=same,act=relu,dt=int8"]
    quant = {q.tensor: q for q in got.quantization}
    assert {"input", "c", "c/weight"} <= set(quant)
    assert quant["c/weight"].scales == scales and quant["c/weight"].axis == 0
    assert quant["input"].dtype == "int8" and not quant["input"].per_channel


@pytest.mark.parametrize("make", NETWORKS)
def test_built_int8_networks_read_back_as_themselves(make) -> None:
    net = make().with_dtype("int8")
    got = read_model(build_network(net, seed=1), name=net.name)
    assert got.unknown_ops == []
    assert sorted(got.network.keys) == sorted(net.keys)


def test_int8_io_conversions_are_listed_not_keyed() -> None:
    """QUANTIZE in and DEQUANTIZE out, as the converter writes around an int8 model."""
    def float_io(m: tfl.ModelT) -> None:
        g = m.subgraphs[0]
        m.operatorCodes += [tfl.OperatorCodeT(deprecatedBuiltinCode=c, builtinCode=c, version=2)
                            for c in (_OP.QUANTIZE, _OP.DEQUANTIZE)]
        quantize, dequantize = len(m.operatorCodes) - 2, len(m.operatorCodes) - 1
        x, y = g.inputs[0], g.outputs[0]
        g.tensors += [tfl.TensorT(shape=list(g.tensors[t].shape), type=tfl.TensorType.FLOAT32,
                                  name=f"float_{t}".encode()) for t in (x, y)]
        fx, fy = len(g.tensors) - 2, len(g.tensors) - 1
        g.operators.insert(0, tfl.OperatorT(opcodeIndex=quantize, inputs=[fx], outputs=[x]))
        g.operators.append(tfl.OperatorT(opcodeIndex=dequantize, inputs=[y], outputs=[fy]))
        g.inputs, g.outputs = [fx], [fy]

    spec = LayerSpec.parse("conv2d:in=8x8x3,out=4,k=3x3,s=1x1,pad=same,act=relu,dt=int8")
    data = _edit(build_network(chain("conv", (8, 8, 3), [("c", spec)])), float_io)
    got = read_model(data)
    assert got.network.keys == [spec.key]
    assert [(f.op, f.note) for f in got.free_ops] == [
        ("QUANTIZE", "dtype conversion, not keyed"), ("DEQUANTIZE", "dtype conversion, not keyed")]


def test_uint8_and_dynamic_range_models_are_refused() -> None:
    def uint8(m: tfl.ModelT) -> None:
        _quantize(m, 1)
        for name in ("input", "c"):
            _tensor(m, name).type = tfl.TensorType.UINT8

    with pytest.raises(QuantizedModel) as e:
        read_model(_edit(_conv(), uint8))
    assert "runs in uint8" in str(e.value) and "only int8" in str(e.value)
    assert "1 per-channel" not in str(e.value)

    def weights_only(m: tfl.ModelT) -> None:
        t = _tensor(m, "c/weight")
        t.type = tfl.TensorType.INT8
        t.quantization = tfl.QuantizationParametersT(scale=[0.1] * 4, zeroPoint=[0] * 4)

    with pytest.raises(QuantizedModel) as e:
        read_model(_edit(_conv(), weights_only))
    assert "int8 weights 'c/weight' with float32 activations" in str(e.value)
    assert "dynamic-range" in str(e.value)


def _retype(op_name: str, code: int) -> Callable[[tfl.ModelT], None]:
    """Turn every ``op_name`` operator into another builtin (options dropped)."""
    def change(m: tfl.ModelT) -> None:
        m.operatorCodes.append(tfl.OperatorCodeT(deprecatedBuiltinCode=min(code, 127),
                                                 builtinCode=code, version=1))
        target = getattr(_OP, op_name)
        for op in m.subgraphs[0].operators:
            if max(m.operatorCodes[op.opcodeIndex].builtinCode,
                   m.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == target:
                op.opcodeIndex = len(m.operatorCodes) - 1
                op.builtinOptionsType, op.builtinOptions = 0, None
    return change


def test_unknown_ops_are_named_with_their_index() -> None:
    net = MOBILENET_V3_SMALL.network(width_mult=0.5, resolution=32, classes=10)
    data = _edit(build_network(net), _retype("HARD_SWISH", _OP.TANH))
    with pytest.raises(TfliteReadError) as e:
        read_model(data)
    hs = [i for i, n in enumerate(net.nodes) if n.spec.op == "hard_swish"]
    msg = str(e.value)
    assert f"{len(hs)} op(s) have no LUT key" in msg
    assert msg.count("TANH (no key kind for this op)") == len(hs)
    first = read_model(build_network(net)).node_ops[net.nodes[hs[0]].name]
    assert f"op #{first} TANH" in msg
    # allow_unknown: shape-keeping unknown ops are passed through, listed, and not counted
    got = read_model(data, allow_unknown=True)
    assert [u.op for u in got.unknown_ops] == ["TANH"] * len(hs)
    assert [n.spec.op for n in got.network.nodes] == [n.spec.op for n in net.nodes
                                                      if n.spec.op != "hard_swish"]


@pytest.mark.parametrize("change, words", [
    (_retype("CONV_2D", _OP.BATCH_MATMUL), ["op #0 BATCH_MATMUL", "no key kind"]),
    (lambda m: setattr(m.subgraphs[0].operators[0].builtinOptions, "fusedActivationFunction",
                       tfl.ActivationFunctionType.TANH), ["op #0 CONV_2D", "fused activation"]),
])
def test_ops_and_options_without_keys(change, words: list[str]) -> None:
    with pytest.raises(TfliteReadError) as e:
        read_model(_edit(_conv(), change))
    for word in words:
        assert word in str(e.value)


def test_constants_other_than_one_number_have_no_key() -> None:
    def scale_by_two(m: tfl.ModelT) -> None:  # hard_sigmoid's 1/6 becomes 2
        scale = _tensor(m, "gate/scale")
        m.buffers[scale.buffer].data = np.frombuffer(np.float32(2.0).tobytes(), np.uint8)

    def scale_per_channel(m: tfl.ModelT) -> None:
        scale = _tensor(m, "gate/scale")
        scale.shape = [8]
        m.buffers[scale.buffer].data = np.frombuffer(np.ones(8, np.float32).tobytes(), np.uint8)

    net = Network("gate", (4, 4, 8), (Node("gate", LayerSpec.parse("hard_sigmoid:in=4x4x8"),
                                           (INPUT,)),))
    got = read_model(_edit(build_network(net), scale_by_two)).network
    assert [n.spec.key for n in got.nodes] == ["add_scalar:in=4x4x8,act=relu6,dt=float32",
                                               "mul_scalar:in=4x4x8,act=none,dt=float32"]
    with pytest.raises(TfliteReadError) as e:
        read_model(_edit(build_network(net), scale_per_channel))
    assert "op #1 MUL (multiplies by the constant 'gate/scale' of shape [8]" in str(e.value)
