"""MobileNetV1 and MobileNetV2 in torch (no torchvision), made from ``bench.zoo``.

The zoo is the one description of the built-in families: its layer templates carry every
number (widths by slot, kernels, strides, activations, expansions, which blocks add their
input). A ``ZooModel`` turns each template into its torch layer, so a model and the zoo's
Network for the same widths are the same network (``adapter.trace`` proves it in the
tests). Module names are the zoo's node names (``conv1``, ``dw3``, ``pw3``, ``fc``); a
block's layers (``b5_expand``, ``b5_dw``, ``b5_project``, ``b5_add``) live in module
``b5`` (``b5.expand``, ...), which makes the residual add, so the trace names them back.
Which convolutions make each slot's channels (``model.slots``: several for a MobileNetV2
stage, whose residual adds tie them) is not written here: ``adapter.slots`` asks
Torch-Pruning, as for any other model.

Padding is TFLite SAME, exactly: stride-1 convolutions pad ``k // 2`` on each side
(the same thing for odd kernels), strided ones are ``SameConv2d``, which pads the odd
pixel after (0 before and 1 after for a 3x3 stride-2 conv on an even input) where
torch's ``padding=1`` would pad 1 and 1 (``adapter.same_padding``). So the exported ``.tflite``
(``adapter.export``) computes what the trained torch model computes, and its layers
keep their plain SAME LUT keys (no PAD op, no key of its own). BN follows every
convolution (folded into the weights and bias at export), with the template's activation
(ReLU6 in the reference implementations; MobileNetV2's projections are linear).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from adapter import prune
from adapter.errors import AdaptError
from adapter.same_padding import SameConv2d
from adapter.slots import derive, zoo_names
from bench import zoo
from lut_db.network import INPUT
from lut_db.spec import SpecError

# What ZooModel.config() records about padding. A checkpoint without it predates TFLite
# SAME padding (its stride-2 layers were trained with symmetric padding), and ``rebuild``
# refuses it rather than give those weights other outputs.
PADDING = "tflite_same"

ACTIVATIONS = {"relu6": nn.ReLU6, "relu": nn.ReLU}  # a template's act -> its torch module
BLOCK_LAYER = re.compile(r"(b\d+)_(\w+)")  # the zoo's block layers: b5_expand is b5.expand


class ConvBNAct(nn.Sequential):
    """conv -> BN -> activation (``act``: a template's, "none" for none), padded as TFLite
    SAME."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1, act: str = "relu6"):
        # At stride 1 an odd kernel's symmetric k // 2 is SAME: plain nn.Conv2d, no pad copy.
        conv = (nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
                if stride == 1 and kernel % 2 else
                SameConv2d(cin, cout, kernel, stride, groups=groups, bias=False))
        layers: OrderedDict[str, nn.Module] = OrderedDict(conv=conv, bn=nn.BatchNorm2d(cout))
        if act != "none":
            layers["act"] = ACTIVATIONS[act](inplace=True)
        super().__init__(layers)


def _layer(t: zoo.Template, width: Mapping[str, int]) -> nn.Module | None:
    """The torch layer of one template (None: an add, which its block's forward makes)."""
    spec = t.spec(width)
    if t.op in ("conv2d", "depthwise_conv2d") and t.act in ("none", *ACTIVATIONS):
        groups = spec.cin if t.op == "depthwise_conv2d" else 1
        return ConvBNAct(spec.cin, spec.cout, t.kernel, t.stride, groups, t.act)
    if t.op == "global_avg_pool" and t.act == "none":
        return nn.AdaptiveAvgPool2d(1)
    if t.op == "fully_connected" and t.act == "none":
        return nn.Linear(spec.cin, spec.cout)
    if t.op == "add" and t.act == "none":
        return None
    raise AdaptError(f"{t.name}: no torch layer for {t.op} with act={t.act} (yet)")


def _grouped(templates: Sequence[zoo.Template]) -> list[tuple[str | None, list[zoo.Template]]]:
    """The templates in order, a block's layers together: (block name or None, templates)."""
    out: list[tuple[str | None, list[zoo.Template]]] = []
    for t in templates:
        m = BLOCK_LAYER.fullmatch(t.name)
        block = m.group(1) if m else None
        if block is not None and out and out[-1][0] == block:
            out[-1][1].append(t)
        elif block is not None and any(b == block for b, _ in out):
            raise AdaptError(f"{t.name}: the layers of block {block} are not contiguous")
        else:
            out.append((block, [t]))
    return out


class Steps(nn.Module):
    """Layers run in order, each reading its inputs by name: a block, or a whole model.
    ``steps``: (output name, module name, or None for an add, input names)."""

    steps: list[tuple[str, str | None, tuple[str, ...]]]

    def run(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        for name, module, inputs in self.steps:
            args = [values[i] for i in inputs]
            values[name] = args[0] + args[1] if module is None else self.call(module, args[0])
        return values[self.steps[-1][0]]

    def call(self, module: str, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, module)(x)

    def add_step(self, t: zoo.Template, name: str, width: Mapping[str, int]) -> None:
        """Template ``t`` as module ``name`` (an add: no module)."""
        layer = _layer(t, width)
        if layer is not None:
            self.add_module(name, layer)
        self.steps.append((t.name, name if layer is not None else None, t.inputs))


class ZooBlock(Steps):
    """The layers of one zoo block (``b5_expand``, ``b5_dw``, ...) as ``b5.expand``, ...;
    its forward makes the block's residual add, so the trace names it ``b5_add``."""

    def __init__(self, block: str, templates: Sequence[zoo.Template],
                 width: Mapping[str, int]):
        super().__init__()
        names = {t.name for t in templates}
        outside = {i for t in templates for i in t.inputs if i not in names}
        if len(outside) != 1:
            raise AdaptError(f"block {block}: {len(outside)} inputs from outside it, where a "
                             "block takes one")
        self.entry = outside.pop()
        self.steps = []
        for t in templates:
            self.add_step(t, t.name.removeprefix(f"{block}_"), width)

    @property
    def residual(self) -> bool:
        return any(module is None for _, module, _ in self.steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run({self.entry: x})


class ZooModel(Steps):
    """A torch network of a ``bench.zoo`` family at given slot widths: the family's
    templates, each made a torch layer (``family`` and ``dropout_p``, the dropout before the
    classifier, are the subclass's)."""

    family: str
    dropout_p: float = 0.0

    def __init__(self, widths: Mapping[str, int] | Sequence[int] | None = None,
                 resolution: int = 224, classes: int = 1000):
        super().__init__()
        self.resolution = resolution
        self.classes = classes
        width = zoo.family(self.family).widths(widths)
        templates = zoo.family(self.family).layout(resolution, classes)
        self.classifier = templates[-1].name
        self.steps = []
        for block, group in _grouped(templates):
            if block is None:
                if group[0].name == self.classifier and self.dropout_p:
                    self.dropout = nn.Dropout(self.dropout_p)
                self.add_step(group[0], group[0].name, width)
            else:
                made = ZooBlock(block, group, width)
                self.add_module(block, made)
                self.steps.append((group[-1].name, block, (made.entry,)))

    def call(self, module: str, x: torch.Tensor) -> torch.Tensor:
        layer = getattr(self, module)
        if isinstance(layer, nn.Linear):
            x = torch.flatten(x, 1)
        if module == self.classifier and self.dropout_p:
            x = self.dropout(x)
        return layer(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run({INPUT: x})

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


class MobileNetV2(ZooModel):
    family = "mobilenet_v2"
    dropout_p = 0.2  # before the classifier, as the reference implementations train it


MODELS: dict[str, type[ZooModel]] = {m.family: m for m in (MobileNetV1, MobileNetV2)}


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
