"""Architecture families as Network generators, and the shape spaces to sweep.

Families: MobileNetV1, MobileNetV2, MobileNetV3-Small (hard-swish, squeeze-excite).

A family is a list of layer templates whose channel counts name *slots* (the
widths NetAdapt may change) instead of numbers. ``family.network(widths)``
fills the slots; ``shape_space`` walks every slot over a channel grid and
collects the unique LayerSpecs any reachable network contains, so a layer
shape shared by several positions is measured once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from lut_db.estimate import LayerFn
from lut_db.network import INPUT, Network, Node
from lut_db.spec import LayerSpec, SpecError

MULTIPLIERS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Template:
    """One layer with its channel counts given as a slot name or a fixed number."""

    name: str
    op: str
    hw: tuple[int, int]
    cin: str | int
    cout: str | int | None = None  # None: same as cin (depthwise, add, pools)
    kernel: int = 1
    stride: int = 1
    act: str = "none"
    inputs: tuple[str, ...] = ()

    def spec(self, width: Mapping[str, int]) -> LayerSpec:
        cin = _resolve(self.cin, width)
        cout = cin if self.cout is None else _resolve(self.cout, width)
        return LayerSpec(self.op, self.hw[0], self.hw[1], cin, cout,
                         kernel=(self.kernel, self.kernel), stride=(self.stride, self.stride),
                         act=self.act)


def _resolve(v: str | int, width: Mapping[str, int]) -> int:
    return v if isinstance(v, int) else width[v]


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count as the MobileNet reference code does (never down by > 10%)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def head(hw: int, prev: str, slot: str, classes: int) -> list[Template]:
    """How every family here ends: global average pool, then the classifier."""
    return [Template("pool", "global_avg_pool", (hw, hw), slot, None, inputs=(prev,)),
            Template("fc", "fully_connected", (1, 1), slot, classes, inputs=("pool",))]


def uniform_multiplier(base: Sequence[int]) -> Callable[[float], tuple[int, ...]]:
    """A width multiplier that scales every slot alike (rounded as MobileNet does)."""
    return lambda m: tuple(make_divisible(c * m) for c in base)


@dataclass(frozen=True)
class Family:
    """A family of networks that differ only in their slot widths."""

    name: str
    slots: tuple[str, ...]
    base: tuple[int, ...]
    layout: Callable[[int, int], list[Template]]  # (resolution, classes) -> templates
    multiplier: Callable[[float], tuple[int, ...]]

    def widths(self, widths: Sequence[int] | Mapping[str, int] | None = None,
               width_mult: float | None = None) -> dict[str, int]:
        """A full slot -> width mapping from a list, a partial mapping, or a multiplier."""
        if width_mult is not None and not width_mult > 0:  # NaN too
            raise SpecError(f"{self.name}: the width multiplier must be positive, "
                            f"got {width_mult:g}")
        if width_mult is not None and math.isinf(width_mult):  # no network has inf channels
            raise SpecError(f"{self.name}: the width multiplier must be a finite number, "
                            "e.g. 0.5 or 1.0; got inf")
        if widths is None:
            values = self.multiplier(width_mult) if width_mult is not None else self.base
            return dict(zip(self.slots, values))
        if isinstance(widths, Mapping):
            unknown = set(widths) - set(self.slots)
            if unknown:
                raise SpecError(f"{self.name}: unknown slot(s) {', '.join(sorted(unknown))}")
            return {**dict(zip(self.slots, self.base)), **{k: int(v) for k, v in widths.items()}}
        if len(widths) != len(self.slots):
            raise SpecError(f"{self.name} takes {len(self.slots)} widths "
                            f"({', '.join(self.slots)}), got {len(widths)}")
        return dict(zip(self.slots, (int(v) for v in widths)))

    def network(self, widths: Sequence[int] | Mapping[str, int] | None = None,
                width_mult: float | None = None, resolution: int = 224,
                classes: int = 1000, name: str | None = None) -> Network:
        width = self.widths(widths, width_mult)
        for slot, value in width.items():
            if value <= 0:
                raise SpecError(f"{self.name}: width of {slot} must be positive, got {value}")
        nodes = [Node(t.name, t.spec(width), t.inputs) for t in self.layout(resolution, classes)]
        label = name or (f"{self.name}_x{width_mult:g}_{resolution}" if width_mult
                         else f"{self.name}_{resolution}")
        return Network(label, (resolution, resolution, 3), tuple(nodes),
                       meta={"family": self.name, "resolution": resolution,
                             "classes": classes, "widths": [width[s] for s in self.slots]})


    def slot_layers(self, resolution: int = 224, classes: int = 1000) -> list[LayerFn]:
        """Per layer position: the slots it depends on and its spec maker (SlotEstimator)."""
        return [(tuple(s for s in (t.cin, t.cout) if isinstance(s, str)), t.spec)
                for t in self.layout(resolution, classes)]


# -- MobileNetV1 ----------------------------------------------------------------------------

V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]  # (pointwise out, dw stride)
V1_SLOTS = ("conv1",) + tuple(f"pw{i}" for i in range(1, 14))
V1_BASE = (32,) + tuple(c for c, _ in V1_BLOCKS)


def _v1_layout(resolution: int, classes: int) -> list[Template]:
    hw = math.ceil(resolution / 2)
    t = [Template("conv1", "conv2d", (resolution, resolution), 3, "conv1", 3, 2, "relu6",
                  (INPUT,))]
    prev, prev_slot = "conv1", "conv1"
    for i, (_, stride) in enumerate(V1_BLOCKS, start=1):
        t.append(Template(f"dw{i}", "depthwise_conv2d", (hw, hw), prev_slot, None, 3, stride,
                          "relu6", (prev,)))
        hw = math.ceil(hw / stride)
        t.append(Template(f"pw{i}", "conv2d", (hw, hw), prev_slot, f"pw{i}", 1, 1, "relu6",
                          (f"dw{i}",)))
        prev, prev_slot = f"pw{i}", f"pw{i}"
    return t + head(hw, prev, prev_slot, classes)


MOBILENET_V1 = Family("mobilenet_v1", V1_SLOTS, V1_BASE, _v1_layout, uniform_multiplier(V1_BASE))

# -- MobileNetV2 ----------------------------------------------------------------------------

V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1)]  # (expansion t, out c, blocks n, first stride s)


def _v2_blocks() -> list[tuple[int, int, int, int]]:
    """(stage index, block index, expansion t, stride) for the 17 inverted residual blocks."""
    out, b = [], 0
    for si, (t, _, n, s) in enumerate(V2_STAGES, start=1):
        for j in range(n):
            b += 1
            out.append((si, b, t, s if j == 0 else 1))
    return out


V2_EXPANDING = [b for _, b, t, _ in _v2_blocks() if t != 1]
V2_SLOTS = (("conv1",) + tuple(f"s{i}" for i in range(1, 8))
            + tuple(f"e{b}" for b in V2_EXPANDING) + ("conv_last",))


def _v2_from(conv1: int, stages: Sequence[int], last: int) -> tuple[int, ...]:
    """Slot widths with every expansion layer at t x its block's input channels."""
    exp, block_in = [], conv1
    for si, _, t, _ in _v2_blocks():
        if t != 1:
            exp.append(t * block_in)
        block_in = stages[si - 1]
    return (conv1, *stages, *exp, last)


V2_BASE = _v2_from(32, [c for _, c, _, _ in V2_STAGES], 1280)


def _v2_multiplier(m: float) -> tuple[int, ...]:
    stages = [make_divisible(c * m) for _, c, _, _ in V2_STAGES]
    last = make_divisible(1280 * m) if m > 1.0 else 1280
    return _v2_from(make_divisible(32 * m), stages, last)


def _v2_layout(resolution: int, classes: int) -> list[Template]:
    hw = math.ceil(resolution / 2)
    t = [Template("conv1", "conv2d", (resolution, resolution), 3, "conv1", 3, 2, "relu6",
                  (INPUT,))]
    prev, prev_slot = "conv1", "conv1"
    for si, b, exp, stride in _v2_blocks():
        out_slot = f"s{si}"
        x = prev
        if exp != 1:
            t.append(Template(f"b{b}_expand", "conv2d", (hw, hw), prev_slot, f"e{b}", 1, 1,
                              "relu6", (x,)))
            x, mid_slot = f"b{b}_expand", f"e{b}"
        else:
            mid_slot = prev_slot
        t.append(Template(f"b{b}_dw", "depthwise_conv2d", (hw, hw), mid_slot, None, 3, stride,
                          "relu6", (x,)))
        hw = math.ceil(hw / stride)
        t.append(Template(f"b{b}_project", "conv2d", (hw, hw), mid_slot, out_slot, 1, 1, "none",
                          (f"b{b}_dw",)))
        last = f"b{b}_project"
        if stride == 1 and prev_slot == out_slot:
            # Residual: the stage's width slot ties the block's input and output together.
            t.append(Template(f"b{b}_add", "add", (hw, hw), out_slot, None,
                              inputs=(prev, f"b{b}_project")))
            last = f"b{b}_add"
        prev, prev_slot = last, out_slot
    t.append(Template("conv_last", "conv2d", (hw, hw), prev_slot, "conv_last", 1, 1, "relu6",
                      (prev,)))
    return t + head(hw, "conv_last", "conv_last", classes)


MOBILENET_V2 = Family("mobilenet_v2", V2_SLOTS, V2_BASE, _v2_layout, _v2_multiplier)

# -- MobileNetV3-Small ------------------------------------------------------------------------

# (kernel, expanded width, out width, squeeze-excite, hard-swish (else ReLU), stride), as in
# the paper's Table 2 and torchvision's mobilenet_v3_small.
V3_SMALL_BLOCKS = [(3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2),
                   (3, 88, 24, False, False, 1), (5, 96, 40, True, True, 2),
                   (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
                   (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1),
                   (5, 288, 96, True, True, 2), (5, 576, 96, True, True, 1),
                   (5, 576, 96, True, True, 1)]
V3_STAGE_OUTS = (16, 24, 40, 48, 96)  # one slot per width that residual adds tie together


def _v3_stage(out: int) -> str:
    return f"s{V3_STAGE_OUTS.index(out) + 1}"


V3_SLOTS = (("conv1",) + tuple(f"s{i}" for i in range(1, len(V3_STAGE_OUTS) + 1))
            + tuple(f"e{b}" for b in range(2, len(V3_SMALL_BLOCKS) + 1))  # block 1: no expand
            + tuple(f"se{b}" for b, blk in enumerate(V3_SMALL_BLOCKS, 1) if blk[3])
            + ("conv_last", "fc1"))


def _v3_small_widths(m: float) -> tuple[int, ...]:
    """Slot widths at multiplier ``m`` as torchvision scales them: every width through
    make_divisible, squeeze-excite at a quarter of its expanded width, the last conv at 6x
    the last stage, the 1024-wide classifier layer kept below 1.0."""
    stages = [make_divisible(c * m) for c in V3_STAGE_OUTS]
    exp = [make_divisible(e * m) for _, e, _, _, _, _ in V3_SMALL_BLOCKS]
    se = [make_divisible(e / 4) for e, blk in zip(exp, V3_SMALL_BLOCKS) if blk[3]]
    fc1 = make_divisible(1024 * m) if m > 1.0 else 1024
    return (make_divisible(16 * m), *stages, *exp[1:], *se, 6 * stages[-1], fc1)


def _v3_activation(t: list[Template], name: str, hw: int, slot: str, src: str) -> str:
    t.append(Template(name, "hard_swish", (hw, hw), slot, None, inputs=(src,)))
    return name


def _v3_squeeze_excite(t: list[Template], b: int, hw: int, slot: str, src: str) -> str:
    """pool -> 1x1 conv (ReLU) -> 1x1 conv -> hard_sigmoid -> scale the block's channels.

    The hard_sigmoid, relu6(x + 3) / 6, is written as the TF converter emits it: the + 3 in
    the conv's bias, the ReLU6 fused into the conv, then a mul_scalar by 1/6.
    """
    p = f"b{b}_se"
    t += [Template(f"{p}_pool", "global_avg_pool", (hw, hw), slot, None, inputs=(src,)),
          Template(f"{p}_reduce", "conv2d", (1, 1), slot, f"se{b}", act="relu",
                   inputs=(f"{p}_pool",)),
          Template(f"{p}_expand", "conv2d", (1, 1), f"se{b}", slot, act="relu6",
                   inputs=(f"{p}_reduce",)),
          Template(f"{p}_gate", "mul_scalar", (1, 1), slot, None, inputs=(f"{p}_expand",)),
          Template(f"{p}_mul", "channel_mul", (hw, hw), slot, None, inputs=(src, f"{p}_gate"))]
    return f"{p}_mul"


def _v3_small_layout(resolution: int, classes: int) -> list[Template]:
    hw = math.ceil(resolution / 2)
    t = [Template("conv1", "conv2d", (resolution, resolution), 3, "conv1", 3, 2, "none",
                  (INPUT,))]
    prev = _v3_activation(t, "conv1_hs", hw, "conv1", "conv1")
    prev_slot = "conv1"
    for b, (k, _, out, se, hs, stride) in enumerate(V3_SMALL_BLOCKS, start=1):
        act = "none" if hs else "relu"
        x, mid = prev, prev_slot
        if b > 1:
            mid = f"e{b}"
            t.append(Template(f"b{b}_expand", "conv2d", (hw, hw), prev_slot, mid, 1, 1, act, (x,)))
            x = f"b{b}_expand" if not hs else _v3_activation(t, f"b{b}_expand_hs", hw, mid,
                                                             f"b{b}_expand")
        t.append(Template(f"b{b}_dw", "depthwise_conv2d", (hw, hw), mid, None, k, stride, act,
                          (x,)))
        hw = math.ceil(hw / stride)
        x = f"b{b}_dw" if not hs else _v3_activation(t, f"b{b}_dw_hs", hw, mid, f"b{b}_dw")
        if se:
            x = _v3_squeeze_excite(t, b, hw, mid, x)
        out_slot = _v3_stage(out)
        t.append(Template(f"b{b}_project", "conv2d", (hw, hw), mid, out_slot, inputs=(x,)))
        last = f"b{b}_project"
        if stride == 1 and prev_slot == out_slot:
            t.append(Template(f"b{b}_add", "add", (hw, hw), out_slot, None,
                              inputs=(prev, last)))
            last = f"b{b}_add"
        prev, prev_slot = last, out_slot
    t.append(Template("conv_last", "conv2d", (hw, hw), prev_slot, "conv_last", inputs=(prev,)))
    _v3_activation(t, "conv_last_hs", hw, "conv_last", "conv_last")
    return t + [
        Template("pool", "global_avg_pool", (hw, hw), "conv_last", None,
                 inputs=("conv_last_hs",)),
        Template("fc1", "fully_connected", (1, 1), "conv_last", "fc1", inputs=("pool",)),
        Template("fc1_hs", "hard_swish", (1, 1), "fc1", None, inputs=("fc1",)),
        Template("fc", "fully_connected", (1, 1), "fc1", classes, inputs=("fc1_hs",))]


MOBILENET_V3_SMALL = Family("mobilenet_v3_small", V3_SLOTS, _v3_small_widths(1.0),
                            _v3_small_layout, _v3_small_widths)

FAMILIES: dict[str, Family] = {f.name: f for f in (MOBILENET_V1, MOBILENET_V2,
                                                   MOBILENET_V3_SMALL)}


class FamilyName(StrEnum):
    """The families' names: the values `--space` and `--model` take (a key of FAMILIES)."""

    MOBILENET_V1 = "mobilenet_v1"
    MOBILENET_V2 = "mobilenet_v2"
    MOBILENET_V3_SMALL = "mobilenet_v3_small"


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise SpecError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


# -- shape spaces ---------------------------------------------------------------------------


def channel_choices(base: int, grid: int, extra: Iterable[int] = ()) -> list[int]:
    """Widths a slot of initial width ``base`` can take: the grid's multiples up to base,
    base itself, and any extra widths (e.g. the width-multiplier networks') below it."""
    values = set(range(grid, base + 1, grid)) | {base} | {e for e in extra if 0 < e <= base}
    return sorted(values)


def slot_choices(fam: Family, grid: int) -> dict[str, list[int]]:
    """slot -> widths on the grid, plus the widths of the standard multiplier networks."""
    mult = [fam.multiplier(m) for m in MULTIPLIERS]
    return {slot: channel_choices(base, grid, (m[i] for m in mult))
            for i, (slot, base) in enumerate(zip(fam.slots, fam.base))}


def shape_space(fam: Family, resolution: int = 224, grid: int = 32,
                classes: int = 1000) -> set[LayerSpec]:
    """Every unique LayerSpec a network of this family reachable on the grid contains."""
    choices = slot_choices(fam, grid)
    space: set[LayerSpec] = set()
    for t in fam.layout(resolution, classes):
        cins = choices[t.cin] if isinstance(t.cin, str) else [t.cin]
        if t.cout is None or isinstance(t.cout, int):
            couts: list[int | None] = [None]
        else:
            couts = list(choices[t.cout])
        for cin in cins:
            for cout in couts:
                width = {}
                if isinstance(t.cin, str):
                    width[t.cin] = cin
                if isinstance(t.cout, str):
                    width[t.cout] = cout
                space.add(t.spec(width))
    return space


def spaces(names: Iterable[str], resolution: int = 224, grid: int = 32,
           classes: int = 1000) -> list[LayerSpec]:
    """The union of several families' spaces, in a stable order."""
    out: set[LayerSpec] = set()
    for n in names:
        out |= shape_space(family(n), resolution, grid, classes)
    return sorted(out, key=lambda s: s.key)
