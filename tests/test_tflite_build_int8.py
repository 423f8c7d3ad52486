"""bench.tflite_build at dt=int8: full-integer models run in LiteRT and agree with torch.

The reference is torch in float64 on the same quantized values: the int8 input
dequantized, the weights and biases rounded to their int8 / int32 grids. What is left is
the kernel's own rounding (requantization), so the int8 output must land within one step
of the reference quantized to the output's grid, through XNNPACK and the builtin kernels.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from ai_edge_litert import schema_py_generated as tfl
from ai_edge_litert.interpreter import Interpreter

from bench.tflite_build import (
    _layer_input_names,
    build_layer,
    build_network,
    layer_weights,
    network_weights,
)
from bench.tflite_quant import INPUT_QUANT, Quant, output_quant, weight_quant
from lut_db.network import INPUT, Network
from lut_db.spec import LayerSpec
from tests.sample_networks import NETWORKS
from tests.tflite_reference import (
    LAYERS,
    RESOLVERS,
    flatbuffer_model,
    run_tflite,
    tflite_shape,
    torch_layer,
)

LAYER_STEPS = 1  # a rounding tie may fall either way
NETWORK_STEPS = 2  # one-step differences may grow through a chain (observed: 2)


def int8(spec: LayerSpec) -> LayerSpec:
    return replace(spec, dtype="int8")


def quantized_weights(spec: LayerSpec, w: dict[str, np.ndarray],
                      x_quant: Quant) -> dict[str, np.ndarray]:
    """The float weights and bias on the grids the builder stores them on."""
    if not w:
        return {}
    q = weight_quant(spec, w["weight"])
    shape = [1] * w["weight"].ndim
    shape[q.dim] = -1
    scale = np.array(q.scale).reshape(shape)
    out = {"weight": np.clip(np.round(w["weight"] / scale), -127, 127) * scale}
    if "bias" in w:
        bias_scale = np.array(q.scale) * x_quant.scale[0]
        out["bias"] = np.round(w["bias"] / bias_scale) * bias_scale
    return out


def on_grid(x: np.ndarray, q: Quant) -> np.ndarray:
    """``x`` rounded (and clipped) to ``q``'s int8 grid, as floats."""
    return q.dequantize(q.quantize(x))


def steps(got: np.ndarray, want: np.ndarray, q: Quant) -> int:
    """Largest difference in output steps between int8 ``got`` and float ``want``."""
    return int(np.max(np.abs(got.astype(int) - q.quantize(want).reshape(got.shape))))


# -- single layers ------------------------------------------------------------------------


@pytest.mark.parametrize("resolver", RESOLVERS)
@pytest.mark.parametrize("key", LAYERS)
def test_int8_layer_matches_torch(key: str, resolver: str) -> None:
    spec = int8(LayerSpec.parse(key))
    rng = np.random.default_rng(0)
    names = _layer_input_names(len(spec.input_shapes))
    # Twice unit scale: the hard activations see their kinks and flat ends.
    feeds = {n: INPUT_QUANT.quantize(2 * rng.standard_normal((1, *shape)))
             for n, shape in zip(names, spec.input_shapes)}
    got = run_tflite(build_layer(spec, seed=3), feeds, RESOLVERS[resolver])["output"]
    assert got.dtype == np.int8 and got.shape == tflite_shape(spec)
    xs = [torch.from_numpy(INPUT_QUANT.dequantize(feeds[n])).permute(0, 3, 1, 2) for n in names]
    weights = quantized_weights(spec, layer_weights(spec, 3), INPUT_QUANT)
    want = torch_layer(spec, xs, weights).permute(0, 2, 3, 1).numpy()
    assert steps(got, want, output_quant(spec, INPUT_QUANT)) <= LAYER_STEPS


def test_int8_conv_tensors_follow_the_converter_scheme() -> None:
    spec = LayerSpec.parse("conv2d:in=8x8x4,out=6,k=3x3,s=1x1,pad=same,act=relu6,dt=int8")
    model = flatbuffer_model(build_layer(spec, seed=1))
    g = model.subgraphs[0]
    x, weight, bias = (g.tensors[i] for i in g.operators[0].inputs)
    out = g.tensors[g.operators[0].outputs[0]]
    int8_, int32 = tfl.TensorType.INT8, tfl.TensorType.INT32
    assert [t.type for t in (x, weight, bias, out)] == [int8_, int8_, int32, int8_]
    assert [g.tensors[i].type for i in (*g.inputs, *g.outputs)] == [int8_, int8_]
    # per-channel symmetric weights along the output channels, bias at input x weight scale
    assert len(weight.quantization.scale) == 6 and weight.quantization.quantizedDimension == 0
    assert list(weight.quantization.zeroPoint) == [0] * 6
    w = layer_weights(spec, 1)["weight"]
    assert np.allclose(weight.quantization.scale, np.abs(w).max(axis=(1, 2, 3)) / 127)
    assert np.allclose(bias.quantization.scale,
                       np.array(weight.quantization.scale) * x.quantization.scale[0])
    # relu6 output: [0, 6] over the int8 range, as the converter writes it
    assert out.quantization.zeroPoint[0] == -128
    assert out.quantization.scale[0] == pytest.approx(6 / 255)
    assert model.operatorCodes[0].version == 3  # CONV_2D's int8 version


def test_int8_depthwise_weights_are_per_channel_on_the_last_axis() -> None:
    spec = LayerSpec.parse("depthwise_conv2d:in=8x8x5,k=3x3,s=1x1,pad=same,act=relu,dt=int8")
    g = flatbuffer_model(build_layer(spec)).subgraphs[0]
    weight = g.tensors[g.operators[0].inputs[1]]
    assert weight.quantization.quantizedDimension == 3
    assert len(weight.quantization.scale) == 5


def test_float_models_carry_no_quantization() -> None:
    spec = LayerSpec.parse("conv2d:in=8x8x4,out=6,k=3x3,s=1x1,pad=same,act=relu6")
    g = flatbuffer_model(build_layer(spec)).subgraphs[0]
    assert all(t.quantization is None for t in g.tensors)
    assert {t.type for t in g.tensors} == {tfl.TensorType.FLOAT32}


def test_quant_of_range_holds_zero_exactly() -> None:
    q = Quant.of_range(0.0, 6.0)
    assert q.zero_point == (-128,) and q.dequantize(q.quantize(np.array(0.0))) == 0.0
    sym = Quant.of_range(-8.0, 8.0)
    assert sym.zero_point == (0,)
    assert sym.dequantize(sym.quantize(np.array([9.0, -9.0]))).tolist() == \
        pytest.approx([127 * sym.scale[0], -128 * sym.scale[0]])


# -- whole networks ------------------------------------------------------------------------


def fake_quant_network(net: Network, x_q: np.ndarray,
                       weights: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The network in float64 with every tensor rounded to its int8 grid (NHWC floats)."""
    quants = {INPUT: INPUT_QUANT}
    values = {INPUT: torch.from_numpy(INPUT_QUANT.dequantize(x_q)).permute(0, 3, 1, 2)}
    for node in net.nodes:
        quants[node.name] = q = output_quant(node.spec, quants[node.inputs[0]])
        xs = [values[s] for s in node.inputs]
        if node.spec.op == "concat":  # parts requantized to the first part's grid
            xs = [torch.from_numpy(on_grid(v.numpy(), q)) for v in xs]
        w = quantized_weights(node.spec, weights[node.name], quants[node.inputs[0]])
        y = torch_layer(node.spec, xs, w).numpy()
        values[node.name] = torch.from_numpy(on_grid(y, q))
    return {o: values[o].permute(0, 2, 3, 1).numpy() for o in net.outputs}


@pytest.mark.parametrize("make", NETWORKS)
@pytest.mark.parametrize("resolver", RESOLVERS)
def test_int8_network_matches_torch(make, resolver: str) -> None:
    net = make().with_dtype("int8")
    x = INPUT_QUANT.quantize(np.random.default_rng(11).standard_normal((1, *net.input_shape)))
    got = run_tflite(build_network(net, seed=5), {"input": x}, RESOLVERS[resolver])
    want = fake_quant_network(net, x, network_weights(net, seed=5))
    quants = {INPUT: INPUT_QUANT}
    for node in net.nodes:
        quants[node.name] = output_quant(node.spec, quants[node.inputs[0]])
    assert sorted(got) == sorted(net.outputs)
    for name in net.outputs:
        assert got[name].dtype == np.int8
        assert steps(got[name], want[name], quants[name]) <= NETWORK_STEPS, name


def test_concat_of_differently_quantized_parts_requantizes() -> None:
    net = Network.from_json_dict({"name": "cat", "input": [4, 4, 3], "nodes": [
        {"name": "a", "spec": "conv2d:in=4x4x3,out=2,k=1x1,act=relu6,dt=int8",
         "inputs": ["input"]},
        {"name": "b", "spec": "conv2d:in=4x4x3,out=3,k=1x1,act=none,dt=int8",
         "inputs": ["input"]},
        {"name": "cat", "spec": "concat:in=4x4x5,parts=2+3,dt=int8", "inputs": ["a", "b"]},
    ]})
    model = build_network(net)
    codes = [c.builtinCode for c in flatbuffer_model(model).operatorCodes]
    assert tfl.BuiltinOperator.QUANTIZE in codes
    Interpreter(model_content=model).allocate_tensors()


def test_a_network_of_mixed_dtypes_is_refused() -> None:
    net = Network.from_json_dict({"name": "mixed", "input": [4, 4, 3], "nodes": [
        {"name": "a", "spec": "conv2d:in=4x4x3,out=2,k=1x1,act=relu6,dt=int8"},
        {"name": "b", "spec": "conv2d:in=4x4x2,out=2,k=1x1,act=relu6", "inputs": ["a"]},
    ]})
    with pytest.raises(ValueError, match="mixes dtypes"):
        build_network(net)


def test_with_dtype_changes_every_key_and_nothing_else() -> None:
    net = NETWORKS[0]()
    q = net.with_dtype("int8")
    assert [k.replace("dt=float32", "dt=int8") for k in net.keys] == q.keys
    assert q.input_shape == net.input_shape and q.outputs == net.outputs
