"""Batched normalisation and crop/flip augmentation for uint8 images.

Both functions take a whole batch of ``uint8`` images ``(N, C, H, W)`` on
any device and work on that device with a handful of tensor operations and
no loop over images, so a training loop can keep the data set on the GPU and
augment every step without a DataLoader (the approach of Jordan's airbench).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["normalize", "random_crop_flip"]


def _channel_tensor(values, like: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=dtype, device=like.device).reshape(-1)
    channels = like.shape[-3]
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise ValueError(
            f"{name} has {t.numel()} values but the images have {channels} channels"
        )
    return t.reshape(channels, 1, 1)


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Convert uint8 images to floats and standardise each channel.

    Computes ``(x / 255 - mean) / std`` as one in-place multiply and add on
    the converted copy.

    Parameters
    ----------
    x : torch.Tensor
        ``uint8`` images ``(N, C, H, W)`` or ``(C, H, W)``, any device and
        memory format (channels_last is kept).
    mean, std : sequence of float or torch.Tensor
        Per-channel statistics in [0, 1] units (as in
        :attr:`ImageDataset.mean`), or a single value for all channels.
    dtype : torch.dtype
        Floating dtype of the result (``torch.float16``/``bfloat16`` for
        half-precision training).

    Returns
    -------
    torch.Tensor
        Normalised images of ``dtype`` on ``x``'s device.

    Examples
    --------
    >>> x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    >>> normalize(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)).unique()
    tensor([1.])
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"expected images (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    # Statistics in float32 (float64 is unsupported on some devices).
    m = _channel_tensor(mean, x, torch.float32, "mean")
    s = _channel_tensor(std, x, torch.float32, "std")
    scale = (1.0 / (255.0 * s)).to(dtype)
    shift = (-m / s).to(dtype)
    return x.to(dtype).mul_(scale).add_(shift)


def random_crop_flip(
    x: torch.Tensor,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random translation by zero padding and cropping, and random mirroring.

    The standard CIFAR training augmentation (He et al., 2016): pad each
    image by ``padding`` zero pixels on every side, cut a random window of
    the original size, and flip it horizontally with probability 1/2.
    Padding is with zeros (black) as in the reference recipe, not
    reflection. Each image gets its own offsets and flip; the whole batch is
    done with one padding and two gathers on ``x``'s device.

    Parameters
    ----------
    x : torch.Tensor
        Images ``(N, C, H, W)`` of any dtype (normally ``uint8``), on any
        device, contiguous or channels_last.
    padding : int
        Maximum shift in pixels in each direction; 0 disables the crop.
    flip : bool
        Whether to mirror half of the images left-right.
    generator : torch.Generator, optional
        Source of randomness for reproducible augmentation; it may live on
        another device than ``x`` (the random offsets are then moved).

    Returns
    -------
    torch.Tensor
        Augmented images, same shape, dtype, device and memory format.

    Notes
    -----
    The crop is two gathers with per-image row and column indices that are
    broadcast views (no per-pixel index tensor is built), and the flip is
    folded into the column indices, so it costs nothing extra. No value is
    synchronised to the host.

    References
    ----------
    K. He, X. Zhang, S. Ren and J. Sun, "Deep Residual Learning for Image
    Recognition", CVPR 2016.
    """
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, c, h, w = x.shape
    if n == 0 or (padding == 0 and not flip):
        return x.clone()
    dev = x.device
    gen_dev = generator.device if generator is not None else dev
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=gen_dev, generator=generator).to(dev)
    mirror = torch.randint(0, 2 if flip else 1, (n,), device=gen_dev, generator=generator).to(dev)

    ar_w = torch.arange(w, device=dev)
    cols = offsets[1, :, None] + torch.where(mirror[:, None].bool(), (w - 1) - ar_w, ar_w)  # (N, W)
    out = x
    if padding:
        out = F.pad(x, (padding, padding, padding, padding))
        rows = offsets[0, :, None] + torch.arange(h, device=dev)  # (N, H)
        out = out.gather(2, rows[:, None, :, None].expand(n, c, h, out.shape[3]))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    if c > 1 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out
