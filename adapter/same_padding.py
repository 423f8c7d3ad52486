"""TFLite SAME padding in torch: the pads of one axis, and a convolution that applies them.

Its own module because the tracer and the exporter read it too, and the models depend on
the tracer (through ``adapter.slots``): kept in ``adapter.models`` it would close a loop.

Stride-1 convolutions with odd kernels pad ``k // 2`` on each side, which is SAME already;
strided ones are ``SameConv2d``, which pads the odd pixel after (0 before and 1 after for a
3x3 stride-2 conv on an even input) where torch's ``padding=1`` would pad 1 and 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite/TensorFlow SAME padding of one axis, (before, after): the odd pixel goes after."""
    extent = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """nn.Conv2d padding as TFLite SAME at any stride (torch's ``padding='same'`` refuses
    strides above 1, and a number pads both sides alike).

    ``padding`` reads ``"same"`` (what ``adapter.trace`` and ``adapter.export`` look at);
    the pads are worked out per input size in ``forward``, so any resolution is right.
    """

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, padding=0, **kwargs)
        self.padding = "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_pads(x.shape[-2], self.kernel_size[0], self.stride[0],
                                self.dilation[0])
        left, right = same_pads(x.shape[-1], self.kernel_size[1], self.stride[1],
                                self.dilation[1])
        return F.conv2d(F.pad(x, (left, right, top, bottom)), self.weight, self.bias,
                        self.stride, 0, self.dilation, self.groups)
