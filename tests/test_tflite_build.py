"""bench.tflite_build: built models compute what the LayerSpec says (checked against torch).

Every layer model runs twice: through the default resolver (XNNPACK delegate, what the
host runner measures) and through the builtin kernels alone (what a phone's
benchmark_model without XNNPACK, or a delegate's fallback, would run).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ai_edge_litert import schema_py_generated as tfl
from ai_edge_litert.interpreter import Interpreter

from bench.tflite_build import (
    BUILDERS,
    _layer_input_names,
    build_layer,
    build_network,
    layer_weights,
    network_weights,
    node_seed,
)
from lut_db.network import chain
from lut_db.spec import OPS, LayerSpec
from tests.sample_networks import NETWORKS, mobilenet_v1_like, mobilenet_v2_block
from tests.tflite_reference import (
    LAYERS,
    RESOLVERS,
    check_close,
    rand,
    run_tflite,
    tflite_shape,
    torch_layer,
    torch_network,
)

# -- single layers ------------------------------------------------------------------------


@pytest.mark.parametrize("resolver", RESOLVERS)
@pytest.mark.parametrize("key", LAYERS)
def test_layer_matches_torch(key: str, resolver: str) -> None:
    spec = LayerSpec.parse(key)
    names = _layer_input_names(len(spec.input_shapes))
    # Scaled so that the hard activations see both their kinks and their flat ends.
    feeds = {n: 4 * rand((1, *shape), seed=i)
             for i, (n, shape) in enumerate(zip(names, spec.input_shapes))}
    model = build_layer(spec, seed=3)
    got = run_tflite(model, feeds, RESOLVERS[resolver])
    assert list(got) == ["output"]
    assert got["output"].shape == tflite_shape(spec)
    xs = [torch.from_numpy(feeds[n]).double().permute(0, 3, 1, 2) for n in names]
    want = torch_layer(spec, xs, layer_weights(spec, 3)).permute(0, 2, 3, 1).numpy()
    check_close(got["output"], want.reshape(got["output"].shape))


def test_every_spec_op_has_a_builder() -> None:
    assert set(OPS) <= set(BUILDERS)


def test_layer_signature_and_io_names() -> None:
    add = build_layer(LayerSpec.parse("add:in=4x4x2,act=none"))
    signatures = Interpreter(model_content=add).get_signature_list()
    assert signatures == {"serving_default": {"inputs": ["input", "input_b"],
                                              "outputs": ["output"]}}


def test_flatbuffer_layout() -> None:
    spec = LayerSpec.parse("conv2d:in=8x8x3,out=5,k=3x3,s=1x1,pad=same,act=relu")
    model = tfl.Model.GetRootAs(build_layer(spec), 0)
    assert tfl.Model.ModelBufferHasIdentifier(build_layer(spec), 0)
    assert model.Buffers(0).DataLength() == 0  # the empty sentinel
    for i in range(1, model.BuffersLength()):
        buffer = model.Buffers(i)
        start = buffer._tab.Vector(buffer._tab.Offset(4))  # the data vector's first byte
        assert start % 16 == 0, f"buffer {i} data at {start} is not 16-byte aligned"
    code = model.OperatorCodes(0)
    assert code.BuiltinCode() == tfl.BuiltinOperator.CONV_2D
    assert code.DeprecatedBuiltinCode() == tfl.BuiltinOperator.CONV_2D


# -- weights and determinism ---------------------------------------------------------------


def test_layer_weights_layouts_and_scale() -> None:
    conv = layer_weights(LayerSpec.parse("conv2d:in=8x8x32,out=64,k=3x3,act=relu"), 0)
    assert conv["weight"].shape == (64, 3, 3, 32) and conv["bias"].shape == (64,)
    assert conv["weight"].dtype == np.float32
    assert abs(conv["weight"].std() - np.sqrt(2 / (9 * 32))) < 0.01  # He scale
    dw = layer_weights(LayerSpec.parse("depthwise_conv2d:in=8x8x4,mult=2,k=3x3"), 0)
    assert dw["weight"].shape == (1, 3, 3, 8)
    fc = layer_weights(LayerSpec.parse("fully_connected:in=2x2x8,out=5,bias=0"), 0)
    assert fc["weight"].shape == (5, 32) and "bias" not in fc
    assert layer_weights(LayerSpec.parse("add:in=4x4x2"), 0) == {}


def test_builds_are_deterministic_and_seeded() -> None:
    spec = LayerSpec.parse("conv2d:in=8x8x3,out=5,k=3x3,s=1x1,pad=same,act=relu")
    assert build_layer(spec, seed=1) == build_layer(spec, seed=1)
    assert build_layer(spec, seed=1) != build_layer(spec, seed=2)
    assert not np.array_equal(layer_weights(spec, 1)["weight"], layer_weights(spec, 2)["weight"])
    net = mobilenet_v2_block()
    assert build_network(net, seed=4) == build_network(net, seed=4)
    assert build_network(net, seed=4) != build_network(net, seed=5)


def test_network_seeds_depend_on_node_name_not_hash_randomisation() -> None:
    spec = LayerSpec.parse("conv2d:in=4x4x4,out=4,k=1x1,act=none")
    net = chain("twins", (4, 4, 4), [("a", spec), ("b", spec)])
    w = network_weights(net, seed=0)
    assert not np.array_equal(w["a"]["weight"], w["b"]["weight"])
    assert np.array_equal(w["a"]["weight"], layer_weights(spec, node_seed(0, "a"))["weight"])
    # Same bytes in a process with another PYTHONHASHSEED.
    code = ("import hashlib, sys; from bench.tflite_build import build_network; "
            "from lut_db.network import Network; net = Network.from_json(sys.stdin.read()); "
            "sys.stdout.write(hashlib.sha256(build_network(net, 7)).hexdigest())")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(root)}
    net = mobilenet_v2_block()
    out = subprocess.run([sys.executable, "-c", code], input=net.to_json(), cwd=root, env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out == hashlib.sha256(build_network(net, 7)).hexdigest()


# -- whole networks ------------------------------------------------------------------------


@pytest.mark.parametrize("make", NETWORKS)
@pytest.mark.parametrize("resolver", RESOLVERS)
def test_network_matches_torch(make, resolver: str) -> None:
    net = make()
    x = rand((1, *net.input_shape), seed=11)
    got = run_tflite(build_network(net, seed=5), {"input": x}, RESOLVERS[resolver])
    want = torch_network(net, x, network_weights(net, seed=5))
    assert sorted(got) == sorted(net.outputs)
    for name in net.outputs:
        assert got[name].shape == tflite_shape(net.node(name).spec)
        check_close(got[name], want[name].reshape(got[name].shape))


# -- the LiteRT CompiledModel tool ---------------------------------------------------------

BENCHMARK = Path(sys.executable).with_name("litert-benchmark")


@pytest.mark.skipif(not BENCHMARK.exists(), reason="litert-benchmark not installed")
@pytest.mark.parametrize("what", ["layer", "network"])
def test_litert_benchmark_runs_built_models(what: str, tmp_path: Path) -> None:
    if what == "layer":  # bias-less conv: the builtin kernel rejects a conv without bias
        spec = LayerSpec.parse("conv2d:in=16x16x8,out=8,k=3x3,s=2x2,pad=same,act=relu6,bias=0")
        model = build_layer(spec)
    else:
        model = build_network(mobilenet_v1_like())
    path = tmp_path / "model.tflite"
    path.write_bytes(model)
    proc = subprocess.run([str(BENCHMARK), "--model", str(path), "--num_runs", "3"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Inference (median):" in proc.stdout
    assert "Fully accelerated:     True" in proc.stdout  # XNNPACK took every node
