"""VGG-16 with batch normalisation for 32x32 images (Simonyan & Zisserman, 2015).

The 13 convolutions of configuration D, each followed by batch norm and
ReLU, with five 2x2 max poolings, then a classifier of two 512-unit hidden
layers with dropout and one output layer. This is the CIFAR variant with
15.25M parameters and 313.7M multiply-accumulates per 32x32 image for 10
classes that the compression literature reports.

The last pooling is an adaptive max pooling to 1x1; on 32x32 inputs it is
exactly the 2x2 max pooling of the original, and it lets the network run on
28x28 inputs (Fashion-MNIST) too.

References
----------
K. Simonyan and A. Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015.

S. Ioffe and C. Szegedy, "Batch Normalization: Accelerating Deep Network
Training by Reducing Internal Covariate Shift", ICML 2015.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .resnet_cifar import init_weights

__all__ = ["VGG", "vgg16_bn", "VGG16_CONFIG"]

#: Channels of the convolutions of each block of VGG-16 (configuration D).
VGG16_CONFIG: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


class VGG(nn.Module):
    """VGG with batch norm for small images.

    Parameters
    ----------
    config : tuple of tuple of int
        Output channels of the 3x3 convolutions, one tuple per block; a max
        pooling follows each block.
    num_classes : int
        Outputs of the classifier.
    in_channels : int
        Channels of the input images.
    hidden : int
        Units of the two hidden layers of the classifier.
    dropout : float
        Dropout probability before each hidden layer's successor.

    Notes
    -----
    Module names: ``features.conv{b}_{i}``, ``features.bn{b}_{i}``,
    ``features.relu{b}_{i}`` and ``features.pool{b}`` for block ``b`` and
    layer ``i`` (counting from 1, as in the paper's "conv3_2"), then
    ``classifier.fc1``, ``classifier.fc2``, ``classifier.fc3``.
    """

    def __init__(
        self,
        config: tuple[tuple[int, ...], ...] = VGG16_CONFIG,
        num_classes: int = 10,
        in_channels: int = 3,
        hidden: int = 512,
        dropout: float = 0.5,
    ):
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        chans = in_channels
        for b, block in enumerate(config, start=1):
            for i, width in enumerate(block, start=1):
                layers[f"conv{b}_{i}"] = nn.Conv2d(chans, width, 3, padding=1, bias=False)
                layers[f"bn{b}_{i}"] = nn.BatchNorm2d(width)
                layers[f"relu{b}_{i}"] = nn.ReLU(inplace=True)
                chans = width
            last = b == len(config)
            layers[f"pool{b}"] = nn.AdaptiveMaxPool2d(1) if last else nn.MaxPool2d(2)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(chans, hidden),
                relu1=nn.ReLU(inplace=True),
                drop1=nn.Dropout(dropout),
                fc2=nn.Linear(hidden, hidden),
                relu2=nn.ReLU(inplace=True),
                drop2=nn.Dropout(dropout),
                fc3=nn.Linear(hidden, num_classes),
            )
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg16_bn(num_classes: int = 10, in_channels: int = 3, **kw) -> VGG:
    """VGG-16 with batch norm for CIFAR (15.25M parameters, 313.7M MACs)."""
    return VGG(VGG16_CONFIG, num_classes, in_channels, **kw)
