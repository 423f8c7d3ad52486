"""adapter.prune: largest-L2 filters kept, removed consistently by Torch-Pruning."""

from __future__ import annotations

import pytest
import torch

from adapter.errors import AdaptError
from adapter.models import build
from adapter.prune import filter_norms, keep_indices, prune_slot, prune_to

X32 = torch.zeros(1, 3, 32, 32)
from adapter.trace import trace
from bench import zoo


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family,slot,keep", [
    ("mobilenet_v1", "pw5", 100),
    ("mobilenet_v1", "conv1", 8),
    ("mobilenet_v1", "pw13", 300),
    ("mobilenet_v2", "s3", 16),  # a stage: three projections and the residual stream
    ("mobilenet_v2", "e9", 200),
    ("mobilenet_v2", "conv_last", 640),
])
def test_pruned_model_is_the_smaller_architecture(family: str, slot: str, keep: int) -> None:
    model = build(family, resolution=32, classes=10, seed=0)
    prune_slot(model, model.slots, slot, keep, X32)
    want = dict(zip(zoo.family(family).slots, zoo.family(family).base)) | {slot: keep}
    assert model.widths() == want
    fresh = build(family, want, resolution=32, classes=10)
    # same shapes everywhere: BN, depthwise and the next layer followed the change
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in fresh.state_dict().items()}
    assert n_params(model) == n_params(fresh)
    assert trace(model, (32, 32, 3)) == trace(fresh, (32, 32, 3))
    model.eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_keep_indices_are_the_largest_norms() -> None:
    model = build("mobilenet_v1", resolution=32, classes=10, seed=0)
    norms = filter_norms(model, model.slots, "pw2")
    kept = keep_indices(model, model.slots, "pw2", 40)
    assert kept == sorted(kept) and len(kept) == 40
    assert norms[kept].min() >= norms[[i for i in range(128) if i not in kept]].max()


def _silence(model: torch.nn.Module, conv: str, channels: list[int]) -> None:
    """Make channels exactly zero after conv -> BN (-> ReLU6): zero filters, BN shift 0."""
    block = model.get_submodule(conv.rsplit(".", 1)[0])
    with torch.no_grad():
        block.conv.weight[channels] = 0
        block.bn.bias[channels] = 0
        block.bn.running_mean[channels] = 0


def _check_equivalent(model, slot: str, zeroed: list[int], extra_zero: list[str]) -> None:
    for conv in model.slots[slot]:
        _silence(model, conv, zeroed)
    for conv in extra_zero:  # depthwise layers that read the slot: their BN must map 0 -> 0
        _silence(model, conv, zeroed)
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    before = model(x)
    current = model.widths()[slot]
    removed = prune_slot(model, model.slots, slot, current - len(zeroed), X32)
    assert removed == sorted(zeroed)  # the zero-norm filters are the ones that go
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


def test_removing_zero_filters_keeps_outputs_v1() -> None:
    model = build("mobilenet_v1", resolution=32, classes=10, seed=1)
    _check_equivalent(model, "pw6", [3, 100, 511], ["dw7.conv"])


def test_removing_zero_filters_keeps_outputs_v2_stage() -> None:
    model = build("mobilenet_v2", resolution=32, classes=10, seed=1)
    # Stage 3's channel is zero in every projection (no activation after them): the residual
    # stream carries zeros, so removing it everywhere changes nothing.
    _check_equivalent(model, "s3", [0, 7], [])


def test_prune_to_several_slots_and_bad_requests() -> None:
    model = build("mobilenet_v1", resolution=32, classes=10, seed=0)
    prune_to(model, model.slots, {"pw1": 32, "pw12": 256}, X32)
    assert model.widths()["pw1"] == 32 and model.widths()["pw12"] == 256
    with pytest.raises(AdaptError, match="cannot keep 64 of the 32"):
        prune_slot(model, model.slots, "pw1", 64, X32)
    with pytest.raises(AdaptError, match="no slot 'e3'"):
        prune_slot(model, model.slots, "e3", 8, X32)
