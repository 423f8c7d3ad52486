"""MobileNetV1 and MobileNetV2 in torch (no torchvision), one width per slot.

The structure follows ``bench.zoo``'s families exactly, so a model and the zoo's
Network for the same widths are the same network (``adapter.trace`` proves it in
the tests). Module names are the zoo's node names (``conv1``, ``dw3``, ``pw3``,
``b5.expand``, ``fc``, ...). Which convolutions make each slot's channels
(``model.slots``: several for a MobileNetV2 stage, whose residual adds tie them) is
not written here: ``adapter.slots`` asks Torch-Pruning, as for any other model.

Padding is TFLite SAME, exactly: stride-1 convolutions pad ``k // 2`` on each side
(the same thing for odd kernels), strided ones are ``SameConv2d``, which pads the odd
pixel after (0 before and 1 after for a 3x3 stride-2 conv on an even input) where
torch's ``padding=1`` would pad 1 and 1 (``adapter.same_padding``). So the exported ``.tflite``
(``adapter.export``) computes what the trained torch model computes, and its layers
keep their plain SAME LUT keys (no PAD op, no key of its own). BN follows every
convolution (folded into the weights and bias at export), ReLU6 as in the reference
implementations; MobileNetV2's projections are linear.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from adapter import prune
from adapter.errors import AdaptError
from adapter.same_padding import SameConv2d
from adapter.slots import derive, zoo_names
from bench import zoo
from lut_db.spec import SpecError

# What ZooModel.config() records about padding. A checkpoint without it predates TFLite
# SAME padding (its stride-2 layers were trained with symmetric padding), and ``rebuild``
# refuses it rather than give those weights other outputs.
PADDING = "tflite_same"


class ConvBNAct(nn.Sequential):
    """conv -> BN -> ReLU6 (no activation when ``act`` is False), padded as TFLite SAME."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = True):
        # At stride 1 an odd kernel's symmetric k // 2 is SAME: plain nn.Conv2d, no pad copy.
        conv = (nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
                if stride == 1 and kernel % 2 else
                SameConv2d(cin, cout, kernel, stride, groups=groups, bias=False))
        layers: OrderedDict[str, nn.Module] = OrderedDict(conv=conv, bn=nn.BatchNorm2d(cout))
        if act:
            layers["act"] = nn.ReLU6(inplace=True)
        super().__init__(layers)


class ZooModel(nn.Module):
    """A torch network of a ``bench.zoo`` family at given slot widths."""

    family: str

    def __init__(self, resolution: int, classes: int):
        super().__init__()
        self.resolution = resolution
        self.classes = classes

    @property
    def slots(self) -> dict[str, list[str]]:
        """slot -> the convolutions producing it, found by Torch-Pruning (``adapter.slots``)."""
        if "_slots" not in self.__dict__:
            names = zoo_names(self.family, self.resolution, self.classes)
            got = derive(self, (self.resolution, self.resolution, 3), names)[0]
            self.__dict__["_slots"] = {s: got[s] for s in zoo.family(self.family).slots}
        return self.__dict__["_slots"]

    def widths(self) -> dict[str, int]:
        """Current width of every slot, read from the producing convolutions."""
        return prune.widths(self, self.slots)

    def config(self) -> dict:
        """What ``build`` needs to make this architecture again (weights aside)."""
        return {"family": self.family, "widths": self.widths(),
                "resolution": self.resolution, "classes": self.classes, "padding": PADDING}


class MobileNetV1(ZooModel):
    family = "mobilenet_v1"

    def __init__(self, widths: Mapping[str, int] | Sequence[int] | None = None,
                 resolution: int = 224, classes: int = 1000):
        super().__init__(resolution, classes)
        w = zoo.MOBILENET_V1.widths(widths)
        self.conv1 = ConvBNAct(3, w["conv1"], 3, 2)
        prev = "conv1"
        for i, (_, stride) in enumerate(zoo.V1_BLOCKS, start=1):
            c = w[prev]
            setattr(self, f"dw{i}", ConvBNAct(c, c, 3, stride, groups=c))
            setattr(self, f"pw{i}", ConvBNAct(c, w[f"pw{i}"], 1))
            prev = f"pw{i}"
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[prev], classes)
        self._order = ["conv1"] + [f"{k}{i}" for i in range(1, len(zoo.V1_BLOCKS) + 1)
                                   for k in ("dw", "pw")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._order:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [expand 1x1] -> depthwise 3x3 -> linear project 1x1 (+ input)."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, expand: bool,
                 residual: bool):
        super().__init__()
        if expand:
            self.expand = ConvBNAct(cin, mid, 1)
        self.dw = ConvBNAct(mid, mid, 3, stride, groups=mid)
        self.project = ConvBNAct(mid, cout, 1, act=False)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if hasattr(self, "expand") else x
        y = self.project(self.dw(y))
        return x + y if self.residual else y


class MobileNetV2(ZooModel):
    family = "mobilenet_v2"

    def __init__(self, widths: Mapping[str, int] | Sequence[int] | None = None,
                 resolution: int = 224, classes: int = 1000, dropout: float = 0.2):
        super().__init__(resolution, classes)
        w = zoo.MOBILENET_V2.widths(widths)
        self.conv1 = ConvBNAct(3, w["conv1"], 3, 2)
        self._blocks: list[str] = []
        prev_slot = "conv1"
        for si, b, t, stride in zoo._v2_blocks():
            out_slot, mid_slot = f"s{si}", (f"e{b}" if t != 1 else prev_slot)
            # The zoo's rule: a block is residual when it keeps the stage's width and size.
            residual = stride == 1 and prev_slot == out_slot
            setattr(self, f"b{b}", InvertedResidual(w[prev_slot], w[mid_slot], w[out_slot],
                                                    stride, t != 1, residual))
            self._blocks.append(f"b{b}")
            prev_slot = out_slot
        self.conv_last = ConvBNAct(w[prev_slot], w["conv_last"], 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(w["conv_last"], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for name in self._blocks:
            x = getattr(self, name)(x)
        x = self.pool(self.conv_last(x))
        return self.fc(self.dropout(torch.flatten(x, 1)))


MODELS: dict[str, type[ZooModel]] = {"mobilenet_v1": MobileNetV1, "mobilenet_v2": MobileNetV2}

def torch_family(name: str) -> zoo.Family:
    """The zoo family ``name``, refused unless it has a torch model here (NetAdapt needs one)."""
    fam = zoo.family(name)  # SpecError naming the known families
    if fam.name not in MODELS:
        raise SpecError(f"{fam.name} has no torch model to adapt (yet); NetAdapt adapts "
                        f"{', '.join(MODELS)}")
    return fam


def build(family: str, widths: Mapping[str, int] | Sequence[int] | None = None,
          resolution: int = 224, classes: int = 1000, width_mult: float | None = None,
          seed: int | None = None) -> ZooModel:
    """A freshly initialised model; ``seed`` makes the initial weights repeatable."""
    fam = torch_family(family)
    if width_mult is not None:
        widths = fam.widths(width_mult=width_mult)
    if seed is not None:
        torch.manual_seed(seed)
    model = MODELS[fam.name](widths, resolution=resolution, classes=classes)
    _init(model)
    return model


def _init(model: nn.Module) -> None:
    """The reference init: He for convs, small normal for the classifier, BN to identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def rebuild(config: Mapping, state: Mapping[str, torch.Tensor]) -> ZooModel:
    """A model from ``ZooModel.config()`` and a state dict (checkpoints, worker tasks)."""
    if config.get("padding") != PADDING:
        raise AdaptError("these weights were trained before the models padded as TFLite SAME "
                         "does (their stride-2 layers padded symmetrically), so they would "
                         "give other outputs now: start a new run (or retrain from scratch)")
    model = MODELS[config["family"]](config["widths"], resolution=config["resolution"],
                                     classes=config["classes"])
    model.load_state_dict(state)
    return model
