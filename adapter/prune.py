"""Which filters to keep (largest L2 norm) and their removal with Torch-Pruning.

Torch-Pruning's dependency graph removes a filter everywhere it lives: the conv's
output channel, its BatchNorm, the depthwise conv that reads it, the next layer's
input channel, and, for a MobileNetV2 stage tied by residual adds, the same
channel of every projection in the stage and every expansion that reads it.

A slot's filters may live in several producers (a V2 stage's projections); a
channel's importance is then the L2 norm over all of them, so the channels the
whole stage relies on least go.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import nn

from adapter.errors import AdaptError
from adapter.models import ZooModel


def filter_norms(model: ZooModel, slot: str) -> torch.Tensor:
    """L2 norm of each output channel of ``slot`` over all its producing convolutions."""
    sq = None
    for name in model.slots[slot]:
        w = model.get_submodule(name).weight.detach()
        s = w.pow(2).flatten(1).sum(1)
        sq = s if sq is None else sq + s
    return sq.sqrt()


def keep_indices(model: ZooModel, slot: str, keep: int) -> list[int]:
    """The ``keep`` channels of largest L2 norm, in their original order."""
    norms = filter_norms(model, slot)
    # Stable sort: equal norms (e.g. zeroed filters) always resolve the same way.
    order = torch.argsort(norms, descending=True, stable=True)
    return sorted(order[:keep].tolist())


def prune_slot(model: ZooModel, slot: str, keep: int) -> list[int]:
    """Shrink ``slot`` to its ``keep`` largest-norm filters, in place; returns the removed ones."""
    if slot not in model.slots:
        raise AdaptError(f"{model.family} has no slot {slot!r}; slots: {', '.join(model.slots)}")
    current = model.widths()[slot]
    if not 1 <= keep <= current:
        raise AdaptError(f"cannot keep {keep} of the {current} filters of {slot}")
    if keep == current:
        return []
    kept = set(keep_indices(model, slot, keep))
    removed = [i for i in range(current) if i not in kept]
    _remove(model, model.get_submodule(model.slots[slot][0]), removed)
    got = {model.get_submodule(n).out_channels for n in model.slots[slot]}
    if got != {keep}:  # the dependency graph missed a producer: the model is inconsistent
        raise RuntimeError(f"pruning {slot} left producers with {sorted(got)} filters, "
                           f"expected {keep}")
    return removed


def prune_to(model: ZooModel, widths: Mapping[str, int]) -> None:
    """Shrink several slots (each to its largest-norm filters), in the slots' order."""
    for slot in model.slots:
        if slot in widths and widths[slot] != model.widths()[slot]:
            prune_slot(model, slot, widths[slot])


def _remove(model: nn.Module, conv: nn.Module, idxs: list[int]) -> None:
    was_training = model.training
    model.eval()  # the graph is built with a forward pass: keep BN statistics untouched
    try:
        example = torch.zeros(1, 3, model.resolution, model.resolution)
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        group = dg.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=idxs)
        if not dg.check_pruning_group(group):
            raise RuntimeError(f"Torch-Pruning refuses to remove channels {idxs}")
        group.prune()
    finally:
        model.train(was_training)
