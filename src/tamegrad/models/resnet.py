"""CIFAR-style ResNet-18 (He et al. 2016, as used for CIFAR by most optimizer papers).

Differences from the ImageNet ResNet-18: the stem is a single 3x3 stride-1 convolution with no
max-pool, so a 32x32 input reaches the last stage at 4x4. Global average pooling makes the network
accept any input size and any number of input channels (e.g. 1x8x8 digits), but small inputs lose
their spatial extent quickly: an 8x8 input is 1x1 in the last stage.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._init import kaiming_init


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with an identity (or 1x1 conv+BN projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images: stage widths ``w, 2w, 4w, 8w``, strides 1, 2, 2, 2.

    ``width=64`` is the standard network (11.17M parameters for 10 classes).
    ``zero_init_residual`` sets the last BN scale of every block to 0 (off by default).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: int = 64,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        layers: list[nn.Module] = []
        in_planes = w
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = w * 2**i
            stage = nn.Sequential(
                BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)
            )
            layers.append(stage)
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        kaiming_init(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(self.pool(out).flatten(1))
