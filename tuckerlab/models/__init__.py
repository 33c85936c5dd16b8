"""Reference networks for compression experiments.

CIFAR ResNet-20/32/56/110 and ResNet-18 (He et al., 2016) and VGG-16 with
batch norm (Simonyan & Zisserman, 2015), all for 32x32 inputs (28x28 works
too). Every convolution is a plain :class:`torch.nn.Conv2d` without bias
followed by batch norm, so the compression code can find and replace them by
name (``layer1.0.conv1``, ``features.conv3_2``).

Any classification network of torchvision is ``"torchvision:NAME"``
(``get_model("torchvision:resnet50", pretrained=True)`` for ImageNet
weights), and any user's :class:`torch.nn.Module` can be compressed and
trained as it is.

Examples
--------
>>> from tuckerlab.models import get_model
>>> model = get_model("resnet20", num_classes=10)
>>> sum(p.numel() for p in model.parameters())
269722

References
----------
K. He, X. Zhang, S. Ren and J. Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016.

K. Simonyan and A. Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ._torchvision import PREFIX, WeightsUnavailableError, list_torchvision_models, torchvision_model
from .resnet18 import ResNet18, resnet18
from .resnet_cifar import (
    BasicBlock,
    CifarResNet,
    PadShortcut,
    resnet20,
    resnet32,
    resnet56,
    resnet110,
)
from .vgg import VGG, vgg16_bn

__all__ = [
    "get_model",
    "list_models",
    "list_torchvision_models",
    "WeightsUnavailableError",
    "CifarResNet",
    "ResNet18",
    "VGG",
    "BasicBlock",
    "PadShortcut",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet110",
    "resnet18",
    "vgg16_bn",
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet18": resnet18,
    "vgg16": vgg16_bn,
}
_ALIASES = {"vgg16_bn": "vgg16", "vgg16-bn": "vgg16"}


def list_models() -> list[str]:
    """Names accepted by :func:`get_model` (without aliases).

    Returns
    -------
    list of str
        ``["resnet20", "resnet32", "resnet56", "resnet110", "resnet18",
        "vgg16"]``.
    """
    return list(_REGISTRY)


def get_model(
    name: str, num_classes: int = 10, in_channels: int = 3, pretrained: bool | str = False, **kw
) -> nn.Module:
    """Build a network by name.

    Explained in: chapter 0, "A quick tour" (notebooks/00_quick_tour.ipynb).

    Parameters
    ----------
    name : str
        One of :func:`list_models` (case-insensitive; ``"vgg16_bn"`` is an
        alias of ``"vgg16"``), or ``"torchvision:NAME"`` for any of
        :func:`list_torchvision_models` (e.g. ``"torchvision:resnet50"``).
    num_classes : int
        Outputs of the classifier (10 for CIFAR-10, 100 for CIFAR-100, 1000
        for ImageNet).
    in_channels : int
        Channels of the input images (1 for Fashion-MNIST).
    pretrained : bool or str
        torchvision models only: True loads torchvision's default ImageNet
        weights (a string names another set, e.g. ``"IMAGENET1K_V1"``),
        downloaded once into torch's cache; a classifier for another
        ``num_classes`` is then freshly initialised. False (default):
        random initialisation.
    **kw
        Passed to the model's constructor, e.g. ``zero_init_residual=True``
        for the ResNets or ``dropout=0.0`` for VGG.

    Returns
    -------
    torch.nn.Module
        The model, on the CPU, in training mode.

    Raises
    ------
    ValueError
        If ``name`` is not a known model, or ``pretrained`` is asked of a
        model that has no pretrained weights.
    WeightsUnavailableError
        The pretrained weights are not cached and cannot be downloaded (the
        message says which file to put where).
    """
    if str(name).lower().startswith(PREFIX):
        return torchvision_model(str(name)[len(PREFIX):], num_classes=num_classes, in_channels=in_channels,
                                 pretrained=pretrained, **kw)
    if pretrained is not False:
        raise ValueError(f"pretrained weights exist only for torchvision models ('torchvision:NAME'); "
                         f"{name!r} must be trained here (pretrained=False), got pretrained={pretrained!r}")
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        accepted = ", ".join(repr(n) for n in [*_REGISTRY, *_ALIASES, "torchvision:NAME"])
        raise ValueError(f"unknown model {name!r}; accepted names: {accepted}")
    return _REGISTRY[key](num_classes=num_classes, in_channels=in_channels, **kw)
