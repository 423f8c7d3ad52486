"""torch module -> ``lut_db`` Network, through torch.fx.

Generic: any network made of the supported ops traces, whatever its Python
structure. Each LUT layer is what TFLite runs as one op, so the trace folds what
the converter folds: a BatchNorm into the convolution before it (which then has a
bias), a ReLU/ReLU6 into the conv, linear layer, add or pool before it; flatten,
reshape, dropout and identity disappear. Anything else raises AdaptError naming
the module or function.

Node names: a convolution (or linear layer) whose parent module holds nothing
but it and what folds into it (a conv-BN-act block) is named after the block,
otherwise after itself; dots become underscores (``b5.expand`` -> ``b5_expand``).
A residual add is named after the module whose forward makes it (``b5_add``).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from adapter.errors import AdaptError
from adapter.same_padding import same_pads
from lut_db.network import INPUT, Network, Node
from lut_db.spec import LayerSpec, SpecError

Shape = tuple[int, int, int]  # H, W, C

_PASSTHROUGH_FUNCS = {torch.flatten, torch.reshape}
_PASSTHROUGH_METHODS = {"flatten", "view", "reshape", "contiguous"}
_PASSTHROUGH_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_ACT_FUNCS = {F.relu: "relu", torch.relu: "relu", F.relu6: "relu6"}


@dataclass
class _Layer:
    """A LUT layer under construction (its activation and BN are folded in as met)."""

    name: str
    op: str
    shape: Shape
    inputs: tuple[str, ...]
    cout: int = 0
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: str = "same"
    dilation: tuple[int, int] = (1, 1)
    bias: bool = True
    act: str = "none"
    has_bn: bool = False
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # pad layers: top, bottom, left, right
    modules: list[str] = field(default_factory=list)  # folded module names (for naming)

    def spec(self) -> LayerSpec:
        h, w, c = self.shape
        return LayerSpec(self.op, h, w, c, self.cout or c, kernel=self.kernel,
                         stride=self.stride, padding=self.padding, dilation=self.dilation,
                         act=self.act, bias=self.bias, pads=self.pads)


@dataclass
class _Value:
    shape: Shape
    layer: str  # the _Layer (or INPUT) whose output this is
    users: int  # how many graph nodes read it


def trace(model: nn.Module, input_shape: Shape, name: str = "traced") -> Network:
    """The Network of ``model`` for one NHWC input shape (batch 1)."""
    return trace_modules(model, input_shape, name)[0]


def trace_modules(model: nn.Module, input_shape: Shape,
                  name: str = "traced") -> tuple[Network, dict[str, list[str]]]:
    """``trace`` plus, per node, the names of the modules folded into it (conv, BN, act;
    the first may be a scope that is not a module, e.g. ``b3.add``): what export reads."""
    try:
        tracer = _ConvLeaves()
        gm = fx.GraphModule(model, tracer.trace(model))
    except Exception as e:  # noqa: BLE001 - fx raises many kinds; all mean "cannot trace"
        raise AdaptError(f"cannot trace {type(model).__name__} with torch.fx: {e}") from None
    t = _Tracer(gm, model)
    net = t.run(tuple(int(v) for v in input_shape), name)
    return net, t.folded


class _ConvLeaves(fx.Tracer):
    """Every nn.Conv2d is one graph node, subclasses too (``SameConv2d`` pads in forward)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, qualname)


class _Tracer:
    def __init__(self, gm: fx.GraphModule, model: nn.Module):
        self.gm = gm
        self.modules = dict(model.named_modules())
        self.layers: dict[str, _Layer] = {}
        self.values: dict[fx.Node, _Value] = {}
        self.folded: dict[str, list[str]] = {}  # node name -> folded module names

    def run(self, input_shape: Shape, name: str) -> Network:
        outputs: list[str] = []
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if self.values:
                    raise AdaptError(f"{node.name}: only single-input networks are supported")
                self.values[node] = _Value(input_shape, INPUT, len(node.users))
            elif node.op == "output":
                outputs = [self._arg(a, node).layer for a in _flat(node.args[0])]
            else:
                self.values[node] = self._visit(node)
        if INPUT in outputs or not self.layers:
            raise AdaptError("the traced network has no layers")
        return self._network(input_shape, name, outputs)

    # -- dispatch -----------------------------------------------------------------------
    def _visit(self, node: fx.Node) -> _Value:
        if node.op == "call_module":
            return self._module(node, self.modules[node.target])
        if node.op == "call_function":
            return self._function(node)
        if node.op == "call_method":
            return self._method(node)
        raise AdaptError(f"unsupported graph node {node.name} ({node.op} {node.target}); "
                         "supported: conv2d, depthwise conv, linear, BN, ReLU/ReLU6, add, "
                         "pools, flatten")

    def _module(self, node: fx.Node, m: nn.Module) -> _Value:
        x = self._arg(node.args[0], node)
        where = f"module {node.target!r} ({type(m).__name__})"
        if isinstance(m, nn.Conv2d):
            return self._conv(node, m, x, where)
        if isinstance(m, nn.BatchNorm2d):
            return self._fold_bn(node, x, where)
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            return self._fold_act(node, x, "relu" if isinstance(m, nn.ReLU) else "relu6", where)
        if isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0):
            return self._fold_act(node, x, "relu6", where)
        if isinstance(m, nn.Linear):
            return self._linear(node, m.in_features, m.out_features, m.bias is not None, x,
                                where)
        if isinstance(m, nn.AdaptiveAvgPool2d) and _pair(m.output_size) == (1, 1):
            return self._global_pool(node, x)
        if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            return self._pool(node, m, x, where)
        if isinstance(m, _PASSTHROUGH_MODULES):
            return _Value(x.shape, x.layer, len(node.users))
        raise AdaptError(f"unsupported {where}: no LUT layer kind for it (supported: Conv2d, "
                         "depthwise Conv2d, Linear, BatchNorm2d, ReLU, ReLU6, pools, add)")

    def _function(self, node: fx.Node) -> _Value:
        fn = node.target
        if fn in _ADD_FUNCS:
            return self._add(node)
        x = self._arg(node.args[0], node)
        if fn in _PASSTHROUGH_FUNCS or fn is F.dropout:
            return _Value(x.shape, x.layer, len(node.users))
        if fn in _ACT_FUNCS:
            return self._fold_act(node, x, _ACT_FUNCS[fn], f"function {fn.__name__}")
        if fn is F.hardtanh and tuple(node.args[1:3]) == (0.0, 6.0):
            return self._fold_act(node, x, "relu6", "function hardtanh")
        if fn is F.adaptive_avg_pool2d and _pair(node.args[1]) == (1, 1):
            return self._global_pool(node, x)
        raise AdaptError(f"unsupported function {getattr(fn, '__name__', fn)} "
                         f"(graph node {node.name}): no LUT layer kind for it")

    def _method(self, node: fx.Node) -> _Value:
        if node.target in ("add", "add_"):
            return self._add(node)
        x = self._arg(node.args[0], node)
        if node.target in _PASSTHROUGH_METHODS:
            return _Value(x.shape, x.layer, len(node.users))
        if node.target in ("relu", "relu_"):
            return self._fold_act(node, x, "relu", "method relu")
        if node.target == "mean" and _dims(node) in ({2, 3}, {-2, -1}):
            return self._global_pool(node, x)
        raise AdaptError(f"unsupported tensor method .{node.target}() (graph node "
                         f"{node.name}): no LUT layer kind for it")

    # -- layers -------------------------------------------------------------------------
    def _conv(self, node: fx.Node, m: nn.Conv2d, x: _Value, where: str) -> _Value:
        h, w, c = x.shape
        if m.groups == 1:
            op = "conv2d"
        elif m.groups == c == m.in_channels:
            op = "depthwise_conv2d"
        else:
            raise AdaptError(f"unsupported {where}: grouped convolution with {m.groups} groups "
                             "(only groups=1 or depthwise)")
        if m.in_channels != c:
            raise AdaptError(f"{where}: expects {m.in_channels} input channels, gets {c}")
        if m.padding_mode != "zeros":
            raise AdaptError(f"unsupported {where}: padding_mode={m.padding_mode!r}")
        pads = _explicit_pads(m, h, w)
        padding = "valid" if pads else _padding(m, where)
        if pads:  # torch pads where TFLite SAME would not: an explicit PAD, then VALID
            pad = self._new(node, "pad", x, pads=pads)
            pad.modules = [f"{node.target}.pad"]  # named after the conv; no weights of its own
            x = _Value(pad.spec().output_shape, pad.name, 1)
        layer = self._new(node, op, x, cout=m.out_channels, kernel=_pair(m.kernel_size),
                          stride=_pair(m.stride), padding=padding, dilation=_pair(m.dilation),
                          bias=m.bias is not None)
        want = _torch_conv_hw(h, w, m)
        if layer.spec().output_shape[:2] != want:  # the PAD above makes symmetric pads right
            raise AdaptError(f"unsupported {where}: its padding gives {want[0]}x{want[1]}, "
                             "which neither TFLite SAME nor VALID padding does")
        return self._out(node, layer)

    def _linear(self, node: fx.Node, fin: int, fout: int, bias: bool, x: _Value,
                where: str) -> _Value:
        if math.prod(x.shape) != fin:
            raise AdaptError(f"{where}: expects {fin} inputs, gets {'x'.join(map(str, x.shape))}")
        return self._out(node, self._new(node, "fully_connected", x, cout=fout, bias=bias))

    def _global_pool(self, node: fx.Node, x: _Value) -> _Value:
        return self._out(node, self._new(node, "global_avg_pool", x))

    def _pool(self, node: fx.Node, m: nn.Module, x: _Value, where: str) -> _Value:
        op = "avg_pool" if isinstance(m, nn.AvgPool2d) else "max_pool"
        k, s = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
        pad = _pair(m.padding)
        if getattr(m, "ceil_mode", False) or getattr(m, "dilation", 1) not in (1, (1, 1)):
            raise AdaptError(f"unsupported {where}: ceil_mode/dilation")
        padding = "valid" if pad == (0, 0) else "same" if pad == (k[0] // 2, k[1] // 2) else ""
        if not padding:
            raise AdaptError(f"unsupported {where}: padding {pad} is neither SAME nor VALID")
        return self._out(node, self._new(node, op, x, kernel=k, stride=s, padding=padding))

    def _add(self, node: fx.Node) -> _Value:
        args = [a for a in node.args if isinstance(a, fx.Node)]
        if len(args) != 2 or len(node.args) != 2 or node.kwargs:
            raise AdaptError(f"unsupported add (graph node {node.name}): only the sum of two "
                             "tensors of the same shape")
        a, b = (self._arg(v, node) for v in args)
        if a.shape != b.shape:
            raise AdaptError(f"add (graph node {node.name}): shapes {a.shape} and {b.shape} "
                             "differ (broadcasting is not a LUT layer)")
        layer = self._new(node, "add", a)
        layer.inputs = (a.layer, b.layer)
        return self._out(node, layer)

    # -- folding --------------------------------------------------------------------------
    def _fold_bn(self, node: fx.Node, x: _Value, where: str) -> _Value:
        layer = self.layers.get(x.layer)
        if (layer is None or layer.op not in ("conv2d", "depthwise_conv2d") or layer.has_bn
                or layer.act != "none" or x.users != 1):
            raise AdaptError(f"unsupported {where}: a BatchNorm must directly follow a "
                             "convolution whose output nothing else reads")
        layer.has_bn, layer.bias = True, True  # the converter folds BN into weights + bias
        layer.modules.append(str(node.target))
        return _Value(x.shape, layer.name, len(node.users))

    def _fold_act(self, node: fx.Node, x: _Value, act: str, where: str) -> _Value:
        layer = self.layers.get(x.layer)
        if layer is None or layer.act != "none" or x.users != 1 or layer.op == "global_avg_pool":
            raise AdaptError(f"unsupported {where} (graph node {node.name}): an activation "
                             "must directly follow a conv, linear, add or pool layer whose "
                             "output nothing else reads")
        layer.act = act
        if node.op == "call_module":
            layer.modules.append(str(node.target))
        return _Value(x.shape, layer.name, len(node.users))

    # -- helpers --------------------------------------------------------------------------
    def _new(self, node: fx.Node, op: str, x: _Value, **kw: object) -> _Layer:
        layer = _Layer(name=node.name, op=op, shape=x.shape, inputs=(x.layer,), **kw)
        if node.op == "call_module":
            layer.modules.append(str(node.target))
        layer.name = f"_{len(self.layers)}"  # final names are given in _network
        layer.modules.insert(0, self._scope(node))
        self.layers[layer.name] = layer
        return layer

    def _scope(self, node: fx.Node) -> str:
        """Where the node lives: its module, or the module whose forward made it."""
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack") or {}
        owner = next(reversed(stack.values()))[0] if stack else ""
        return f"{owner}.{node.target.__name__ if callable(node.target) else node.target}" \
            if owner else node.name

    def _out(self, node: fx.Node, layer: _Layer) -> _Value:
        try:
            shape = layer.spec().output_shape
        except SpecError as e:
            raise AdaptError(f"graph node {node.name}: {e}") from None
        return _Value(shape, layer.name, len(node.users))

    def _arg(self, arg: object, node: fx.Node) -> _Value:
        if not isinstance(arg, fx.Node) or arg not in self.values:
            raise AdaptError(f"graph node {node.name}: unsupported argument {arg!r}")
        return self.values[arg]

    def _network(self, input_shape: Shape, name: str, outputs: list[str]) -> Network:
        names = {INPUT: INPUT}
        taken: set[str] = set()
        for key, layer in self.layers.items():
            label = self._label(layer)
            base, i = label, 2
            while label in taken:
                label, i = f"{base}_{i}", i + 1
            taken.add(label)
            names[key] = label
            self.folded[label] = list(dict.fromkeys(layer.modules))
        nodes = [Node(names[k], layer.spec(), tuple(names[i] for i in layer.inputs))
                 for k, layer in self.layers.items()]
        try:
            return Network(name, input_shape, tuple(nodes), tuple(names[o] for o in outputs))
        except SpecError as e:
            raise AdaptError(f"traced network is inconsistent: {e}") from None

    def _label(self, layer: _Layer) -> str:
        scope, folded = layer.modules[0], set(layer.modules[1:]) | {layer.modules[0]}
        if layer.op == "add":
            # operator.add made inside module "b5" -> "b5.add" -> "b5_add"
            scope = scope.replace(".iadd", ".add")
        elif "." in scope and layer.op != "pad":
            parent = scope.rsplit(".", 1)[0]
            children = {f"{parent}.{n}" for n, _ in self.modules[parent].named_children()}
            if children <= folded:
                scope = parent
        return scope.replace(".", "_")


def _pair(v: object) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v  # type: ignore[misc]
    return (int(a), int(b))


def _padding(m: nn.Conv2d, where: str) -> str:
    if m.padding == "same":
        return "same"
    if m.padding == "valid":
        return "valid"
    (ph, pw), (kh, kw) = _pair(m.padding), _pair(m.kernel_size)
    (dh, dw) = _pair(m.dilation)
    if (ph, pw) == (0, 0):
        return "same" if (kh, kw) == (1, 1) else "valid"
    if (ph, pw) == ((kh - 1) * dh // 2, (kw - 1) * dw // 2):
        return "same"
    raise AdaptError(f"unsupported {where}: padding {(ph, pw)} for kernel {kh}x{kw} is "
                     "neither SAME nor VALID")


def _explicit_pads(m: nn.Conv2d, h: int, w: int) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) when torch pads this input otherwise than TFLite SAME
    (symmetric where SAME puts the odd pixel after: stride 2 on an even size); else None."""
    if isinstance(m.padding, str):
        return None
    (ph, pw), (kh, kw), (sh, sw), (dh, dw) = (_pair(v) for v in (m.padding, m.kernel_size,
                                                                  m.stride, m.dilation))
    if (ph, pw) == (0, 0):
        return None
    same = [same_pads(n, k, s, d) for n, k, s, d in ((h, kh, sh, dh), (w, kw, sw, dw))]
    if same == [(ph, ph), (pw, pw)]:
        return None
    return (ph, ph, pw, pw)


def _torch_conv_hw(h: int, w: int, m: nn.Conv2d) -> tuple[int, int]:
    """Output H, W as torch computes them (to check the SAME/VALID mapping)."""
    out = []
    for size, k, s, d, i in zip((h, w), _pair(m.kernel_size), _pair(m.stride),
                                _pair(m.dilation), (0, 1)):
        if m.padding == "same":  # TFLite's; torch's own "same" is stride 1 only
            out.append(-(-size // s))
            continue
        p = 0 if m.padding == "valid" else _pair(m.padding)[i]
        out.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
    return out[0], out[1]


def _dims(node: fx.Node) -> set[int]:
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    return set(dims) if isinstance(dims, (tuple, list)) else set()


def _flat(arg: object) -> list[object]:
    return list(arg) if isinstance(arg, (tuple, list)) else [arg]
