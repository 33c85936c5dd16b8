"""ResNets for 32x32 images: the CIFAR ResNet-20/32/56/110 of He et al. (2016).

The network is the one of Section 4.2 of the paper: a 3x3 stem with 16
channels, three stages of ``n`` basic blocks with 16, 32 and 64 channels at
32x32, 16x16 and 8x8, global average pooling and one linear classifier, for
``6n + 2`` layers. Shortcuts are "option A": the identity, and where the shape
changes, the input sub-sampled by 2 and zero-padded with the missing
channels, so shortcuts carry no parameters. This gives the parameter counts
of the paper (0.27M, 0.46M, 0.85M and 1.7M).

The global pooling is adaptive, so the same networks also run on 28x28
inputs (Fashion-MNIST, ``in_channels=1``).

References
----------
K. He, X. Zhang, S. Ren and J. Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BasicBlock",
    "PadShortcut",
    "CifarResNet",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
]


class PadShortcut(nn.Module):
    """Option-A shortcut: sub-sample spatially and zero-pad the channels.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the block's input and output (``out_channels >=
        in_channels``); the new channels are split evenly before and after
        the old ones, as in the reference implementations.
    stride : int
        Spatial sub-sampling factor (takes every ``stride``-th pixel).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"PadShortcut can only add channels, got {in_channels} -> {out_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra:
            # F.pad's last pair pads dim -3 (channels) of an NCHW tensor.
            x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    stride : int
        Stride of the first convolution (2 at the start of a stage).
    shortcut : {"A", "B"}
        What the shortcut does when the shape changes: ``"A"`` sub-samples
        and zero-pads (no parameters, CIFAR ResNets), ``"B"`` is a 1x1
        convolution followed by batch norm (ResNet-18). When the shape does
        not change the shortcut is the identity.

    Notes
    -----
    Module names are ``conv1``, ``bn1``, ``conv2``, ``bn2`` and ``shortcut``,
    so the first convolution of a network is found at e.g.
    ``layer1.0.conv1``.
    """

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        elif shortcut == "B":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """Kaiming-normal convolutions and linears, unit/zero batch norm.

    Parameters
    ----------
    model : nn.Module
        Initialised in place.
    zero_init_residual : bool
        Set the scale of the last batch norm of every residual block to zero,
        so each block starts as the identity (Goyal et al., 2017).

    References
    ----------
    K. He, X. Zhang, S. Ren and J. Sun, "Delving Deep into Rectifiers",
    ICCV 2015.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


class CifarResNet(nn.Module):
    """CIFAR ResNet with ``6 * blocks_per_stage + 2`` layers (He et al., 2016).

    Parameters
    ----------
    blocks_per_stage : int
        ``n`` in the paper: 3, 5, 9 and 18 give ResNet-20, 32, 56 and 110.
    num_classes : int
        Outputs of the classifier.
    in_channels : int
        Channels of the input images (3 for CIFAR, 1 for Fashion-MNIST).
    widths : tuple of int
        Channels of the three stages.
    zero_init_residual : bool
        Start every residual block as the identity (see :func:`init_weights`).

    Notes
    -----
    Module names: ``conv1``, ``bn1``, ``layer1`` .. ``layer3`` (each a
    sequence of :class:`BasicBlock`), ``avgpool``, ``fc``.
    """

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.blocks_per_stage = blocks_per_stage
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        chans = widths[0]
        stages = []
        for i, width in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(chans, width, stride, shortcut="A"))
                chans = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet20(num_classes: int = 10, in_channels: int = 3, **kw) -> CifarResNet:
    """ResNet-20 for CIFAR (0.27M parameters; He et al., 2016)."""
    return CifarResNet(3, num_classes, in_channels, **kw)


def resnet32(num_classes: int = 10, in_channels: int = 3, **kw) -> CifarResNet:
    """ResNet-32 for CIFAR (0.46M parameters; He et al., 2016)."""
    return CifarResNet(5, num_classes, in_channels, **kw)


def resnet56(num_classes: int = 10, in_channels: int = 3, **kw) -> CifarResNet:
    """ResNet-56 for CIFAR (0.85M parameters; He et al., 2016)."""
    return CifarResNet(9, num_classes, in_channels, **kw)


def resnet110(num_classes: int = 10, in_channels: int = 3, **kw) -> CifarResNet:
    """ResNet-110 for CIFAR (1.7M parameters; He et al., 2016)."""
    return CifarResNet(18, num_classes, in_channels, **kw)
