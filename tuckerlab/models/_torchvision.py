"""Any classification network of torchvision, optionally with its ImageNet weights.

``get_model("torchvision:resnet50", pretrained=True)`` builds
:func:`torchvision.models.resnet50` with torchvision's default ImageNet
weights. A different number of classes gets a freshly initialised last
linear layer; a different number of input channels a new first convolution
(for one channel and pretrained weights, the sum of the RGB filters, which
computes on a grey image what the original computes on that image copied
to three channels).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

__all__ = ["PREFIX", "WeightsUnavailableError", "torchvision_model", "list_torchvision_models"]

PREFIX = "torchvision:"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither in torch's cache nor downloadable."""


def list_torchvision_models() -> list[str]:
    """Names of torchvision's classification models (use them after ``"torchvision:"``)."""
    from torchvision import models

    return list(models.list_models(module=models))


def _named_child_setter(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _weights(name: str, pretrained: bool | str):
    from torchvision import models

    enum = models.get_model_weights(name)
    if pretrained is True:
        return enum.DEFAULT
    try:
        return enum[pretrained]
    except KeyError:
        accepted = ", ".join(repr(k) for k in enum.__members__)
        raise ValueError(f"pretrained must be True, False or one of {accepted} for {name}, got {pretrained!r}") from None


def _fetch(name: str, weights, progress: bool) -> None:
    """Put the weights file in torch's cache, or say how to get it there."""
    try:
        weights.get_state_dict(progress=progress, check_hash=True)
    except Exception as e:  # no network, HTTP error, damaged file, ...
        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
        raise WeightsUnavailableError(
            f"cannot load torchvision's pretrained weights for {name} ({weights}): {type(e).__name__}: {e}. "
            f"They are downloaded once from {weights.url} to {file} (the folder follows $TORCH_HOME). "
            "On a machine without internet access, copy that file there from one that has it, "
            "or build the model with pretrained=False."
        ) from e


def torchvision_model(
    name: str, num_classes: int = 1000, in_channels: int = 3, pretrained: bool | str = False,
    progress: bool = False, **kw,
) -> nn.Module:
    """A torchvision classification model by name, adapted to the data.

    Parameters
    ----------
    name : str
        One of :func:`list_torchvision_models` (e.g. ``"resnet50"``,
        ``"mobilenet_v2"``, ``"vgg16_bn"``), without the prefix.
    num_classes : int
        Outputs. With pretrained weights, anything but the 1000 ImageNet
        classes replaces the last linear layer by a freshly initialised one.
    in_channels : int
        Input channels. Anything but 3 replaces the first convolution (for
        1 channel with pretrained weights, by the sum of its RGB filters).
    pretrained : bool or str
        False: random initialisation. True: torchvision's default ImageNet
        weights. A string: a named set of weights (e.g.
        ``"IMAGENET1K_V1"``).
    progress : bool
        Show the download's progress.
    **kw
        Passed to torchvision's builder (e.g. ``dropout``). GoogLeNet and
        Inception-v3 are built with ``aux_logits=False`` unless given: the
        training loop takes one tensor of logits.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ValueError
        Unknown name, bad weights name, or an adaptation that cannot be done.
    WeightsUnavailableError
        The weights are not in torch's cache and cannot be downloaded; the
        message says where the file is expected.
    """
    from torchvision import models

    known = list_torchvision_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, 3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise ValueError(f"unknown torchvision model {name!r}{hint}; accepted: torchvision's classification "
                         f"models, {', '.join(known)}")
    for arg, value, low in (("num_classes", num_classes, 1), ("in_channels", in_channels, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
    if not isinstance(pretrained, (bool, str)):
        raise ValueError(f"pretrained must be True, False or the name of a set of weights, got {pretrained!r}")
    use_weights = pretrained is not False
    if name in ("googlenet", "inception_v3"):
        kw.setdefault("aux_logits", False)
    if not use_weights:
        model = models.get_model(name, weights=None, num_classes=num_classes, **kw)
    else:
        weights = _weights(name, pretrained)
        _fetch(name, weights, progress)
        model = models.get_model(name, weights=weights, progress=progress, **kw)
        n_out = len(weights.meta["categories"])
        if num_classes != n_out:
            heads = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == n_out]
            if not heads:
                raise ValueError(f"{name} has no linear layer with {n_out} outputs to replace for num_classes="
                                 f"{num_classes}; build it with num_classes={n_out} and replace its classifier")
            head_name, head = heads[-1]
            _named_child_setter(model, head_name, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))
    if in_channels != 3:
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs or convs[0][1].in_channels != 3:
            raise ValueError(f"cannot find the first 3-channel convolution of {name} to take in_channels={in_channels}")
        first_name, first = convs[0]
        if use_weights and in_channels != 1:
            raise ValueError(f"pretrained weights take 3 (RGB) or 1 (grey) input channels, got in_channels={in_channels}")
        new = nn.Conv2d(in_channels, first.out_channels, first.kernel_size, first.stride, first.padding,
                        first.dilation, first.groups, first.bias is not None, first.padding_mode)
        if use_weights:
            with torch.no_grad():
                new.weight.copy_(first.weight.sum(1, keepdim=True))
                if first.bias is not None:
                    new.bias.copy_(first.bias)
        _named_child_setter(model, first_name, new)
    return model
