"""LayerSpec / Network -> .tflite bytes, without TensorFlow: the entry points and the weights.

The flatbuffer is written directly with the schema that ships with ai-edge-litert. The TF
converter costs ~5 s to import and ~0.4 s per single-layer model; this costs about a
millisecond. The writer is ``bench.tflite_graph`` (tensors, buffers, op codes, signature)
and each op kind's operators come from ``bench.tflite_ops`` (``BUILDERS``); this module
wires them into models and draws their weights:

- ``build_layer(spec)``: one layer alone. Inputs ``input`` (and ``input_b``, ... for ops
  reading several tensors: a residual add reads both operands from memory), output
  ``output``.
- ``build_network(net)``: the whole DAG. Input ``input``, outputs named after the
  ``net.outputs`` nodes.

Every model carries a ``serving_default`` SignatureDef, so signature-based tools
(``litert-benchmark``, ``Interpreter.get_signature_runner``) can run it.

Weights are deterministic random (seeded numpy PCG64), variance-preserving: He-scaled
before a ReLU/ReLU6, LeCun-scaled before a linear output (uniform, as torch's default
init), so deep chains neither explode nor vanish. In a network each node's seed is
``node_seed(seed, name)`` (crc32, not Python's salted ``hash``).

Tensor layouts are TFLite's: NHWC activations, conv weights OHWI ``[cout, kh, kw, cin]``,
depthwise weights ``[1, kh, kw, cout]``, fully-connected weights ``[cout, h*w*cin]``
(the input flattened in NHWC order). A fully-connected output is ``[1, cout]``
(``keep_num_dims=False``); where a consumer other than another fully-connected layer
reads it, a RESHAPE to ``[1, 1, 1, cout]`` is inserted (the shape LayerSpec says).

``dt=int8`` layers are full-integer quantized as the TF converter writes them
(``bench.tflite_quant``), with int8 model inputs and outputs (no QUANTIZE/DEQUANTIZE: the
LUT times the int8 op alone). With no calibration data, activation ranges are assumed from
the fused activation (``ACT_RANGE``; the weights keep activations near unit variance); with
it (``build_network(ranges=...)``, a trained model's: ``adapter.quantize``) they are the
observed min/max.

``dt=float16`` layers are written as the TF converter's float16 quantization writes them
(``bench.tflite_graph``): FLOAT16 weights dequantized to float32 in the graph, float32
activations. The GPU delegate runs such a model in half precision; XNNPACK only when forced
to (it reads fp16 accumulation from the model's metadata as not allowed); on this machine's
CPU it dequantizes the weights once, at load.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from bench.tflite_graph import Graph
from bench.tflite_ops import BUILDERS, OpBuilder, builder_for, output_shape
from bench.tflite_quant import INPUT_QUANT, activation_quants, output_quant
from lut_db.network import INPUT, Network
from lut_db.spec import LayerSpec, SpecError

__all__ = [
    "BUILDERS",
    "OpBuilder",
    "build_layer",
    "build_network",
    "layer_weights",
    "network_weights",
    "node_seed",
]


# -- weights ------------------------------------------------------------------------------


def node_seed(seed: int, name: str) -> int:
    """The weight seed of network node ``name``: stable across processes and platforms."""
    return zlib.crc32(f"{seed}:{name}".encode())


def layer_weights(spec: LayerSpec, seed: int) -> dict[str, np.ndarray]:
    """Deterministic random ``weight`` (TFLite layout) and ``bias`` of one layer.

    Empty for ops without weights; no ``bias`` when ``spec.bias`` is False.
    """
    shape_of = BUILDERS[spec.op].weight_shape
    if shape_of is None:
        return {}
    rng = np.random.default_rng(seed)
    shape = shape_of(spec)
    fan_in = int(np.prod(shape)) // spec.cout
    gain = 1.0 if spec.act == "none" else 2.0  # LeCun before linear, He before ReLU
    # Uniform with the same variance as He/LeCun-normal: 5x faster to draw than normals,
    # which matters when a sweep builds thousands of models.
    out = {"weight": _uniform(rng, shape, np.sqrt(3.0 * gain / fan_in))}
    if spec.bias:
        out["bias"] = _uniform(rng, (spec.cout,), 0.1)
    return out


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], limit: float) -> np.ndarray:
    """float32 samples of U(-limit, limit), drawn and scaled in place."""
    x = rng.random(shape, dtype=np.float32)
    x *= np.float32(2.0 * limit)
    x -= np.float32(limit)
    return x


def network_weights(net: Network, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """``layer_weights`` of every node, seeded per node by ``node_seed(seed, name)``."""
    return {n.name: layer_weights(n.spec, node_seed(seed, n.name)) for n in net.nodes}


def _checked(net: Network, weights: Mapping[str, Mapping[str, np.ndarray]]
             ) -> dict[str, Mapping[str, np.ndarray]]:
    """Given weights, refused (SpecError) unless they have the shapes the nodes' specs say."""
    specs = {n.name: n.spec for n in net.nodes}
    for name, w in weights.items():
        if name not in specs:
            raise SpecError(f"weights given for {name!r}, which is not a node of {net.name}")
        spec = specs[name]
        shape_of = builder_for(spec).weight_shape
        want = {"weight": shape_of(spec)} if shape_of else {}
        if spec.bias and want:
            want["bias"] = (spec.cout,)
        got = {k: tuple(np.shape(v)) for k, v in w.items()}
        if got != want or any(np.asarray(v).dtype != np.float32 for v in w.values()):
            raise SpecError(f"node {name} ({spec.key}): weights {got} given, float32 {want} "
                            "expected")
    return dict(weights)


# -- public builders --------------------------------------------------------------------------


def _layer_input_names(n: int) -> list[str]:
    """``input``, ``input_b``, ``input_c``, ...: one per activation input of a layer model."""
    return ["input"] + [f"input_{chr(ord('a') + i)}" for i in range(1, n)]


def build_layer(spec: LayerSpec, seed: int = 0) -> bytes:
    """A standalone model of one layer: inputs ``input`` (+ ``input_b``, ... for ops reading
    several tensors), output ``output``."""
    op = builder_for(spec)
    g = Graph()
    shapes = spec.input_shapes
    in_quant = INPUT_QUANT if spec.dtype == "int8" else None
    inputs = {n: g.activation(n, (1, *shape), in_quant)
              for n, shape in zip(_layer_input_names(len(shapes)), shapes)}
    out = g.activation("output", output_shape(spec), in_quant and output_quant(spec, in_quant))
    op.emit(g, spec, list(inputs.values()), out, layer_weights(spec, seed), "layer")
    return g.finish(inputs, {"output": out}, description=spec.key)


def build_network(net: Network, seed: int = 0,
                  weights: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                  ranges: Mapping[str, tuple[float, float]] | None = None) -> bytes:
    """The whole DAG as one model: input ``input``, one output per ``net.outputs`` node.

    ``weights`` (node -> ``weight``/``bias`` in TFLite layout, float32; e.g. a trained
    model's) replace the seeded random ones for the nodes it names. ``ranges`` (int8: node
    or ``input`` -> the (min, max) calibration saw) replace the assumed ``ACT_RANGE``s;
    ops whose kernels fix their output quantization keep it (``activation_quants``).
    """
    given = _checked(net, weights or {})
    weights = {n.name: given[n.name] if n.name in given
               else layer_weights(n.spec, node_seed(seed, n.name)) for n in net.nodes}
    g = Graph()
    dtypes = {n.spec.dtype for n in net.nodes}
    if len(dtypes) > 1:
        raise SpecError(f"network {net.name!r} mixes dtypes {sorted(dtypes)}: one model runs one")
    int8 = dtypes == {"int8"}
    quants = activation_quants(net, ranges) if int8 else {}
    tensors = {INPUT: g.activation(INPUT, (1, *net.input_shape), quants.get(INPUT))}
    for node in net.nodes:
        op = builder_for(node.spec)
        ins = [tensors[src] for src in node.inputs]
        if node.spec.op != "fully_connected":  # everything else reads NHWC
            ins = [g.as_4d(t) for t in ins]
        tensors[node.name] = g.activation(node.name, output_shape(node.spec),
                                          quants.get(node.name))
        op.emit(g, node.spec, ins, tensors[node.name], weights[node.name], node.name)
    outputs = {name: tensors[name] for name in dict.fromkeys(net.outputs)}
    return g.finish({INPUT: tensors[INPUT]}, outputs, description=net.name)
