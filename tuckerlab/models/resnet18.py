"""ResNet-18 adapted to 32x32 images (He et al., 2016).

The ImageNet ResNet-18 with the stem changed for small images: one 3x3
convolution with stride 1 and no max pooling, as in the widely used CIFAR
versions. Four stages of two basic blocks (64, 128, 256, 512 channels);
where the shape changes the shortcut is a 1x1 convolution with batch norm
("option B"). 11.2M parameters for 10 classes.

References
----------
K. He, X. Zhang, S. Ren and J. Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .resnet_cifar import BasicBlock, init_weights

__all__ = ["ResNet18", "resnet18"]


class ResNet18(nn.Module):
    """ResNet-18 with a 3x3 stem and no max pooling.

    Parameters
    ----------
    num_classes : int
        Outputs of the classifier.
    in_channels : int
        Channels of the input images.
    zero_init_residual : bool
        Start every residual block as the identity.

    Notes
    -----
    Module names follow torchvision: ``conv1``, ``bn1``, ``layer1`` ..
    ``layer4``, ``avgpool``, ``fc``; inside a block ``conv1``, ``bn1``,
    ``conv2``, ``bn2`` and ``shortcut`` (``shortcut.0`` is the 1x1
    convolution where there is one).
    """

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, zero_init_residual: bool = False
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        chans = 64
        stages = []
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(
                    BasicBlock(chans, width, stride, shortcut="B"),
                    BasicBlock(width, width, 1, shortcut="B"),
                )
            )
            chans = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10, in_channels: int = 3, **kw) -> ResNet18:
    """ResNet-18 for 32x32 images (11.2M parameters)."""
    return ResNet18(num_classes, in_channels, **kw)
