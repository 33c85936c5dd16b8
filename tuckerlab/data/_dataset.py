"""The in-memory image data set returned by :func:`load_dataset`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch

from ._stream import StreamingDataset

__all__ = ["ImageDataset", "DatasetNotAvailableError"]


class DatasetNotAvailableError(FileNotFoundError):
    """A data set is neither on disk nor downloadable.

    Explained in: chapter 5, "TT-LC: compressing while training, without pre-training"
    (notebooks/05_tt_lc.ipynb).

    Parameters
    ----------
    name : str
        The data set asked for.
    looked_for : sequence of str
        Files or folders that were searched.
    reason : str
        Why nothing could be downloaded (download disabled, or the error of
        the failed download).
    """

    def __init__(self, name: str, looked_for: Sequence[str], reason: str):
        self.name = name
        self.looked_for = list(looked_for)
        self.reason = reason
        lines = [f"data set {name!r} is not available offline and could not be downloaded."]
        lines.append("Looked for:")
        lines += [f"  {p}" for p in self.looked_for]
        lines.append(f"Download: {reason}")
        lines.append(
            "Offline alternatives: load_dataset('cifar10-subset') (real CIFAR-10 images "
            "shipped with tuckerlab), or load_dataset('fashion-mnist') after "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or "
            "load_dataset('synthetic')."
        )
        super().__init__("\n".join(lines))


class _TensorImageDataset(torch.utils.data.Dataset):
    """Map-style view of uint8 images with a per-image transform."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        img = self.x[i]
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.y[i])


def _stratified_head(y: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of ``n`` samples taking classes in turn, earliest first.

    The k-th sample of every class comes before the (k+1)-th of any class,
    so the classes stay balanced as long as each has enough samples; the
    result is sorted, i.e. keeps the data set's order.
    """
    total = y.shape[0]
    if n >= total:
        return torch.arange(total, device=y.device)
    order = torch.sort(y, stable=True).indices
    sorted_y = y[order]
    counts = torch.bincount(sorted_y)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.empty_like(order)
    rank_in_class[order] = torch.arange(total, device=y.device) - starts[sorted_y]
    key = rank_in_class * total + torch.arange(total, device=y.device)
    return torch.sort(torch.argsort(key)[:n]).values


@dataclass(repr=False)
class ImageDataset:
    """A small image classification data set held in memory as uint8.

    Parameters
    ----------
    name : str
        Name it was loaded by (e.g. ``"cifar10"``).
    x_train, x_test : torch.Tensor
        Images ``(N, C, H, W)``, ``uint8``.
    y_train, y_test : torch.Tensor
        Labels ``(N,)``, ``int64``, in ``0 .. num_classes - 1``.
    classes : tuple of str
        Class names, indexed by label.
    mean, std : tuple of float
        Per-channel mean and standard deviation in [0, 1] units, to be used
        with :func:`normalize`.

    Attributes
    ----------
    num_classes : int
        ``len(classes)``.

    Notes
    -----
    Everything stays a plain tensor so a training loop can move the whole
    data set to the GPU once (:meth:`to`) and batch, crop and flip there
    (:func:`random_crop_flip`); :meth:`torch_dataset` gives a classic
    per-image :class:`torch.utils.data.Dataset` for a DataLoader instead.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        self.classes = tuple(self.classes)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dim() != 4 or x.dtype != torch.uint8:
                raise ValueError(
                    f"x_{split} must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}"
                )
            if y.shape != (x.shape[0],) or y.dtype != torch.int64:
                raise ValueError(
                    f"y_{split} must be int64 of shape ({x.shape[0]},), "
                    f"got {y.dtype} {tuple(y.shape)}"
                )
            if len(self.mean) != x.shape[1] or len(self.std) != x.shape[1]:
                raise ValueError(
                    f"mean and std need one value per channel ({x.shape[1]}), "
                    f"got {len(self.mean)} and {len(self.std)}"
                )

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.x_train.shape[1:])

    def num_images(self, split: str) -> int:
        """Images in ``split`` (``"train"`` or ``"test"``); :class:`StreamingDataset` answers the same."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return getattr(self, f"x_{split}").shape[0]

    def take(self, split: str, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of ``split`` at ``indices``, not augmented.

        The same call on a :class:`StreamingDataset` decodes them, so code
        that needs a few images (calibration, rank selection) serves both.

        Returns
        -------
        x : torch.Tensor
            uint8 ``(len(indices), C, H, W)``.
        y : torch.Tensor
            int64 ``(len(indices),)``.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        idx = torch.as_tensor(indices, dtype=torch.long)
        return getattr(self, f"x_{split}")[idx], getattr(self, f"y_{split}")[idx]

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.x_train.device

    def to(self, device, non_blocking: bool = False) -> "ImageDataset":
        """Return a copy with all tensors on ``device``.

        Parameters
        ----------
        device : torch.device or str
            Target device, e.g. ``"cuda"``.
        non_blocking : bool
            Passed to :meth:`torch.Tensor.to`.

        Returns
        -------
        ImageDataset
            A new data set (the original is unchanged; tensors already on
            ``device`` are shared).
        """
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return dataclasses.replace(
            self,
            x_train=move(self.x_train),
            y_train=move(self.y_train),
            x_test=move(self.x_test),
            y_test=move(self.y_test),
        )

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "ImageDataset":
        """Return the first ``n_train``/``n_test`` images, balanced over classes.

        Deterministic: the classes are taken in turn, each contributing its
        earliest images, so every class gets ``n // num_classes`` images
        (or all it has) and the result keeps the original order.

        Parameters
        ----------
        n_train, n_test : int, optional
            Sizes of the splits; ``None`` keeps a split whole.

        Returns
        -------
        ImageDataset
            A new data set with the same name, classes and statistics.
        """
        def pick(x, y, n):
            if n is None:
                return x, y
            if n < 0:
                raise ValueError(f"subset sizes must be >= 0, got {n}")
            idx = _stratified_head(y, int(n))
            return x[idx], y[idx]

        x_train, y_train = pick(self.x_train, self.y_train, n_train)
        x_test, y_test = pick(self.x_test, self.y_test, n_test)
        return dataclasses.replace(
            self, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
        )

    def torch_dataset(
        self, split: str = "train", augment: bool | None = None
    ) -> torch.utils.data.Dataset:
        """A per-image :class:`torch.utils.data.Dataset` with torchvision transforms.

        For use with a :class:`torch.utils.data.DataLoader` (and as the
        baseline the batched GPU path is compared with).

        Parameters
        ----------
        split : {"train", "test"}
            Which split.
        augment : bool, optional
            Random crop with 4 pixels of zero padding and horizontal flip;
            by default on for ``"train"`` and off for ``"test"``.

        Returns
        -------
        torch.utils.data.Dataset
            Items are ``(image, label)``: a normalised ``float32`` tensor
            ``(C, H, W)`` and an ``int``. Keep the data set on the CPU when
            the DataLoader uses worker processes.
        """
        from torchvision.transforms import v2

        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if augment is None:
            augment = split == "train"
        steps = [self._crop_flip()] if augment else []
        steps += [
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(self.mean), list(self.std)),
        ]
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        return _TensorImageDataset(x, y, v2.Compose(steps))

    def _crop_flip(self):
        """Per-image random crop (4 pixels of zero padding) and flip, uint8 in and out."""
        from torchvision.transforms import v2

        _, h, w = self.image_shape
        return v2.Compose([v2.RandomCrop((h, w), padding=4, fill=0), v2.RandomHorizontalFlip()])

    def streaming(
        self, num_workers: int | None = None, pin_memory: bool | None = None, prefetch_factor: int | None = None
    ) -> StreamingDataset:
        """This data set served image by image through a DataLoader.

        The path large data sets take (:class:`StreamingDataset`), for data
        that would fit in memory: to compare the two paths, or to train on
        a machine whose accelerator cannot hold the images. Training
        images get the augmentation of the resident path (random crop with
        4 pixels of zero padding and horizontal flip), drawn per image by
        the DataLoader's workers; evaluation images are used as they are.

        Parameters
        ----------
        num_workers, pin_memory, prefetch_factor
            See :class:`StreamingDataset`.

        Returns
        -------
        StreamingDataset
            Same name, classes and statistics; its items share this data
            set's tensors (keep them on the CPU when using workers).
        """
        return StreamingDataset(
            name=self.name,
            splits={"train": _TensorImageDataset(self.x_train, self.y_train, None),
                    "test": _TensorImageDataset(self.x_test, self.y_test, None)},
            targets={"train": self.y_train.cpu(), "test": self.y_test.cpu()},
            train_transform=self._crop_flip(),
            eval_transform=None,
            classes=self.classes,
            mean=self.mean,
            std=self.std,
            image_shape=self.image_shape,
            num_workers=num_workers,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor,
        )

    def __repr__(self) -> str:
        def shape(t):
            return "x".join(str(s) for s in t.shape)

        return (
            f"ImageDataset(name={self.name!r}, train={shape(self.x_train)}, "
            f"test={shape(self.x_test)}, num_classes={self.num_classes}, "
            f"device={self.device})"
        )
