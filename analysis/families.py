"""Held-out families: architectures never in a sweep space, built only from swept op kinds.

The MobileNet sweeps measure conv2d, depthwise_conv2d, add, global_avg_pool and
fully_connected layers. A ResNet-style stack (3x3 convolutions with identity
residual adds) and a plain VGG-style stack (3x3 convolutions, stride-2 convs instead
of max pooling, which no sweep measures) use only those op kinds, but in shapes the
MobileNet LUT never saw (3x3 dense convolutions at every resolution). They show
whether the layer-wise sum holds outside the space the LUT was built for.

They are ``bench.zoo.Family`` objects, so widths, multipliers and NetAdapt-like
steps work on them as on the MobileNets.
"""

from __future__ import annotations

import math

from bench.zoo import Family, Template, head, uniform_multiplier
from lut_db.network import INPUT

# -- ResNet-style: stem, then per stage a stride-2 conv and one basic block -------------------

RES_STAGES = (32, 64, 128, 256)  # stage widths; each block's inner width is a slot too
RES_SLOTS = ("stem",) + tuple(f"c{i}" for i in range(1, 5)) + tuple(f"b{i}" for i in range(1, 5))
RES_BASE = (16,) + RES_STAGES + RES_STAGES


def _res_layout(resolution: int, classes: int) -> list[Template]:
    t = [Template("stem", "conv2d", (resolution, resolution), 3, "stem", 3, 2, "relu",
                  (INPUT,))]
    hw, prev, prev_slot = math.ceil(resolution / 2), "stem", "stem"
    for i in range(1, 5):
        t.append(Template(f"down{i}", "conv2d", (hw, hw), prev_slot, f"c{i}", 3, 2, "relu",
                          (prev,)))
        hw = math.ceil(hw / 2)
        t.append(Template(f"block{i}_a", "conv2d", (hw, hw), f"c{i}", f"b{i}", 3, 1, "relu",
                          (f"down{i}",)))
        t.append(Template(f"block{i}_b", "conv2d", (hw, hw), f"b{i}", f"c{i}", 3, 1, "none",
                          (f"block{i}_a",)))
        t.append(Template(f"block{i}_add", "add", (hw, hw), f"c{i}", None, act="relu",
                          inputs=(f"down{i}", f"block{i}_b")))
        prev, prev_slot = f"block{i}_add", f"c{i}"
    return t + head(hw, prev, prev_slot, classes)


RESNET_STYLE = Family("resnet_style", RES_SLOTS, RES_BASE, _res_layout, uniform_multiplier(RES_BASE))

# -- VGG-style: a plain chain of 3x3 convolutions, downsampling by stride ---------------------

VGG_PLAN = ((16, 2), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2))
VGG_SLOTS = tuple(f"conv{i}" for i in range(1, len(VGG_PLAN) + 1))
VGG_BASE = tuple(c for c, _ in VGG_PLAN)


def _vgg_layout(resolution: int, classes: int) -> list[Template]:
    t: list[Template] = []
    hw, prev, prev_slot = resolution, INPUT, 3
    for i, (_, stride) in enumerate(VGG_PLAN, start=1):
        t.append(Template(f"conv{i}", "conv2d", (hw, hw), prev_slot, f"conv{i}", 3, stride,
                          "relu", (prev,)))
        hw = math.ceil(hw / stride)
        prev, prev_slot = f"conv{i}", f"conv{i}"
    return t + head(hw, prev, prev_slot, classes)


VGG_STYLE = Family("vgg_style", VGG_SLOTS, VGG_BASE, _vgg_layout, uniform_multiplier(VGG_BASE))

HELD_OUT: dict[str, Family] = {f.name: f for f in (RESNET_STYLE, VGG_STYLE)}
