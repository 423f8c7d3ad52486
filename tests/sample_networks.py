"""Small networks shared by the builder's and the reader's tests (every op kind in one)."""

from __future__ import annotations

from bench.zoo import MOBILENET_V3_SMALL
from lut_db.network import INPUT, Network, Node, chain
from lut_db.spec import LayerSpec


def mobilenet_v1_like() -> Network:
    s = LayerSpec.parse
    return chain("mbv1-tiny", (32, 32, 3), [
        ("conv0", s("conv2d:in=32x32x3,out=8,k=3x3,s=2x2,pad=same,act=relu6")),
        ("dw1", s("depthwise_conv2d:in=16x16x8,k=3x3,s=1x1,pad=same,act=relu6")),
        ("pw1", s("conv2d:in=16x16x8,out=16,k=1x1,s=1x1,pad=same,act=relu6")),
        ("dw2", s("depthwise_conv2d:in=16x16x16,k=3x3,s=2x2,pad=same,act=relu6")),
        ("pw2", s("conv2d:in=8x8x16,out=32,k=1x1,s=1x1,pad=same,act=relu6")),
        ("pool", s("global_avg_pool:in=8x8x32")),
        ("fc", s("fully_connected:in=1x1x32,out=10,act=none")),
    ])


def mobilenet_v2_block() -> Network:
    s = LayerSpec.parse
    nodes = (
        Node("expand", s("conv2d:in=8x8x16,out=96,k=1x1,s=1x1,pad=same,act=relu6"), (INPUT,)),
        Node("dw", s("depthwise_conv2d:in=8x8x96,k=3x3,s=1x1,pad=same,act=relu6"), ("expand",)),
        Node("project", s("conv2d:in=8x8x96,out=16,k=1x1,s=1x1,pad=same,act=none"), ("dw",)),
        Node("add", s("add:in=8x8x16,act=none"), ("project", INPUT)),
    )
    return Network("mbv2-block", (8, 8, 16), nodes)


def fc_feeding_others() -> Network:
    """An FC read by a conv (needs the inserted RESHAPE) and by another FC; two outputs."""
    s = LayerSpec.parse
    nodes = (
        Node("fc", s("fully_connected:in=2x2x8,out=16,act=relu"), (INPUT,)),
        Node("conv", s("conv2d:in=1x1x16,out=4,k=1x1,act=none"), ("fc",)),
        Node("fc2", s("fully_connected:in=1x1x16,out=3,act=none"), ("fc",)),
        Node("sum", s("add:in=1x1x16,act=relu6"), ("fc", "fc")),
    )
    return Network("fc-consumers", (2, 2, 8), nodes, outputs=("conv", "fc2", "sum"))


def mobilenet_v3_small() -> Network:
    return MOBILENET_V3_SMALL.network(width_mult=0.5, resolution=32, classes=10)


def every_new_op() -> Network:
    """Pad, concat of three, elementwise mul, squeeze-excite, logistic, softmax."""
    s = LayerSpec.parse
    nodes = (
        Node("pad", s("pad:in=7x7x4,pads=0x1x0x1"), (INPUT,)),
        Node("conv", s("conv2d:in=8x8x4,out=6,k=3x3,s=1x1,pad=valid,act=none"), ("pad",)),
        Node("hs", s("hard_swish:in=6x6x6"), ("conv",)),
        Node("sig", s("logistic:in=6x6x6"), ("conv",)),
        Node("prod", s("mul:in=6x6x6,act=relu"), ("hs", "sig")),
        Node("cat", s("concat:in=6x6x18,parts=6+6+6"), ("prod", "conv", "hs")),
        Node("pool", s("global_avg_pool:in=6x6x18"), ("cat",)),
        Node("gate", s("hard_sigmoid:in=1x1x18"), ("pool",)),
        Node("se", s("channel_mul:in=6x6x18,act=none"), ("cat", "gate")),
        Node("fc", s("fully_connected:in=6x6x18,out=5,act=none"), ("se",)),
        Node("prob", s("softmax:in=1x1x5"), ("fc",)),
    )
    return Network("every-new-op", (7, 7, 4), nodes, outputs=("prob", "cat"))


NETWORKS = [mobilenet_v1_like, mobilenet_v2_block, fc_feeding_others, mobilenet_v3_small,
            every_new_op]
