"""adapter.models + adapter.trace: the torch networks are the zoo's networks, layer for layer."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adapter.errors import AdaptError
from adapter.models import MODELS, MobileNetV1, MobileNetV2, ZooModel, build
from adapter.trace import trace
from bench import zoo
from lut_db.estimate import SlotEstimator, estimate
from lut_db.spec import LayerSpec

CASES = [
    ("mobilenet_v1", None, 32),
    ("mobilenet_v1", 0.5, 64),
    ("mobilenet_v1", {"pw7": 96, "pw13": 200, "conv1": 8}, 40),
    ("mobilenet_v2", None, 32),
    ("mobilenet_v2", 0.75, 48),
    ("mobilenet_v2", {"s4": 40, "e5": 100, "conv_last": 640}, 32),
]


def _widths(fam: zoo.Family, config) -> dict[str, int]:
    if isinstance(config, float):
        return fam.widths(width_mult=config)
    return fam.widths(config)


def macs_table(nets) -> dict[str, float]:
    """A deterministic stand-in LUT: each key's 'latency' is its MACs (plus a constant)."""
    return {s.key: s.macs / 1000 + 1.0 for net in nets for s in net.specs}


@pytest.mark.parametrize("family,config,resolution", CASES)
def test_trace_equals_zoo_network(family: str, config, resolution: int) -> None:
    fam = zoo.family(family)
    widths = _widths(fam, config)
    model = build(family, widths, resolution=resolution, classes=10, seed=0)
    want = fam.network(widths, resolution=resolution, classes=10)
    got = trace(model, (resolution, resolution, 3), name=want.name)
    assert got == want  # names, specs, edges and outputs
    assert model.widths() == widths
    # The estimate of the traced network is the zoo network's, and the slot estimator's.
    table = macs_table([want])
    assert estimate(got, table).total_us == estimate(want, table).total_us
    fast = SlotEstimator(fam.slot_layers(resolution, 10), table)
    assert fast(widths) == pytest.approx(estimate(got, table).total_us)


@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("resolution", [33, 64])
def test_torch_models_and_the_zoo_need_the_same_keys(family: str, resolution: int) -> None:
    """Random widths of every slot at odd and even sizes: the traced model asks the LUT for
    exactly the zoo network's keys."""
    fam = zoo.family(family)
    rng = random.Random(resolution)
    for _ in range(3):
        widths = {s: rng.randint(1, 2 * base) for s, base in zip(fam.slots, fam.base)}
        want = fam.network(widths, resolution=resolution, classes=7)
        got = trace(build(family, widths, resolution=resolution, classes=7),
                    (resolution, resolution, 3), name=want.name)
        assert got.keys == want.keys and got == want


# Each family's description changed where only the zoo says it: a stride moved from one
# block to the next (and with it which MobileNetV2 blocks add their input), 5x5 depthwise
# kernels, and ReLU where it was ReLU6.
MOVED_STRIDE = {"mobilenet_v1": ("V1_BLOCKS", {1: (128, 1), 2: (128, 2)}),
                "mobilenet_v2": ("V2_STAGES", {1: (6, 24, 2, 1), 4: (6, 96, 3, 2)})}


def _changed(t: zoo.Template) -> zoo.Template:
    kernel = 5 if t.op == "depthwise_conv2d" else t.kernel
    return dataclasses.replace(t, kernel=kernel, act="relu" if t.act == "relu6" else t.act)


@pytest.mark.parametrize("family", sorted(MODELS))
def test_the_torch_models_follow_the_zoo(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch models hold no numbers of their own: change the zoo's description and the
    model built next is the changed network."""
    fam = zoo.family(family)
    before = fam.network(resolution=32, classes=10)
    name, rows = MOVED_STRIDE[family]
    monkeypatch.setattr(zoo, name, [rows.get(i, row) for i, row in enumerate(getattr(zoo, name))])
    changed = dataclasses.replace(fam, layout=lambda r, c: [_changed(t) for t in fam.layout(r, c)])
    monkeypatch.setitem(zoo.FAMILIES, family, changed)
    after = changed.network(resolution=32, classes=10)
    assert after.keys != before.keys  # the keys see the change
    got = trace(build(family, None, resolution=32, classes=10), (32, 32, 3), name=after.name)
    assert got == after


def test_a_family_without_torch_layers_is_refused_by_name() -> None:
    """MobileNetV3-Small's hard-swish and squeeze-excite have no torch layer here (yet)."""
    class V3(ZooModel):
        family = "mobilenet_v3_small"

    with pytest.raises(AdaptError, match="conv1_hs: no torch layer for hard_swish"):
        V3(resolution=32, classes=10)


@pytest.mark.sweep
def test_traced_network_estimate_on_a_real_lut(real_lut) -> None:
    table, _, resolution = real_lut
    fam = zoo.MOBILENET_V1
    widths = fam.widths(width_mult=0.5)
    net = fam.network(widths, resolution=resolution, classes=10)
    traced = trace(build("mobilenet_v1", widths, resolution=resolution, classes=10),
                   (resolution, resolution, 3), name=net.name)
    assert estimate(traced, table).total_us == estimate(net, table).total_us > 0


def test_models_run_and_match_their_shapes() -> None:
    for model in (MobileNetV1(resolution=32, classes=7), MobileNetV2(resolution=32, classes=7)):
        model.eval()
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
        # every slot's producers really have that width
        for slot, mods in model.slots.items():
            assert {model.get_submodule(m).out_channels for m in mods} == {model.widths()[slot]}


def test_v2_slots_map_stages_to_every_projection() -> None:
    model = MobileNetV2(resolution=32, classes=10)
    assert model.slots["s3"] == ["b4.project.conv", "b5.project.conv", "b6.project.conv"]
    assert model.slots["e5"] == ["b5.expand.conv"]
    assert list(model.slots) == list(zoo.V2_SLOTS)
    # residual blocks are the zoo's: stride 1 and the same stage slot in and out
    assert [n for n, m in model.named_children() if getattr(m, "residual", False)] == [
        f"b{b}" for b in (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)]


class Custom(nn.Module):
    """Not from the zoo: functional activations, a residual add, pools, mean, flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Conv2d(8, 8, 3, 1, 1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = (x + self.body(x)).relu()
        x = self.pool(x)
        return self.head(torch.flatten(x, 1))


def test_trace_generic_model() -> None:
    net = trace(Custom(), (16, 16, 3), name="custom")
    # torch pads the stride-2 stem 1 and 1 where SAME pads 0 and 1: an explicit PAD, VALID conv
    assert [(n.name, n.spec.key, n.inputs) for n in net.nodes] == [
        ("stem_pad", LayerSpec("pad", 16, 16, 3, pads=(1, 1, 1, 1)).key, ("input",)),
        ("stem", LayerSpec("conv2d", 18, 18, 3, 8, (3, 3), (2, 2), padding="valid",
                           act="relu").key, ("stem_pad",)),
        ("body", LayerSpec("conv2d", 8, 8, 8, 8, (3, 3), bias=False).key, ("stem",)),
        ("add", LayerSpec("add", 8, 8, 8, act="relu").key, ("stem", "body")),
        ("pool", LayerSpec("max_pool", 8, 8, 8, kernel=(2, 2), stride=(2, 2),
                           padding="valid").key, ("add",)),
        ("head", LayerSpec("fully_connected", 4, 4, 8, 5).key, ("pool",)),
    ]
    assert net.outputs == ("head",)


class WithGelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Sigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


class PreActReuse(nn.Module):
    """A conv output read twice, once through a ReLU: no fused op can express that."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + F.relu(y)


@pytest.mark.parametrize("model,shape,message", [
    (WithGelu(), (8, 8, 3), "unsupported module 'act' (GELU)"),
    (Grouped(), (8, 8, 4), "grouped convolution with 2 groups"),
    (Sigmoid(), (8, 8, 3), "unsupported function sigmoid"),
    (PreActReuse(), (8, 8, 3), "an activation must directly follow"),
])
def test_unsupported_layers_are_named(model: nn.Module, shape, message: str) -> None:
    with pytest.raises(AdaptError, match="^" + _re(message) if message.startswith("unsup")
                       else _re(message)):
        trace(model, shape)


def _re(text: str) -> str:
    import re

    return re.escape(text)
