"""A torch model as NetAdapt sees it: slots found by Torch-Pruning, LUT layers by trace.

The model is the only description. ``Architecture.load`` builds it (a built-in
MobileNet, a user's ``pkg.module:factory``, or a saved full model), traces it into
LUT layers (``adapter.trace``) and asks Torch-Pruning's dependency graph which
output channels must go together: each pruning group of conv/linear filters is one
*slot* (a width NetAdapt may change). Layers tied by residual adds share a group, so
they move in lockstep by construction. From the two it derives a ``bench.zoo.Family``
whose layer templates name slots instead of channel counts, so the search space,
the LUT keys it needs and the networks it measures come from the model itself.

Slot names: the built-in MobileNets use their zoo family's names (``pw3``, ``s4``,
``e5``: a derived slot takes the zoo name of its producing layer, and a test checks
that the two agree); other models name a slot after its first producing layer.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from adapter import prune
from adapter.errors import AdaptError
from adapter.trace import trace_modules
from bench import zoo
from lut_db.spec import INPUT, LayerSpec, Network

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


@dataclass
class Architecture:
    """Where a model comes from, and its slots (what worker processes need, picklable)."""

    source: str  # a built-in family name, "pkg.module:factory", or a saved model's path
    resolution: int
    classes: int
    producers: dict[str, list[str]]  # slot -> modules whose output channels it is
    groups: list[tuple[str, ...]]  # slots that move together (single slots included)
    base: dict[str, int] = field(default_factory=dict)  # the full model's widths
    family: zoo.Family | None = field(default=None, repr=False, compare=False)

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def load(cls, source: str, resolution: int, classes: int,
             tie_bottlenecks: bool | None = None, dtype: str = "float32") -> Architecture:
        """Build the model once, trace it and find its slots. ``tie_bottlenecks``: also move
        the linear-bottleneck slots of one resolution together (how the paper adapts
        MobileNetV2; the default for it, off for other models). ``dtype``: the dtype of its
        layers' LUT keys and networks (int8: the model is shipped full-integer)."""
        model = full_model(source, resolution, classes)
        names = zoo_names(source, resolution, classes)
        producers, family_layers = derive(model, (resolution, resolution, 3), names)
        if dtype != "float32":
            family_layers = [dataclasses.replace(ly, base=dataclasses.replace(ly.base,
                                                                              dtype=dtype))
                             for ly in family_layers]
        if source in zoo.FAMILIES:  # the zoo's slot order (width lists follow it)
            producers = {s: producers[s] for s in zoo.family(source).slots}
        base = prune.widths(model, producers)
        outputs = family_layers[-1].base.output_shape[-1]
        if outputs != classes:
            raise AdaptError(f"--model {source} outputs {outputs} classes, the data has "
                             f"{classes}")
        if tie_bottlenecks is None:
            tie_bottlenecks = source == "mobilenet_v2"
        groups = _groups(producers, family_layers, tie_bottlenecks)
        fam = _family(source, producers, base, family_layers, resolution, classes)
        return cls(source, resolution, classes, producers, groups, base, fam)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "resolution": self.resolution, "classes": self.classes,
                "producers": self.producers, "groups": [list(g) for g in self.groups],
                "base": self.base}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Architecture:
        """What a worker needs to rebuild and prune (no trace: the family stays None)."""
        return cls(d["source"], d["resolution"], d["classes"], dict(d["producers"]),
                   [tuple(g) for g in d["groups"]], dict(d["base"]))

    # -- models at given widths --------------------------------------------------------------
    def widths(self, model: nn.Module) -> dict[str, int]:
        return prune.widths(model, self.producers)

    def fresh(self, widths: Mapping[str, int], seed: int) -> nn.Module:
        """A newly initialised model at ``widths`` (the initial and the baseline networks)."""
        from adapter import models

        torch.manual_seed(seed)
        if self.source in models.MODELS:
            return models.build(self.source, dict(widths), self.resolution, self.classes,
                                seed=seed)
        model = full_model(self.source, self.resolution, self.classes)
        self.prune_to(model, widths)
        for m in model.modules():  # pruning kept some filters: start afresh
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
        return model

    def rebuild(self, widths: Mapping[str, int], state: Mapping[str, torch.Tensor]) -> nn.Module:
        """The model at ``widths`` holding ``state`` (checkpoints, worker tasks)."""
        from adapter import models

        if self.source in models.MODELS:
            model = models.build(self.source, dict(widths), self.resolution, self.classes)
        else:
            model = full_model(self.source, self.resolution, self.classes)
            self.prune_to(model, widths)
        model.load_state_dict(state)
        return model

    def prune_slot(self, model: nn.Module, slot: str, keep: int) -> list[int]:
        """Shrink ``slot`` to its ``keep`` largest-norm filters (``adapter.prune``)."""
        return prune.prune_slot(model, self.producers, slot, keep, self.example())

    def prune_to(self, model: nn.Module, widths: Mapping[str, int]) -> None:
        prune.prune_to(model, self.producers, widths, self.example())

    def saved_state(self) -> dict[str, torch.Tensor] | None:
        """A saved model's own weights (the initial network), None for other sources."""
        from adapter import models

        if self.source in models.MODELS or not Path(self.source).is_file():
            return None
        return full_model(self.source, self.resolution, self.classes).state_dict()

    def example(self) -> torch.Tensor:
        return torch.zeros(1, 3, self.resolution, self.resolution)


def load_exported(path: str | Path) -> nn.Module:
    """The torch model ``adapter.export.save_exports`` saved (any source), in eval mode."""
    saved = torch.load(path, weights_only=True)
    if "arch" not in saved:
        raise AdaptError(f"{path}: no architecture saved with these weights")
    arch = Architecture.from_dict(saved["arch"])
    return arch.rebuild(saved["widths"], saved["state_dict"]).eval()


# -- model sources ------------------------------------------------------------------------------


def full_model(source: str, resolution: int, classes: int) -> nn.Module:
    """The unpruned model: a built-in family, ``pkg.module:factory`` or a saved model file."""
    from adapter import models

    if source in models.MODELS:
        return models.build(source, None, resolution, classes, seed=0)
    if source in zoo.FAMILIES:
        raise AdaptError(f"{source} has no torch model to adapt (yet); the built-ins are "
                         f"{', '.join(models.MODELS)}, or give your own as pkg.module:factory")
    if ":" in source and not Path(source).exists():
        model = _from_factory(source)
    elif Path(source).is_file():
        model = _from_file(source)
    else:
        raise AdaptError(f"--model {source!r}: not a built-in model "
                         f"({', '.join(models.MODELS)}), not pkg.module:factory, and no such "
                         "file")
    if not isinstance(model, nn.Module):
        raise AdaptError(f"--model {source!r} gave a {type(model).__name__}, not a torch "
                         "nn.Module")
    return model


def _from_factory(source: str) -> nn.Module:
    mod_name, _, attr = source.partition(":")
    if os.getcwd() not in sys.path:  # the user's package, from where they run (as uvicorn does)
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - whatever the user's module raises on import
        raise AdaptError(f"--model {source}: cannot import {mod_name} ({type(e).__name__}: "
                         f"{e})") from None
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise AdaptError(f"--model {source}: {mod_name} has no callable {attr!r}")
    try:
        return factory()
    except Exception as e:  # noqa: BLE001
        raise AdaptError(f"--model {source}: {attr}() failed ({type(e).__name__}: {e})") from None


def _from_file(path: str) -> nn.Module:
    try:  # a whole pickled model: the user's own file, so full unpickling is theirs to trust
        obj = torch.load(path, weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise AdaptError(f"--model {path}: cannot load a saved model ({type(e).__name__}: "
                         f"{e})") from None
    if isinstance(obj, dict):
        raise AdaptError(f"--model {path} holds a state dict, not a model: give the model as "
                         "pkg.module:factory and this file as --weights")
    return obj


# -- derivation ---------------------------------------------------------------------------------


def derive(model: nn.Module, input_shape: tuple[int, int, int],
           names: Mapping[str, str] | None = None) -> tuple[dict[str, list[str]], list[SlotLayer]]:
    """(slot -> producing modules, the traced layers with slots for channel counts)."""
    was_training = model.training
    model.eval()
    try:
        net, folded = trace_modules(model, input_shape)
        groups = _pruning_groups(model, net, folded, input_shape)
    finally:
        model.train(was_training)
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


def _groups(producers: Mapping[str, list[str]], layers: Sequence[SlotLayer],
            tie_bottlenecks: bool) -> list[tuple[str, ...]]:
    """Single slots, or with ``tie_bottlenecks`` the linear (no activation) slots of one
    resolution together: MobileNetV2's stages of one resolution in lockstep."""
    if not tie_bottlenecks:
        return [(s,) for s in producers]
    made = {ly.cout: ly for ly in layers if isinstance(ly.cout, str)}
    tied: dict[tuple[int, int], list[str]] = {}
    for s in producers:
        ly = made[s]
        if ly.base.act == "none" and ly.base.op == "conv2d":
            tied.setdefault(ly.base.output_shape[:2], []).append(s)
    lead = {g[0]: tuple(g) for g in tied.values()}
    member = {s for g in tied.values() for s in g}
    return [lead.get(s, (s,)) for s in producers if s in lead or s not in member]


def _family(source: str, producers: Mapping[str, list[str]], base: Mapping[str, int],
            layers: list[SlotLayer], resolution: int, classes: int) -> zoo.Family:
    """The model's ``zoo.Family``: its templates are the traced layers (one resolution)."""
    slots = tuple(producers)
    if source in zoo.FAMILIES:  # the built-ins keep their reference width multipliers
        multiplier = zoo.family(source).multiplier
    else:
        multiplier = zoo.uniform_multiplier([base[s] for s in slots])

    def layout(res: int, n_classes: int) -> list[SlotLayer]:
        if (res, n_classes) != (resolution, classes):
            raise AdaptError(f"{source} was traced at {resolution} px with {classes} classes, "
                             f"not {res} px with {n_classes}")
        return layers

    return zoo.Family(_family_name(source), slots, tuple(base[s] for s in slots), layout,
                      multiplier)


def _family_name(source: str) -> str:
    return source if source in zoo.FAMILIES else Path(source.split(":")[-1]).stem


def zoo_names(source: str, resolution: int, classes: int) -> dict[str, str] | None:
    """Built-ins: traced layer name -> its zoo slot (the zoo's templates carry the names)."""
    if source not in zoo.FAMILIES:
        return None
    return {t.name: t.cout for t in zoo.family(source).layout(resolution, classes)
            if isinstance(t.cout, str) and t.op in CHANNEL_MAKERS}
