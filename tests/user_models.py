"""Networks that are not in the package, written in torch (no torchvision), as a user's own
model would be: for ``--model tests.user_models:FACTORY``."""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """ResNet's basic block: 3x3 -> 3x3, plus the input (1x1 stride-2 projection on a
    change of width or size). Standard torch padding (1 on each side), as torchvision's."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18's layout (four stages of two basic blocks), CIFAR-style stem (3x3, no
    max-pool), at given stage widths."""

    def __init__(self, widths: tuple[int, int, int, int] = (64, 128, 256, 512),
                 num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin, stages = widths[0], []
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18_tiny() -> ResNet18:
    """ResNet-18 at a sixteenth of the width per stage: small enough for tests."""
    return ResNet18((16, 24, 32, 48), num_classes=10)


class WithGelu(nn.Module):
    """A layer the LUT has no key kind for (GELU)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1)
        self.act = nn.GELU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.act(self.conv(x))), 1))


def with_gelu() -> WithGelu:
    return WithGelu()


def broken() -> nn.Module:
    raise RuntimeError("this factory fails")


class MobileNetV1Strided(nn.Module):
    """MobileNetV1's stem and its stride-2 blocks only (six slots, about 0.2 M parameters),
    narrower at the end: every shape it can be cut to is a MobileNetV1 shape at 32 px, so a
    MobileNetV1 LUT prices it whole."""

    def __init__(self, num_classes: int = 10):
        from adapter.models import ConvBNAct

        super().__init__()
        layers, cin = [ConvBNAct(3, 32, 3, 2)], 32
        for cout, stride in ((64, 1), (128, 2), (256, 2), (256, 2), (256, 2)):
            layers += [ConvBNAct(cin, cin, 3, stride, groups=cin), ConvBNAct(cin, cout)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))
