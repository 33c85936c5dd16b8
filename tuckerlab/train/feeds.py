"""How batches reach the model: from tensors resident on the device, or streamed by a DataLoader.

The engine asks a *feed* for the uint8 batches of an epoch and for the
batches of an evaluation; both feeds hand over ``(images, labels)`` on the
training device, images ``uint8 (B, C, H, W)``, and the engine normalises
them there (:func:`tuckerlab.data.normalize`), so the loop is the same for
both.

:class:`ResidentFeed` (an :class:`~tuckerlab.data.ImageDataset`)
    The images are moved to the device once and stay there. Each step
    gathers a batch by index from a per-epoch permutation and crops and
    flips it on the device (:func:`tuckerlab.data.random_crop_flip`): no
    DataLoader, no host work per step (Jordan's airbench).
:class:`StreamFeed` (a :class:`~tuckerlab.data.StreamingDataset`)
    A DataLoader per epoch, its workers decoding and augmenting images,
    page-locked batches copied asynchronously to the GPU; under DDP a
    :class:`~torch.utils.data.DistributedSampler` gives each process its
    share.

Both draw the permutation of epoch ``e`` from the seed ``(seed, e)`` and
give the processes of a data-parallel run the images of the same global
batch at each step, whatever their number; augmentation streams are seeded
from ``(seed, e, rank)``.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from ..data import StreamingDataset, random_crop_flip
from .distributed import DistInfo

__all__ = ["ResidentFeed", "StreamFeed", "make_feed", "derive_seed", "check_data"]

Batch = tuple[torch.Tensor, torch.Tensor]


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of integers (independent streams per tuple)."""
    entropy = [int(k) % (2**63) for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def check_data(data: Any) -> None:
    """Raise TypeError unless ``data`` is an in-memory or a streaming data set."""
    if isinstance(data, StreamingDataset):
        return
    for attr in ("x_train", "y_train", "x_test", "y_test", "mean", "std"):
        if not hasattr(data, attr):
            raise TypeError(
                "data must be a tuckerlab.data.ImageDataset (x_train, y_train, x_test, y_test, mean, std) "
                f"or a tuckerlab.data.StreamingDataset; it has no attribute {attr!r}"
            )
    for split in ("train", "test"):
        x = getattr(data, f"x_{split}")
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise TypeError(f"data.x_{split} must be uint8 images (N, C, H, W), got {x.dtype} {tuple(x.shape)}")


class _Feed:
    """What the two feeds share: device, process, statistics, labels."""

    def __init__(self, data: Any, device: torch.device, dist: DistInfo, seed: int):
        self.device, self.dist, self.seed = device, dist, int(seed)
        self.mean = torch.as_tensor(data.mean, dtype=torch.float32).to(device)
        self.std = torch.as_tensor(data.std, dtype=torch.float32).to(device)
        self.num_classes = getattr(data, "num_classes", None)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images the model sees."""
        return tuple(self.shape("train")[1:])

    def shape(self, split: str) -> tuple[int, ...]:  # pragma: no cover - abstract
        """``(N, C, H, W)`` of ``split``."""
        raise NotImplementedError

    def labels(self, split: str) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self) -> torch.Tensor:  # pragma: no cover - abstract
        """One uint8 image ``(1, C, H, W)`` on the device, as evaluation sees it."""
        raise NotImplementedError


class ResidentFeed(_Feed):
    """Batches gathered from uint8 tensors held on the device.

    Attributes ``x_train``, ``y_train``, ``x_test``, ``y_test`` (the splits
    asked for) are the data set's tensors on ``device``.
    """

    eval_batch_size = 1000

    def __init__(self, data: Any, device: torch.device, dist: DistInfo = DistInfo(), seed: int = 0,
                 splits: tuple[str, ...] = ("train", "test")):
        super().__init__(data, device, dist, seed)
        for split in splits:
            setattr(self, f"x_{split}", getattr(data, f"x_{split}").to(device))
            setattr(self, f"y_{split}", getattr(data, f"y_{split}").to(device=device, dtype=torch.long))
        self._splits = splits

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    def shape(self, split: str) -> tuple[int, ...]:
        return tuple(getattr(self, f"x_{split}").shape)

    def labels(self, split: str) -> torch.Tensor:
        return getattr(self, f"y_{split}")

    def sample(self) -> torch.Tensor:
        return getattr(self, f"x_{self._splits[-1]}")[:1]

    def train_batches(self, epoch: int, steps: int, batch_size: int, augment: bool) -> Iterator[Batch]:
        """The ``steps`` local batches of ``epoch`` (global batch ``batch_size``)."""
        dev, rank = self.device, self.dist.rank
        b = batch_size // self.dist.world_size
        perm_gen = torch.Generator().manual_seed(derive_seed(self.seed, 0, epoch))
        perm = torch.randperm(self.n_train, generator=perm_gen).to(dev)
        aug_gen = torch.Generator(device=dev).manual_seed(derive_seed(self.seed, 1, epoch, rank))
        for i in range(steps):
            start = i * batch_size + rank * b  # rank r takes slice r of the global batch
            idx = perm[start : start + b]
            x = self.x_train[idx]
            if augment:
                x = random_crop_flip(x, padding=4, generator=aug_gen)
            yield x, self.y_train[idx]

    def eval_batches(self, split: str, batch_size: int | None = None) -> Iterator[Batch]:
        """This process's share of ``split``, in order, not augmented."""
        batch_size = batch_size or self.eval_batch_size
        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        if self.dist.enabled:  # every rank takes its share, sums are all-reduced
            x, y = x[self.dist.rank :: self.dist.world_size], y[self.dist.rank :: self.dist.world_size]
        for i in range(0, x.shape[0], batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]


class StreamFeed(_Feed):
    """Batches decoded and augmented by the workers of a DataLoader, one DataLoader per epoch.

    A fresh DataLoader per epoch, its generator seeded from ``(seed, epoch,
    rank)``, makes the augmentation of an epoch independent of earlier ones
    (so a resumed run repeats an uninterrupted one with the same number of
    workers); starting the workers costs a moment per epoch.
    """

    eval_batch_size = 256

    def __init__(self, data: StreamingDataset, device: torch.device, dist: DistInfo = DistInfo(), seed: int = 0):
        super().__init__(data, device, dist, seed)
        self.dataset = data
        self._pin = device.type == "cuda"

    @property
    def n_train(self) -> int:
        return self.dataset.num_images("train")

    def shape(self, split: str) -> tuple[int, ...]:
        return (self.dataset.num_images(split), *self.dataset.image_shape)

    def labels(self, split: str) -> torch.Tensor:
        return self.dataset.targets(split)

    def sample(self) -> torch.Tensor:
        img, _ = self.dataset.dataset("test")[0]
        return torch.as_tensor(img)[None].to(self.device)

    def _batches(self, loader, steps: int | None) -> Iterator[Batch]:
        it = iter(loader)
        try:
            for i, (x, y) in enumerate(it):
                if steps is not None and i == steps:
                    break
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        finally:
            del it  # stops the workers when an epoch ends early

    def train_batches(self, epoch: int, steps: int, batch_size: int, augment: bool) -> Iterator[Batch]:
        loader = self.dataset.loader(
            "train",
            batch_size // self.dist.world_size,
            augment=augment,
            shuffle=True,
            seed=derive_seed(self.seed, 0, epoch),
            worker_seed=derive_seed(self.seed, 1, epoch, self.dist.rank),
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            pin_memory=self._pin,
            drop_last=True,
        )
        return self._batches(loader, steps)

    def eval_batches(self, split: str, batch_size: int | None = None) -> Iterator[Batch]:
        loader = self.dataset.loader(
            split,
            batch_size or self.eval_batch_size,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            pin_memory=self._pin,
        )
        return self._batches(loader, None)


def make_feed(data: Any, device: torch.device, dist: DistInfo = DistInfo(), seed: int = 0,
              splits: tuple[str, ...] = ("train", "test")) -> ResidentFeed | StreamFeed:
    """The feed for ``data``: streamed for a StreamingDataset, resident otherwise."""
    check_data(data)
    if isinstance(data, StreamingDataset):
        return StreamFeed(data, device, dist, seed)
    return ResidentFeed(data, device, dist, seed, splits)
