"""The network DAG: Network (named LayerSpecs and the edges between them) and its JSON form.

A network is shape-checked on construction: each node's inputs must give the shapes its
LayerSpec reads (lut_db.spec holds the layer key itself).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lut_db.spec import LayerSpec, SpecError, shape_text

INPUT = "input"  # the name a Network node uses for the network's input


@dataclass(frozen=True)
class Node:
    """A named layer and the names of the nodes it reads (``input`` = the network input)."""

    name: str
    spec: LayerSpec
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Network:
    """A DAG of named LayerSpecs in topological order, shape-checked on construction.

    JSON form (see docs/models.md)::

        {"name": "tiny", "input": [32, 32, 3],
         "nodes": [{"name": "c1", "spec": "conv2d:in=32x32x3,out=8,k=3x3,s=2x2,pad=same,act=relu",
                    "inputs": ["input"]}, ...],
         "outputs": ["c1"]}

    ``outputs`` is optional (default: the last node).
    """

    name: str
    input_shape: tuple[int, int, int]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        if not self.nodes:
            raise SpecError(f"network {self.name!r} has no nodes")
        if not self.outputs:
            object.__setattr__(self, "outputs", (self.nodes[-1].name,))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        self._check()

    def _check(self) -> None:
        shapes: dict[str, tuple[int, int, int]] = {INPUT: self.input_shape}
        for node in self.nodes:
            where = f"network {self.name!r}, node {node.name!r}"
            if node.name in shapes:
                raise SpecError(f"{where}: duplicate node name")
            wants = node.spec.input_shapes
            if len(node.inputs) != len(wants):
                raise SpecError(f"{where}: {node.spec.op} takes {len(wants)} input(s), "
                                f"got {len(node.inputs)}")
            for src, want in zip(node.inputs, wants):
                if src not in shapes:
                    raise SpecError(f"{where}: input {src!r} is not an earlier node")
                if shapes[src] != want:
                    raise SpecError(
                        f"{where}: shape mismatch: {src!r} gives {shape_text(shapes[src])} but "
                        f"{node.spec.op} expects {shape_text(want)}"
                    )
            shapes[node.name] = node.spec.output_shape
        for out in self.outputs:
            if out not in shapes or out == INPUT:
                raise SpecError(f"network {self.name!r}: output {out!r} is not a node")

    # -- queries ------------------------------------------------------------------------------
    @property
    def specs(self) -> list[LayerSpec]:
        return [n.spec for n in self.nodes]

    @property
    def keys(self) -> list[str]:
        return [n.spec.key for n in self.nodes]

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.specs)

    @property
    def params(self) -> int:
        return sum(s.params for s in self.specs)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    # -- JSON ---------------------------------------------------------------------------------
    def with_dtype(self, dtype: str) -> Network:
        """The same network with every layer at ``dtype``."""
        nodes = tuple(Node(n.name, replace(n.spec, dtype=dtype), n.inputs) for n in self.nodes)
        return Network(self.name, self.input_shape, nodes, self.outputs, dict(self.meta))

    def to_json_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "input": list(self.input_shape),
            "nodes": [{"name": n.name, "spec": n.spec.key, "inputs": list(n.inputs)}
                      for n in self.nodes],
            "outputs": list(self.outputs),
        }
        if self.meta:
            d["meta"] = self.meta
        return d

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_json_dict(), indent=indent)

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> Network:
        if not isinstance(d, dict):
            raise SpecError("network JSON must be an object with 'input' and 'nodes'")
        name = str(d.get("name", "network"))
        for required in ("input", "nodes"):
            if required not in d:
                raise SpecError(f"network {name!r}: missing {required!r}")
        shape = d["input"]
        if (not isinstance(shape, list) or len(shape) != 3
                or not all(isinstance(v, int) and v > 0 for v in shape)):
            raise SpecError(f"network {name!r}: 'input' must be [H, W, C] positive integers")
        if not isinstance(d["nodes"], list):
            raise SpecError(f"network {name!r}: 'nodes' must be a list of node objects")
        outputs = d.get("outputs", [])
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise SpecError(f"network {name!r}: 'outputs' must be a list of node names")
        nodes = []
        for i, nd in enumerate(d["nodes"]):
            label = nd.get("name", f"#{i}") if isinstance(nd, dict) else f"#{i}"
            try:
                nodes.append(_node_from_json(nd))
            except SpecError as e:
                raise SpecError(f"network {name!r}, node {label!r}: {e}") from None
        return cls(name, tuple(shape), tuple(nodes), tuple(outputs), meta=d.get("meta", {}))

    @classmethod
    def from_json(cls, text: str) -> Network:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"not valid JSON: {e}") from None
        return cls.from_json_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Network:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise SpecError(f"cannot read network file {path}: {e.strerror}") from None
        try:
            return cls.from_json(text)
        except SpecError as e:
            raise SpecError(f"{path}: {e}") from None


def _node_from_json(nd: Any) -> Node:
    if not isinstance(nd, dict) or "name" not in nd or "spec" not in nd:
        raise SpecError("each node needs 'name', 'spec' and 'inputs'")
    spec = nd["spec"]
    if isinstance(spec, dict):
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "key"}
        try:
            spec = LayerSpec(**fields)
        except SpecError:
            raise
        except (TypeError, ValueError) as e:
            raise SpecError(f"bad spec object: {e}") from None
    else:
        spec = LayerSpec.parse(str(spec))
    inputs = nd.get("inputs", [INPUT])
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise SpecError(f"'inputs' must be a list of node names, got {inputs!r}")
    return Node(str(nd["name"]), spec, tuple(inputs))


def chain(name: str, input_shape: tuple[int, int, int],
          layers: Iterable[tuple[str, LayerSpec]]) -> Network:
    """A Network where each layer reads the one before it (a convenience for tests)."""
    nodes, prev = [], INPUT
    for lname, spec in layers:
        nodes.append(Node(lname, spec, (prev,)))
        prev = lname
    return Network(name, input_shape, tuple(nodes))
