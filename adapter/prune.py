"""Which filters to keep (largest L2 norm) and their removal with Torch-Pruning.

Torch-Pruning's dependency graph removes a filter everywhere it lives: the conv's
output channel, its BatchNorm, the depthwise conv that reads it, the next layer's
input channel, and, for layers tied by residual adds (a MobileNetV2 stage, a ResNet
stage), the same channel of every producer in the group and every layer that reads it.

A slot's filters may live in several producers (``adapter.arch``); a channel's
importance is then the L2 norm over all of them, so the channels the whole group
relies on least go.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import nn

from adapter.errors import AdaptError
from adapter.train import in_eval

Producers = Mapping[str, list[str]]  # slot -> modules whose output channels it is


def filter_norms(model: nn.Module, producers: Producers, slot: str) -> torch.Tensor:
    """L2 norm of each output channel of ``slot`` over all its producing layers."""
    sq = None
    for name in producers[slot]:
        w = model.get_submodule(name).weight.detach()
        s = w.pow(2).flatten(1).sum(1)
        sq = s if sq is None else sq + s
    return sq.sqrt()


def keep_indices(model: nn.Module, producers: Producers, slot: str, keep: int) -> list[int]:
    """The ``keep`` channels of largest L2 norm, in their original order."""
    norms = filter_norms(model, producers, slot)
    # Stable sort: equal norms (e.g. zeroed filters) always resolve the same way.
    order = torch.argsort(norms, descending=True, stable=True)
    return sorted(order[:keep].tolist())


def width(model: nn.Module, producers: Producers, slot: str) -> int:
    m = model.get_submodule(producers[slot][0])
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


def widths(model: nn.Module, producers: Producers) -> dict[str, int]:
    """Each slot's width: its first producer's output channels."""
    return {slot: width(model, producers, slot) for slot in producers}


def prune_slot(model: nn.Module, producers: Producers, slot: str, keep: int,
               example: torch.Tensor, graph: tp.DependencyGraph | None = None) -> list[int]:
    """Shrink ``slot`` to its ``keep`` largest-norm filters, in place; returns the removed
    ones. ``example`` is an input the dependency graph is traced with (``graph``: one
    already traced from ``model``, reused)."""
    if slot not in producers:
        raise AdaptError(f"no slot {slot!r}; slots: {', '.join(producers)}")
    current = width(model, producers, slot)
    if not 1 <= keep <= current:
        raise AdaptError(f"cannot keep {keep} of the {current} filters of {slot}")
    if keep == current:
        return []
    kept = set(keep_indices(model, producers, slot, keep))
    removed = [i for i in range(current) if i not in kept]
    _remove(graph or dependency_graph(model, example),
            model.get_submodule(producers[slot][0]), removed)
    got = {width(model, {slot: [n]}, slot) for n in producers[slot]}
    if got != {keep}:  # the dependency graph missed a producer: the model is inconsistent
        raise RuntimeError(f"pruning {slot} left producers with {sorted(got)} filters, "
                           f"expected {keep}")
    return removed


def prune_to(model: nn.Module, producers: Producers, widths: Mapping[str, int],
             example: torch.Tensor) -> None:
    """Shrink several slots (each to its largest-norm filters), in the slots' order, on one
    dependency graph (it tracks the modules it prunes, so one trace serves every slot)."""
    todo = [s for s in producers if s in widths and widths[s] != width(model, producers, s)]
    graph = dependency_graph(model, example) if todo else None
    for slot in todo:
        prune_slot(model, producers, slot, widths[slot], example, graph)


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    with in_eval(model):  # the graph is built with a forward pass: keep BN statistics untouched
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)


def _remove(graph: tp.DependencyGraph, layer: nn.Module, idxs: list[int]) -> None:
    fn = (tp.prune_linear_out_channels if isinstance(layer, nn.Linear)
          else tp.prune_conv_out_channels)
    group = graph.get_pruning_group(layer, fn, idxs=idxs)
    if not graph.check_pruning_group(group):
        raise RuntimeError(f"Torch-Pruning refuses to remove channels {idxs}")
    group.prune()
