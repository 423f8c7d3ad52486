"""A torch model's slots, found by Torch-Pruning, and its traced layers written with them.

Each pruning group of conv/linear filters (Torch-Pruning's dependency graph) is one *slot*:
a width NetAdapt may change. Layers tied by residual adds share a group, so they move in
lockstep by construction. ``derive`` traces the model (``adapter.trace``) and gives each
traced layer its channel counts as slots (``SlotLayer``, a ``zoo.Template`` twin).

Its own module, under both ``adapter.arch`` (which builds the models) and
``adapter.models`` (whose ``slots`` property asks it), so neither imports the other back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from adapter.errors import AdaptError
from adapter.trace import trace_modules
from adapter.train import in_eval
from bench import zoo
from lut_db.network import INPUT, Network
from lut_db.spec import LayerSpec

CHANNEL_MAKERS = ("conv2d", "fully_connected")  # ops whose output width is their own


@dataclass(frozen=True)
class SlotLayer:
    """One traced layer with its channel counts given as slots (a ``zoo.Template`` twin)."""

    name: str
    base: LayerSpec
    cin: str | int
    cout: str | int | None  # None: same as cin (depthwise, add, pools)
    inputs: tuple[str, ...]

    def spec(self, width: Mapping[str, int]) -> LayerSpec:
        cin = width[self.cin] if isinstance(self.cin, str) else self.cin
        cout = cin if self.cout is None else (width[self.cout] if isinstance(self.cout, str)
                                              else self.cout)
        return dataclasses.replace(self.base, cin=cin, cout=cout)


def derive(model: nn.Module, input_shape: tuple[int, int, int],
           names: Mapping[str, str] | None = None) -> tuple[dict[str, list[str]], list[SlotLayer]]:
    """(slot -> producing modules, the traced layers with slots for channel counts)."""
    with in_eval(model):
        net, folded = trace_modules(model, input_shape)
        groups = _pruning_groups(model, net, folded, input_shape)
    node_of = {m: node for node, mods in folded.items() for m in mods}
    producers: dict[str, list[str]] = {}
    slot_of: dict[str, str] = {}  # producing module -> slot
    order = {n.name: i for i, n in enumerate(net.nodes)}
    for mods in sorted(groups, key=lambda ms: min(order[node_of[m]] for m in ms)):
        mods = sorted(mods, key=lambda m: order[node_of[m]])
        first = node_of[mods[0]]
        slot = (names or {}).get(first, first)
        if slot in producers:
            raise AdaptError(f"two pruning groups would both be slot {slot!r}")
        producers[slot] = mods
        slot_of.update(dict.fromkeys(mods, slot))
    return producers, _slot_layers(net, folded, slot_of)


def _pruning_groups(model: nn.Module, net: Network, folded: Mapping[str, list[str]],
                    input_shape: tuple[int, int, int]) -> list[list[str]]:
    """Torch-Pruning's groups of conv/linear output channels, as module names; the layers
    that make the network's outputs keep their width (the classes)."""
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    outputs = [modules[m] for o in net.outputs for m in folded[o]
               if isinstance(modules.get(m), (nn.Conv2d, nn.Linear))]
    h, w, c = input_shape
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, c, h, w))
        found = dg.get_all_groups(ignored_layers=outputs, root_module_types=[nn.Conv2d, nn.Linear])
        groups = []
        for group in found:
            mods = [names[dep.target.module] for dep, _ in group
                    if _makes_channels(dep.target.module)
                    and getattr(dep.handler, "__name__", "") == "prune_out_channels"]
            if mods:
                groups.append(list(dict.fromkeys(mods)))
    except AdaptError:
        raise
    except Exception as e:  # noqa: BLE001 - the graph fails in many ways on odd models
        raise AdaptError(f"Torch-Pruning cannot build the dependency graph of "
                         f"{type(model).__name__} ({type(e).__name__}: {e})") from None
    return groups


def _makes_channels(m: nn.Module) -> bool:
    """A layer whose output channels are its own filters (not a depthwise conv's copies)."""
    if isinstance(m, nn.Linear):
        return True
    return isinstance(m, nn.Conv2d) and m.groups == 1


def _slot_layers(net: Network, folded: Mapping[str, list[str]],
                 slot_of: Mapping[str, str]) -> list[SlotLayer]:
    out_slot: dict[str, str | int] = {}
    layers = []
    for node in net.nodes:
        spec = node.spec
        src = node.inputs[0]
        cin: str | int = spec.cin if src == INPUT else out_slot[src]
        if src != INPUT and isinstance(cin, str) and spec.op == "fully_connected" \
                and spec.h * spec.w > 1:
            cin = spec.cin  # a flattened map: channels x positions, kept fixed
        cout: str | int | None = None
        if spec.op in CHANNEL_MAKERS:
            mine = [slot_of[m] for m in folded[node.name] if m in slot_of]
            cout = mine[0] if mine else spec.cout
        for other in node.inputs[1:]:
            if out_slot.get(other, cin) != cin:
                raise AdaptError(f"{node.name}: its inputs have different slots "
                                 f"({cin}, {out_slot[other]}), which Torch-Pruning should tie")
        out_slot[node.name] = cin if cout is None else cout
        layers.append(SlotLayer(node.name, spec, cin, cout, node.inputs))
    return layers


def zoo_names(source: str, resolution: int, classes: int) -> dict[str, str] | None:
    """Built-ins: traced layer name -> its zoo slot (the zoo's templates carry the names)."""
    if source not in zoo.FAMILIES:
        return None
    return {t.name: t.cout for t in zoo.family(source).layout(resolution, classes)
            if isinstance(t.cout, str) and t.op in CHANNEL_MAKERS}
