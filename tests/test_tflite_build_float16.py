"""bench.tflite_build at dt=float16: the converter's float16 scheme, run in LiteRT, against
torch on the same float16-rounded weights (the float32 arithmetic after the DEQUANTIZE is
what this CPU runs), and read back by bench.tflite_read."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as tfl

from bench.tflite_build import (
    _layer_input_names,
    build_layer,
    build_network,
    layer_weights,
    network_weights,
)
from bench.tflite_graph import REDUCED_PRECISION
from bench.tflite_read import OP_NAMES, read_model
from bench.zoo import family
from lut_db.spec import LayerSpec
from tests.sample_networks import NETWORKS
from tests.tflite_reference import (
    LAYERS,
    RESOLVERS,
    check_close,
    flatbuffer_model,
    rand,
    run_tflite,
    tflite_shape,
    torch_layer,
    torch_network,
)


def halved(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float16).astype(np.float32) for k, v in w.items()}


@pytest.mark.parametrize("resolver", RESOLVERS)
@pytest.mark.parametrize("key", LAYERS)
def test_float16_layer_matches_torch(key: str, resolver: str) -> None:
    import torch

    spec = replace(LayerSpec.parse(key), dtype="float16")
    names = _layer_input_names(len(spec.input_shapes))
    feeds = {n: 4 * rand((1, *shape), seed=i)
             for i, (n, shape) in enumerate(zip(names, spec.input_shapes))}
    got = run_tflite(build_layer(spec, seed=3), feeds, RESOLVERS[resolver])
    assert got["output"].shape == tflite_shape(spec)
    xs = [torch.from_numpy(feeds[n]).double().permute(0, 3, 1, 2) for n in names]
    want = torch_layer(spec, xs, halved(layer_weights(spec, 3))).permute(0, 2, 3, 1).numpy()
    check_close(got["output"], want.reshape(got["output"].shape))


@pytest.mark.parametrize("make", NETWORKS)
@pytest.mark.parametrize("resolver", RESOLVERS)
def test_float16_network_matches_torch(make, resolver: str) -> None:
    net = make().with_dtype("float16")
    x = rand((1, *net.input_shape), seed=11)
    got = run_tflite(build_network(net, seed=5), {"input": x}, RESOLVERS[resolver])
    weights = {k: halved(w) for k, w in network_weights(net, seed=5).items()}
    want = torch_network(net, x, weights)
    for name in net.outputs:
        check_close(got[name], want[name].reshape(got[name].shape))


def test_float16_tensors_follow_the_converter_scheme() -> None:
    """As TF 2.21 writes a float16-quantized conv: FLOAT16 weight and bias constants, each
    DEQUANTIZEd (version 3) to float32 by ops that come first, float32 activations, and
    the reduced-precision metadata."""
    spec = LayerSpec.parse("conv2d:in=8x8x4,out=6,k=3x3,s=1x1,pad=same,act=relu6,dt=float16")
    m = flatbuffer_model(build_layer(spec))
    g = m.subgraphs[0]
    ops = [(OP_NAMES[m.operatorCodes[op.opcodeIndex].builtinCode],
            m.operatorCodes[op.opcodeIndex].version, op) for op in g.operators]
    assert [(name, v) for name, v, _ in ops] == [("DEQUANTIZE", 3), ("DEQUANTIZE", 3),
                                                 ("CONV_2D", 1)]
    for _, _, op in ops[:2]:
        assert g.tensors[op.inputs[0]].type == tfl.TensorType.FLOAT16
        assert g.tensors[op.outputs[0]].type == tfl.TensorType.FLOAT32
    conv = ops[2][2]
    assert list(conv.inputs[1:]) == [ops[0][2].outputs[0], ops[1][2].outputs[0]]
    assert g.tensors[conv.inputs[0]].type == tfl.TensorType.FLOAT32
    (meta,) = m.metadata
    assert (meta.name.decode(), bytes(m.buffers[meta.buffer].data)) == REDUCED_PRECISION


def test_float16_models_store_half_the_weight_bytes() -> None:
    net = family("mobilenet_v1").network(width_mult=0.5, resolution=32)  # 5 MB of weights
    assert len(build_network(net.with_dtype("float16"))) < 0.51 * len(build_network(net))


def test_float16_models_read_back_as_float16_keys() -> None:
    for make in NETWORKS:
        net = make().with_dtype("float16")
        got = read_model(build_network(net))
        assert got.network.keys == net.keys and got.unknown_ops == []
