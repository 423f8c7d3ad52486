"""lut_db.spec: LayerSpec keys round-trip, shapes follow TFLite, bad specs say what is wrong;
Network is a shape-checked DAG with a JSON form."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lut_db.network import INPUT, Network, Node, chain
from lut_db.spec import OPS, LayerSpec, SpecError

# -- strategies: a valid LayerSpec of every op kind ---------------------------------------

pairs = st.tuples(st.integers(1, 4), st.integers(1, 4))
acts = st.sampled_from(["none", "relu", "relu6"])


@st.composite
def layer_specs(draw, op: str | None = None) -> LayerSpec:
    op = op or draw(st.sampled_from(OPS))
    h, w, cin = draw(st.integers(1, 64)), draw(st.integers(1, 64)), draw(st.integers(1, 256))
    act = draw(acts)
    if op in ("conv2d", "depthwise_conv2d"):
        kernel, stride, dilation = draw(pairs), draw(pairs), draw(pairs)
        padding = draw(st.sampled_from(["same", "valid"]))
        if padding == "valid":  # the input must hold the dilated kernel
            h = max(h, (kernel[0] - 1) * dilation[0] + 1)
            w = max(w, (kernel[1] - 1) * dilation[1] + 1)
        cout = (draw(st.integers(1, 256)) if op == "conv2d"
                else cin * draw(st.integers(1, 4)))
        return LayerSpec(op, h, w, cin, cout, kernel, stride, padding, dilation, act,
                         bias=draw(st.booleans()))
    if op in ("avg_pool", "max_pool"):
        kernel, stride = draw(pairs), draw(pairs)
        padding = draw(st.sampled_from(["same", "valid"]))
        if padding == "valid":
            h, w = max(h, kernel[0]), max(w, kernel[1])
        return LayerSpec(op, h, w, cin, kernel=kernel, stride=stride, padding=padding, act=act)
    if op == "fully_connected":  # it flattens h x w x cin: kept under the 2 GiB of weights
        h, w = min(h, 8), min(w, 8)
        return LayerSpec(op, h, w, cin, draw(st.integers(1, 2000)), act=act,
                         bias=draw(st.booleans()))
    if op in ("global_avg_pool", "softmax", "hard_swish", "hard_sigmoid", "logistic"):
        return LayerSpec(op, h, w, cin)
    if op == "pad":
        return LayerSpec(op, h, w, cin, pads=draw(st.tuples(*[st.integers(0, 3)] * 4)))
    if op == "concat":
        parts = draw(st.lists(st.integers(1, 64), min_size=2, max_size=4))
        return LayerSpec(op, h, w, sum(parts), parts=tuple(parts))
    if op == "channel_mul":  # at 1x1 it is an elementwise mul
        h = max(h, 2)
    return LayerSpec(op, h, w, cin, act=act)  # add, mul, channel_mul


# -- LayerSpec: keys ------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(layer_specs())
def test_key_parses_back_to_an_equal_spec(spec: LayerSpec) -> None:
    back = LayerSpec.parse(spec.key)
    assert back == spec
    assert hash(back) == hash(spec)
    assert back.key == spec.key


@pytest.mark.parametrize("op", OPS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_op_kind_round_trips(op: str, data: st.DataObject) -> None:
    spec = data.draw(layer_specs(op))
    assert spec.op == op
    assert LayerSpec.parse(spec.key) == spec


@settings(max_examples=100, deadline=None)
@given(layer_specs(), st.randoms(use_true_random=False))
def test_parse_accepts_any_field_order(spec: LayerSpec, rnd) -> None:
    op, rest = spec.key.split(":")
    fields = rest.split(",")
    rnd.shuffle(fields)
    assert LayerSpec.parse(f" {op}:{', '.join(fields)} ") == spec


def test_canonical_key_examples() -> None:
    conv = LayerSpec("conv2d", 112, 112, 32, 64, act="relu6")
    assert conv.key == "conv2d:in=112x112x32,out=64,k=1x1,s=1x1,pad=same,act=relu6,dt=float32"
    dw = LayerSpec("depthwise_conv2d", 56, 56, 16, 32, (3, 3), (2, 2), "valid", (2, 2))
    assert dw.key == ("depthwise_conv2d:in=56x56x16,mult=2,k=3x3,s=2x2,pad=valid,d=2x2,"
                      "act=none,dt=float32")
    assert LayerSpec.parse(dw.key).depth_multiplier == 2
    fc = LayerSpec("fully_connected", 1, 1, 1024, 1000, bias=False)
    assert fc.key == "fully_connected:in=1x1x1024,out=1000,act=none,bias=0,dt=float32"
    assert LayerSpec("global_avg_pool", 7, 7, 1024).key == "global_avg_pool:in=7x7x1024,dt=float32"
    assert LayerSpec("add", 7, 7, 8, act="relu").key == "add:in=7x7x8,act=relu,dt=float32"
    assert (LayerSpec("max_pool", 8, 8, 4, kernel=(2, 2), stride=(2, 2)).key
            == "max_pool:in=8x8x4,k=2x2,s=2x2,pad=same,act=none,dt=float32")


def test_fields_an_op_does_not_have_do_not_split_keys() -> None:
    """Two specs with one key must be equal, or a key would stand for two layers."""
    a = LayerSpec("fully_connected", 1, 1, 64, 10)
    b = LayerSpec("fully_connected", 1, 1, 64, 10, kernel=(3, 3), stride=(2, 2),
                  padding="valid")
    assert a.key == b.key and a == b and a.output_shape == b.output_shape
    assert LayerSpec("add", 4, 4, 8, 99) == LayerSpec("add", 4, 4, 8)
    assert LayerSpec("max_pool", 4, 4, 8, bias=False) == LayerSpec("max_pool", 4, 4, 8)
    assert LayerSpec("depthwise_conv2d", 4, 4, 8).cout == 8
    assert LayerSpec("channel_mul", 1, 1, 8) == LayerSpec("mul", 1, 1, 8)
    assert LayerSpec("conv2d", 7, 7, 8, 8, stride=(2, 2), padding="valid") == LayerSpec(
        "conv2d", 7, 7, 8, 8, stride=(2, 2), padding="same")  # the same output, no padding
    assert LayerSpec("conv2d", 4, 4, 8, 8, kernel=[3, 3]) == LayerSpec("conv2d", 4, 4, 8, 8,
                                                                       kernel=(3, 3))


def test_frozen_and_hashable() -> None:
    spec = LayerSpec("conv2d", 8, 8, 4, 8, (3, 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.cout = 16  # type: ignore[misc]
    twin = LayerSpec.parse(spec.key)
    assert twin is not spec
    assert len({spec, twin}) == 1
    assert {spec: 1}[twin] == 1


def test_with_channels_keeps_the_depth_multiplier() -> None:
    dw = LayerSpec("depthwise_conv2d", 8, 8, 16, 32, (3, 3))
    assert dw.with_channels(cin=24).cout == 48
    conv = LayerSpec("conv2d", 8, 8, 16, 32)
    assert conv.with_channels(cout=8) == LayerSpec("conv2d", 8, 8, 16, 8)


# -- LayerSpec: shapes and costs ------------------------------------------------------------


@pytest.mark.parametrize("spec, shape", [
    (LayerSpec("conv2d", 224, 224, 3, 32, (3, 3), (2, 2)), (112, 112, 32)),
    (LayerSpec("conv2d", 225, 225, 3, 32, (3, 3), (2, 2)), (113, 113, 32)),
    (LayerSpec("conv2d", 224, 224, 3, 32, (3, 3), (2, 2), "valid"), (111, 111, 32)),
    (LayerSpec("conv2d", 7, 9, 3, 5, (3, 1), (1, 2), "valid"), (5, 5, 5)),
    (LayerSpec("conv2d", 10, 10, 3, 4, (3, 3), (1, 1), "valid", (2, 2)), (6, 6, 4)),
    (LayerSpec("conv2d", 10, 10, 3, 4, (3, 3), (3, 3), "same", (2, 2)), (4, 4, 4)),
    (LayerSpec("depthwise_conv2d", 7, 7, 8, 16, (3, 3), (2, 2)), (4, 4, 16)),
    (LayerSpec("depthwise_conv2d", 7, 7, 8, 8, (3, 3), (2, 2), "valid"), (3, 3, 8)),
    (LayerSpec("max_pool", 9, 9, 4, kernel=(2, 2), stride=(2, 2)), (5, 5, 4)),
    (LayerSpec("avg_pool", 9, 9, 4, kernel=(3, 3), stride=(2, 2), padding="valid"), (4, 4, 4)),
    (LayerSpec("global_avg_pool", 7, 5, 64), (1, 1, 64)),
    (LayerSpec("fully_connected", 2, 3, 4, 10), (1, 1, 10)),
    (LayerSpec("add", 6, 5, 4), (6, 5, 4)),
    (LayerSpec("channel_mul", 6, 5, 4), (6, 5, 4)),
    (LayerSpec("concat", 6, 5, 12, parts=(4, 8)), (6, 5, 12)),
    (LayerSpec("pad", 6, 5, 4, pads=(0, 1, 2, 3)), (7, 10, 4)),
    (LayerSpec("softmax", 1, 1, 10), (1, 1, 10)),
])
def test_output_shape_follows_tflite(spec: LayerSpec, shape: tuple[int, int, int]) -> None:
    assert spec.output_shape == shape


@settings(max_examples=60, deadline=None)
@given(layer_specs())
def test_output_shape_matches_the_interpreter(spec: LayerSpec) -> None:
    """The shape TFLite itself computes for the built layer model is the spec's."""
    from ai_edge_litert.interpreter import Interpreter

    from bench.tflite_build import build_layer

    if spec.op != "concat":  # its channels are its parts' (at most 4 x 64)
        spec = spec.with_channels(cin=min(spec.cin, 16), cout=min(spec.cout, 16))
    interp = Interpreter(model_content=build_layer(spec))
    interp.allocate_tensors()
    out = interp.get_output_details()[0]["shape"]
    want = ((1, spec.cout) if spec.op == "fully_connected" else (1, *spec.output_shape))
    assert tuple(int(v) for v in out) == want


def test_macs_and_params() -> None:
    conv = LayerSpec("conv2d", 112, 112, 32, 64)
    assert conv.macs == 112 * 112 * 32 * 64
    assert conv.params == 32 * 64 + 64
    dw = LayerSpec("depthwise_conv2d", 112, 112, 32, kernel=(3, 3), stride=(2, 2))
    assert dw.macs == 56 * 56 * 32 * 9
    assert dw.params == 9 * 32 + 32
    fc = LayerSpec("fully_connected", 1, 1, 1024, 1000, bias=False)
    assert fc.macs == fc.params == 1024 * 1000
    assert LayerSpec("add", 4, 4, 8).params == 0


# -- LayerSpec: errors ----------------------------------------------------------------------


C8 = {"op": "conv2d", "h": 8, "w": 8, "cin": 4, "cout": 4}  # a valid conv, changed per case


@pytest.mark.parametrize("kwargs, words", [
    ({**C8, "cin": 0}, ["conv2d", "cin", "positive", "0"]),
    ({**C8, "cout": -2}, ["conv2d", "cout", "positive", "-2"]),
    ({"op": "conv2d", "h": 8, "w": 8, "cin": 4}, ["cout", "positive"]),
    ({**C8, "op": "fully_connected", "cout": 0}, ["fully_connected", "cout"]),
    ({"op": "max_pool", "h": 0, "w": 8, "cin": 4}, ["max_pool", "h"]),
    ({**C8, "h": 4, "kernel": (5, 5), "padding": "valid"},
     ["conv2d", "kernel 5x5", "larger than the input 4x8", "valid"]),
    ({**C8, "op": "depthwise_conv2d", "h": 5, "w": 5, "kernel": (3, 3), "padding": "valid",
      "dilation": (3, 3)}, ["kernel 7x7", "larger", "5x5"]),
    ({"op": "avg_pool", "h": 2, "w": 2, "cin": 4, "kernel": (3, 3), "padding": "valid"},
     ["avg_pool", "larger"]),
    ({**C8, "op": "conv3d"}, ["unknown op", "conv3d", "conv2d"]),
    ({**C8, "act": "gelu"}, ["act", "gelu"]),
    ({**C8, "padding": "full"}, ["padding", "full"]),
    ({**C8, "dtype": "int4"}, ["dtype", "int4", "float32", "int8"]),
    ({**C8, "stride": (0, 1)}, ["stride", "positive"]),
    ({**C8, "kernel": (3, 3, 3)}, ["kernel", "two"]),
    ({**C8, "kernel": 3}, ["kernel", "two positive integers", "3"]),
    ({**C8, "op": "depthwise_conv2d", "cout": 6}, ["multiple", "6", "4"]),
    ({"op": "max_pool", "h": 8, "w": 8, "cin": 4, "dilation": (2, 2)}, ["max_pool", "dilation"]),
    ({"op": "global_avg_pool", "h": 8, "w": 8, "cin": 4, "act": "relu"},
     ["global_avg_pool", "activation"]),
    ({"op": "hard_swish", "h": 8, "w": 8, "cin": 4, "act": "relu6"},
     ["hard_swish", "activation"]),
    ({"op": "concat", "h": 8, "w": 8, "cin": 12, "parts": (4, 4)},
     ["concat", "summing to in channels (12)", "(4, 4)"]),
    ({"op": "concat", "h": 8, "w": 8, "cin": 4, "parts": (4,)}, ["concat", "two or more"]),
    ({"op": "pad", "h": 8, "w": 8, "cin": 4, "pads": (0, -1, 0, 0)}, ["pad", "non-negative"]),
    ({"op": "pad", "h": 8, "w": 8, "cin": 4, "pads": (1, 1)}, ["pad", "four"]),
    ({"op": "conv2d", "h": 50000, "w": 50000, "cin": 3, "cout": 32, "stride": (2, 2)},
     ["conv2d", "output 25000x25000x32 (float32) would need 74.5 GiB", "at most 2 GiB"]),
    ({"op": "fully_connected", "h": 1, "w": 1, "cin": 600_000, "cout": 1000},
     ["600,001,000 weights (float32) would need 2.2 GiB"]),
])
def test_invalid_spec_names_what_is_wrong(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(SpecError) as e:
        LayerSpec(**kwargs)
    for word in words:
        assert word in str(e.value)


def test_the_size_limit_is_per_tensor_at_its_dtype() -> None:
    LayerSpec("fully_connected", 1, 1, 500_000, 1000, dtype="int8")  # 0.5 GB: fits
    with pytest.raises(SpecError, match="would need 2.0 GiB"):
        LayerSpec("fully_connected", 1, 1, 537_000, 1000)  # the same at float32, just over


@pytest.mark.parametrize("key, words", [
    ("conv2d", ["not a layer key", "op:field=value"]),
    ("", ["not a layer key"]),
    ("conv2d:in=8x8x4,out", ["'out'", "field=value"]),
    ("conv2d:in=8x8,out=4", ["in=", "3 integers"]),
    ("conv2d:in=8xax4,out=4", ["in=", "integers"]),
    ("conv2d:in=8x8x4,out=four", ["conv2d:in=8x8x4,out=four"]),
    ("conv2d:out=4", ["missing field 'in'"]),
    ("conv2d:in=8x8x4,k=3x3", ["missing field 'out'"]),
    ("fully_connected:in=1x1x4", ["missing field 'out'"]),
    ("conv2d:in=8x8x4,out=4,colour=red", ["unknown field", "colour"]),
    ("conv9d:in=8x8x4,out=4", ["unknown op", "conv9d"]),
    ("conv2d:in=8x8x0,out=4", ["cin", "positive"]),
    ("conv2d:in=4x4x3,out=4,k=5x5,pad=valid", ["larger than the input"]),
    ("conv2d:in=8x8x4,out=4,k=3", ["k=", "2 integers"]),
])
def test_bad_key_text_raises_spec_error(key: str, words: list[str]) -> None:
    with pytest.raises(SpecError) as e:
        LayerSpec.parse(key)
    for word in words:
        assert word in str(e.value)


# -- Network --------------------------------------------------------------------------------


def residual_net() -> Network:
    """conv -> dw -> project, plus a residual add of conv and project."""
    return Network("res", (16, 16, 3), (
        Node("c1", LayerSpec("conv2d", 16, 16, 3, 8, (3, 3), (2, 2), act="relu6"), (INPUT,)),
        Node("dw", LayerSpec("depthwise_conv2d", 8, 8, 8, kernel=(3, 3), act="relu6"), ("c1",)),
        Node("pw", LayerSpec("conv2d", 8, 8, 8, 8), ("dw",)),
        Node("add", LayerSpec("add", 8, 8, 8), ("c1", "pw")),
        Node("pool", LayerSpec("global_avg_pool", 8, 8, 8), ("add",)),
        Node("fc", LayerSpec("fully_connected", 1, 1, 8, 10), ("pool",)),
    ), meta={"family": "test"})


def test_network_is_a_dag_with_explicit_inputs() -> None:
    net = residual_net()
    assert net.node("add").inputs == ("c1", "pw")
    assert net.outputs == ("fc",)
    assert net.keys == [s.key for s in net.specs]
    assert net.macs == sum(s.macs for s in net.specs)
    assert net.params == sum(s.params for s in net.specs)
    with pytest.raises(KeyError):
        net.node("nope")


def test_network_json_round_trip() -> None:
    net = residual_net()
    back = Network.from_json(net.to_json(indent=1))
    assert back == net
    assert back.meta == {"family": "test"}
    assert back.node("add").inputs == ("c1", "pw")
    assert json.loads(back.to_json()) == json.loads(net.to_json())


def test_network_file_round_trip(tmp_path) -> None:
    path = tmp_path / "net.json"
    path.write_text(residual_net().to_json())
    assert Network.load(path) == residual_net()


def test_network_json_accepts_spec_objects_and_default_inputs() -> None:
    d = {"input": [8, 8, 3], "nodes": [
        {"name": "c", "spec": {"op": "conv2d", "h": 8, "w": 8, "cin": 3, "cout": 4,
                               "kernel": [3, 3]}},
        {"name": "p", "spec": "global_avg_pool:in=8x8x4", "inputs": "c"},
    ]}
    net = Network.from_json_dict(d)
    assert net.node("c").inputs == (INPUT,)
    assert net.node("c").spec.kernel == (3, 3)
    assert net.outputs == ("p",)


def test_shape_mismatch_at_an_add_names_the_node() -> None:
    with pytest.raises(SpecError) as e:
        Network("bad", (16, 16, 3), (
            Node("c1", LayerSpec("conv2d", 16, 16, 3, 8, (3, 3), (2, 2)), (INPUT,)),
            Node("c2", LayerSpec("conv2d", 8, 8, 8, 16), ("c1",)),
            Node("sum", LayerSpec("add", 8, 8, 16), ("c1", "c2")),
        ))
    msg = str(e.value)
    assert "'sum'" in msg and "shape mismatch" in msg and "'c1'" in msg
    assert "8x8x8" in msg and "8x8x16" in msg


@pytest.mark.parametrize("nodes, words", [
    ([Node("a", LayerSpec("conv2d", 8, 8, 4, 4), (INPUT,))], ["'a'", "shape mismatch", "8x8x3"]),
    ([Node("a", LayerSpec("conv2d", 8, 8, 3, 4), ("b",))], ["'a'", "'b'", "not an earlier node"]),
    ([Node("a", LayerSpec("conv2d", 8, 8, 3, 4), (INPUT,)),
      Node("a", LayerSpec("conv2d", 8, 8, 4, 4), ("a",))], ["'a'", "duplicate"]),
    ([Node("a", LayerSpec("add", 8, 8, 3), (INPUT,))], ["'a'", "add takes 2 input"]),
    ([Node("a", LayerSpec("conv2d", 8, 8, 3, 4), (INPUT, INPUT))], ["'a'", "takes 1 input"]),
    ([Node("a", LayerSpec("concat", 8, 8, 6, parts=(3, 3)), (INPUT,))],
     ["'a'", "concat takes 2 input"]),
    ([Node("a", LayerSpec("concat", 8, 8, 7, parts=(3, 4)), (INPUT, INPUT))],
     ["'a'", "shape mismatch", "gives 8x8x3", "expects 8x8x4"]),
    ([Node("a", LayerSpec("channel_mul", 8, 8, 3), (INPUT, INPUT))],
     ["'a'", "shape mismatch", "expects 1x1x3"]),
    ([], ["no nodes"]),
])
def test_bad_networks_name_the_node(nodes: list[Node], words: list[str]) -> None:
    with pytest.raises(SpecError) as e:
        Network("n", (8, 8, 3), tuple(nodes))
    for word in words:
        assert word in str(e.value)


def test_multi_input_nodes_check_each_input() -> None:
    """Squeeze-excite (pool -> convs -> hard_sigmoid -> channel_mul) and a channel concat."""
    s = LayerSpec.parse
    net = Network("se", (8, 8, 4), (
        Node("pool", s("global_avg_pool:in=8x8x4"), (INPUT,)),
        Node("down", s("conv2d:in=1x1x4,out=2,act=relu"), ("pool",)),
        Node("up", s("conv2d:in=1x1x2,out=4"), ("down",)),
        Node("gate", s("hard_sigmoid:in=1x1x4"), ("up",)),
        Node("scale", s("channel_mul:in=8x8x4"), (INPUT, "gate")),
        Node("cat", s("concat:in=8x8x12,parts=4+4+4"), ("scale", INPUT, "scale")),
        Node("padded", s("pad:in=8x8x12,pads=0x1x0x1"), ("cat",)),
    ))
    assert net.node("padded").spec.output_shape == (9, 9, 12)
    assert Network.from_json(net.to_json()) == net


def test_bad_output_is_refused() -> None:
    node = Node("a", LayerSpec("conv2d", 8, 8, 3, 4), (INPUT,))
    with pytest.raises(SpecError, match="output 'z' is not a node"):
        Network("n", (8, 8, 3), (node,), outputs=("z",))
    with pytest.raises(SpecError, match="output 'input' is not a node"):
        Network("n", (8, 8, 3), (node,), outputs=(INPUT,))


def _net_json(*nodes: dict, inp=(8, 8, 3)) -> str:
    return json.dumps({"name": "user", "input": list(inp), "nodes": list(nodes)})


@pytest.mark.parametrize("text, words", [
    ("{not json", ["not valid JSON"]),
    ("[1, 2]", ["must be an object"]),
    (json.dumps({"nodes": []}), ["missing 'input'"]),
    (json.dumps({"input": [8, 8, 3]}), ["missing 'nodes'"]),
    (json.dumps({"input": [8, 8], "nodes": []}), ["'input' must be [H, W, C]"]),
    (json.dumps({"input": [8, 8, 3], "nodes": 5}), ["'nodes'", "list"]),
    (json.dumps({"input": [8, 8, 3], "nodes": {"a": 1}}), ["'nodes'", "list"]),
    (_net_json({"name": "c", "spec": "conv2d:in=8x8x3,out=0"}),
     ["network 'user'", "node 'c'", "cout must be a positive integer"]),
    (_net_json({"name": "c", "spec": "conv2d:in=8x8x3,out=4,k=9x9,pad=valid"}),
     ["node 'c'", "kernel 9x9 is larger than the input 8x8"]),
    (_net_json({"name": "c", "spec": "conv2d:in=8x8x3,out=4"},
               {"name": "d", "spec": "conv2d:in=8x8x4,out=8", "inputs": ["c"]},
               {"name": "sum", "spec": "add:in=8x8x4", "inputs": ["c", "d"]}),
     ["node 'sum'", "shape mismatch", "'d'"]),
    (_net_json({"name": "c", "spec": "conv5d:in=8x8x3,out=4"}), ["node 'c'", "unknown op"]),
    (_net_json({"name": "c"}), ["node 'c'", "'spec'"]),
    (_net_json("c"), ["node '#0'", "'name', 'spec'"]),
    (_net_json({"name": "c", "spec": {"op": "conv2d", "h": 8, "w": 8, "cin": 3, "cout": 4,
                                      "colour": 1}}), ["node 'c'", "colour"]),
    (_net_json({"name": "c", "spec": {"op": "conv2d", "h": 8, "w": 8, "cin": 3, "cout": 4,
                                      "kernel": ["a", "b"]}}), ["node 'c'", "kernel"]),
    (_net_json({"name": "c", "spec": {"op": "conv2d", "h": 8, "w": 8, "cin": 3, "cout": 4,
                                      "kernel": 3}}), ["node 'c'", "kernel"]),
    (_net_json({"name": "c", "spec": "conv2d:in=8x8x3,out=4", "inputs": 7}),
     ["node 'c'", "inputs"]),
])
def test_bad_network_json_says_which_node_and_what(text: str, words: list[str]) -> None:
    with pytest.raises(SpecError) as e:
        Network.from_json(text)
    for word in words:
        assert word in str(e.value)


def test_network_load_names_the_file(tmp_path) -> None:
    with pytest.raises(SpecError, match="cannot read network file"):
        Network.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(_net_json({"name": "c", "spec": "conv2d:in=8x8x3,out=-1"}))
    with pytest.raises(SpecError) as e:
        Network.load(bad)
    assert str(bad) in str(e.value) and "node 'c'" in str(e.value)


def test_chain_links_each_layer_to_the_one_before() -> None:
    net = chain("c", (8, 8, 3), [("a", LayerSpec("conv2d", 8, 8, 3, 4)),
                                 ("b", LayerSpec("conv2d", 8, 8, 4, 2))])
    assert [n.inputs for n in net.nodes] == [(INPUT,), ("a",)]
    assert np.prod(net.node("b").spec.output_shape) == 8 * 8 * 2
