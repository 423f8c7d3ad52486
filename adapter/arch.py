"""A torch model as NetAdapt sees it: slots found by Torch-Pruning, LUT layers by trace.

The model is the only description. ``Architecture.load`` builds it (a built-in
MobileNet, a user's ``pkg.module:factory``, or a saved full model), traces it into
LUT layers (``adapter.trace``) and asks Torch-Pruning's dependency graph which
output channels must go together (``adapter.slots``): each pruning group of conv/linear
filters is one *slot* (a width NetAdapt may change). Layers tied by residual adds share a
group, so they move in lockstep by construction. From the two it derives a ``bench.zoo.Family``
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
from torch import nn

from adapter import models, prune
from adapter.errors import AdaptError
from adapter.slots import SlotLayer, derive, zoo_names
from bench import zoo


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
        return cls.of(full_model(source, resolution, classes), source, resolution, classes,
                      tie_bottlenecks, dtype)

    @classmethod
    def of(cls, model: nn.Module, source: str, resolution: int, classes: int,
           tie_bottlenecks: bool | None = None, dtype: str = "float32") -> Architecture:
        """``load`` for a model already built (``source`` names it; a model in the caller's
        hands has no source to rebuild from, so ``fresh`` and ``rebuild`` are not for it)."""
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


# -- grouping and the family -------------------------------------------------------------------


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
